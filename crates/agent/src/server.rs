//! The local API: a unix socket, one JSON request line in, one JSON response
//! line out (or a stream for `monitor`).
//!
//! It is the agent's most exposed surface on the node, so it is guarded and
//! every resource it spends on a client is bounded:
//! - the socket file is mode 0600 (0660 and owned by the `--api-group` when
//!   one is given) from the moment it exists under its name, whatever the
//!   umask: it is bound under a temporary name, chmod'ed, then renamed;
//! - every connection's peer is checked (`SO_PEERCRED`, `SO_PEERGROUPS`):
//!   root, the agent's own user or a member of the API group. Anyone else
//!   gets one error line saying who was refused and why, and is closed;
//! - no thread per connection: the serving thread accepts and reads every
//!   connection with poll(2), non-blocking, until it has one line of at most
//!   [`MAX_REQUEST`] bytes within [`READ_TIMEOUT`]. The line goes to a fixed
//!   pool of [`WORKERS`] through a queue of [`QUEUE`] (full: "agent busy",
//!   at once); a worker decodes it, dispatches it and writes the answer with
//!   [`WRITE_TIMEOUT`];
//! - at most [`MAX_CONNECTIONS`] connections (and no more than half the
//!   open-files limit); at the limit the oldest connection still sending its
//!   request makes room, or else the new one is turned away;
//! - bytes held for requests not yet decoded are bounded ([`MAX_BUFFERED`]);
//! - `monitor` streams get a thread each, at most [`MAX_MONITORS`];
//! - accept errors (EMFILE, ENFILE, ENOMEM...) pause accepting with an
//!   exponential back-off and are logged at most once per [`LOG_EVERY`],
//!   with the number of errors not logged; so are refusals and the limits.

use crate::state::Agent;
use std::{
    ffi::CString,
    fs::Permissions,
    io::{self, ErrorKind, Read},
    os::{
        fd::{AsRawFd, RawFd},
        unix::{
            fs::PermissionsExt,
            net::{UnixListener, UnixStream},
        },
    },
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::SeqCst},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::{Duration, Instant},
};
use weft_api::{ApiError, Request, Response, code};

/// Error code of a refused peer (not root, not in the API group).
pub const FORBIDDEN: u32 = 107;

/// The longest request line accepted.
pub const MAX_REQUEST: usize = 1 << 20;
/// A connection must deliver its request line within this time of being
/// accepted (a total, not an idle time: trickling bytes does not extend it).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that does not take its answer within this time is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A monitor client that takes no event for this long is dropped.
pub const MONITOR_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections open at once (also capped at half of RLIMIT_NOFILE).
pub const MAX_CONNECTIONS: usize = 1024;
/// Threads that decode, dispatch and answer requests.
pub const WORKERS: usize = 16;
/// Requests waiting for a worker.
pub const QUEUE: usize = 256;
/// `monitor` streams at once (one thread each).
pub const MAX_MONITORS: usize = 32;
/// Bytes held for requests not yet decoded, all connections together.
/// Below [`SMALL_REQUEST`] a request is never refused for it.
pub const MAX_BUFFERED: usize = 64 << 20;
pub const SMALL_REQUEST: usize = 64 << 10;
/// One log line per kind of trouble at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Connections accepted per turn of the loop, so reading is not starved.
const ACCEPT_BATCH: usize = 64;
/// How much of a decoding error is echoed back.
const MAX_DETAILS: usize = 512;

/// The limits of the serving loop (constants, smaller in unit tests).
#[derive(Clone, Debug)]
struct Limits {
    max_conns: usize,
    max_request: usize,
    read_timeout: Duration,
    max_buffered: usize,
}

impl Limits {
    fn for_process() -> Self {
        Limits {
            max_conns: max_connections(),
            max_request: MAX_REQUEST,
            read_timeout: READ_TIMEOUT,
            max_buffered: MAX_BUFFERED,
        }
    }
}

/// [`MAX_CONNECTIONS`], or half the open-files limit when that is lower:
/// the other half stays for the agent's own files, sockets and namespaces.
fn max_connections() -> usize {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct it is given.
    let cur = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 { r.rlim_cur } else { 1024 };
    let half = if cur == libc::RLIM_INFINITY { usize::MAX } else { (cur / 2) as usize };
    MAX_CONNECTIONS.min(half).max(8)
}

pub fn serve(agent: Arc<Agent>) -> Result<(), String> {
    let path = agent.cfg.socket.clone();
    let group = agent.cfg.api_group;
    let listener = listen(&path, group)?;
    let limits = Limits::for_process();
    let (tx, rx) = sync_channel::<Job>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    let monitors = Arc::new(AtomicUsize::new(0));
    for i in 0..WORKERS {
        let (agent, rx, monitors) = (agent.clone(), rx.clone(), monitors.clone());
        std::thread::Builder::new()
            .name(format!("weft-api-{i}"))
            .spawn(move || worker(&agent, &rx, &monitors))
            .map_err(|e| format!("cannot start the API workers: {e}"))?;
    }
    log::info!(
        "listening on {} (mode {}; at most {} connections, {WORKERS} workers)",
        path.display(),
        match group {
            Some(g) => format!("0660, group {g}"),
            None => "0600".into(),
        },
        limits.max_conns
    );
    Server::new(listener, path, group, limits, tx)?.run()
}

/// Binds the socket under a temporary name in its directory, gives it its
/// final owner and mode, then renames it into place: the final path never
/// exists with a looser mode, whatever the umask (which is process-wide and
/// is not touched). A socket left by a killed agent is replaced.
fn listen(path: &Path, group: Option<u32>) -> Result<UnixListener, String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Directories the agent creates are not left to the umask either: who
    // may connect is decided by the socket's own mode and the peer check,
    // but only root may put (or swap) files on the way to it.
    let missing: Vec<&Path> =
        dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).collect();
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => std::fs::set_permissions(d, Permissions::from_mode(0o755))
                .map_err(|e| format!("cannot set the mode of {}: {e}", d.display()))?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", d.display())),
        }
    }
    let name = path.file_name().ok_or_else(|| format!("{} is not a socket path", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let _ = std::fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).map_err(|e| format!("cannot listen on {}: {e}", tmp.display()))?;
    let secured = (|| -> io::Result<()> {
        if let Some(g) = group {
            std::os::unix::fs::chown(&tmp, None, Some(g))?;
        }
        std::fs::set_permissions(&tmp, Permissions::from_mode(if group.is_some() { 0o660 } else { 0o600 }))?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = secured {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot set up the socket {}: {e}", path.display()));
    }
    Ok(listener)
}

/// `--api-group`: a group name (looked up in the system's group database)
/// or a number.
pub fn parse_group(s: &str) -> Result<u32, String> {
    if let Ok(g) = s.parse::<u32>() {
        return Ok(g);
    }
    let name = CString::new(s).map_err(|_| format!("invalid group name {s:?}"))?;
    let mut buf: Vec<libc::c_char> = vec![0; 16 << 10];
    loop {
        // SAFETY: a zeroed group struct is valid (null pointers, zero gid).
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, the buffer's length is given.
        let r = unsafe { libc::getgrnam_r(name.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut found) };
        if r == libc::ERANGE && buf.len() < 16 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if r != 0 {
            return Err(format!("looking up group {s:?}: {}", io::Error::from_raw_os_error(r)));
        }
        if found.is_null() {
            return Err(format!("no group named {s:?} (give a group name or number)"));
        }
        return Ok(grp.gr_gid);
    }
}

/// Who is at the other end of a connection (as of its connect).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

fn peer_cred(fd: RawFd) -> io::Result<Peer> {
    let mut c = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `c`.
    let r =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut c).cast(), &mut len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Peer { pid: c.pid, uid: c.uid, gid: c.gid })
}

/// SO_PEERGROUPS (Linux 4.13) from asm-generic/socket.h, which the libc
/// crate does not export for this target.
const SO_PEERGROUPS: libc::c_int = 59;

/// The peer's supplementary groups, as of its connect.
fn peer_groups(fd: RawFd) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = std::mem::size_of_val(groups.as_slice()) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the vector.
        let r = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, SO_PEERGROUPS, groups.as_mut_ptr().cast(), &mut len)
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if r == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

/// Root, the agent's own user, or a member of the API group (primary or
/// supplementary) may use the API. The error says who was refused and why.
fn authorize(
    peer: &Peer,
    groups: impl FnOnce() -> Vec<u32>,
    api_group: Option<u32>,
    own_uid: u32,
) -> Result<(), String> {
    if peer.uid == 0 || peer.uid == own_uid {
        return Ok(());
    }
    let who = format!("uid {} gid {} (pid {})", peer.uid, peer.gid, peer.pid);
    match api_group {
        Some(g) if peer.gid == g || groups().contains(&g) => Ok(()),
        Some(g) => Err(format!("{who} is neither root nor a member of the API group {g}")),
        None => Err(format!("{who} is not root (the agent was started without --api-group)")),
    }
}

/// Counts something open (a connection, a monitor) until dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>) -> Slot {
        count.fetch_add(1, SeqCst);
        Slot(count.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// Bytes a request holds of the shared budget, given back when dropped.
struct Held {
    n: usize,
    total: Arc<AtomicUsize>,
}

impl Held {
    fn new(total: &Arc<AtomicUsize>) -> Held {
        Held { n: 0, total: total.clone() }
    }

    /// Takes `k` more bytes; false when that would pass `max` (requests
    /// below SMALL_REQUEST always get theirs).
    fn grow(&mut self, k: usize, max: usize) -> bool {
        let before = self.total.fetch_add(k, SeqCst);
        if self.n + k > SMALL_REQUEST && before + k > max {
            self.total.fetch_sub(k, SeqCst);
            return false;
        }
        self.n += k;
        true
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.total.fetch_sub(self.n, SeqCst);
    }
}

/// An accepted, authorized connection; it counts against the limit until
/// dropped (closed).
struct Conn {
    stream: UnixStream,
    peer: Peer,
    _slot: Slot,
}

/// A connection still sending its request.
struct Pending {
    conn: Conn,
    buf: Vec<u8>,
    held: Held,
    since: Instant,
}

/// A request line for a worker.
struct Job {
    conn: Conn,
    line: Vec<u8>,
    held: Held,
}

/// At most one report per LOG_EVERY; counts what it swallowed, and says so
/// with the next report or, when none comes, once the period is over.
struct Throttle {
    /// What is counted, for the summary: "accept errors".
    what: &'static str,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn new(what: &'static str) -> Throttle {
        Throttle { what, last: None, suppressed: 0 }
    }

    /// Some(number of reports swallowed since the last one) when one may be logged now.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Logs how many reports were swallowed once the period is over.
    fn flush(&mut self, now: Instant) {
        if self.suppressed > 0 && self.last.is_some_and(|t| now.duration_since(t) >= LOG_EVERY) {
            log::warn!("API: {} more {} in the last {:?}", self.suppressed, self.what, LOG_EVERY);
            self.suppressed = 0;
            self.last = Some(now);
        }
    }
}

fn more(n: u64) -> String {
    if n == 0 { String::new() } else { format!(" ({n} more like it not logged)") }
}

struct Throttles {
    accept: Throttle,
    refused: Throttle,
    full: Throttle,
    busy: Throttle,
    large: Throttle,
    timeout: Throttle,
    poll: Throttle,
}

impl Throttles {
    fn new() -> Throttles {
        Throttles {
            accept: Throttle::new("accept errors"),
            refused: Throttle::new("refused connections"),
            full: Throttle::new("connections over the limit"),
            busy: Throttle::new("requests turned away (agent busy)"),
            large: Throttle::new("over-long requests"),
            timeout: Throttle::new("connections closed without a complete request"),
            poll: Throttle::new("poll errors"),
        }
    }

    fn flush(&mut self, now: Instant) {
        for t in [
            &mut self.accept,
            &mut self.refused,
            &mut self.full,
            &mut self.busy,
            &mut self.large,
            &mut self.timeout,
            &mut self.poll,
        ] {
            t.flush(now);
        }
    }
}

enum Progress {
    /// Nothing more to read for now.
    More,
    /// The request line is complete.
    Line,
    /// Close, after this answer if any.
    Close(Option<ApiError>),
}

/// The serving loop: accepts, checks peers, reads request lines.
struct Server {
    listener: UnixListener,
    path: PathBuf,
    group: Option<u32>,
    own_uid: u32,
    limits: Limits,
    tx: SyncSender<Job>,
    pending: Vec<Pending>,
    open: Arc<AtomicUsize>,
    buffered: Arc<AtomicUsize>,
    backoff: Duration,
    resume_accept: Option<Instant>,
    log: Throttles,
    fds: Vec<libc::pollfd>,
    chunk: Vec<u8>,
}

impl Server {
    fn new(
        listener: UnixListener,
        path: PathBuf,
        group: Option<u32>,
        limits: Limits,
        tx: SyncSender<Job>,
    ) -> Result<Server, String> {
        listener.set_nonblocking(true).map_err(|e| format!("socket {}: {e}", path.display()))?;
        Ok(Server {
            listener,
            path,
            group,
            // SAFETY: geteuid cannot fail.
            own_uid: unsafe { libc::geteuid() },
            limits,
            tx,
            pending: Vec::new(),
            open: Arc::new(AtomicUsize::new(0)),
            buffered: Arc::new(AtomicUsize::new(0)),
            backoff: BACKOFF_MIN,
            resume_accept: None,
            log: Throttles::new(),
            fds: Vec::new(),
            chunk: vec![0; 64 << 10],
        })
    }

    fn run(mut self) -> ! {
        loop {
            self.turn(Duration::from_secs(1));
        }
    }

    /// One poll(2) and what it reported: complete requests go to the
    /// workers, new connections are admitted, late ones closed.
    fn turn(&mut self, max_wait: Duration) {
        let now = Instant::now();
        if self.resume_accept.is_some_and(|t| now >= t) {
            self.resume_accept = None;
        }
        let accepting = self.resume_accept.is_none();
        self.fds.clear();
        self.fds.push(libc::pollfd {
            fd: if accepting { self.listener.as_raw_fd() } else { -1 },
            events: libc::POLLIN,
            revents: 0,
        });
        let mut wait = max_wait;
        if let Some(t) = self.resume_accept {
            wait = wait.min(t.saturating_duration_since(now));
        }
        for p in &self.pending {
            self.fds.push(libc::pollfd { fd: p.conn.stream.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            wait = wait.min((p.since + self.limits.read_timeout).saturating_duration_since(now));
        }
        let ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: the pollfds are valid for the call and their count is given.
        let n = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                if let Some(k) = self.log.poll.ready() {
                    log::warn!("API: poll: {e}{}", more(k));
                }
                std::thread::sleep(BACKOFF_MIN);
            }
            return;
        }
        // Requests first: a client that has sent its line is served before
        // anyone is closed to make room. From the end, so that swap_remove
        // only moves entries already looked at.
        for i in (0..self.pending.len()).rev() {
            if self.fds[i + 1].revents == 0 {
                continue;
            }
            match self.read_some(i) {
                Progress::More => {}
                Progress::Line => {
                    let p = self.pending.swap_remove(i);
                    self.submit(p);
                }
                Progress::Close(err) => {
                    let p = self.pending.swap_remove(i);
                    if let Some(e) = err {
                        answer_now(&p.conn.stream, e);
                    }
                }
            }
        }
        if accepting && self.fds[0].revents != 0 {
            self.accept_some();
        }
        let now = Instant::now();
        self.expire(now);
        self.log.flush(now);
    }

    fn read_some(&mut self, i: usize) -> Progress {
        let limits = &self.limits;
        let p = &mut self.pending[i];
        loop {
            // Never more than one byte past the limit.
            let want = (limits.max_request + 1 - p.buf.len()).min(self.chunk.len());
            match (&p.conn.stream).read(&mut self.chunk[..want]) {
                // At end of file, what came is the request (as with read_line).
                Ok(0) => return if p.buf.is_empty() { Progress::Close(None) } else { Progress::Line },
                Ok(n) => {
                    if !p.held.grow(n, limits.max_buffered) {
                        if let Some(k) = self.log.busy.ready() {
                            log::warn!(
                                "API: more than {} MiB of requests buffered: closing a connection of uid {}{}",
                                limits.max_buffered >> 20,
                                p.conn.peer.uid,
                                more(k)
                            );
                        }
                        return Progress::Close(Some(ApiError::new(
                            code::TRY_AGAIN,
                            "agent busy, try again",
                            "too many large requests are being received",
                        )));
                    }
                    let start = p.buf.len();
                    p.buf.extend_from_slice(&self.chunk[..n]);
                    if let Some(nl) = p.buf[start..].iter().position(|&b| b == b'\n') {
                        p.buf.truncate(start + nl);
                        return Progress::Line;
                    }
                    if p.buf.len() > limits.max_request {
                        if let Some(k) = self.log.large.ready() {
                            log::warn!(
                                "API: request of uid {} (pid {}) larger than {} bytes: closed{}",
                                p.conn.peer.uid,
                                p.conn.peer.pid,
                                limits.max_request,
                                more(k)
                            );
                        }
                        return Progress::Close(Some(ApiError::new(
                            code::BAD_REQUEST,
                            format!("request larger than {}", human(limits.max_request)),
                            "one JSON request on one line, ended by a newline",
                        )));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Progress::More,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Progress::Close(None),
            }
        }
    }

    fn submit(&mut self, p: Pending) {
        let job = Job { conn: p.conn, line: p.buf, held: p.held };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                if let Some(k) = self.log.busy.ready() {
                    log::warn!("API: {QUEUE} requests waiting: turning one away{}", more(k));
                }
                answer_now(
                    &job.conn.stream,
                    ApiError::new(
                        code::TRY_AGAIN,
                        "agent busy, try again",
                        format!("{QUEUE} requests are waiting"),
                    ),
                );
            }
        }
    }

    fn accept_some(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.backoff = BACKOFF_MIN;
                    self.admit(stream);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays in
                    // the backlog and poll would report it again at once.
                    // Stop looking for a while instead of spinning.
                    self.resume_accept = Some(Instant::now() + self.backoff);
                    if let Some(k) = self.log.accept.ready() {
                        log::warn!(
                            "API: accept on {}: {e}; not accepting for {} ms (doubling up to {} ms){}",
                            self.path.display(),
                            self.backoff.as_millis(),
                            BACKOFF_MAX.as_millis(),
                            more(k)
                        );
                    }
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, stream: UnixStream) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let fd = stream.as_raw_fd();
        let peer = match peer_cred(fd) {
            Ok(p) => p,
            Err(e) => {
                if let Some(k) = self.log.refused.ready() {
                    log::warn!("API: cannot tell who connected ({e}): closed{}", more(k));
                }
                return;
            }
        };
        if let Err(why) = authorize(&peer, || peer_groups(fd).unwrap_or_default(), self.group, self.own_uid) {
            if let Some(k) = self.log.refused.ready() {
                log::warn!("API: refused a connection: {why}{}", more(k));
            }
            answer_now(&stream, ApiError::new(FORBIDDEN, "permission denied", why));
            return;
        }
        if self.open.load(SeqCst) >= self.limits.max_conns {
            let max = self.limits.max_conns;
            let too_many = || {
                ApiError::new(
                    code::TRY_AGAIN,
                    "too many connections, try again",
                    format!("the agent serves at most {max} connections at once"),
                )
            };
            // The oldest connection that still has not sent its request
            // makes room (a client sends its request as soon as it is
            // connected); without one, the newcomer is turned away.
            let oldest = (0..self.pending.len()).min_by_key(|&i| self.pending[i].since);
            if let Some(k) = self.log.full.ready() {
                log::warn!(
                    "API: {max} connections open: {}{}",
                    if oldest.is_some() {
                        "closing the oldest one still waiting for its request"
                    } else {
                        "turning a new one away"
                    },
                    more(k)
                );
            }
            match oldest {
                Some(i) => {
                    let p = self.pending.swap_remove(i);
                    answer_now(&p.conn.stream, too_many());
                }
                None => {
                    answer_now(&stream, too_many());
                    return;
                }
            }
        }
        self.pending.push(Pending {
            conn: Conn { stream, peer, _slot: Slot::take(&self.open) },
            buf: Vec::new(),
            held: Held::new(&self.buffered),
            since: Instant::now(),
        });
    }

    /// Closes connections that did not deliver their request in time.
    fn expire(&mut self, now: Instant) {
        let timeout = self.limits.read_timeout;
        for i in (0..self.pending.len()).rev() {
            if now.duration_since(self.pending[i].since) < timeout {
                continue;
            }
            let p = self.pending.swap_remove(i);
            if let Some(k) = self.log.timeout.ready() {
                log::warn!(
                    "API: no complete request from uid {} (pid {}) within {:?}: closed{}",
                    p.conn.peer.uid,
                    p.conn.peer.pid,
                    timeout,
                    more(k)
                );
            }
            answer_now(
                &p.conn.stream,
                ApiError::new(
                    code::BAD_REQUEST,
                    format!("no complete request within {timeout:?}"),
                    "send one JSON request on one line, ended by a newline",
                ),
            );
        }
    }
}

fn human(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// A short answer from the serving thread: one non-blocking write, on a
/// connection nothing was written to yet (so it fits), then the caller
/// closes it.
fn answer_now(stream: &UnixStream, err: ApiError) {
    if let Ok(mut b) = serde_json::to_vec(&Response::Error(err)) {
        b.push(b'\n');
        let _ = send_all(stream, &b);
    }
}

/// Writes all of `b` without raising SIGPIPE at a peer that is gone; on a
/// blocking socket each send gives up after the socket's send timeout, on
/// a non-blocking one at once.
fn send_all(stream: &UnixStream, mut b: &[u8]) -> io::Result<()> {
    while !b.is_empty() {
        // SAFETY: send from a valid buffer of the given length.
        let n = unsafe { libc::send(stream.as_raw_fd(), b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        b = &b[n as usize..];
    }
    Ok(())
}

fn worker(agent: &Arc<Agent>, rx: &Mutex<Receiver<Job>>, monitors: &Arc<AtomicUsize>) {
    loop {
        // The lock is held while waiting, and released once a job is taken.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => handle(agent, job, monitors),
            Err(_) => return,
        }
    }
}

fn handle(agent: &Arc<Agent>, job: Job, monitors: &Arc<AtomicUsize>) {
    let Job { conn, line, held } = job;
    let stream = &conn.stream;
    if stream.set_nonblocking(false).is_err() || stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
        return;
    }
    let req = decode(&line);
    drop((line, held));
    match req {
        Ok(Request::Monitor(m)) => start_monitor(agent, conn, m.debug, monitors),
        Ok(req) => reply(stream, crate::requests::dispatch(agent, req)),
        Err(e) => reply(stream, Response::Error(e)),
    }
}

fn decode(line: &[u8]) -> Result<Request, ApiError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(code::BAD_REQUEST, "empty request", "send one JSON request on one line"));
    }
    serde_json::from_slice(line).map_err(|e| {
        let mut details = e.to_string();
        if details.len() > MAX_DETAILS {
            let mut end = MAX_DETAILS;
            while !details.is_char_boundary(end) {
                end -= 1;
            }
            details.truncate(end);
            details.push('…');
        }
        ApiError::new(code::BAD_REQUEST, "cannot decode request", details)
    })
}

/// A `monitor` stream lives as long as its client: it gets its own thread,
/// within MAX_MONITORS.
fn start_monitor(agent: &Arc<Agent>, conn: Conn, debug: bool, monitors: &Arc<AtomicUsize>) {
    if monitors.fetch_update(SeqCst, SeqCst, |n| (n < MAX_MONITORS).then_some(n + 1)).is_err() {
        reply(
            &conn.stream,
            Response::Error(ApiError::new(
                code::TRY_AGAIN,
                "too many monitors, try again",
                format!("at most {MAX_MONITORS} monitors run at once"),
            )),
        );
        return;
    }
    let slot = Slot(monitors.clone());
    let agent = agent.clone();
    let spawned = std::thread::Builder::new().name("weft-monitor".into()).spawn(move || {
        let _slot = slot;
        if conn.stream.set_write_timeout(Some(MONITOR_WRITE_TIMEOUT)).is_ok() {
            stream_events(&agent, &conn.stream, debug);
        }
    });
    if let Err(e) = spawned {
        log::warn!("API: cannot start a monitor thread: {e}");
    }
}

/// A worker's answer, written in blocking mode within WRITE_TIMEOUT.
fn reply(stream: &UnixStream, resp: Response) {
    if let Ok(mut s) = serde_json::to_vec(&resp) {
        s.push(b'\n');
        let _ = send_all(stream, &s);
    }
}

/// Streams events until the client hangs up (or takes nothing for
/// MONITOR_WRITE_TIMEOUT).
fn stream_events(agent: &Agent, stream: &UnixStream, debug: bool) {
    let (id, rx) = agent.monitor.subscribe(debug);
    agent.sync_monitor_flags();
    agent.monitor.set_live(true);
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                if send_all(stream, line.as_bytes()).is_err() || send_all(stream, b"\n").is_err() {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if peer_closed(stream) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    agent.monitor.set_live(false);
    agent.monitor.unsubscribe(id);
    agent.sync_monitor_flags();
}

/// A closed peer reads as end of file. Looked at without blocking and
/// without making the socket non-blocking (a flag its writes would share).
fn peer_closed(stream: &UnixStream) -> bool {
    let mut b = [0u8; 256];
    // SAFETY: recv into a local buffer of the given length.
    let n = unsafe { libc::recv(stream.as_raw_fd(), b.as_mut_ptr().cast(), b.len(), libc::MSG_DONTWAIT) };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => !matches!(io::Error::last_os_error().kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    /// A fresh directory for sockets, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let d = std::env::temp_dir().join(format!("weft-api-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn limits() -> Limits {
        Limits {
            max_conns: 4,
            max_request: 1024,
            read_timeout: Duration::from_millis(300),
            max_buffered: 1 << 20,
        }
    }

    fn server(dir: &TempDir, limits: Limits, queue: usize) -> (Server, Receiver<Job>, PathBuf) {
        let path = dir.0.join("api.sock");
        let listener = listen(&path, None).unwrap();
        let (tx, rx) = sync_channel(queue);
        (Server::new(listener, path.clone(), None, limits, tx).unwrap(), rx, path)
    }

    /// Turns the loop until `done` holds (or panics after 5 s).
    fn spin(s: &mut Server, mut done: impl FnMut(&Server) -> bool) {
        let start = Instant::now();
        while !done(s) {
            assert!(start.elapsed() < Duration::from_secs(5), "the serving loop did not get there");
            s.turn(Duration::from_millis(20));
        }
    }

    fn answer(c: UnixStream) -> String {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut line = String::new();
        let _ = BufReader::new(c).read_line(&mut line);
        line
    }

    /// Connects, sends `bytes` and reads the answer, on a thread.
    fn ask(path: &Path, bytes: Vec<u8>) -> std::thread::JoinHandle<String> {
        let mut c = UnixStream::connect(path).unwrap();
        std::thread::spawn(move || {
            let _ = c.write_all(&bytes);
            answer(c)
        })
    }

    fn answered(s: &mut Server, h: std::thread::JoinHandle<String>) -> String {
        spin(s, |_| h.is_finished());
        h.join().unwrap()
    }

    #[test]
    fn the_socket_is_private_and_replaces_a_stale_one() {
        let dir = TempDir::new("mode");
        let path = dir.0.join("agent.sock");
        std::fs::write(&path, b"stale").unwrap();
        let l = listen(&path, None).unwrap();
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o600);
        assert!(std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
        drop(l);
        let _l = listen(&path, Some(4242)).unwrap();
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o660);
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&m), 4242);
        let names: Vec<_> = std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("agent.sock")], "no temporary name left");
        // Directories the agent creates are not left to the umask either.
        let nested = dir.0.join("run").join("weft").join("agent.sock");
        let _n = listen(&nested, None).unwrap();
        for d in [dir.0.join("run"), dir.0.join("run").join("weft")] {
            let m = std::fs::metadata(&d).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o755, "{}", d.display());
        }
    }

    #[test]
    fn root_own_user_and_the_api_group_are_let_in() {
        let p = |uid, gid| Peer { pid: 42, uid, gid };
        let none = Vec::new;
        assert!(authorize(&p(0, 0), none, None, 0).is_ok());
        assert!(authorize(&p(1000, 1000), none, None, 1000).is_ok(), "the agent's own user");
        assert!(authorize(&p(1000, 4242), none, Some(4242), 0).is_ok(), "primary group");
        assert!(authorize(&p(1000, 1000), || vec![10, 4242], Some(4242), 0).is_ok(), "supplementary group");
        let e = authorize(&p(65534, 65534), || vec![100], Some(4242), 0).unwrap_err();
        assert!(e.contains("uid 65534") && e.contains("pid 42") && e.contains("group 4242"), "{e}");
        let e = authorize(&p(65534, 65534), none, None, 0).unwrap_err();
        assert!(e.contains("uid 65534") && e.contains("--api-group"), "{e}");
    }

    #[test]
    fn reports_are_throttled_and_counted() {
        let mut t = Throttle::new("tests");
        assert_eq!(t.ready(), Some(0));
        assert_eq!(t.ready(), None);
        assert_eq!(t.ready(), None);
        assert_eq!(t.suppressed, 2);
        t.last = Some(Instant::now() - LOG_EVERY);
        assert_eq!(t.ready(), Some(2), "the next report says how many were not");
        t.ready();
        t.flush(Instant::now() + LOG_EVERY);
        assert_eq!(t.suppressed, 0, "flushed once the period is over");
    }

    #[test]
    fn groups_by_name_or_number() {
        assert_eq!(parse_group("4242"), Ok(4242));
        assert_eq!(parse_group("root"), Ok(0));
        assert!(parse_group("no-such-group-weft").unwrap_err().contains("no group named"));
    }

    #[test]
    fn a_line_becomes_a_job_and_the_rest_is_ignored() {
        let dir = TempDir::new("line");
        let (mut s, rx, path) = server(&dir, limits(), 8);
        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(b"{\"op\":\"status\"}\nand more").unwrap();
        // End of file without a newline: what came is the request.
        let mut d = UnixStream::connect(&path).unwrap();
        d.write_all(b"{\"op\":\"agent_status\"}").unwrap();
        d.shutdown(std::net::Shutdown::Write).unwrap();
        // Connected and gone without a word: closed without an answer.
        drop(UnixStream::connect(&path).unwrap());
        let mut jobs = Vec::new();
        spin(&mut s, |s| {
            jobs.extend(rx.try_iter());
            jobs.len() == 2 && s.pending.is_empty()
        });
        let mut lines: Vec<_> = jobs.iter().map(|j| String::from_utf8(j.line.clone()).unwrap()).collect();
        lines.sort();
        assert_eq!(lines, ["{\"op\":\"agent_status\"}", "{\"op\":\"status\"}"]);
        assert!(decode(&jobs[0].line).is_ok());
        assert_eq!(s.open.load(SeqCst), 2, "the jobs hold their connections");
        drop(jobs);
        assert_eq!(s.open.load(SeqCst), 0);
        assert_eq!(s.buffered.load(SeqCst), 0, "every buffered byte given back");
    }

    #[test]
    fn garbage_is_answered_not_dispatched() {
        let e = decode(b"\xff\x00garbage").unwrap_err();
        assert_eq!(e.code, code::BAD_REQUEST);
        assert_eq!(decode(b"  ").unwrap_err().msg, "empty request");
        let long = format!("{{\"op\":\"{}\"}}", "x".repeat(10_000));
        assert!(decode(long.as_bytes()).unwrap_err().details.len() <= MAX_DETAILS + '…'.len_utf8());
    }

    #[test]
    fn an_over_long_line_is_answered_and_closed() {
        let dir = TempDir::new("long");
        let (mut s, rx, path) = server(&dir, limits(), 8);
        let a = answered(&mut s, ask(&path, vec![b'a'; 4096]));
        assert!(a.contains("request larger than 1024 bytes"), "{a}");
        assert!(rx.try_recv().is_err());
        assert!(s.pending.is_empty());
        assert_eq!(s.open.load(SeqCst), 0);
        assert_eq!(s.buffered.load(SeqCst), 0);
    }

    #[test]
    fn a_client_that_says_nothing_is_closed_after_the_read_timeout() {
        let dir = TempDir::new("slow");
        let (mut s, _rx, path) = server(&dir, limits(), 8);
        let start = Instant::now();
        let a = answered(&mut s, ask(&path, b"{\"op\":".to_vec()));
        assert!(start.elapsed() >= Duration::from_millis(300), "{:?}", start.elapsed());
        assert!(a.contains("no complete request within 300ms"), "{a}");
        assert!(s.pending.is_empty());
    }

    #[test]
    fn at_the_connection_limit_the_oldest_silent_client_makes_room() {
        let dir = TempDir::new("full");
        let (mut s, rx, path) = server(&dir, limits(), 8);
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(UnixStream::connect(&path).unwrap());
            spin(&mut s, |s| s.pending.len() == idle.len());
        }
        let mut late = UnixStream::connect(&path).unwrap();
        late.write_all(b"{\"op\":\"status\"}\n").unwrap();
        let mut held = Vec::new();
        spin(&mut s, |_| {
            held.extend(rx.try_iter());
            !held.is_empty()
        });
        assert_eq!(s.open.load(SeqCst), 4);
        let a = answer(idle.remove(0));
        assert!(a.contains("too many connections"), "{a}");
        // Every slot taken by a request being served: newcomers are turned away.
        drop(idle);
        spin(&mut s, |s| s.pending.is_empty());
        while held.len() < 4 {
            let mut c = UnixStream::connect(&path).unwrap();
            c.write_all(b"{\"op\":\"status\"}\n").unwrap();
            let before = held.len();
            spin(&mut s, |_| {
                held.extend(rx.try_iter());
                held.len() > before
            });
            drop(c);
        }
        let a = answered(&mut s, ask(&path, Vec::new()));
        assert!(a.contains("too many connections"), "{a}");
        assert_eq!(s.open.load(SeqCst), 4);
    }

    #[test]
    fn a_full_queue_answers_busy_at_once() {
        let dir = TempDir::new("busy");
        let (mut s, rx, path) = server(&dir, limits(), 1);
        let first = ask(&path, b"{\"op\":\"status\"}\n".to_vec());
        spin(&mut s, |s| s.open.load(SeqCst) == 1 && s.pending.is_empty());
        let ans = answered(&mut s, ask(&path, b"{\"op\":\"status\"}\n".to_vec()));
        assert!(ans.contains("agent busy, try again") && ans.contains("\"code\":11"), "{ans}");
        drop(rx);
        assert_eq!(first.join().unwrap(), "", "closed unanswered once its job is dropped");
    }

    #[test]
    fn buffered_bytes_are_bounded() {
        let dir = TempDir::new("budget");
        let lim = Limits { max_request: 512 << 10, max_buffered: 256 << 10, ..limits() };
        let (mut s, rx, path) = server(&dir, lim, 8);
        let a = answered(&mut s, ask(&path, vec![b'a'; 400 << 10]));
        assert!(a.contains("agent busy"), "{a}");
        assert_eq!(s.buffered.load(SeqCst), 0);
        // A small request still passes.
        let _c = ask(&path, b"{\"op\":\"status\"}\n".to_vec());
        spin(&mut s, |_| rx.try_recv().is_ok());
    }
}
