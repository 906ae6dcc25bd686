//! Every test works in fresh namespaces of its own (never the machine's):
//! each socket is opened on a thread inside a test namespace.

use super::*;
use crate::testns::TestNs;
use std::net::Ipv4Addr;

const HOST_MAC: [u8; 6] = [0x0e, 0x11, 0x22, 0x33, 0x44, 0x55];
const POD_MAC: [u8; 6] = [0x0e, 0x66, 0x77, 0x88, 0x99, 0xaa];

/// Runs `f` with a socket inside `ns`.
fn within<T: Send + 'static>(ns: &TestNs, f: impl FnOnce(&mut Netlink) -> Result<T> + Send + 'static) -> T {
    in_netns(&ns.path(), f).unwrap()
}

/// `host` in `a`, `eth0` in `b`, as an ADD makes them: from a socket that
/// does not know its namespace's name, like the agent's own.
fn pod_veth(a: &TestNs, b: &TestNs, host: &'static str) -> Result<()> {
    let pod_ns = b.path();
    crate::netns::run_in(&a.path(), move || {
        Netlink::open()?.veth_create(&Veth {
            name: host,
            mac: Some(HOST_MAC),
            peer: "eth0",
            peer_mac: Some(POD_MAC),
            peer_netns: Some(&pod_ns),
            mtu: Some(1450),
        })
    })
}

#[test]
fn veth_across_namespaces_is_created_and_deleted() {
    let (host, pod) = (TestNs::new("nl-vh"), TestNs::new("nl-vp"));
    pod_veth(&host, &pod, "lxcweft1").unwrap();

    let here = within(&host, |nl| nl.link("lxcweft1")).expect("host end exists");
    assert_eq!((here.mtu, here.mac, here.kind.as_deref()), (1450, Some(HOST_MAC), Some("veth")));
    assert!(!here.up);
    assert_eq!(within(&host, |nl| nl.link("eth0")), None, "the peer is not in the host namespace");
    let there = within(&pod, |nl| nl.link("eth0")).expect("pod end exists");
    assert_eq!((there.mtu, there.mac), (1450, Some(POD_MAC)));

    // Deleting the host end takes the pod end with it; again is success.
    within(&host, |nl| nl.link_delete("lxcweft1"));
    assert!(!within(&host, |nl| nl.link_exists("lxcweft1")));
    assert!(!within(&pod, |nl| nl.link_exists("eth0")));
    within(&host, |nl| nl.link_delete("lxcweft1"));
}

#[test]
fn a_device_group_goes_in_one_request_and_only_it() {
    let (host, pod) = (TestNs::new("nl-gh"), TestNs::new("nl-gp"));
    pod_veth(&host, &pod, "lxcweftg1").unwrap();
    let names = within(&host, |nl| {
        nl.veth_create(&Veth { name: "weftg2", peer: "weftg3", ..Default::default() })?;
        nl.veth_create(&Veth { name: "weftkeep", peer: "weftkeep2", ..Default::default() })?;
        assert!(nl.link_set_group("lxcweftg1", 4242)?);
        assert!(nl.link_set_group("weftg2", 4242)?);
        assert!(!nl.link_set_group("weft-none", 4242)?, "a missing device is not an error");
        nl.group_delete(4242)?;
        nl.group_delete(4242)?; // an empty group is success
        Ok(nl.links()?.into_iter().map(|l| l.name).collect::<Vec<_>>())
    });
    assert!(!names.iter().any(|n| n.starts_with("lxcweftg") || n.starts_with("weftg")), "{names:?}");
    assert!(names.iter().any(|n| n == "weftkeep"), "a device outside the group stays: {names:?}");
    assert!(!within(&pod, |nl| nl.link_exists("eth0")), "the pod end went with its peer");
}

#[test]
fn a_taken_name_is_a_readable_error() {
    let (host, pod) = (TestNs::new("nl-dh"), TestNs::new("nl-dp"));
    pod_veth(&host, &pod, "lxcweft2").unwrap();
    let e = pod_veth(&host, &pod, "lxcweft2").unwrap_err();
    assert_eq!(
        e.0,
        format!("creating veth lxcweft2 (peer eth0 in {}): File exists (os error 17)", pod.path().display())
    );
    // The namespace is named when the socket knows it.
    let e =
        in_netns(&pod.path(), |nl| nl.address_add("weft-none", Ipv4Addr::new(10, 0, 0, 1), 32)).unwrap_err();
    assert_eq!(
        e.0,
        format!(
            "adding address 10.0.0.1/32 on weft-none: no device weft-none in {}: No such device (os error 19)",
            pod.path().display()
        )
    );
    let e = in_netns(&pod.path(), |nl| nl.link_up("weft-none")).unwrap_err();
    assert_eq!(
        e.0,
        format!("setting weft-none up in {}: No such device (os error 19)", pod.path().display())
    );
}

/// `ip -6 -j addr show dev DEV` inside `ns`: the device's IPv6 addresses.
fn ipv6_addresses(ns: &TestNs, dev: &str) -> usize {
    let out = std::process::Command::new("ip")
        .args(["-n", &ns.name, "-6", "-j", "addr", "show", "dev", dev])
        .output();
    let v: serde_json::Value = serde_json::from_slice(&out.unwrap().stdout).unwrap_or_default();
    v.as_array()
        .map(|a| a.iter().map(|l| l["addr_info"].as_array().map_or(0, |x| x.len())).sum())
        .unwrap_or(0)
}

#[test]
fn settings_come_with_the_link_up_and_no_ipv6_address_is_made() {
    let ns = TestNs::new("nl-v4");
    let path = ns.path();
    let read = move |key: &'static str| {
        crate::netns::run_in(&path, move || crate::sysctl::get_conf("ipv4", "weft_c", key)).unwrap()
    };
    within(&ns, |nl| {
        nl.veth_create(&Veth { name: "weft_c", peer: "weft_d", ..Default::default() })?;
        crate::sysctl::set_conf("ipv4", "weft_c", "rp_filter", "2")?;
        crate::sysctl::set_conf("ipv4", "weft_c", "forwarding", "0")
    });
    assert_eq!((read("rp_filter"), read("forwarding")), ("2".into(), "0".into()));
    // As a pod's pair comes up: one end with its settings while the other
    // is down, the other after turning address generation off.
    within(&ns, |nl| {
        nl.link_up_with(
            "weft_c",
            &UpWith { ipv4: &[(Ipv4Conf::RpFilter, 0), (Ipv4Conf::Forwarding, 1)], no_ipv6_link_local: true },
        )?;
        nl.no_ipv6_link_local("weft_d")?;
        nl.link_up("weft_d")
    });
    assert_eq!((read("rp_filter"), read("forwarding")), ("0".into(), "1".into()));
    assert!(within(&ns, |nl| nl.link("weft_c")).unwrap().up);
    // Without it, a link-local address appears once the carrier is up
    // (the control: this check can see one).
    within(&ns, |nl| {
        nl.veth_create(&Veth { name: "weft_e", peer: "weft_f", ..Default::default() })?;
        nl.link_up("weft_e")?;
        nl.link_up("weft_f")
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ipv6_addresses(&ns, "weft_e") == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if crate::has_ipv6() {
        assert_eq!(ipv6_addresses(&ns, "weft_e"), 1, "the control has its link-local address");
    }
    assert_eq!(ipv6_addresses(&ns, "weft_c") + ipv6_addresses(&ns, "weft_d"), 0, "no IPv6 address");
    let e = within(&ns, |nl| Ok(nl.link_up_with("weft_none", &UpWith::default()).unwrap_err()));
    assert!(e.to_string().contains("setting weft_none up with"), "{e}");
}

#[test]
fn link_settings() {
    let ns = TestNs::new("nl-ls");
    let l = within(&ns, |nl| {
        nl.veth_create(&Veth { name: "weft_a", peer: "weft_b", ..Default::default() })?;
        nl.link_up_noarp("weft_a")?;
        nl.set_mtu("weft_a", 1400)?;
        nl.link_up("weft_b")?;
        nl.link("weft_a")
    })
    .unwrap();
    assert!(l.up && l.noarp, "{l:?}");
    assert_eq!(l.mtu, 1400);
    let b = within(&ns, |nl| nl.link("weft_b")).unwrap();
    assert!(b.up && !b.noarp, "{b:?}");
    assert_eq!(within(&ns, |nl| nl.link_mtu("weft_b")), Some(1500));
    assert_eq!(within(&ns, |nl| nl.link_index("lo")), Some(1));
    let mut names: Vec<String> = within(&ns, |nl| nl.links()).into_iter().map(|l| l.name).collect();
    names.sort();
    assert_eq!(names, ["lo", "weft_a", "weft_b"]);
}

#[test]
fn addresses_are_added_listed_and_removed() {
    let (host, pod) = (TestNs::new("nl-ah"), TestNs::new("nl-ap"));
    pod_veth(&host, &pod, "lxcweft3").unwrap();
    let ip = Ipv4Addr::new(10, 244, 0, 7);
    let addrs = within(&pod, move |nl| {
        nl.address_add("eth0", ip, 32)?;
        nl.address_replace("eth0", ip, 32)?; // already there: fine
        nl.addresses()
    });
    assert_eq!(addrs, vec![Address { index: addrs[0].index, dev: "eth0".into(), ip, prefix_len: 32 }]);
    assert_eq!(addrs[0].to_string(), "10.244.0.7/32 on eth0");
    let e = in_netns(&pod.path(), move |nl| nl.address_add("eth0", ip, 32)).unwrap_err();
    assert_eq!(
        e.0,
        format!(
            "adding address 10.244.0.7/32 on eth0 in {}: File exists (os error 17); the kernel says: ipv4: Address already assigned",
            pod.path().display()
        )
    );
    // Loopback ones are listed too, once lo is up.
    let lo = within(&pod, |nl| {
        nl.link_up("lo")?;
        nl.addresses_of("lo")
    });
    assert_eq!(lo.iter().map(|a| a.ip).collect::<Vec<_>>(), [Ipv4Addr::LOCALHOST]);
    let left = within(&pod, move |nl| {
        nl.address_delete("eth0", ip, 32)?;
        nl.addresses_of("eth0")
    });
    assert_eq!(left, []);
    // Nothing leaked into the host side.
    assert_eq!(within(&host, |nl| nl.addresses()), []);
}

#[test]
fn pod_routes_are_added_and_read() {
    let (host, pod) = (TestNs::new("nl-rh"), TestNs::new("nl-rp"));
    pod_veth(&host, &pod, "lxcweft4").unwrap();
    let gw = Ipv4Addr::new(10, 244, 0, 1);
    let routes = within(&pod, move |nl| {
        nl.address_add("eth0", Ipv4Addr::new(10, 244, 0, 9), 32)?;
        nl.link_up("eth0")?;
        nl.route_add(&Route::on_link(gw, "eth0"))?;
        nl.route_add(&Route::default_via(gw, "eth0"))?;
        nl.routes_via("eth0")
    });
    let shown: Vec<String> = routes.iter().map(|r| r.to_string()).collect();
    assert_eq!(shown, ["default via 10.244.0.1 dev eth0", "10.244.0.1 dev eth0 scope link"]);
    assert!(routes[0].matches(&Route::default_via(gw, "eth0")));
    assert!(!routes[0].matches(&Route::default_via(Ipv4Addr::new(10, 244, 0, 2), "eth0")));

    // A second default is refused, naming the route and the namespace.
    let e = in_netns(&pod.path(), move |nl| nl.route_add(&Route::default_via(gw, "eth0"))).unwrap_err();
    assert_eq!(
        e.0,
        format!(
            "adding route default via 10.244.0.1 dev eth0 in {}: File exists (os error 17)",
            pod.path().display()
        )
    );
    // Deleted, it is gone; deleting again is success.
    let left = within(&pod, move |nl| {
        nl.route_delete(&Route::default_via(gw, "eth0"))?;
        nl.route_delete(&Route::default_via(gw, "eth0"))?;
        nl.routes_via("eth0")
    });
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].to_string(), "10.244.0.1 dev eth0 scope link");
}

#[test]
fn routes_are_listed_by_protocol() {
    let ns = TestNs::new("nl-rproto");
    let gw = Ipv4Addr::new(198, 18, 0, 3);
    let cidr = |n: u8| Ipv4Addr::new(10, 244, n, 0);
    let (ours, theirs) = within(&ns, move |nl| {
        nl.veth_create(&Veth { name: "weft_u", peer: "weft_up", ..Default::default() })?;
        nl.link_up("weft_up")?;
        nl.link_up("weft_u")?;
        nl.address_add("weft_u", Ipv4Addr::new(198, 18, 0, 2), 24)?;
        nl.route_replace(&Route::to(cidr(1), 24).via(gw).dev("weft_u").proto(201))?;
        nl.route_replace(&Route::to(cidr(2), 24).via(gw).dev("weft_u").proto(201))?;
        // Replacing with the same is no change; not ours: another protocol.
        nl.route_replace(&Route::to(cidr(2), 24).via(gw).dev("weft_u").proto(201))?;
        nl.route_add(&Route::to(cidr(3), 24).via(gw).dev("weft_u"))?;
        Ok((nl.routes_by_proto(201)?, nl.routes_by_proto(ROUTE_PROTO_BOOT)?))
    });
    let shown: Vec<String> = ours.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        shown,
        [
            "10.244.1.0/24 via 198.18.0.3 dev weft_u proto 201",
            "10.244.2.0/24 via 198.18.0.3 dev weft_u proto 201"
        ]
    );
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].dst, cidr(3));

    // As iproute2 sees them (the lab and operators read them with it).
    let out = crate::ip::output(&["-n", &ns.name, "-4", "route", "show", "proto", "201"]).unwrap();
    assert!(out.contains("10.244.1.0/24 via 198.18.0.3 dev weft_u"), "{out}");

    // Deleting by destination and protocol leaves the others; the source
    // address of an on-link route is kept.
    let left = within(&ns, move |nl| {
        nl.route_delete(&Route::to(cidr(1), 24).proto(201))?;
        nl.route_replace(
            &Route::to(cidr(4), 24).dev("weft_u").scope(RouteScope::Link).src(Ipv4Addr::new(198, 18, 0, 2)),
        )?;
        nl.routes()
    });
    let shown: Vec<String> = left.iter().map(|r| r.to_string()).collect();
    assert!(!shown.iter().any(|s| s.starts_with("10.244.1.0/24")), "{shown:?}");
    assert!(shown.contains(&"10.244.2.0/24 via 198.18.0.3 dev weft_u proto 201".to_string()), "{shown:?}");
    assert!(shown.contains(&"10.244.4.0/24 dev weft_u scope link src 198.18.0.2".to_string()), "{shown:?}");
}

/// The details `ip -d -j link show` gives of a device, less what differs
/// between two devices of the same making (name, index, MAC, state).
fn details(ns: &TestNs, dev: &str) -> serde_json::Value {
    let out = crate::ip::output(&["-n", &ns.name, "-d", "-j", "link", "show", "dev", dev]).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let obj = v[0].as_object_mut().unwrap();
    for k in ["ifindex", "ifname", "address", "flags", "operstate"] {
        obj.remove(k);
    }
    v[0].take()
}

#[test]
fn vxlan_is_the_one_iproute2_makes() {
    let (ours, reference) = (TestNs::new("nl-vx1"), TestNs::new("nl-vx2"));
    within(&ours, |nl| {
        nl.vxlan_external_create("weft_vxlan", 1450, 8472)?;
        nl.link_up("weft_vxlan")
    });
    #[rustfmt::skip]
    crate::ip::run(&[
        "-n", &reference.name, "link", "add", "weft_vxlan", "mtu", "1450",
        "type", "vxlan", "external", "dstport", "8472",
    ])
    .unwrap();
    crate::ip::run(&["-n", &reference.name, "link", "set", "weft_vxlan", "up"]).unwrap();
    let (a, b) = (details(&ours, "weft_vxlan"), details(&reference, "weft_vxlan"));
    assert_eq!(a, b);
    assert_eq!(a["linkinfo"]["info_data"]["external"], true, "{a}");
    assert_eq!(a["linkinfo"]["info_data"]["port"], 8472, "{a}");
    assert_eq!(a["linkinfo"]["info_data"]["learning"], false, "{a}");
    assert_eq!(a["mtu"], 1450);
    let e = in_netns(&ours.path(), |nl| nl.vxlan_external_create("weft_vxlan", 1450, 8472)).unwrap_err();
    assert!(e.0.starts_with("creating vxlan weft_vxlan (external, dstport 8472) in "), "{e}");
    assert!(e.0.ends_with("File exists (os error 17)"), "{e}");
}

#[test]
fn events_tell_of_links_and_addresses() {
    let ns = TestNs::new("nl-ev");
    let seen = within(&ns, |nl| {
        let mut ev = Events::subscribe(&[RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR], Duration::from_millis(200))?;
        nl.veth_create(&Veth { name: "weft_e", peer: "weft_ep", ..Default::default() })?;
        nl.link_up("weft_e")?;
        nl.address_add("weft_e", Ipv4Addr::new(198, 18, 0, 9), 24)?;
        nl.address_delete("weft_e", Ipv4Addr::new(198, 18, 0, 9), 24)?;
        nl.link_delete("weft_e")?;
        // Read until the deletion of both ends was seen (bounded).
        let mut seen = Vec::new();
        for _ in 0..50 {
            seen.extend(ev.wait()?);
            if seen.iter().filter(|e| matches!(e, Event::LinkDel { .. })).count() == 2 {
                break;
            }
        }
        Ok(seen)
    });
    let has = |want: &dyn Fn(&Event) -> bool| seen.iter().any(want);
    assert!(has(&|e| matches!(e, Event::LinkNew { name, .. } if name == "weft_e")), "{seen:?}");
    assert!(has(&|e| matches!(e, Event::LinkDel { name, .. } if name == "weft_e")), "{seen:?}");
    assert!(has(&|e| matches!(e, Event::LinkDel { name, .. } if name == "weft_ep")), "{seen:?}");
    let ip = Ipv4Addr::new(198, 18, 0, 9);
    assert!(
        has(&|e| *e == Event::AddrNew { index: index_of(&seen, "weft_e"), ip, prefix_len: 24 }),
        "{seen:?}"
    );
    assert!(has(&|e| matches!(e, Event::AddrDel { ip: i, .. } if *i == ip)), "{seen:?}");
    // Nothing happens: the read returns empty after the tick.
    let quiet = within(&ns, |_| {
        let mut ev = Events::subscribe(&[RTNLGRP_LINK], Duration::from_millis(50))?;
        ev.wait()
    });
    assert_eq!(quiet, []);
}

#[test]
fn lost_events_are_reported() {
    let ns = TestNs::new("nl-enobufs");
    let first = within(&ns, |nl| {
        let mut ev = Events::subscribe(&[RTNLGRP_LINK], Duration::from_millis(200))?;
        // The smallest buffer the kernel allows holds a few link messages.
        ev.sock.set_rx_buf_sz(0).map_err(|e| Error(e.to_string()))?;
        for i in 0..20 {
            let name = format!("weft_o{i}");
            nl.veth_create(&Veth { name: &name, peer: &format!("weft_p{i}"), ..Default::default() })?;
        }
        ev.wait()
    });
    assert_eq!(first, [Event::Overrun]);
}

fn index_of(seen: &[Event], dev: &str) -> u32 {
    seen.iter()
        .find_map(|e| match e {
            Event::LinkNew { index, name } if name == dev => Some(*index),
            _ => None,
        })
        .unwrap()
}

#[test]
fn answers_are_matched_by_sequence_number() {
    // A request whose answer was never read (as after a timeout) must not
    // be taken for the answer to the next one.
    let ns = TestNs::new("nl-seq");
    let link = within(&ns, |nl| {
        nl.seq = nl.seq.wrapping_add(1);
        let stale = nl.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        header.sequence_number = stale;
        let mut m = netlink_packet_route::link::LinkMessage::default();
        m.attributes.push(netlink_packet_route::link::LinkAttribute::IfName("weft-none".into()));
        let mut packet =
            NetlinkMessage::new(header, NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(m)));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        nl.sock.send_to(&bytes, &SocketAddr::new(0, 0), 0).map_err(|e| Error(e.to_string()))?;
        // The ENODEV for the stale request is skipped; lo is found.
        nl.link("lo")
    });
    assert_eq!(link.map(|l| l.index), Some(1));
}
