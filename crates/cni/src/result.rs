//! The ADD success result, in the version the runtime asked for.

use serde_json::{Value, json};
use weft_api::AddResult;

pub fn add_result(r: &AddResult, version: &str) -> Value {
    // Interface MTU is a CNI 1.1 field.
    let with_mtu = version != "1.0.0";
    let iface = |name: &str, mac: &str, sandbox: Option<&str>| {
        let mut v = json!({ "name": name, "mac": mac });
        if with_mtu {
            v["mtu"] = json!(r.mtu);
        }
        if let Some(s) = sandbox {
            v["sandbox"] = json!(s);
        }
        v
    };
    json!({
        "cniVersion": version,
        "interfaces": [
            iface(&r.host_ifname, &r.host_mac, None),
            iface(&r.ifname, &r.pod_mac, Some(&r.netns)),
        ],
        "ips": [{ "address": format!("{}/32", r.ip), "gateway": r.gateway.to_string(), "interface": 1 }],
        "routes": [{ "dst": "0.0.0.0/0", "gw": r.gateway.to_string() }],
        "dns": {}
    })
}

/// The address of the first IP in a cached result (for CHECK).
pub fn prev_ip(prev: &Value) -> Option<std::net::Ipv4Addr> {
    prev["ips"][0]["address"].as_str()?.split('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AddResult {
        AddResult {
            endpoint_id: 7,
            ip: "10.244.1.5".parse().unwrap(),
            gateway: "10.244.1.1".parse().unwrap(),
            host_ifname: "lxc0123456789ab".into(),
            host_mac: "0e:00:00:00:00:01".into(),
            ifname: "eth0".into(),
            pod_mac: "0a:00:00:00:00:01".into(),
            netns: "/run/netns/p".into(),
            mtu: 1450,
        }
    }

    #[test]
    fn shapes_per_version() {
        let v = add_result(&sample(), "1.1.0");
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/p");
        assert_eq!(v["interfaces"][1]["mtu"], 1450);
        assert_eq!(v["ips"][0]["address"], "10.244.1.5/32");
        assert_eq!(v["ips"][0]["interface"], 1);
        assert_eq!(v["routes"][0]["gw"], "10.244.1.1");
        let v = add_result(&sample(), "1.0.0");
        assert!(v["interfaces"][0].get("mtu").is_none());
        assert_eq!(prev_ip(&v), Some("10.244.1.5".parse().unwrap()));
    }
}
