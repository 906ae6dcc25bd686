//! The agent's netlink: CHECK looks inside the pod's namespace, a pod
//! device deleted behind the agent's back is noticed at once, and the cost
//! of ADD/DEL without exec'ing iproute2.

use std::time::{Duration, Instant};
use weft_e2e::{TempNetns, TestLab};

/// 40 sequential ADDs then 40 DELs through the real plugin, 3 rounds:
/// median and mean per operation. Not a pass/fail test; run with
/// `--ignored --nocapture` to measure. WEFT_MEASURE_AGENT=PATH runs
/// another build's `weft` as the agent (to compare two builds).
#[test]
#[ignore]
fn measure_sequential_add_del() {
    let lab = TestLab::up_with("meas", 1, 0, |o| {
        if let Ok(bin) = std::env::var("WEFT_MEASURE_AGENT") {
            o.weft_bin = bin.into();
        }
    });
    let mut adds = Vec::new();
    let mut dels = Vec::new();
    for round in 0..3 {
        let nss: Vec<TempNetns> =
            (0..40).map(|i| TempNetns::new(&format!("weft-{}-m{round}x{i}", lab.name()))).collect();
        for ns in &nss {
            let t = Instant::now();
            let out = lab.cni("node1", "ADD", &ns.name, &ns.path(), "1.0.0");
            adds.push(t.elapsed());
            assert!(out.success, "ADD: {} {}", out.stdout, out.stderr);
        }
        for ns in &nss {
            let t = Instant::now();
            let out = lab.cni("node1", "DEL", &ns.name, &ns.path(), "1.0.0");
            dels.push(t.elapsed());
            assert!(out.success, "DEL: {} {}", out.stdout, out.stderr);
        }
    }
    lab.assert_consistent("node1");
    for (what, v) in [("ADD", &mut adds), ("DEL", &mut dels)] {
        v.sort();
        let mean = v.iter().sum::<Duration>() / v.len() as u32;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{what}: n={} median {:.2} ms, mean {:.2} ms, p90 {:.2} ms",
            v.len(),
            ms(v[v.len() / 2]),
            ms(mean),
            ms(v[v.len() * 9 / 10])
        );
    }
}
