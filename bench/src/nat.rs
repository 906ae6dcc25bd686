//! Masquerade: a pod's TCP to a host outside the cluster (the lab's
//! 203.0.113.1), through weft's SNAT in BPF, through the node's netfilter
//! MASQUERADE (what Calico's natOutgoing and most CNIs rely on), and
//! routed back without any NAT (the limit). Throughput and connection
//! rate, the three interleaved round after round; ratios to the limit.

use crate::{Samples, tools, topo};

pub fn figures(rounds: usize, secs: u64, s: &mut Samples) -> Result<(), String> {
    println!("# masquerade: building topologies");
    let topos = vec![
        topo::weft_to_internet("bmlim", topo::Egress::Routed)?,
        topo::weft_to_internet("bmipt", topo::Egress::Iptables)?,
        topo::weft_to_internet("bmasq", topo::Egress::Weft)?,
    ];
    for round in 1..=rounds {
        println!("# masquerade round {round}/{rounds}");
        for t in &topos {
            let base = t.name.starts_with("limit");
            let g = t.kind;
            s.add(g, "TCP throughput, 1 stream", "Gbit/s", true, &t.name, base, tools::iperf3(t, 1, secs)?);
            s.add(
                g,
                "TCP connections (connect, 1 B each way, close)",
                "conn/s",
                true,
                &t.name,
                base,
                tools::crr(t, secs)?,
            );
        }
    }
    Ok(())
}
