//! IPv4 prefixes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::{fmt, net::Ipv4Addr, str::FromStr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    fn mask(&self) -> u32 {
        if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) }
    }
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }
    /// The n-th address of the prefix (0 is the network address).
    pub fn host(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(u32::from(self.network()) + n as u32))
    }
    /// Offset of `ip` inside the prefix.
    pub fn offset(&self, ip: Ipv4Addr) -> Option<u64> {
        self.contains(ip).then(|| (u32::from(ip) - u32::from(self.network())) as u64)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) =
            s.split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR (expected e.g. 10.244.1.0/24)"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("{a:?} in {s:?} is not an IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| format!("{p:?} in {s:?} is not a prefix length"))?;
        if prefix > 30 {
            return Err(format!(
                "{s}: a pod CIDR needs room for a gateway and pods; use a prefix of /30 or shorter"
            ));
        }
        let c = Cidr { addr, prefix };
        if c.network() != addr {
            return Err(format!("{s} has host bits set; did you mean {}/{prefix}?", c.network()));
        }
        Ok(c)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_hosts() {
        let c: Cidr = "10.244.1.0/24".parse().unwrap();
        assert_eq!(c.host(1), Some(Ipv4Addr::new(10, 244, 1, 1)));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 244, 1, 255));
        assert_eq!(c.size(), 256);
        assert!(c.contains(Ipv4Addr::new(10, 244, 1, 77)));
        assert!(!c.contains(Ipv4Addr::new(10, 244, 2, 1)));
        assert_eq!(c.offset(Ipv4Addr::new(10, 244, 1, 7)), Some(7));
        assert_eq!(c.to_string(), "10.244.1.0/24");
    }

    #[test]
    fn parse_errors_say_what_to_do() {
        assert!("10.244.1.5/24".parse::<Cidr>().unwrap_err().contains("did you mean 10.244.1.0/24"));
        assert!("10.244.1.0/31".parse::<Cidr>().unwrap_err().contains("/30"));
        assert!("10.244.1.0".parse::<Cidr>().is_err());
        assert!("10.244.1.x/24".parse::<Cidr>().is_err());
    }
}
