//! Loading the objects, pinning maps and links, and the typed map accessors
//! the agent uses. One `Datapath` per node; its state lives in bpffs under
//! `<base>/v<ABI>/` so it outlives the agent process.

use crate::maps::*;
use crate::tc::{self as tcnl, Attach, AttachPlan, BpfFilter, LEGACY_HANDLE, LEGACY_PRIORITY, TcMode};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        HashMap as BpfHashMap, Map, MapData, PerCpuArray, ProgramArray, RingBuf,
        array::Array,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{
        Link as _, LinkOrder, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
    },
};
use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

/// The clang-built objects, embedded at build time (see build.rs).
pub const LXC_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lxc.o"));
pub const HOST_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/host.o"));
pub const OVERLAY_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/overlay.o"));
pub const NETDEV_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netdev.o"));

pub const PROG_FROM_CONTAINER: &str = "from_container";
pub const PROG_FROM_HOST: &str = "from_host";
pub const PROG_FROM_OVERLAY: &str = "from_overlay";
pub const PROG_FROM_NETWORK: &str = "from_network";
pub const PROG_TO_NETWORK: &str = "to_network";

#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Error {}

fn err<E: fmt::Display>(what: impl fmt::Display) -> impl FnOnce(E) -> Error {
    move |e| Error(format!("{what}: {e}"))
}

/// The versioned directory for a node's pins: `<base>/v<ABI>`.
pub fn pin_dir(base: &Path) -> PathBuf {
    base.join(format!("v{ABI_VERSION}"))
}

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Mounts bpffs on /sys/fs/bpf unless it is mounted already.
pub fn ensure_bpffs() -> Result<(), Error> {
    let path = c"/sys/fs/bpf";
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let _ = fs::create_dir_all("/sys/fs/bpf");
    // SAFETY: plain mount(2) call with valid C strings.
    let rc = unsafe { libc::mount(c"bpf".as_ptr(), path.as_ptr(), c"bpf".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(Error(format!(
            "bpffs is not mounted on /sys/fs/bpf and mounting it failed: {} (run as root, or `mount -t bpf bpf /sys/fs/bpf`)",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Which way a tcx program sees the device's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    fn tc(self) -> TcAttachType {
        match self {
            Hook::Ingress => TcAttachType::Ingress,
            Hook::Egress => TcAttachType::Egress,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }
    fn parent(self) -> u32 {
        match self {
            Hook::Ingress => tcnl::PARENT_INGRESS,
            Hook::Egress => tcnl::PARENT_EGRESS,
        }
    }
}

/// The pipeline stages (programs of lxc.c) and their slots in `weft_calls`
/// (`CALL_*` in `bpf/lib/pipeline.h`).
pub const STAGES: [(u32, &str); 2] =
    [(CALL_IPV4_FROM_LXC, "tail_ipv4_from_lxc"), (CALL_IPV4_TO_ENDPOINT, "tail_ipv4_to_endpoint")];

/// Puts the freshly loaded stages into the pinned program array. Programs
/// attached by an earlier agent tail-call through the same array, so they
/// run the new stages from here on (same ABI: same pin directory).
fn install_stages(lxc: &mut Ebpf) -> Result<(), Error> {
    let mut fds = Vec::new();
    for (slot, name) in STAGES {
        let prog: &SchedClassifier = lxc
            .program(name)
            .ok_or_else(|| Error(format!("stage {name} missing")))?
            .try_into()
            .map_err(err(name))?;
        fds.push((slot, prog.fd().map_err(err(name))?.try_clone().map_err(err("dup program fd"))?));
    }
    let mut calls: ProgramArray<&mut MapData> = ProgramArray::try_from(
        lxc.map_mut(MAP_CALLS).ok_or_else(|| Error(format!("map {MAP_CALLS} missing")))?,
    )
    .map_err(err(MAP_CALLS))?;
    for (slot, fd) in &fds {
        calls.set(*slot, fd, 0).map_err(err(format!("{MAP_CALLS}[{slot}]")))?;
    }
    Ok(())
}

/// How to load the datapath.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub tc_mode: TcMode,
    /// Size of the TCP conntrack map when it is created.
    pub ct_tcp_max: u32,
    /// Size of the conntrack map for everything else.
    pub ct_any_max: u32,
    /// Size of the SNAT table (two entries per translated flow).
    pub nat_max: u32,
    /// Size of the service maps: frontend slots (one per frontend plus one
    /// per backend of it), backends, reverse NAT, Maglev tables.
    pub lb_max: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        let (ct_tcp_max, ct_any_max) = ct_sizes_for_memory(total_memory());
        Self {
            tc_mode: TcMode::Auto,
            ct_tcp_max,
            ct_any_max,
            nat_max: NAT_MAX_DEFAULT,
            lb_max: LB_MAX_DEFAULT,
        }
    }
}

/// Default size of the SNAT table: 64 Ki translated flows.
pub const NAT_MAX_DEFAULT: u32 = 1 << 17;

/// Default size of the service maps: room for 50,000 services of three
/// backends (four slots each). They are not preallocated: an idle node
/// pays for what it holds.
pub const LB_MAX_DEFAULT: u32 = 1 << 18;

/// Bytes one conntrack entry costs in the kernel, roughly: key and value,
/// the hash element and the LRU node.
pub const CT_ENTRY_COST: u64 = 160;

/// Conntrack sizes derived from the machine's memory, as Cilium's
/// `bpf-map-dynamic-size-ratio` (0.25 % of memory) does: two thirds for
/// TCP, a third for the rest, within [64 Ki, 4 Mi] and [32 Ki, 2 Mi].
pub fn ct_sizes_for_memory(bytes: u64) -> (u32, u32) {
    let budget = bytes / 400 / CT_ENTRY_COST;
    let tcp = (budget * 2 / 3).clamp(1 << 16, 1 << 22);
    let any = (budget / 3).clamp(1 << 15, 1 << 21);
    (tcp as u32, any as u32)
}

fn total_memory() -> u64 {
    // SAFETY: sysinfo fills the zeroed struct we own.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    if unsafe { libc::sysinfo(&mut si) } != 0 {
        return 0;
    }
    si.totalram as u64 * si.mem_unit as u64
}

/// The ipcache entry of a local endpoint: its identity, no tunnel; the
/// node's own addresses are marked as node addresses.
pub fn local_ipcache_entry(info: &EndpointInfo) -> IpcacheInfo {
    let flags = if info.flags & ENDPOINT_F_HOST != 0 { IPCACHE_F_NODE } else { 0 };
    IpcacheInfo { sec_identity: info.sec_identity, tunnel_endpoint: 0, flags, pad: 0 }
}

/// The programs weft attaches; a legacy filter is recognised as weft's by
/// its program name.
pub const PROGRAMS: [&str; 5] =
    [PROG_FROM_CONTAINER, PROG_FROM_HOST, PROG_FROM_OVERLAY, PROG_FROM_NETWORK, PROG_TO_NETWORK];

pub struct Datapath {
    dir: PathBuf,
    lxc: Ebpf,
    host: Ebpf,
    overlay: Ebpf,
    netdev: Ebpf,
    adopted: bool,
    attach: AttachPlan,
}

impl Datapath {
    /// Loads every object. Maps already pinned under `base` (from an earlier
    /// agent) are reused, not flushed: that is what lets the agent restart
    /// without disturbing traffic (conntrack entries included).
    pub fn load(base: &Path) -> Result<Self, Error> {
        Self::load_opts(base, &LoadOptions::default())
    }

    /// [`Datapath::load`] with the attach mechanism chosen by `mode`.
    pub fn load_with(base: &Path, mode: TcMode) -> Result<Self, Error> {
        Self::load_opts(base, &LoadOptions { tc_mode: mode, ..LoadOptions::default() })
    }

    /// [`Datapath::load`] with every choice spelled out.
    pub fn load_opts(base: &Path, opts: &LoadOptions) -> Result<Self, Error> {
        ensure_bpffs()?;
        let (attach, _) = opts.tc_mode.resolve();
        let dir = pin_dir(base);
        fs::create_dir_all(dir.join("links"))
            .map_err(err(format!("cannot create pin directory {}", dir.display())))?;
        let adopted = dir.join(MAP_ENDPOINTS).exists();
        let load = |obj: &[u8], names: &[&str]| -> Result<Ebpf, Error> {
            let mut bpf = EbpfLoader::new()
                .default_map_pin_directory(&dir)
                // Only the first object creates these maps (and only when
                // no earlier agent pinned them): sizes apply then.
                .map_max_entries(MAP_CT_TCP, opts.ct_tcp_max)
                .map_max_entries(MAP_CT_ANY, opts.ct_any_max)
                .map_max_entries(MAP_NAT, opts.nat_max)
                .map_max_entries(MAP_LB_SERVICES, opts.lb_max)
                .map_max_entries(MAP_LB_BACKENDS, opts.lb_max)
                .map_max_entries(MAP_LB_REVNAT, opts.lb_max.min(1 << 16))
                .map_max_entries(MAP_LB_MAGLEV, opts.lb_max.min(1 << 16))
                .load(obj)
                .map_err(|e| crate::kernel::explain(format!("loading {}: {e}", names[0])))?;
            for name in names {
                let prog: &mut SchedClassifier = bpf
                    .program_mut(name)
                    .ok_or_else(|| Error(format!("program {name} missing from object")))?
                    .try_into()
                    .map_err(err(name))?;
                prog.load().map_err(|e| crate::kernel::explain(format!("verifier rejected {name}: {e}")))?;
            }
            Ok(bpf)
        };
        let mut lxc = load(LXC_OBJ, &[PROG_FROM_CONTAINER, STAGES[0].1, STAGES[1].1])?;
        install_stages(&mut lxc)?;
        let host = load(HOST_OBJ, &[PROG_FROM_HOST])?;
        let overlay = load(OVERLAY_OBJ, &[PROG_FROM_OVERLAY])?;
        let netdev = load(NETDEV_OBJ, &[PROG_FROM_NETWORK, PROG_TO_NETWORK])?;
        Ok(Self { dir, lxc, host, overlay, netdev, adopted, attach })
    }

    /// How programs are attached (tcx links or legacy tc filters), per
    /// kind of device.
    pub fn attach_mode(&self) -> AttachPlan {
        self.attach
    }

    /// Whether the maps were found pinned (an agent restart) rather than new.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What attaching from-container to a new pod device needs, to do it
    /// without holding the datapath (tcx only; None when pod devices use
    /// legacy tc).
    pub fn lxc_attacher(&self) -> Result<Option<crate::tcx::LxcAttacher>, Error> {
        if !matches!(self.attach.pods, Attach::Tcx) {
            return Ok(None);
        }
        let prog: &SchedClassifier = self
            .lxc
            .program(PROG_FROM_CONTAINER)
            .ok_or_else(|| Error(format!("program {PROG_FROM_CONTAINER} missing")))?
            .try_into()
            .map_err(err(PROG_FROM_CONTAINER))?;
        let fd = prog.fd().map_err(err(PROG_FROM_CONTAINER))?.try_clone().map_err(err("dup program fd"))?;
        Ok(Some(crate::tcx::LxcAttacher { prog: fd, links: self.dir.join("links") }))
    }

    fn link_pin(&self, ifname: &str, hook: Hook) -> PathBuf {
        // bpffs refuses names with a dot.
        self.dir.join("links").join(format!("{ifname}_{}", hook.name()))
    }

    /// Whether weft's program is attached to the device's hook (it stays
    /// attached when no agent runs): a pinned tcx link or a cls_bpf filter
    /// carrying one of weft's programs. (Attaching in one mechanism removes
    /// the other's, so either means the hook has weft's program.)
    pub fn is_attached(&self, ifname: &str, hook: Hook) -> bool {
        self.link_pin(ifname, hook).exists() || !legacy_filters(ifname, hook).is_empty()
    }

    /// Attaches from-container to the ingress of a pod's host-side device.
    pub fn attach_lxc(&mut self, ifname: &str) -> Result<(), Error> {
        self.attach(ifname, PROG_FROM_CONTAINER, Hook::Ingress)
    }

    /// Attaches from-host to the egress of weft_host.
    pub fn attach_host(&mut self, ifname: &str) -> Result<(), Error> {
        self.attach(ifname, PROG_FROM_HOST, Hook::Egress)
    }

    /// Attaches from-overlay to the ingress of weft_vxlan.
    pub fn attach_overlay(&mut self, ifname: &str) -> Result<(), Error> {
        self.attach(ifname, PROG_FROM_OVERLAY, Hook::Ingress)
    }

    /// Attaches from-network to the ingress of the underlay device and
    /// to-network to its egress.
    pub fn attach_netdev(&mut self, ifname: &str) -> Result<(), Error> {
        self.attach(ifname, PROG_FROM_NETWORK, Hook::Ingress)?;
        self.attach(ifname, PROG_TO_NETWORK, Hook::Egress)
    }

    /// The object that holds a program.
    fn object(&mut self, prog_name: &str) -> &mut Ebpf {
        match prog_name {
            PROG_FROM_HOST => &mut self.host,
            PROG_FROM_OVERLAY => &mut self.overlay,
            PROG_FROM_NETWORK | PROG_TO_NETWORK => &mut self.netdev,
            _ => &mut self.lxc,
        }
    }

    fn attach(&mut self, ifname: &str, prog_name: &str, hook: Hook) -> Result<(), Error> {
        let mode = if prog_name == PROG_FROM_CONTAINER { self.attach.pods } else { self.attach.node };
        match mode {
            Attach::Tcx => self.attach_tcx(ifname, prog_name, hook),
            Attach::Legacy => self.attach_legacy(ifname, prog_name, hook),
        }
    }

    /// Attaches with tcx and pins the link. If a link is pinned already (the
    /// agent restarted), the running program is swapped atomically in that
    /// link (bpf_link_update): there is no moment without a program.
    fn attach_tcx(&mut self, ifname: &str, prog_name: &str, hook: Hook) -> Result<(), Error> {
        let pin = self.link_pin(ifname, hook);
        let bpf = self.object(prog_name);
        let prog: &mut SchedClassifier = bpf
            .program_mut(prog_name)
            .ok_or_else(|| Error(format!("program {prog_name} missing")))?
            .try_into()
            .map_err(err(prog_name))?;
        if pin.exists() {
            let replaced = PinnedLink::from_pin(&pin)
                .map_err(|e| Error(e.to_string()))
                .and_then(|old| {
                    FdLink::from(old)
                        .try_into()
                        .map_err(|e: aya::programs::links::LinkError| Error(e.to_string()))
                })
                .and_then(|link| prog.attach_to_link(link).map_err(|e| Error(e.to_string())));
            match replaced {
                Ok(id) => {
                    // The pin keeps the link; our handle can go.
                    let link = prog.take_link(id).map_err(err("take_link"))?;
                    drop(link);
                    return Ok(());
                }
                Err(e) => {
                    // A link whose device vanished cannot be updated: drop it.
                    log::info!("stale link pin {} ({e}); attaching anew", pin.display());
                    let _ = fs::remove_file(&pin);
                }
            }
        }
        let id = prog
            .attach_with_options(ifname, hook.tc(), TcAttachOptions::TcxOrder(LinkOrder::default()))
            .map_err(err(format!("attaching {prog_name} to {ifname} {}", hook.name())))?;
        let link = prog.take_link(id).map_err(err("take_link"))?;
        let fd: FdLink = link.try_into().map_err(err("link is not an fd link"))?;
        fd.pin(&pin).map_err(err(format!("pinning link {}", pin.display())))?;
        // A legacy filter left by an agent in legacy mode would run after
        // the tcx program: one datapath per hook.
        remove_legacy_filters(ifname, hook, |_| true);
        Ok(())
    }

    /// Attaches as a cls_bpf direct-action filter under the clsact qdisc, at
    /// weft's priority and handle. If weft's filter is there already (the
    /// agent restarted), the program is replaced in place (a change of the
    /// existing filter, no delete): there is no moment without a program.
    /// Filters of weft's programs anywhere else on the hook are removed, so
    /// there is exactly one.
    fn attach_legacy(&mut self, ifname: &str, prog_name: &str, hook: Hook) -> Result<(), Error> {
        let what = format!("attaching {prog_name} to {ifname} {} (legacy tc)", hook.name());
        if tcnl::ifindex(ifname).is_none() {
            return Err(Error(format!("{what}: device {ifname} does not exist")));
        }
        add_clsact(ifname)?;
        let ours = legacy_filters(ifname, hook);
        let in_place = ours.iter().any(|f| f.priority == LEGACY_PRIORITY && f.handle == LEGACY_HANDLE);
        let prog: &mut SchedClassifier = self
            .object(prog_name)
            .program_mut(prog_name)
            .ok_or_else(|| Error(format!("program {prog_name} missing")))?
            .try_into()
            .map_err(err(prog_name))?;
        let id = if in_place {
            let existing = SchedClassifierLink::attached(
                ifname,
                hook.tc(),
                LEGACY_PRIORITY,
                TcHandle::from(LEGACY_HANDLE),
                None,
            )
            .map_err(err(&what))?;
            prog.attach_to_link(existing)
        } else {
            let opts =
                NlOptions { priority: LEGACY_PRIORITY, handle: TcHandle::from(LEGACY_HANDLE), classid: None };
            prog.attach_with_options(ifname, hook.tc(), TcAttachOptions::Netlink(opts))
        }
        .map_err(err(&what))?;
        // Dropping aya's handle would delete the filter; like a pinned link
        // it must outlive this agent. The handle holds no resource (no fd),
        // so forgetting it leaks nothing.
        std::mem::forget(prog.take_link(id).map_err(err("take_link"))?);
        remove_legacy_filters(ifname, hook, |f| (f.priority, f.handle) != (LEGACY_PRIORITY, LEGACY_HANDLE));
        // A tcx link from an agent in tcx mode would run before the filter.
        let _ = fs::remove_file(self.link_pin(ifname, hook));
        Ok(())
    }

    /// Detaches whatever weft attached to the device: link pins and, in
    /// either mode, weft's legacy filters.
    pub fn detach(&self, ifname: &str) {
        for hook in [Hook::Ingress, Hook::Egress] {
            let _ = fs::remove_file(self.link_pin(ifname, hook));
            remove_legacy_filters(ifname, hook, |_| true);
        }
    }

    /// Names of devices with weft's program attached (for reconciliation):
    /// those with a pinned link, and (when any device uses legacy tc) those
    /// with a filter of weft's on either hook.
    pub fn attached_devices(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir(self.dir.join("links")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if let Some((dev, _)) = name.rsplit_once('_') {
                    out.push(dev.to_string());
                }
            }
        }
        if self.attach.node == Attach::Legacy || self.attach.pods == Attach::Legacy {
            for (_, dev) in tcnl::devices() {
                if [Hook::Ingress, Hook::Egress].into_iter().any(|h| !legacy_filters(&dev, h).is_empty()) {
                    out.push(dev);
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn map(&mut self, name: &str) -> Result<&mut Map, Error> {
        self.lxc.map_mut(name).ok_or_else(|| Error(format!("map {name} missing")))
    }

    pub fn endpoints(&mut self) -> Result<BpfHashMap<&mut MapData, EndpointKey, EndpointInfo>, Error> {
        BpfHashMap::try_from(self.map(MAP_ENDPOINTS)?).map_err(err(MAP_ENDPOINTS))
    }

    pub fn lxc(&mut self) -> Result<BpfHashMap<&mut MapData, u32, LxcInfo>, Error> {
        BpfHashMap::try_from(self.map(MAP_LXC)?).map_err(err(MAP_LXC))
    }

    fn config_map(&mut self) -> Result<Array<&mut MapData, WeftConfig>, Error> {
        Array::try_from(self.map(MAP_CONFIG)?).map_err(err(MAP_CONFIG))
    }

    pub fn config(&mut self) -> Result<WeftConfig, Error> {
        self.config_map()?.get(&0, 0).map_err(err("reading weft_config"))
    }

    pub fn set_config(&mut self, cfg: WeftConfig) -> Result<(), Error> {
        self.config_map()?.set(0, cfg, 0).map_err(err("writing weft_config"))
    }

    /// Writes a local endpoint (a pod, or one of the node's own addresses
    /// with ENDPOINT_F_HOST) and its ipcache entry: the ipcache is the one
    /// place the datapath learns any address's identity from.
    pub fn put_endpoint(&mut self, ip: std::net::Ipv4Addr, info: EndpointInfo) -> Result<(), Error> {
        self.put_ipcache(ip, 32, local_ipcache_entry(&info))?;
        self.endpoints()?
            .insert(EndpointKey::new(ip), info, 0)
            .map_err(err(format!("writing endpoint {ip} (is weft_endpoints full?)")))
    }

    pub fn put_lxc(&mut self, ifindex: u32, info: LxcInfo) -> Result<(), Error> {
        self.lxc()?.insert(ifindex, info, 0).map_err(err(format!("writing weft_lxc {ifindex} (is it full?)")))
    }

    /// Removes a local endpoint and its ipcache entry.
    pub fn del_endpoint(&mut self, ip: std::net::Ipv4Addr) {
        if let Ok(mut m) = self.endpoints() {
            let _ = m.remove(&EndpointKey::new(ip));
        }
        self.del_ipcache(ip, 32);
    }

    pub fn list_endpoints(&mut self) -> Result<Vec<(std::net::Ipv4Addr, EndpointInfo)>, Error> {
        let m = self.endpoints()?;
        let mut out: Vec<_> = m.iter().filter_map(|r| r.ok()).map(|(k, v)| (be_to_ip(k.ip4), v)).collect();
        out.sort_by_key(|(ip, _)| *ip);
        Ok(out)
    }

    /// Takes the event ring buffer out (call once; the agent's reader owns it).
    /// Packets dropped since the maps were created, per reason (summed over
    /// CPUs); reasons without drops are left out.
    pub fn drop_counts(&mut self) -> Result<Vec<(u8, u64)>, Error> {
        let counts: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(self.map(MAP_DROPS)?).map_err(err(MAP_DROPS))?;
        let mut out = Vec::new();
        for reason in 0..=255u8 {
            let n: u64 = counts.get(&(reason as u32), 0).map_err(err(MAP_DROPS))?.iter().sum();
            if n > 0 {
                out.push((reason, n));
            }
        }
        Ok(out)
    }

    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, Error> {
        let map = self
            .lxc
            .take_map(MAP_EVENTS)
            .ok_or_else(|| Error("events map missing (taken already?)".into()))?;
        RingBuf::try_from(map).map_err(err(MAP_EVENTS))
    }

    /// The loaded program, for BPF_PROG_TEST_RUN and statistics.
    pub fn program(&mut self, name: &str) -> Option<&mut SchedClassifier> {
        self.object(name).program_mut(name)?.try_into().ok()
    }

    pub fn ipcache(&mut self) -> Result<LpmTrie<&mut MapData, u32, IpcacheInfo>, Error> {
        LpmTrie::try_from(self.map(MAP_IPCACHE)?).map_err(err(MAP_IPCACHE))
    }

    pub fn put_ipcache(
        &mut self,
        ip: std::net::Ipv4Addr,
        prefix: u8,
        info: IpcacheInfo,
    ) -> Result<(), Error> {
        let key = Key::new(prefix as u32, ip_to_be(ip));
        self.ipcache()?
            .insert(&key, info, 0)
            .map_err(err(format!("writing ipcache {ip}/{prefix} (is weft_ipcache full?)")))
    }

    pub fn del_ipcache(&mut self, ip: std::net::Ipv4Addr, prefix: u8) {
        if let Ok(mut m) = self.ipcache() {
            let _ = m.remove(&Key::new(prefix as u32, ip_to_be(ip)));
        }
    }

    /// Every ipcache entry as (address, prefix length, value), sorted.
    pub fn list_ipcache(&mut self) -> Result<Vec<(std::net::Ipv4Addr, u8, IpcacheInfo)>, Error> {
        let m = self.ipcache()?;
        let mut out: Vec<_> = m
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| (be_to_ip(k.data()), k.prefix_len() as u8, v))
            .collect();
        out.sort_by_key(|(ip, p, _)| (*ip, *p));
        Ok(out)
    }
}

/// Adds the clsact qdisc to a device unless it has one.
fn add_clsact(ifname: &str) -> Result<(), Error> {
    match aya::programs::tc::qdisc_add_clsact(ifname) {
        Ok(()) => Ok(()),
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(Error(format!(
            "adding the clsact qdisc to {ifname}: {e} (legacy tc attach needs CONFIG_NET_SCH_INGRESS and CONFIG_NET_CLS_BPF)"
        ))),
    }
}

/// weft's cls_bpf filters on a device's hook (none when the device or its
/// clsact qdisc is missing).
pub fn legacy_filters(ifname: &str, hook: Hook) -> Vec<BpfFilter> {
    let Some(ifindex) = tcnl::ifindex(ifname) else { return Vec::new() };
    match tcnl::bpf_filters(ifindex, hook.parent()) {
        Ok(all) => all.into_iter().filter(|f| PROGRAMS.contains(&f.name.as_str())).collect(),
        Err(e) => {
            log::warn!("listing tc filters of {ifname} {}: {e}", hook.name());
            Vec::new()
        }
    }
}

/// Deletes weft's legacy filters on a hook that `which` selects.
fn remove_legacy_filters(ifname: &str, hook: Hook, which: impl Fn(&BpfFilter) -> bool) {
    for f in legacy_filters(ifname, hook).into_iter().filter(|f| which(f)) {
        let r = SchedClassifierLink::attached(ifname, hook.tc(), f.priority, TcHandle::from(f.handle), None)
            .map_err(|e| e.to_string())
            .and_then(|link| link.detach().map_err(|e| e.to_string()));
        match r {
            Ok(()) => log::info!(
                "removed tc filter {} (pref {} handle {:#x}) from {ifname} {}",
                f.name,
                f.priority,
                f.handle,
                hook.name()
            ),
            Err(e) => log::warn!("removing tc filter {} from {ifname} {}: {e}", f.name, hook.name()),
        }
    }
}

/// Test-only wrappers around the real programs that set or read the tunnel
/// key (bpf/tests/); the agent never loads them.
#[doc(hidden)]
pub const PROBE_LXC_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe_lxc.o"));
#[doc(hidden)]
pub const PROBE_OVERLAY_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe_overlay.o"));

/// BTF-only object describing the shared structs (see bpf/layout.c); used by
/// the layout test, never loaded.
pub const LAYOUT_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/layout.o"));
