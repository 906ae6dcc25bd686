//! The local API under abuse: 500 idle connections, a 100 MB line, garbage,
//! an unprivileged client, the open-files limit. The agent answers ADDs
//! throughout, stays small, logs little, and returns to its resting thread
//! and file counts.
//!
//! The agent is started again by the test (same command line as the lab's)
//! under umask 000, the worst a careless init system can hand it.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::{
        fs::{FileTypeExt, MetadataExt, PermissionsExt},
        net::UnixStream,
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use weft_e2e::{TempNetns, TestLab};

/// The agent's limits (crates/agent/src/server.rs).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const FORBIDDEN: u32 = 107;
const BAD_REQUEST: u32 = 105;
/// A group no user of the machine has: the API group of the test.
const API_GROUP: u32 = 4242;
const NOBODY: u32 = 65534;

/// An agent started by the test; killed (and reaped) on drop.
struct AgentProc {
    child: Child,
}

impl AgentProc {
    /// Kills the running agent and starts `base` + `extra` in the node's
    /// namespace, detached, under umask 000, logging to the node's log.
    fn restart(lab: &TestLab, old_pid: u32, base: &[String], extra: &[&str]) -> AgentProc {
        weft_lab::lifecycle::kill_and_wait(old_pid);
        let node = lab.lab.node("node1").unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.state_dir.join("agent.log"))
            .unwrap();
        let mut cmd = Command::new(&base[0]);
        cmd.args(&base[1..]).args(extra).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        // SAFETY: umask and setsid are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0);
                libc::setsid();
                Ok(())
            });
        }
        let ns = format!("/run/netns/{}", node.netns);
        let child = weft_net::netns::run_in(Path::new(&ns), move || {
            cmd.spawn().map_err(|e| weft_net::Error(e.to_string()))
        })
        .unwrap();
        let mut agent = AgentProc { child };
        let client = weft_api::Client::new(&node.socket).with_timeout(Duration::from_secs(5));
        let start = Instant::now();
        while client.call(&weft_api::Request::AgentStatus).is_err() {
            let log = std::fs::read_to_string(node.state_dir.join("agent.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            assert!(
                start.elapsed() < Duration::from_secs(40) && agent.child.try_wait().unwrap().is_none(),
                "the restarted agent does not answer; its log ends with:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn status_kb(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// utime + stime, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Threads and open files once they have not moved for a second.
fn at_rest(pid: u32) -> (usize, usize) {
    let start = Instant::now();
    let mut last = (threads(pid), fds(pid));
    let mut same = 0;
    while same < 10 {
        assert!(start.elapsed() < Duration::from_secs(30), "the agent does not settle: {last:?}");
        std::thread::sleep(Duration::from_millis(100));
        let now = (threads(pid), fds(pid));
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

/// Sends `bytes` on a new connection and reads one answer line.
fn ask(socket: &Path, bytes: &[u8]) -> String {
    let mut c = UnixStream::connect(socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.write_all(bytes);
    let mut line = String::new();
    let _ = BufReader::new(c).read_line(&mut line);
    line
}

fn error_code(answer: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"));
    v["error"]["code"].as_u64().unwrap_or_else(|| panic!("not an error: {answer}"))
}

fn sockaddr(path: &Path) -> (libc::sockaddr_un, libc::socklen_t) {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: all zeroes is a valid sockaddr_un.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let b = path.as_os_str().as_bytes();
    assert!(b.len() < a.sun_path.len(), "socket path too long");
    for (d, s) in a.sun_path.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    (a, (std::mem::size_of::<libc::sa_family_t>() + b.len() + 1) as libc::socklen_t)
}

/// What a client running as another user sees: Err(errno) when its connect
/// fails, else the bytes the agent sent after `request`. The child process
/// makes only raw system calls on memory prepared before fork.
fn connect_as(uid: u32, gid: u32, groups: &[u32], socket: &Path, request: &[u8]) -> Result<String, i32> {
    let (addr, len) = sockaddr(socket);
    let groups: Vec<libc::gid_t> = groups.to_vec();
    let timeout = libc::timeval { tv_sec: 20, tv_usec: 0 };
    let mut p = [0; 2];
    // SAFETY: pipe2 fills the two descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the child only makes system calls on memory that exists
    // already, then _exits; the parent owns the read end.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        unsafe fn report(fd: i32, tag: u8) -> ! {
            // SAFETY: errno of this thread; write and _exit are async-signal-safe.
            unsafe {
                let e = *libc::__errno_location();
                let mut m = [tag, 0, 0, 0, 0];
                m[1..].copy_from_slice(&e.to_le_bytes());
                libc::write(fd, m.as_ptr().cast(), m.len());
                libc::_exit(1)
            }
        }
        // SAFETY: see above.
        unsafe {
            libc::close(p[0]);
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                report(p[1], b'S');
            }
            let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            libc::setsockopt(
                s,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            if libc::connect(s, (&raw const addr).cast(), len) != 0 {
                report(p[1], b'E');
            }
            libc::write(p[1], b"O".as_ptr().cast(), 1);
            if !request.is_empty() {
                libc::write(s, request.as_ptr().cast(), request.len());
            }
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::read(s, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                libc::write(p[1], buf.as_ptr().cast(), n as usize);
            }
            libc::_exit(0);
        }
    }
    // SAFETY: the write end is the child's now; the read end is ours.
    let mut out = Vec::new();
    unsafe {
        libc::close(p[1]);
        use std::os::fd::FromRawFd;
        std::fs::File::from_raw_fd(p[0]).read_to_end(&mut out).unwrap();
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
    }
    match out.first() {
        Some(b'O') => Ok(String::from_utf8_lossy(&out[1..]).into_owned()),
        Some(b'E') if out.len() == 5 => Err(i32::from_le_bytes(out[1..5].try_into().unwrap())),
        _ => panic!("the client as uid {uid} did not get to connect: {out:?}"),
    }
}

const STATUS: &[u8] = b"{\"op\":\"status\"}\n";

fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn the_local_api_under_abuse_keeps_serving_adds_and_returns_to_rest() {
    let lab = TestLab::up("apiab", 1, 0);
    let node = lab.lab.node("node1").unwrap().clone();
    let socket: PathBuf = node.socket.clone();
    let log = node.state_dir.join("agent.log");
    let base = cmdline(node.pid);

    // Under umask 000 and without an API group: root only, 0600.
    let agent = AgentProc::restart(&lab, node.pid, &base, &[]);
    let m = std::fs::metadata(&socket).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.permissions().mode() & 0o7777, 0o600, "socket mode under umask 000");
    assert_eq!((m.uid(), m.gid()), (0, 0));
    assert_eq!(connect_as(NOBODY, NOBODY, &[], &socket, STATUS), Err(libc::EACCES));

    // With an API group: 0660, owned by it; its members get in (primary or
    // supplementary group), nobody else does.
    let old = agent.pid();
    drop(agent);
    let agent = AgentProc::restart(&lab, old, &base, &["--api-group", &API_GROUP.to_string()]);
    let pid = agent.pid();
    let m = std::fs::metadata(&socket).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o660, "socket mode with --api-group");
    assert_eq!((m.uid(), m.gid()), (0, API_GROUP));
    let leftovers: Vec<_> = std::fs::read_dir(socket.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary socket names left: {leftovers:?}");
    assert_eq!(connect_as(NOBODY, NOBODY, &[], &socket, STATUS), Err(libc::EACCES));
    let ok = connect_as(NOBODY, API_GROUP, &[], &socket, STATUS).unwrap();
    assert!(ok.starts_with("{\"ok\""), "member by primary group: {ok}");
    let ok = connect_as(NOBODY, NOBODY, &[API_GROUP], &socket, STATUS).unwrap();
    assert!(ok.starts_with("{\"ok\""), "member by supplementary group: {ok}");
    // Even when the file's mode lets everyone in (an operator's chmod), the
    // agent refuses by the peer's credentials.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = connect_as(NOBODY, NOBODY, &[], &socket, STATUS).unwrap();
    assert_eq!(error_code(&refused), FORBIDDEN as u64, "{refused}");
    assert!(refused.contains("uid 65534") && refused.contains("group 4242"), "{refused}");

    // Rest: after one ADD and DEL, so that whatever an ADD opens once is open.
    let warm = TempNetns::new(&format!("weft-{}-w", lab.name()));
    assert!(lab.cni("node1", "ADD", "warm", &warm.path(), "1.0.0").success);
    assert!(lab.cni("node1", "DEL", "warm", &warm.path(), "1.0.0").success);
    let rest = at_rest(pid);
    let rest_rss = status_kb(pid, "VmRSS:");
    eprintln!("at rest: {} threads, {} open files, RSS {} kB", rest.0, rest.1, rest_rss);
    let log_before = log_len(&log);

    // RSS, sampled all along.
    let stop = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_rss) = (stop.clone(), max_rss.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                max_rss.fetch_max(status_kb(pid, "VmRSS:"), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // 500 idle connections.
    let opened = Instant::now();
    let mut idle: Vec<UnixStream> = (0..500).map(|_| UnixStream::connect(&socket).unwrap()).collect();
    lab.eventually(Duration::from_secs(5), "the agent holds the 500 idle connections", || {
        fds(pid) >= rest.1 + 500
    });
    let busy_threads = threads(pid);

    // One 100 MB line, in 1 MiB writes.
    let big = {
        let socket = socket.clone();
        std::thread::spawn(move || {
            let mut c = UnixStream::connect(&socket).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let chunk = vec![b'a'; 1 << 20];
            let mut sent = 0usize;
            for _ in 0..100 {
                if c.write_all(&chunk).is_err() {
                    break;
                }
                sent += chunk.len();
            }
            let mut line = String::new();
            let _ = BufReader::new(c).read_line(&mut line);
            (sent, line)
        })
    };

    // Garbage: complete lines are answered as bad requests...
    for g in [
        &b"this is not json\n"[..],
        b"\xff\xfe\x00\x01\x02\x1b[2J\n",
        b"{\"op\":\"frobnicate\"}\n",
        b"{\"op\":\"add\",\"container_id\":7}\n",
        b"\n",
    ] {
        let a = ask(&socket, g);
        assert_eq!(error_code(&a), BAD_REQUEST as u64, "{g:?}: {a}");
    }
    // ... partial lines wait for the read timeout.
    for g in [&b"{\"op\":\"add\",\"container_id\":\"x\""[..], &[0xaa; 3000]] {
        let mut c = UnixStream::connect(&socket).unwrap();
        c.write_all(g).unwrap();
        idle.push(c);
    }
    // An unprivileged client, now.
    let refused = connect_as(NOBODY, NOBODY, &[], &socket, STATUS).unwrap();
    assert_eq!(error_code(&refused), FORBIDDEN as u64, "{refused}");

    // ADDs go through all along.
    let pods: Vec<TempNetns> = (0..3).map(|i| TempNetns::new(&format!("weft-{}-a{i}", lab.name()))).collect();
    for (i, ns) in pods.iter().enumerate() {
        let t = Instant::now();
        let out = lab.cni("node1", "ADD", &format!("abuse{i}"), &ns.path(), "1.0.0");
        let took = t.elapsed();
        assert!(out.success, "ADD under abuse: {} {}", out.stdout, out.stderr);
        assert!(took < Duration::from_secs(5), "ADD under abuse took {took:?}");
        eprintln!("ADD {i} under abuse: {took:?}");
    }
    let during = fds(pid);
    assert!(
        opened.elapsed() < READ_TIMEOUT && during >= rest.1 + 500,
        "the ADDs ran while the idle connections were open ({during} files, {:?})",
        opened.elapsed()
    );

    let (sent, answer) = big.join().unwrap();
    assert!(sent < 100 << 20, "the agent read the whole 100 MB line");
    assert!(
        answer.contains("request larger than 1 MiB"),
        "100 MB line: {sent} bytes sent, answer {answer:?}"
    );
    assert_eq!(error_code(&answer), BAD_REQUEST as u64);

    // The agent closes silent connections itself, with a word.
    let mut first = idle.remove(0);
    first.set_read_timeout(Some(READ_TIMEOUT + Duration::from_secs(10))).unwrap();
    let mut line = String::new();
    let _ = BufReader::new(&mut first).read_line(&mut line);
    assert!(line.contains("no complete request within 10s"), "{line:?}");
    assert!(opened.elapsed() >= READ_TIMEOUT - Duration::from_millis(500), "{:?}", opened.elapsed());
    drop(first);
    drop(idle);

    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let peak = max_rss.load(Ordering::SeqCst);
    eprintln!(
        "under abuse: {busy_threads} threads, {during} open files, peak RSS {peak} kB; log grew {} bytes",
        log_len(&log) - log_before
    );
    assert!(peak < 100 << 10, "agent RSS peaked at {peak} kB");
    assert!(log_len(&log) - log_before < 16 << 10, "the log grew {} bytes", log_len(&log) - log_before);
    assert!(busy_threads <= rest.0 + 2, "threads went from {} to {busy_threads}", rest.0);

    // At the open-files limit: no spinning, hardly any log, and ADDs again
    // once files are free.
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    let mut saved = lim;
    // SAFETY: prlimit of our own child, into and from local structs.
    assert_eq!(unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut saved) }, 0);
    lim.rlim_max = saved.rlim_max;
    // Once the agent has closed its side of the abusive connections.
    lim.rlim_cur = (at_rest(pid).1 + 16) as libc::rlim_t;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) }, 0);
    let flood: Vec<UnixStream> = (0..60).map(|_| UnixStream::connect(&socket).unwrap()).collect();
    lab.eventually(Duration::from_secs(5), "the agent runs out of files", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("Too many open files")
    });
    let (cpu0, log0) = (cpu_ticks(pid), log_len(&log));
    // A measurement window: what the agent spends while it cannot accept.
    std::thread::sleep(Duration::from_secs(3));
    let (cpu, grew) = (cpu_ticks(pid) - cpu0, log_len(&log) - log0);
    eprintln!("at the open-files limit for 3 s: {cpu} ticks of CPU, log grew {grew} bytes");
    assert!(cpu < 30, "the agent spent {cpu} ticks in 3 s at the open-files limit");
    assert!(grew < 1024, "the log grew {grew} bytes in 3 s at the open-files limit");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &saved, std::ptr::null_mut()) }, 0);
    drop(flood);
    let more = TempNetns::new(&format!("weft-{}-b", lab.name()));
    let out = lab.cni("node1", "ADD", "after", &more.path(), "1.0.0");
    assert!(out.success, "ADD after the open-files limit: {} {}", out.stdout, out.stderr);

    // Back to rest once the pods are gone.
    for (i, ns) in pods.iter().enumerate() {
        assert!(lab.cni("node1", "DEL", &format!("abuse{i}"), &ns.path(), "1.0.0").success);
    }
    assert!(lab.cni("node1", "DEL", "after", &more.path(), "1.0.0").success);
    lab.eventually(Duration::from_secs(30), "the agent is back to its resting threads and files", || {
        (threads(pid), fds(pid)) == rest
    });
    eprintln!("back at rest: {} threads, {} open files", threads(pid), fds(pid));
    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!(
        "what the agent logged meanwhile:\n{}",
        String::from_utf8_lossy(&text.as_bytes()[log_before as usize..])
    );
    let long = text.lines().map(str::len).max().unwrap_or(0);
    assert!(long < 2300, "a log line of {long} bytes");
    drop(agent);
}
