//! `make bench`: weft side by side with the physical limit and the datapaths
//! users would pick instead, in one run, interleaved (A B C A B C ...), with
//! medians, min–max and ratios to the baseline; every raw sample printed.

mod control;
mod datapath;
mod nat;
mod policy;
mod propagation;
mod report;
mod scale;
mod services;
mod tools;
mod topo;

use report::Series;
use std::{path::PathBuf, sync::Arc, time::Instant};

struct Args {
    rounds: usize,
    secs: u64,
    pods: usize,
    endpoints: usize,
    out: PathBuf,
    readme: Option<PathBuf>,
    /// Only redraw the chart and table from the raw.json of earlier runs
    /// (`--replot` again merges another: its series replace the same ones).
    replot: Vec<PathBuf>,
    /// Only the control plane (no data-plane topologies).
    control_only: bool,
    /// Simulated nodes of the scale measurement.
    scale_nodes: usize,
    /// Only the scale measurement.
    only_scale: bool,
    /// Only CNI ADD/DEL latency and pods per second.
    only_cni: bool,
    /// Only the policy figures: compile, and the datapath with conntrack
    /// and a policy of N rules.
    only_policy: bool,
    only_nat: bool,
    /// Only the services figures: connections through a ClusterIP with
    /// 10 to 50,000 services, and programming them.
    only_services: bool,
    /// Numbers of services of the services data plane.
    services_scales: Vec<usize>,
    /// Services programmed from empty (weft's maps, iptables, nftables);
    /// 0 leaves the programming measurement out.
    services_program: usize,
    /// Services applied through weft's agent API (in files of
    /// `services::API_CHUNK`, one apply after the other); 0 leaves the API
    /// measurement out.
    services_api: usize,
    /// Propagation samples and window length of the scale measurement.
    scale_samples: usize,
    scale_window: u64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        rounds: 5,
        secs: 2,
        pods: 200,
        endpoints: 1000,
        out: "bench/results".into(),
        readme: None,
        replot: Vec::new(),
        control_only: false,
        scale_nodes: 200,
        only_scale: false,
        only_cni: false,
        only_policy: false,
        only_nat: false,
        only_services: false,
        services_scales: services::SCALES.to_vec(),
        services_program: 10_000,
        services_api: 10_000,
        scale_samples: 50,
        scale_window: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--rounds" => a.rounds = val()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--secs" => a.secs = val()?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--pods" => a.pods = val()?.parse().map_err(|e| format!("--pods: {e}"))?,
            "--endpoints" => a.endpoints = val()?.parse().map_err(|e| format!("--endpoints: {e}"))?,
            "--out" => a.out = val()?.into(),
            "--readme" => a.readme = Some(val()?.into()),
            "--replot" => a.replot.push(val()?.into()),
            "--control-only" => a.control_only = true,
            "--scale-nodes" => a.scale_nodes = val()?.parse().map_err(|e| format!("--scale-nodes: {e}"))?,
            "--scale-window" => {
                a.scale_window = val()?.parse().map_err(|e| format!("--scale-window: {e}"))?
            }
            "--only-scale" => a.only_scale = true,
            "--only-cni" => a.only_cni = true,
            "--only-policy" => a.only_policy = true,
            "--only-nat" => a.only_nat = true,
            "--only-services" => a.only_services = true,
            "--services-scales" => {
                a.services_scales = val()?
                    .split(',')
                    .map(|n| n.trim().parse().map_err(|e| format!("--services-scales: {e}")))
                    .collect::<Result<_, _>>()?;
                a.services_scales.sort();
            }
            "--services-program" => {
                a.services_program = val()?.parse().map_err(|e| format!("--services-program: {e}"))?
            }
            "--services-api" => {
                a.services_api = val()?.parse().map_err(|e| format!("--services-api: {e}"))?
            }
            "--quick" => {
                a.rounds = 1;
                a.secs = 1;
                a.pods = 20;
                a.endpoints = 50;
                a.scale_nodes = 20;
                a.scale_samples = 20;
                a.scale_window = 10;
                a.services_scales = vec![10, 1000];
                a.services_program = 1000;
                a.services_api = 200;
            }
            other => return Err(format!("unknown argument {other}; see bench/src/main.rs")),
        }
    }
    Ok(a)
}

fn main() {
    // The services section's client, run as a process of its own so it
    // can join a cgroup.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--services-client") {
        std::process::exit(services::client_main(&argv[2..]));
    }
    if let Err(e) = run() {
        eprintln!("weft-bench: {e}");
        std::process::exit(1);
    }
}

/// Collects samples by (group, metric, subject) and prints each raw one.
#[derive(Default)]
struct Samples(Vec<Series>);

impl Samples {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        group: &str,
        metric: &str,
        unit: &str,
        higher: bool,
        subject: &str,
        baseline: bool,
        v: f64,
    ) {
        println!("sample group={group:?} metric={metric:?} subject={subject:?} value={v:.3} {unit}");
        match self.0.iter_mut().find(|s| s.group == group && s.metric == metric && s.subject == subject) {
            Some(s) => s.samples.push(v),
            None => self.0.push(Series {
                group: group.into(),
                metric: metric.into(),
                unit: unit.into(),
                higher_is_better: higher,
                subject: subject.into(),
                baseline,
                samples: vec![v],
            }),
        }
    }
}

fn run() -> Result<(), String> {
    let a = args()?;
    if !a.replot.is_empty() {
        let mut series: Vec<Series> = Vec::new();
        for raw in &a.replot {
            let b = std::fs::read(raw).map_err(|e| format!("{}: {e}", raw.display()))?;
            let more: Vec<Series> = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
            series.retain(|s| {
                !more.iter().any(|m| m.group == s.group && m.metric == s.metric && m.subject == s.subject)
            });
            series.extend(more);
        }
        return write_report(&a, &series, "Replotted from an earlier run.");
    }
    let started = Instant::now();
    let mut s = Samples::default();
    weft_datapath::ensure_bpffs().map_err(|e| e.to_string())?;
    if a.only_scale || a.only_cni {
        let what = if a.only_scale { scale(&a, &mut s) } else { cni_ops(&a, &mut s).map(|_| ()) };
        what?;
        let header = format!(
            "Measured {} on {}; the {} section only; whole run {} s.",
            date(),
            machine(),
            if a.only_scale { "scale" } else { "CNI" },
            started.elapsed().as_secs()
        );
        return write_report(&a, &s.0, &header);
    }
    // Per-program run time and count, for as long as this fd is open
    // (BPF_ENABLE_STATS: no sysctl is touched).
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| format!("BPF stats: {e}"))?;
    if a.only_policy {
        policy_figures(&a, &mut s)?;
        let header = format!(
            "Measured {} on {}; the policy section only; {} rounds interleaved, {} s per measurement; whole run {} s.",
            date(),
            machine(),
            policy_rounds(&a),
            a.secs,
            started.elapsed().as_secs()
        );
        return write_report(&a, &s.0, &header);
    }
    if a.only_services {
        let notes = services::run(&services_params(&a), &mut s)?;
        let header = format!(
            "Measured {} on {}; the services section only; {} rounds interleaved, {} s per measurement; whole run {} s.{}",
            date(),
            machine(),
            services_rounds(&a),
            services_secs(&a),
            started.elapsed().as_secs(),
            notes.iter().map(|n| format!(" {n}")).collect::<String>()
        );
        return write_report(&a, &s.0, &header);
    }

    if a.only_nat {
        nat::figures(a.rounds, a.secs, &mut s)?;
        let header = format!(
            "Measured {} on {}; the masquerade section only; {} rounds interleaved, {} s per measurement; whole run {} s.",
            date(),
            machine(),
            a.rounds,
            a.secs,
            started.elapsed().as_secs()
        );
        return write_report(&a, &s.0, &header);
    }

    // Data plane: every topology up at once, measured round after round.
    if !a.control_only {
        println!("# building topologies");
        let topos = vec![
            topo::limit_same()?,
            topo::routed_same()?,
            topo::bridge_same()?,
            topo::weft("bsame", 1, None)?,
            topo::limit_cross()?,
            topo::flannel_cross()?,
            topo::weft("bvxlan", 2, Some("vxlan"))?,
            topo::weft("bipip", 2, Some("ipip"))?,
            topo::weft("bnative", 2, Some("native"))?,
        ];
        for round in 1..=a.rounds {
            println!("# round {round}/{}", a.rounds);
            for t in &topos {
                let g = t.kind;
                let base = t.name.starts_with("limit");
                let (cpu0, bpf0) = (tools::cpu_busy_secs(), tools::bpf_counters(&t.programs));
                let gbps = tools::iperf3(t, 1, a.secs)?;
                let (cpu1, bpf1) = (tools::cpu_busy_secs(), tools::bpf_counters(&t.programs));
                s.add(g, "TCP throughput, 1 stream", "Gbit/s", true, &t.name, base, gbps);
                let gb = gbps * a.secs as f64 / 8.0;
                let cpu_metric = "CPU seconds per GB (1 stream, whole machine)";
                s.add(g, cpu_metric, "s/GB", false, &t.name, base, (cpu1 - cpu0) / gb);
                if t.name.starts_with("weft") {
                    bpf_under_load(&mut s, &t.name, &bpf0, &bpf1);
                }
                s.add(
                    g,
                    "TCP throughput, 2 streams",
                    "Gbit/s",
                    true,
                    &t.name,
                    base,
                    tools::iperf3(t, 2, a.secs)?,
                );
                let l = tools::sockperf(t, a.secs)?;
                s.add(g, "TCP request/response latency, avg", "µs", false, &t.name, base, l.avg);
                s.add(g, "TCP request/response latency, p50", "µs", false, &t.name, base, l.p50);
                s.add(g, "TCP request/response latency, p99", "µs", false, &t.name, base, l.p99);
                s.add(
                    g,
                    "TCP connections (connect, 1 B each way, close)",
                    "conn/s",
                    true,
                    &t.name,
                    base,
                    tools::crr(t, a.secs)?,
                );
            }
        }
    }

    // Conntrack and policy: the compiler, and the datapath with policies
    // of 10 to 1,000 rules. The sections after it run even if it failed.
    if !a.control_only {
        let t = Instant::now();
        if let Err(e) = policy_figures(&a, &mut s) {
            eprintln!("weft-bench: policy measurements stopped: {e}");
        }
        println!("# policy section: {} s", t.elapsed().as_secs());
    }

    // Masquerade to a host outside the cluster.
    if !a.control_only {
        let t = Instant::now();
        if let Err(e) = nat::figures(a.rounds.min(3), a.secs, &mut s) {
            eprintln!("weft-bench: masquerade measurements stopped: {e}");
        }
        println!("# masquerade section: {} s", t.elapsed().as_secs());
    }

    // Services: connections through a ClusterIP with 10 to 50,000
    // services, and programming them.
    let mut notes = Vec::new();
    if !a.control_only {
        let t = Instant::now();
        match services::run(&services_params(&a), &mut s) {
            Ok(n) => notes = n,
            Err(e) => eprintln!("weft-bench: services measurements stopped: {e}"),
        }
        println!("# services section: {} s", t.elapsed().as_secs());
    }

    // Per-packet cost of the programs.
    println!("# BPF_PROG_TEST_RUN");
    for _ in 0..if a.control_only { 0 } else { a.rounds } {
        for (case, ns) in datapath::ns_per_packet(200_000)? {
            s.add("datapath", "ns per packet (BPF_PROG_TEST_RUN)", "ns", false, &case, false, ns);
        }
    }

    if let Err(e) = control_plane(&a, &mut s) {
        eprintln!("weft-bench: control-plane measurements stopped: {e}");
    }

    let elapsed = started.elapsed().as_secs();
    let machine = machine();
    let header = format!(
        "Measured {} on {machine}; {} rounds interleaved, {} s per measurement; whole run {elapsed} s.{}",
        date(),
        a.rounds,
        a.secs,
        notes.iter().map(|n| format!(" {n}")).collect::<String>()
    );
    write_report(&a, &s.0, &header)?;
    println!("# done in {elapsed} s");
    Ok(())
}

fn write_report(a: &Args, series: &[Series], header: &str) -> Result<(), String> {
    std::fs::create_dir_all(&a.out).map_err(|e| e.to_string())?;
    let md = report::markdown(series, header) + &services::summary(series);
    std::fs::write(a.out.join("latest.md"), &md).map_err(|e| e.to_string())?;
    std::fs::write(a.out.join("raw.json"), serde_json::to_vec_pretty(series).unwrap())
        .map_err(|e| e.to_string())?;
    report::chart(
        series,
        &[
            ("same node", "TCP throughput, 1 stream"),
            ("cross node", "TCP throughput, 1 stream"),
            ("same node", "TCP request/response latency, p50"),
            ("cross node", "TCP request/response latency, p50"),
            ("same node", "TCP connections (connect, 1 B each way, close)"),
            ("cross node", "TCP connections (connect, 1 B each way, close)"),
            policy::PANELS[0],
            policy::PANELS[1],
            services::PANEL,
        ],
        &a.out.join("latest.png"),
        std::path::Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    )?;
    if let Some(readme) = &a.readme {
        update_readme(readme, &md)?;
    }
    println!("{md}");
    println!("# wrote {}/latest.md, latest.png, raw.json", a.out.display());
    Ok(())
}

/// Rounds of the policy datapath section (20 subjects: at most 3 keep it
/// under 10 minutes on 2 cores).
fn policy_rounds(a: &Args) -> usize {
    a.rounds.min(3)
}

/// Rounds and seconds per measurement of the services section (4 subjects
/// at up to 4 numbers of services, and programming 10,000 services up to
/// twice: about 5 minutes on 2 cores, besides the 12–16 minutes `nft -f`
/// takes to load the nftables shape's 50,000 services).
fn services_rounds(a: &Args) -> usize {
    a.rounds.min(3)
}

fn services_secs(a: &Args) -> u64 {
    a.secs.min(2)
}

fn services_params(a: &Args) -> services::Params {
    services::Params {
        scales: a.services_scales.clone(),
        program: a.services_program,
        api: a.services_api,
        rounds: services_rounds(a),
        secs: services_secs(a),
    }
}

/// Policy compile, then the datapath with conntrack and policy.
fn policy_figures(a: &Args, s: &mut Samples) -> Result<(), String> {
    policy::compile(a.rounds, s);
    policy::datapath(policy_rounds(a), a.secs, s)
}

/// ns per packet of each weft program while a topology carried TCP.
fn bpf_under_load(s: &mut Samples, topo: &str, before: &tools::BpfCounters, after: &tools::BpfCounters) {
    for (prog, (ns1, n1)) in after {
        let (ns0, n0) = before.get(prog).copied().unwrap_or((0, 0));
        if *n1 > n0 {
            let v = (ns1 - ns0) as f64 / (n1 - n0) as f64;
            let metric = "ns per packet under TCP load (BPF stats)";
            s.add("datapath", metric, "ns", false, &format!("{topo}: {prog}"), false, v);
        }
    }
}

/// CNI ADD/DEL latency and pods/s: weft as it runs by default, weft with
/// pod devices on tcx, and the reference plugins. Returns the default
/// weft's lab (kept up while the guard lives) for the agent figures.
fn cni_ops(a: &Args, s: &mut Samples) -> Result<(LabGuard, Arc<control::Plugin>), String> {
    println!("# control plane: CNI");
    let g = "control plane";
    // weft: one node, a pod CIDR large enough for the test. Pod devices
    // get legacy tc filters (the default on every kernel).
    let (guard, weft) = weft_node(CONTROL_LAB, "weft", "10.250.0.0/20", &[])?;
    // weft again with pod devices on tcx links: a tcx attach waits for an
    // RCU grace period under RTNL, a legacy filter does not.
    let (_tguard, weft_tcx) =
        weft_node("bctlt", "weft, pod devices on tcx", "10.251.0.0/20", &[("WEFT_TC_MODE", "tcx")])?;
    // The reference plugins, in a node namespace of their own.
    let bridge_node = "weft-bench-cpn";
    let _ = weft_net::netns::delete(bridge_node);
    weft_net::netns::add(bridge_node).map_err(|e| e.to_string())?;
    let _bguard = NsGuard(bridge_node);
    let state = std::env::temp_dir().join(format!("weft-bench-hostlocal-{}", std::process::id()));
    let _sguard = DirGuard(state.clone());
    let bridge = Arc::new(control::bridge_plugin(bridge_node, &state));

    for round in 0..a.rounds.min(3) {
        // Each round starts with another subject, so none always follows
        // the same one.
        let mut order = [(0, &weft), (1, &weft_tcx), (2, &bridge)];
        order.rotate_left(round % 3);
        for (i, p) in order {
            let pods = control::Pods::new(&format!("{i}r{round}"), a.pods)?;
            let (adds, dels) = control::latencies(p, &pods)?;
            let base = p.name.starts_with("bridge");
            for (metric, v) in [("CNI ADD latency", &adds), ("CNI DEL latency", &dels)] {
                s.add(
                    g,
                    &format!("{metric}, p50 over {} pods", a.pods),
                    "ms",
                    false,
                    p.name,
                    base,
                    report::percentile(v, 0.5),
                );
                s.add(
                    g,
                    &format!("{metric}, p99 over {} pods", a.pods),
                    "ms",
                    false,
                    p.name,
                    base,
                    report::percentile(v, 0.99),
                );
            }
            let r = control::rate(p.clone(), &pods, false)?;
            println!("{}: {:.0} pods/s, {:.0}% of the cores busy", p.name, r.pods_per_sec, r.busy * 100.0);
            s.add(g, "pods per second, 8 concurrent ADDs", "pods/s", true, p.name, base, r.pods_per_sec);
            s.add(
                g,
                "machine CPU per pod, 8 concurrent ADDs (every process and the kernel)",
                "ms",
                false,
                p.name,
                base,
                r.cpu_ms_per_pod,
            );
        }
    }
    Ok((guard, weft))
}

const CONTROL_LAB: &str = "bctl";

fn control_plane(a: &Args, s: &mut Samples) -> Result<(), String> {
    let g = "control plane";
    let lab = CONTROL_LAB;
    let (_guard, weft) = cni_ops(a, s)?;
    println!("# control plane: the agent");
    // The agent: memory idle and with many endpoints, start-to-ready.
    let mut l = weft_lab::layout::Lab::load(lab)?;
    for _ in 0..3 {
        let t = Instant::now();
        weft_lab::lifecycle::restart_agent(&l, "node1")?;
        s.add(
            g,
            "agent start-to-ready, 0 endpoints",
            "ms",
            false,
            "weft",
            false,
            t.elapsed().as_secs_f64() * 1e3,
        );
        l = weft_lab::layout::Lab::load(lab)?;
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = l.node("node1").unwrap().pid;
    s.add(
        g,
        "agent resident memory, idle",
        "MiB",
        false,
        "weft",
        false,
        control::rss_mib(pid).unwrap_or(f64::NAN),
    );
    let pods = control::Pods::new("m", a.endpoints)?;
    control::rate(weft.clone(), &pods, true)?;
    s.add(
        g,
        &format!("agent resident memory, {} endpoints", a.endpoints),
        "MiB",
        false,
        "weft",
        false,
        control::rss_mib(pid).unwrap_or(f64::NAN),
    );
    let t = Instant::now();
    weft_lab::lifecycle::restart_agent(&l, "node1")?;
    s.add(
        g,
        &format!("agent start-to-ready, {} endpoints", a.endpoints),
        "ms",
        false,
        "weft",
        false,
        t.elapsed().as_secs_f64() * 1e3,
    );
    control::del_all(&weft, &pods)?;
    // The scale section runs even if one before it failed.
    let earlier = propagation(a, s).and_then(|()| new_node_reach(a, s));
    let scaled = scale(a, s);
    earlier.and(scaled)
}

/// N simulated nodes on one etcd with the lab's 3 real agents: watches
/// (weft) against every node re-listing the store each second.
fn scale(a: &Args, s: &mut Samples) -> Result<(), String> {
    let p = scale::Params {
        nodes: a.scale_nodes,
        samples: a.scale_samples,
        window: std::time::Duration::from_secs(a.scale_window),
    };
    let g = format!("control plane — scale ({} simulated nodes)", p.nodes);
    let churn = format!("churn {} pods/s", scale::CHURN_PER_SEC);
    for (subject, tag, design, base) in [
        ("weft (watch)", "bscw", scale::Design::Watch, false),
        ("re-listing every second (before the watch)", "bscp", scale::Design::Poll, true),
    ] {
        println!("# scale: {subject}, {} simulated nodes", p.nodes);
        let f = scale::measure(tag, design, &p)?;
        let n = f.propagation.len();
        if f.missed > 0 {
            println!("# scale: {subject}: {} propagation samples missed the limit", f.missed);
        }
        let what = "endpoint put by a simulated node to entry in all 3 agents' ipcache";
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            let v = report::percentile(&f.propagation, q);
            s.add(&g, &format!("{what}, {name} over {n}"), "ms", false, subject, base, v);
        }
        let window = p.window.as_secs();
        for (phase, w) in [("at rest", &f.rest), (churn.as_str(), &f.churn)] {
            let cpu = format!("etcd CPU seconds per minute, {phase} ({window} s window scaled to /min)");
            s.add(&g, &cpu, "s/min", false, subject, base, w.per_min(w.etcd_cpu));
            let sent =
                format!("etcd bytes sent to clients per minute, {phase} ({window} s window scaled to /min)");
            s.add(&g, &sent, "MB/min", false, subject, base, w.per_min(w.etcd_sent_bytes) / 1e6);
            let agents = format!("agent CPU seconds per minute, 3 agents, {phase}");
            s.add(&g, &agents, "s/min", false, subject, base, w.per_min(w.agent_cpu));
            println!(
                "# scale: {phase}: bench process (the simulated nodes) {:.2} CPU s/min, {:.1} re-listings/s",
                w.per_min(w.bench_cpu),
                w.relists as f64 / w.secs
            );
        }
        // What the load really was: an overloaded etcd slows the re-listing
        // and the churn's writes below what was asked for.
        let churned = f.churn_events as f64 / 2.0 / f.churn.secs;
        s.add(
            &g,
            &format!("churn achieved (asked: {} pods/s)", scale::CHURN_PER_SEC),
            "pods/s",
            true,
            subject,
            base,
            churned,
        );
        if design == scale::Design::Poll {
            let metric = format!("simulated nodes' re-listings per second, at rest (asked: {})", p.nodes);
            s.add(&g, &metric, "1/s", true, subject, base, f.rest.relists as f64 / f.rest.secs);
        }
        let per_k = f.churn.agent_cpu / f.churn_events.max(1) as f64 * 1000.0;
        let metric = format!("agent CPU seconds per 1,000 endpoint events, 3 agents, {churn}");
        s.add(&g, &metric, "s", false, subject, base, per_k);
    }
    Ok(())
}

/// A one-node weft lab (local store, pod CIDR `cidr`, `env` for its agent)
/// and the CNI plugin configured for it; the lab goes when the guard drops.
fn weft_node(
    lab: &'static str,
    name: &'static str,
    cidr: &str,
    env: &[(&str, &str)],
) -> Result<(LabGuard, Arc<control::Plugin>), String> {
    let _ = weft_lab::down(lab);
    let mut opts = weft_lab::Options::new(lab, 1, 0)?;
    opts.pod_cidr = Some(cidr.into());
    opts.agent_env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let l = weft_lab::up(&opts)?;
    let guard = LabGuard(lab);
    let node = l.node("node1").ok_or("the lab has no node1")?;
    let plugin = control::Plugin {
        name,
        binary: opts.cni_bin.clone(),
        node_ns: format!("/run/netns/{}", node.netns),
        config: weft_lab::cni::plugin_config(&node.socket, "1.0.0"),
        agent: Some(node.socket.clone()),
    };
    Ok((guard, Arc::new(plugin)))
}

/// ADD on node1 -> entry in node2's and node3's ipcache, and a relabel ->
/// new identity everywhere: with the watch, and with the agents re-listing
/// the store every second (the design before it) as the baseline.
fn propagation(a: &Args, s: &mut Samples) -> Result<(), String> {
    let g = "control plane";
    let relabels = (a.pods / 10).max(5);
    for (subject, tag, env, base) in [
        ("weft (watch)", "bprop", vec![], false),
        ("weft, re-listing every second (before the watch)", "bpoll", vec![("WEFT_IPCACHE", "poll")], true),
    ] {
        println!("# propagation: {subject}");
        let f = propagation::measure(tag, a.pods, relabels, &env)?;
        for (what, v) in [
            ("ADD on node1 to entry in every other node's ipcache", &f.add),
            ("pod label to new identity in every node's ipcache", &f.relabel),
        ] {
            let n = v.len();
            s.add(
                g,
                &format!("{what}, p50 over {n}"),
                "ms",
                false,
                subject,
                base,
                report::percentile(v, 0.5),
            );
            s.add(
                g,
                &format!("{what}, p99 over {n}"),
                "ms",
                false,
                subject,
                base,
                report::percentile(v, 0.99),
            );
        }
    }
    Ok(())
}

/// Time from starting a new node's agent until it knows every existing pod
/// (its ipcache) and reaches each of them (which also needs the existing
/// nodes to have learned the new node: they drop packets from unknown
/// nodes).
fn new_node_reach(a: &Args, s: &mut Samples) -> Result<(), String> {
    let lab = "bgrow";
    let _ = weft_lab::down(lab);
    let mut opts = weft_lab::Options::new(lab, 2, 2)?;
    opts.mode = Some("vxlan".into());
    let mut l = weft_lab::up(&opts)?;
    let _guard = LabGuard(lab);
    for _ in 0..a.rounds.min(3) {
        let pods: Vec<String> = l.pods.iter().map(|p| p.ip.to_string()).collect();
        let t = Instant::now();
        let node = weft_lab::lifecycle::add_node(&mut l)?;
        let ns = format!("/run/netns/{}", node.netns);
        for pod in pods {
            let ns = ns.clone();
            let reached = weft_net::netns::run_in(std::path::Path::new(&ns), move || {
                let start = Instant::now();
                while start.elapsed() < std::time::Duration::from_secs(30) {
                    let ok = std::process::Command::new("ping").args(["-c", "1", "-W", "1", &pod]).output();
                    if ok.is_ok_and(|o| o.status.success()) {
                        return Ok(true);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Ok(false)
            })
            .map_err(|e| e.to_string())?;
            if !reached {
                return Err("a new node could not reach an existing pod within 30 s".into());
            }
        }
        let metric = "new node: start to reaching every existing pod";
        s.add("control plane", metric, "ms", false, "weft", false, t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}

struct LabGuard(&'static str);
impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = weft_lab::down(self.0);
    }
}

struct NsGuard(&'static str);
impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = weft_net::netns::delete(self.0);
    }
}

struct DirGuard(PathBuf);
impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), Linux {}", kernel.trim())
}

fn date() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Replaces the text between the bench markers in the README.
fn update_readme(path: &std::path::Path, md: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let (start, end) = ("<!-- bench:start -->", "<!-- bench:end -->");
    let (Some(a), Some(b)) = (text.find(start), text.find(end)) else {
        return Err(format!("{} has no {start} ... {end} markers", path.display()));
    };
    let new = format!("{}{start}\n{md}\n{}", &text[..a], &text[b..]);
    std::fs::write(path, new).map_err(|e| e.to_string())
}
