//! `weft monitor`: the agent streams decoded datapath events; this prints
//! them one per line like `cilium monitor`, as JSON (-j), or into a pcap.

use crate::pcap::PcapWriter;
use clap::Args;
use std::{io::BufRead, io::Write, path::PathBuf};
use weft_api::{Client, MonitorRequest, Request};
use weft_datapath::events::MonitorEvent;

#[derive(Args)]
pub struct MonitorArgs {
    /// Only events about this endpoint (as source or destination).
    #[arg(long = "related-to")]
    related_to: Option<u16>,
    /// Only these event types: trace, drop, debug, capture, policy-verdict,
    /// trace-sock (socket load balancing).
    #[arg(short = 't', long = "type")]
    types: Vec<String>,
    /// Also show debug and capture events.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// One JSON object per event.
    #[arg(short = 'j', long)]
    json: bool,
    /// Also write every captured packet head to this pcap file.
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Stop after this many events (for scripts).
    #[arg(long)]
    count: Option<u64>,
}

const TYPES: [&str; 6] = ["trace", "drop", "debug", "capture", "policy-verdict", "trace-sock"];

pub fn run(client: &Client, a: MonitorArgs) -> Result<(), String> {
    for t in &a.types {
        if !TYPES.contains(&t.as_str()) {
            return Err(format!("unknown event type {t:?}; use one of {}", TYPES.join(", ")));
        }
    }
    let debug = a.verbose || a.types.iter().any(|t| t == "debug" || t == "capture");
    let reader = client.stream(&Request::Monitor(MonitorRequest { debug })).map_err(|e| e.to_string())?;
    let mut pcap = match &a.pcap {
        Some(p) => Some(PcapWriter::create(p).map_err(|e| format!("cannot write {}: {e}", p.display()))?),
        None => None,
    };
    if !a.json {
        println!("Listening for events. Press Ctrl-C to quit");
    }
    let stdout = std::io::stdout();
    let mut seen = 0u64;
    for line in reader.lines() {
        let line = line.map_err(|e| format!("connection to the agent lost: {e}"))?;
        let Ok(ev) = serde_json::from_str::<MonitorEvent>(&line) else { continue };
        if !a.types.is_empty() && !a.types.contains(&ev.kind) {
            continue;
        }
        if let Some(ep) = a.related_to
            && !ev.related_to(ep)
        {
            continue;
        }
        if let Some(w) = pcap.as_mut()
            && ev.kind != "debug"
        {
            w.write(&ev.packet(), ev.bytes).map_err(|e| format!("pcap: {e}"))?;
        }
        let mut out = stdout.lock();
        let printed = if a.json { writeln!(out, "{line}") } else { writeln!(out, "{}", ev.line()) };
        if printed.and_then(|_| out.flush()).is_err() {
            return Ok(()); // stdout closed (e.g. piped into head)
        }
        seen += 1;
        if a.count.is_some_and(|c| seen >= c) {
            return Ok(());
        }
    }
    Err("the agent closed the event stream".into())
}
