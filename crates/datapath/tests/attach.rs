//! Attaching the real programs to a real device in a throwaway namespace,
//! both ways: legacy tc (clsact + cls_bpf direct-action) and tcx. Needs
//! root; run by `make test`.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};
use weft_datapath::{
    Attach, AttachPlan, Datapath, Hook, TcMode,
    loader::{PROG_FROM_CONTAINER, legacy_filters, pin_dir},
    tc::{LEGACY_HANDLE, LEGACY_PRIORITY},
};

const LXC: &str = "lxcweft0";
const HOST: &str = "weft_host";

/// A namespace with two veth pairs and a bpffs directory, both removed on
/// drop (also when the test panics).
struct Fixture {
    ns: String,
    base: PathBuf,
}

impl Fixture {
    fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let ns = format!("weft-t-{}-{tag}{n}", std::process::id());
        let base = PathBuf::from(format!("/sys/fs/bpf/weft-test-{}-{tag}{n}", std::process::id()));
        let _ = weft_net::netns::delete(&ns);
        let _ = std::fs::remove_dir_all(&base);
        weft_net::netns::add(&ns).unwrap();
        let f = Fixture { ns, base };
        f.run(|| {
            weft_net::ip::batch(&[
                format!("link add {LXC} type veth peer name weftpeer0"),
                format!("link add {HOST} type veth peer name weft_net"),
                format!("link set {LXC} up"),
                format!("link set {HOST} up"),
            ])
            .unwrap()
        });
        f
    }

    /// Runs `f` on a thread inside the namespace (setns stays on that thread).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = PathBuf::from("/run/netns").join(&self.ns);
        weft_net::netns::run_in(&path, move || Ok(f())).unwrap()
    }

    fn load(&self, mode: TcMode) -> Datapath {
        Datapath::load_with(&self.base, mode).expect("load datapath (are you root?)")
    }

    /// `tc filter show dev DEV HOOK` inside the namespace.
    fn tc_show(&self, dev: &str, hook: &str) -> String {
        let (dev, hook) = (dev.to_string(), hook.to_string());
        let out = self.run(move || {
            std::process::Command::new("tc").args(["filter", "show", "dev", &dev, &hook]).output().unwrap()
        });
        assert!(out.status.success(), "tc: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pins(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(pin_dir(&self.base).join("links"))
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = weft_net::netns::delete(&self.ns);
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// weft's filters on a hook as (priority, handle, program name).
fn ours(f: &Fixture, dev: &str, hook: Hook) -> Vec<(u16, u32, String)> {
    let dev = dev.to_string();
    f.run(move || legacy_filters(&dev, hook).into_iter().map(|x| (x.priority, x.handle, x.name)).collect())
}

fn one_filter(prog: &str) -> Vec<(u16, u32, String)> {
    vec![(LEGACY_PRIORITY, LEGACY_HANDLE, prog.to_string())]
}

#[test]
fn legacy_attach_is_a_direct_action_filter_and_no_pin() {
    let f = Fixture::new("lga");
    f.run({
        let mut dp = f.load(TcMode::Legacy);
        move || {
            assert_eq!(dp.attach_mode(), AttachPlan::uniform(Attach::Legacy));
            assert!(!dp.is_attached(LXC, Hook::Ingress));
            dp.attach_lxc(LXC).unwrap();
            dp.attach_host(HOST).unwrap();
            assert!(dp.is_attached(LXC, Hook::Ingress));
            assert!(!dp.is_attached(LXC, Hook::Egress), "from-container hangs on ingress only");
            assert!(dp.is_attached(HOST, Hook::Egress), "from-host hangs on egress");
            assert!(!dp.is_attached(HOST, Hook::Ingress));
            assert_eq!(dp.attached_devices(), vec![LXC.to_string(), HOST.to_string()]);
            let filters =
                weft_datapath::tc::bpf_filters(weft_datapath::tc::ifindex(LXC).unwrap(), 0xffff_fff2)
                    .unwrap();
            assert_eq!(filters.len(), 1, "{filters:?}");
            assert!(filters[0].direct_action, "{filters:?}");
            assert!(filters[0].prog_id.is_some(), "{filters:?}");
        }
    });
    let out = f.tc_show(LXC, "ingress");
    assert!(out.contains("from_container") && out.contains("direct-action"), "{out}");
    assert!(out.contains("pref 1 "), "{out}");
    assert!(f.tc_show(HOST, "egress").contains("from_host"));
    assert!(f.pins().is_empty(), "legacy mode pins no link: {:?}", f.pins());
}

#[test]
fn legacy_reattach_and_restart_keep_exactly_one_filter() {
    let f = Fixture::new("lgr");
    let first_id = f.run({
        let mut dp = f.load(TcMode::Legacy);
        move || {
            dp.attach_lxc(LXC).unwrap();
            let id = legacy_filters(LXC, Hook::Ingress)[0].prog_id;
            // Attaching again (the repair loop, or adopt on restart) replaces
            // the program in place.
            dp.attach_lxc(LXC).unwrap();
            dp.attach_lxc(LXC).unwrap();
            id
        }
    });
    assert_eq!(ours(&f, LXC, Hook::Ingress), one_filter(PROG_FROM_CONTAINER));

    // The agent exits: its objects are gone, the filter stays.
    assert_eq!(ours(&f, LXC, Hook::Ingress), one_filter(PROG_FROM_CONTAINER));
    // A restarted agent finds it, and attaching swaps the program in it.
    let (attached, devices, new_id) = f.run({
        let mut dp = f.load(TcMode::Legacy);
        move || {
            let attached = dp.is_attached(LXC, Hook::Ingress);
            let devices = dp.attached_devices();
            dp.attach_lxc(LXC).unwrap();
            (attached, devices, legacy_filters(LXC, Hook::Ingress)[0].prog_id)
        }
    });
    assert!(attached, "the restarted agent sees the filter left attached");
    assert_eq!(devices, vec![LXC.to_string()]);
    assert_eq!(ours(&f, LXC, Hook::Ingress), one_filter(PROG_FROM_CONTAINER));
    assert_ne!(first_id, new_id, "the new agent's program runs in the filter");
    let shown = f.tc_show(LXC, "ingress");
    assert_eq!(shown.matches("direct-action").count(), 1, "one filter: {shown}");
}

#[test]
fn legacy_attach_removes_a_stray_copy_at_another_priority() {
    let f = Fixture::new("lgs");
    f.run({
        let mut dp = f.load(TcMode::Legacy);
        move || {
            // A copy of from-container at another priority (e.g. attached by
            // hand) would run twice.
            aya::programs::tc::qdisc_add_clsact(LXC).unwrap();
            let prog = dp.program(PROG_FROM_CONTAINER).unwrap();
            let opts = aya::programs::tc::NlOptions { priority: 7, ..Default::default() };
            let id = prog
                .attach_with_options(
                    LXC,
                    aya::programs::TcAttachType::Ingress,
                    aya::programs::tc::TcAttachOptions::Netlink(opts),
                )
                .unwrap();
            std::mem::forget(prog.take_link(id).unwrap());
            assert_eq!(legacy_filters(LXC, Hook::Ingress).len(), 1);
            dp.attach_lxc(LXC).unwrap();
        }
    });
    assert_eq!(ours(&f, LXC, Hook::Ingress), one_filter(PROG_FROM_CONTAINER));
}

#[test]
fn legacy_detach_removes_the_filters_and_leaves_other_devices() {
    let f = Fixture::new("lgd");
    let (after_lxc, after_all) = f.run({
        let mut dp = f.load(TcMode::Legacy);
        move || {
            dp.attach_lxc(LXC).unwrap();
            dp.attach_host(HOST).unwrap();
            dp.detach(LXC);
            let after_lxc = (dp.is_attached(LXC, Hook::Ingress), dp.attached_devices());
            dp.detach(HOST);
            dp.detach("weftnosuchdev"); // a vanished device is no error
            let e = dp.attach_lxc("weftnosuchdev").unwrap_err().to_string();
            assert!(e.contains("device weftnosuchdev does not exist"), "{e}");
            (after_lxc, dp.attached_devices())
        }
    });
    assert_eq!(after_lxc, (false, vec![HOST.to_string()]));
    assert!(after_all.is_empty(), "{after_all:?}");
    assert!(ours(&f, LXC, Hook::Ingress).is_empty());
    assert!(ours(&f, HOST, Hook::Egress).is_empty());
    assert!(!f.tc_show(LXC, "ingress").contains("from_container"));
}

#[test]
fn switching_between_tcx_and_legacy_leaves_one_datapath_per_hook() {
    let f = Fixture::new("sw");
    f.run({
        let mut dp = f.load(TcMode::Tcx);
        move || {
            assert_eq!(dp.attach_mode(), AttachPlan::uniform(Attach::Tcx));
            dp.attach_lxc(LXC).unwrap();
            assert!(dp.is_attached(LXC, Hook::Ingress));
        }
    });
    assert_eq!(f.pins(), vec![format!("{LXC}_ingress")]);
    assert!(ours(&f, LXC, Hook::Ingress).is_empty(), "tcx uses no tc filter");

    // Restarted in legacy mode: the filter replaces the tcx link.
    f.run({
        let mut dp = f.load(TcMode::Legacy);
        move || dp.attach_lxc(LXC).unwrap()
    });
    assert!(f.pins().is_empty(), "the tcx link is gone: {:?}", f.pins());
    assert_eq!(ours(&f, LXC, Hook::Ingress), one_filter(PROG_FROM_CONTAINER));

    // And back to tcx: the legacy filter goes.
    f.run({
        let mut dp = f.load(TcMode::Tcx);
        move || dp.attach_lxc(LXC).unwrap()
    });
    assert_eq!(f.pins(), vec![format!("{LXC}_ingress")]);
    assert!(ours(&f, LXC, Hook::Ingress).is_empty());
}

#[test]
fn auto_picks_tcx_for_node_devices_and_legacy_for_pods_on_this_kernel() {
    // The test machine runs 6.18; the probe must not misread it.
    assert!(weft_datapath::tc::kernel_has_tcx());
    assert_eq!(TcMode::Auto.resolve().0, AttachPlan { node: Attach::Tcx, pods: Attach::Legacy });
}

#[test]
fn auto_attaches_the_pod_device_with_a_filter_and_the_host_device_with_a_link() {
    let f = Fixture::new("mix");
    f.run({
        let mut dp = f.load(TcMode::Auto);
        move || {
            assert!(dp.lxc_attacher().unwrap().is_none(), "pod devices attach with legacy tc");
            dp.attach_lxc(LXC).unwrap();
            dp.attach_host(HOST).unwrap();
            assert!(dp.is_attached(LXC, Hook::Ingress));
            assert!(dp.is_attached(HOST, Hook::Egress));
            assert_eq!(dp.attached_devices(), vec![LXC.to_string(), HOST.to_string()]);
        }
    });
    assert_eq!(f.pins(), vec![format!("{HOST}_egress")], "only the node device has a link");
    assert_eq!(ours(&f, LXC, Hook::Ingress), one_filter(PROG_FROM_CONTAINER));
    assert!(ours(&f, HOST, Hook::Egress).is_empty(), "the node device has no filter");
}

#[test]
fn a_new_device_is_attached_from_the_program_fd_alone_and_the_datapath_adopts_the_link() {
    let f = Fixture::new("fd");
    f.run({
        let mut dp = f.load(TcMode::Tcx);
        move || {
            let attacher = dp.lxc_attacher().unwrap().expect("tcx mode hands out an attacher");
            assert!(attacher.attach_new(LXC).unwrap(), "a fresh device gets a new link");
            assert!(dp.is_attached(LXC, Hook::Ingress), "the datapath sees the pinned link");
            assert!(!attacher.attach_new(LXC).unwrap(), "a pinned link is the datapath's to swap");
            let err = attacher.attach_new("weftnodev").unwrap_err().to_string();
            assert!(err.contains("weftnodev") && err.contains("no such device"), "{err}");
            // The datapath's own attach swaps the program in that link.
            dp.attach_lxc(LXC).unwrap();
            dp.detach(LXC);
            assert!(!dp.is_attached(LXC, Hook::Ingress));
        }
    });
    assert!(f.pins().is_empty(), "detach removed the pin: {:?}", f.pins());
    f.run({
        let dp = f.load(TcMode::Legacy);
        move || assert!(dp.lxc_attacher().unwrap().is_none(), "legacy mode attaches under the lock")
    });
}
