//! The CNI error object (spec section 5, "Error"), printed on stdout.

use serde::Serialize;

/// Well-known codes of the spec we use.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const INTERNAL: u32 = 100;
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        // The version is filled in once the config is known.
        Self { cni_version: crate::DEFAULT_VERSION.into(), code, msg: msg.into(), details: details.into() }
    }

    pub fn with_version(mut self, v: &str) -> Self {
        self.cni_version = v.to_string();
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("error serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_object_has_the_spec_keys() {
        let e = CniError::new(7, "invalid network config", "field mtu: 10 is outside 576..=65535")
            .with_version("1.0.0");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "invalid network config");
        assert!(v["details"].as_str().unwrap().contains("mtu"));
    }
}
