//! What the datapath needs from the kernel, and a readable answer when a
//! load fails on a kernel that lacks it: the verifier's "unknown func" or
//! an EINVAL from map creation name no kernel version, so the probes below
//! do.

use crate::loader::Error;
use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported},
};

/// The oldest kernel with everything in [`FEATURES`] (bpf_redirect_peer
/// and bpf_redirect_neigh came last, in 5.10).
pub const MINIMUM_KERNEL: &str = "5.10";

/// A kernel feature the programs use, and the release that brought it.
pub enum Feature {
    Map(MapType, &'static str),
    Helper(BpfHelper, &'static str),
}

pub const FEATURES: &[(Feature, &str)] = &[
    (Feature::Map(MapType::RingBuf, "ring buffer maps (BPF_MAP_TYPE_RINGBUF)"), "5.8"),
    (Feature::Map(MapType::LpmTrie, "LPM trie maps (BPF_MAP_TYPE_LPM_TRIE)"), "4.11"),
    (Feature::Helper(BpfHelper::BPF_FUNC_ringbuf_reserve, "bpf_ringbuf_reserve"), "5.8"),
    (Feature::Helper(BpfHelper::BPF_FUNC_redirect_peer, "bpf_redirect_peer"), "5.10"),
    (Feature::Helper(BpfHelper::BPF_FUNC_redirect_neigh, "bpf_redirect_neigh"), "5.10"),
    (Feature::Helper(BpfHelper::BPF_FUNC_skb_adjust_room, "bpf_skb_adjust_room"), "4.13"),
    (Feature::Helper(BpfHelper::BPF_FUNC_skb_set_tunnel_key, "bpf_skb_set_tunnel_key"), "4.3"),
];

/// The features this kernel lacks, as "what (Linux N)" lines. A probe that
/// cannot decide counts as present: only a clear "no" is reported.
pub fn missing_features() -> Vec<String> {
    FEATURES
        .iter()
        .filter_map(|(f, since)| {
            let (present, name) = match f {
                Feature::Map(t, name) => (is_map_supported(*t).unwrap_or(true), name),
                Feature::Helper(h, name) => {
                    (is_helper_supported(ProgramType::SchedClassifier, *h).unwrap_or(true), name)
                }
            };
            (!present).then(|| format!("{name} (Linux {since})"))
        })
        .collect()
}

/// The running kernel's release (uname -r).
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// A load error, with the kernel features that are missing when that is
/// the likely cause.
pub fn explain(msg: String) -> Error {
    let missing = missing_features();
    if missing.is_empty() {
        return Error(msg);
    }
    Error(format!(
        "{msg}\nthis kernel ({}) lacks {}; weft needs Linux {MINIMUM_KERNEL} or newer",
        release(),
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_kernel_has_every_feature_the_datapath_uses() {
        // Needs root (the probes load programs); the test machine runs 6.18.
        assert_eq!(super::missing_features(), Vec::<String>::new());
    }
}
