//! Crash points for tests. `WEFT_CRASH_AT=<step>` in the agent's
//! environment makes it SIGKILL itself when it reaches the named step of
//! ADD or DEL, so a test can check that a restart finishes or undoes
//! whatever was half done. Unset (always, outside tests) it costs one
//! comparison per step.

use std::sync::OnceLock;

/// Every step a test can stop at, in the order ADD and DEL pass them.
pub const STEPS: &[&str] = &[
    "add:after-ipam",
    "add:after-identity",
    "add:after-journal",
    "add:after-veth",
    "add:after-datapath",
    "add:after-pod-config",
    "add:after-publish",
    "add:after-ready",
    "del:after-journal",
    "del:after-datapath",
    "del:after-store",
    "del:after-device",
    "del:after-forget",
];

/// The steps of a DEL that run after it has answered (in the repair thread,
/// see `removal`): a crash there comes after a successful DEL.
pub const AFTER_DEL_ANSWERED: &[&str] = &["del:after-device", "del:after-forget"];

fn armed() -> Option<&'static str> {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    AT.get_or_init(|| std::env::var("WEFT_CRASH_AT").ok().filter(|s| !s.is_empty())).as_deref()
}

/// Dies on the spot (as SIGKILL would kill it) if `step` is armed.
pub fn point(step: &str) {
    debug_assert!(STEPS.contains(&step), "unknown crash point {step}");
    if armed() == Some(step) {
        log::warn!("WEFT_CRASH_AT={step}: killing myself here");
        // SAFETY: kill(2) of our own process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
