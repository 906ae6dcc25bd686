//! Validation of the names a runtime hands weft, done before any work: by the
//! CNI plugin before it contacts the agent, and by the agent before it
//! touches a device. Pure functions without dependencies.
//!
//! Every error names the field, shows at most the first 64 characters of
//! the bad value (a 10 MB container id must not become 10 MB of log) and
//! states the rule.

use std::fmt;

/// How much of a bad value an error shows.
pub const SHOWN_CHARS: usize = 64;
/// CNI container ids (the spec has no limit; ids are 64 hex digits in practice).
pub const MAX_CONTAINER_ID: usize = 256;
/// Linux device names: IFNAMSIZ (16) minus the NUL.
pub const MAX_IFNAME: usize = 15;
/// PATH_MAX.
pub const MAX_NETNS_PATH: usize = 4096;
pub const MAX_NETWORK_NAME: usize = 256;
/// A DNS-1123 subdomain (Kubernetes object names).
pub const MAX_POD_NAME: usize = 253;
/// Label key: a DNS-1123 subdomain prefix (253), '/', a name (63).
pub const MAX_LABEL_KEY: usize = 317;
pub const MAX_LABEL_NAME: usize = 63;
pub const MAX_LABEL_VALUE: usize = 63;

/// A value that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// What was checked: "container id", "ifname", "netns path", ...
    pub field: &'static str,
    /// The value, quoted and shortened to [`SHOWN_CHARS`] characters.
    pub value: String,
    /// The rule it breaks, and where.
    pub rule: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} is invalid: {}", self.field, self.value, self.rule)
    }
}

impl std::error::Error for Invalid {}

/// A value for an error message: quoted, escaped, at most [`SHOWN_CHARS`]
/// characters, with its length when it was cut.
pub fn excerpt(v: &str) -> String {
    let n = v.chars().count();
    if n <= SHOWN_CHARS {
        format!("{v:?}")
    } else {
        let head: String = v.chars().take(SHOWN_CHARS).collect();
        format!("{head:?}… ({} bytes)", v.len())
    }
}

fn invalid(field: &'static str, v: &str, rule: impl Into<String>) -> Invalid {
    Invalid { field, value: excerpt(v), rule: rule.into() }
}

fn check_len(field: &'static str, v: &str, min: usize, max: usize) -> Result<(), Invalid> {
    if v.len() < min {
        return Err(invalid(field, v, "it is empty"));
    }
    if v.len() > max {
        return Err(invalid(field, v, format!("it is {} bytes long; at most {max} are allowed", v.len())));
    }
    Ok(())
}

/// The first character not allowed by `ok`, described.
fn check_chars(
    field: &'static str,
    v: &str,
    ok: impl Fn(char) -> bool,
    allowed: &str,
) -> Result<(), Invalid> {
    match v.char_indices().find(|&(_, c)| !ok(c)) {
        Some((i, c)) => {
            Err(invalid(field, v, format!("{c:?} at byte {i} is not allowed; only {allowed} are")))
        }
        None => Ok(()),
    }
}

fn cni_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// `[A-Za-z0-9][A-Za-z0-9_.-]*`, the rule libcni applies to container ids
/// and network names.
fn cni_name(field: &'static str, v: &str, max: usize) -> Result<(), Invalid> {
    check_len(field, v, 1, max)?;
    check_chars(field, v, cni_name_char, "A-Z a-z 0-9 _ . -")?;
    if !v.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid(field, v, "it must start with a letter or a digit"));
    }
    Ok(())
}

/// CNI_CONTAINERID: 1..=256 bytes of `[A-Za-z0-9_.-]`, starting with a
/// letter or a digit (CNI spec).
pub fn container_id(v: &str) -> Result<(), Invalid> {
    cni_name("container id", v, MAX_CONTAINER_ID)
}

/// The network's name (config `name`): 1..=256 bytes of `[A-Za-z0-9_.-]`,
/// starting with a letter or a digit (CNI spec).
pub fn network_name(v: &str) -> Result<(), Invalid> {
    cni_name("network name", v, MAX_NETWORK_NAME)
}

/// CNI_IFNAME, a Linux device name: 1..=15 bytes, not "." or "..", no
/// '/', ':', whitespace or NUL (the kernel's rules); weft also refuses '%'
/// and anything outside printable ASCII.
pub fn ifname(v: &str) -> Result<(), Invalid> {
    const F: &str = "ifname";
    check_len(F, v, 1, MAX_IFNAME)?;
    if v == "." || v == ".." {
        return Err(invalid(F, v, "\".\" and \"..\" are not device names"));
    }
    check_chars(
        F,
        v,
        |c| c.is_ascii_graphic() && !matches!(c, '/' | ':' | '%'),
        "printable ASCII other than '/', ':', '%' and whitespace",
    )
}

/// CNI_NETNS: an absolute path of at most 4096 bytes without NUL.
pub fn netns_path(v: &str) -> Result<(), Invalid> {
    const F: &str = "netns path";
    check_len(F, v, 1, MAX_NETNS_PATH)?;
    if !v.starts_with('/') {
        return Err(invalid(F, v, "it must be an absolute path"));
    }
    if v.contains('\0') {
        return Err(invalid(F, v, "it contains a NUL byte"));
    }
    Ok(())
}

/// DNS-1123 subdomain: lowercase letters, digits, '-' and '.', starting
/// and ending with a letter or digit.
fn dns_subdomain(field: &'static str, v: &str, max: usize) -> Result<(), Invalid> {
    check_len(field, v, 1, max)?;
    check_chars(
        field,
        v,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'),
        "a-z 0-9 - . (Kubernetes names are lowercase)",
    )?;
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !v.starts_with(alnum) || !v.ends_with(alnum) {
        return Err(invalid(field, v, "it must start and end with a lowercase letter or a digit"));
    }
    Ok(())
}

/// K8S_POD_NAMESPACE: a Kubernetes name (DNS-1123 subdomain, at most 253).
pub fn pod_namespace(v: &str) -> Result<(), Invalid> {
    dns_subdomain("pod namespace", v, MAX_POD_NAME)
}

/// K8S_POD_NAME: a Kubernetes name (DNS-1123 subdomain, at most 253).
pub fn pod_name(v: &str) -> Result<(), Invalid> {
    dns_subdomain("pod name", v, MAX_POD_NAME)
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, the name part of a label key
/// and a label value.
fn label_name(field: &'static str, v: &str, max: usize) -> Result<(), Invalid> {
    check_len(field, v, 0, max)?;
    check_chars(field, v, cni_name_char, "A-Z a-z 0-9 _ . -")?;
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if !v.is_empty() && (!v.starts_with(alnum) || !v.ends_with(alnum)) {
        return Err(invalid(field, v, "it must start and end with a letter or a digit"));
    }
    Ok(())
}

/// A Kubernetes label key: `[prefix/]name`, prefix a DNS-1123 subdomain of
/// at most 253, name 1..=63 of `[A-Za-z0-9_.-]` starting and ending
/// alphanumeric; at most 317 bytes in all.
pub fn label_key(k: &str) -> Result<(), Invalid> {
    const F: &str = "label key";
    check_len(F, k, 1, MAX_LABEL_KEY)?;
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        dns_subdomain(F, p, MAX_POD_NAME).map_err(|e| Invalid {
            value: excerpt(k),
            rule: format!("prefix: {}", e.rule),
            ..e
        })?;
    }
    if name.is_empty() {
        return Err(invalid(F, k, "the name after the prefix is empty"));
    }
    label_name(F, name, MAX_LABEL_NAME).map_err(|e| Invalid { value: excerpt(k), ..e })
}

/// A Kubernetes label value: at most 63 bytes of `[A-Za-z0-9_.-]`, empty or
/// starting and ending alphanumeric.
pub fn label_value(v: &str) -> Result<(), Invalid> {
    label_name("label value", v, MAX_LABEL_VALUE)
}

/// A label: [`label_key`] and [`label_value`].
pub fn label(k: &str, v: &str) -> Result<(), Invalid> {
    label_key(k)?;
    label_value(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        for ok in ["a", "0abc", "c1", "abc_def.g-h", &"f".repeat(256)] {
            assert_eq!(container_id(ok), Ok(()), "{ok}");
        }
        let e = container_id("").unwrap_err();
        assert_eq!(e.to_string(), "container id \"\" is invalid: it is empty");
        let e = container_id(&"x".repeat(257)).unwrap_err();
        assert!(e.rule.contains("257 bytes long; at most 256"), "{e}");
        assert!(container_id("a/b").unwrap_err().to_string().contains("'/' at byte 1 is not allowed"));
        assert!(container_id("_abc").unwrap_err().rule.contains("start with a letter or a digit"));
        assert!(container_id(".").is_err());
        assert!(container_id("a b").is_err());
        assert!(container_id("é").is_err());
    }

    #[test]
    fn a_huge_value_is_shown_cut() {
        let big = "a".repeat(10 << 20);
        let e = container_id(&big).unwrap_err();
        let s = e.to_string();
        assert!(s.len() < 200, "{} bytes", s.len());
        assert!(s.contains("(10485760 bytes)"), "{s}");
        assert!(s.starts_with(&format!("container id \"{}\"…", "a".repeat(64))), "{s}");
        // Control characters are escaped, multibyte ones not split.
        assert_eq!(excerpt("a\nb"), "\"a\\nb\"");
        let e = excerpt(&"é".repeat(100));
        assert!(e.starts_with(&format!("\"{}\"", "é".repeat(64))), "{e}");
    }

    #[test]
    fn ifnames() {
        for ok in ["eth0", "e.1", "net1", "a", "x-y_z@1", "123456789012345"] {
            assert_eq!(ifname(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "..", "1234567890123456", "a/b", "a:1", "a b", "a\tb", "a\0b", "a%d", "é"] {
            let e = ifname(bad).unwrap_err();
            assert_eq!(e.field, "ifname");
        }
        assert!(ifname("1234567890123456").unwrap_err().rule.contains("at most 15"));
        assert!(ifname("..").unwrap_err().rule.contains("not device names"));
    }

    #[test]
    fn netns_paths() {
        assert_eq!(netns_path("/run/netns/p1"), Ok(()));
        assert_eq!(netns_path("/proc/123/ns/net"), Ok(()));
        assert!(netns_path("").is_err());
        assert!(netns_path("run/netns/p").unwrap_err().rule.contains("absolute"));
        assert!(netns_path("/a\0b").unwrap_err().rule.contains("NUL"));
        assert!(netns_path(&format!("/{}", "a".repeat(4096))).unwrap_err().rule.contains("at most 4096"));
    }

    #[test]
    fn network_names() {
        assert_eq!(network_name("weft"), Ok(()));
        assert_eq!(network_name("my_net.v2-x"), Ok(()));
        assert!(network_name("").is_err());
        assert!(network_name("a b").is_err());
        assert!(network_name("-x").is_err());
        assert!(network_name(&"n".repeat(257)).is_err());
    }

    #[test]
    fn pod_names() {
        for ok in ["default", "web-1", "a.b.c", "0"] {
            assert_eq!(pod_name(ok), Ok(()), "{ok}");
            assert_eq!(pod_namespace(ok), Ok(()), "{ok}");
        }
        assert!(pod_name("Web").unwrap_err().rule.contains("lowercase"));
        assert!(pod_name("eager_turing").is_err());
        assert!(pod_name("-a").is_err());
        assert!(pod_name("a-").is_err());
        assert!(pod_name("").is_err());
        assert!(pod_name(&"a".repeat(254)).is_err());
        assert_eq!(pod_name(&"a".repeat(253)), Ok(()));
        assert_eq!(pod_namespace("Prod").unwrap_err().field, "pod namespace");
    }

    #[test]
    fn labels() {
        for (k, v) in
            [("app", "web"), ("app.kubernetes.io/name", "My_App.v1-2"), ("tier", ""), ("example.com/x", "y")]
        {
            assert_eq!(label(k, v), Ok(()), "{k}={v}");
        }
        assert_eq!(label_key(&format!("{}/{}", "a".repeat(253), "b".repeat(63))), Ok(()));
        assert!(label_key(&format!("{}/{}", "a".repeat(253), "b".repeat(64))).is_err());
        assert!(label_key("").is_err());
        assert!(label_key("a/").unwrap_err().rule.contains("empty"));
        assert!(label_key("Example.com/x").unwrap_err().rule.contains("prefix"));
        assert!(label_key("a b").is_err());
        assert!(label_key("-a").is_err());
        assert!(label_key("a/b/c").is_err());
        assert!(label_value(&"v".repeat(64)).unwrap_err().rule.contains("at most 63"));
        assert!(label_value("a=b").is_err());
        assert!(label_value("_a").is_err());
        assert_eq!(label("k", "-").unwrap_err().field, "label value");
    }
}
