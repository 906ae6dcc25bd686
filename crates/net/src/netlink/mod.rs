//! Devices, addresses and routes through rtnetlink, from this process.
//!
//! A [`Netlink`] is one NETLINK_ROUTE socket, and a netlink socket belongs
//! to the network namespace of the thread that created it: open one per
//! namespace, on a thread that is in it. For a pod's namespace that is
//! [`in_netns`], which opens the socket on the dedicated thread
//! [`crate::netns::run_in`] makes.
//!
//! Every change is sent with NLM_F_ACK and waits for the kernel's answer;
//! answers are matched by sequence number and sender (the kernel), and a
//! receive timeout makes a kernel that never answers an error, not a hang.
//! Errors name the operation, the device, the namespace when known, and
//! the kernel's errno text (and its extended-ack message when it gives one).

mod addr;
mod events;
mod link;
mod route;
#[cfg(test)]
mod tests;

pub use addr::Address;
pub use events::{Event, Events, RTNLGRP_IPV4_IFADDR, RTNLGRP_LINK};
pub use link::{Ipv4Conf, Link, UpWith, Veth};
pub use route::{ROUTE_PROTO_BOOT, Route, RouteScope};

use crate::{Error, Result};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::{io, os::fd::AsRawFd, path::Path, time::Duration};

type Exchange<T> = std::result::Result<T, Failure>;

/// How long the kernel may take to answer one request.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Large enough for any datagram the kernel sends (dumps use at most 32 KiB).
const RECV_BUF: usize = 64 * 1024;
/// A dump interrupted by a concurrent change is retried this often.
const DUMP_TRIES: usize = 5;

/// One NETLINK_ROUTE socket in the namespace of the thread that opened it.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    /// Shown in errors ("in /run/netns/x"); None for the agent's own.
    ns: Option<String>,
    buf: Vec<u8>,
}

impl Netlink {
    /// A socket in the calling thread's namespace (the agent's own, unless
    /// the thread switched).
    pub fn open() -> Result<Self> {
        Self::open_inner(None)
    }

    /// [`Netlink::open`], naming the namespace in errors ("/run/netns/x").
    pub fn open_named(ns: impl Into<String>) -> Result<Self> {
        Self::open_inner(Some(ns.into()))
    }

    fn open_inner(ns: Option<String>) -> Result<Self> {
        let shown = ns.as_deref().map(|n| format!(" in {n}")).unwrap_or_default();
        let fail = |e: io::Error| Error(format!("opening a netlink socket{shown}: {e}"));
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(fail)?;
        sock.bind_auto().map_err(fail)?;
        // Errors carry only the request's header (not the whole request)
        // and the kernel's own explanation when it has one.
        sock.set_cap_ack(true).map_err(fail)?;
        sock.set_ext_ack(true).map_err(fail)?;
        set_recv_timeout(&sock, TIMEOUT).map_err(fail)?;
        Ok(Self { sock, seq: seed(), ns, buf: Vec::with_capacity(RECV_BUF) })
    }

    /// The namespace this socket is in, as shown in errors.
    pub fn namespace(&self) -> Option<&str> {
        self.ns.as_deref()
    }

    /// "WHAT[ in NS]: ERRNO TEXT".
    fn error(&self, what: &str, e: Failure) -> Error {
        match &self.ns {
            Some(ns) => Error(format!("{what} in {ns}: {e}")),
            None => Error(format!("{what}: {e}")),
        }
    }

    /// Sends a change and waits for its acknowledgement.
    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Exchange<()> {
        self.exchange(msg, NLM_F_ACK | flags).map(|_| ())
    }

    /// Sends a request for one object and returns the answer.
    fn get(&mut self, msg: RouteNetlinkMessage) -> Exchange<Option<RouteNetlinkMessage>> {
        self.exchange(msg, NLM_F_ACK).map(|mut v| v.pop())
    }

    /// Dumps every object of a kind; a dump that a concurrent change
    /// interrupted (NLM_F_DUMP_INTR) is taken again.
    fn dump(&mut self, msg: RouteNetlinkMessage) -> Exchange<Vec<RouteNetlinkMessage>> {
        for _ in 1..DUMP_TRIES {
            match self.exchange(msg.clone(), NLM_F_DUMP) {
                Err(e) if e.is(libc::EINTR) => continue,
                r => return r,
            }
        }
        self.exchange(msg, NLM_F_DUMP)
    }

    /// One request and every answer to it: until the ACK (or error) for a
    /// request, until NLMSG_DONE for a dump.
    fn exchange(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Exchange<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.sock.send_to(&bytes, &SocketAddr::new(0, 0), 0)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut answers = Vec::new();
        let mut interrupted = false;
        loop {
            self.recv()?;
            for m in split(&self.buf)? {
                if m.header.sequence_number != seq {
                    continue; // an answer to an earlier request that timed out
                }
                interrupted |= m.header.flags & NLM_F_DUMP_INTR != 0;
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok(answers),
                    NetlinkPayload::Error(e) => return Err(kernel_error(-e.raw_code(), &e.header)),
                    NetlinkPayload::Done(d) if d.code < 0 => return Err(kernel_error(-d.code, &[])),
                    NetlinkPayload::Done(_) if dump && interrupted => {
                        return Err(Failure { errno: libc::EINTR, text: "dump interrupted".into() });
                    }
                    NetlinkPayload::Done(_) => return Ok(answers),
                    _ => {}
                }
            }
        }
    }

    /// One datagram from the kernel into `buf` (anything else is dropped).
    fn recv(&mut self) -> io::Result<()> {
        loop {
            self.buf.clear();
            self.buf.reserve(RECV_BUF);
            let (n, from) = self.sock.recv_from(&mut self.buf, libc::MSG_TRUNC).map_err(|e| {
                if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the kernel did not answer within {}s", TIMEOUT.as_secs()),
                    )
                } else {
                    e
                }
            })?;
            if n > self.buf.len() {
                return Err(io::Error::other(format!("netlink answer of {n} bytes truncated")));
            }
            if from.port_number() == 0 {
                return Ok(());
            }
        }
    }
}

/// Runs `f` with a [`Netlink`] opened inside the namespace at `path`, on a
/// dedicated thread in that namespace; errors name `path`.
pub fn in_netns<T, F>(path: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Netlink) -> Result<T> + Send + 'static,
{
    let shown = path.display().to_string();
    crate::netns::run_in(path, move || f(&mut Netlink::open_named(shown)?))
}

/// The netlink messages of one datagram.
fn split(datagram: &[u8]) -> io::Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
    let bad = |e: netlink_packet_core::DecodeError| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let mut out = Vec::new();
    let mut off = 0;
    while off < datagram.len() {
        let len = NetlinkBuffer::new_checked(&datagram[off..]).map_err(bad)?.length() as usize;
        out.push(NetlinkMessage::deserialize(&datagram[off..off + len]).map_err(bad)?);
        off += (len + 3) & !3;
    }
    Ok(out)
}

/// The errno, with the kernel's extended-ack text when it sent one: the
/// error's payload is the request's header (capped) and then attributes,
/// NLMSGERR_ATTR_MSG (1) being a message such as "Unknown device type".
fn kernel_error(errno: i32, payload: &[u8]) -> Failure {
    const NLMSG_HDRLEN: usize = 16;
    const NLMSGERR_ATTR_MSG: u16 = 1;
    let mut failure = Failure::from(io::Error::from_raw_os_error(errno));
    let mut attrs = payload.get(NLMSG_HDRLEN..).unwrap_or_default();
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = String::from_utf8_lossy(&attrs[4..len]).trim_end_matches('\0').to_string();
            if !text.is_empty() {
                failure.text = format!("{}; the kernel says: {text}", failure.text);
            }
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    failure
}

/// Why one exchange failed: the errno (0 when it was not the kernel's
/// refusal) and the text shown.
#[derive(Debug)]
struct Failure {
    errno: i32,
    text: String,
}

impl Failure {
    fn is(&self, errno: i32) -> bool {
        self.errno == errno
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Self { errno: e.raw_os_error().unwrap_or(0), text: e.to_string() }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn set_recv_timeout(sock: &Socket, t: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt with a timeval of the size given.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// A first sequence number that differs between sockets and runs, so that
/// a stray answer is never taken for the one awaited.
fn seed() -> u32 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.subsec_nanos() ^ std::process::id().rotate_left(16)
}
