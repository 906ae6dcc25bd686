//! Sockets of the calling thread's network namespace through sock_diag
//! (NETLINK_SOCK_DIAG): listing connected UDP sockets and destroying them
//! (SOCK_DESTROY, CONFIG_INET_DIAG_DESTROY), as `ss -K` does. The agent uses
//! it to end UDP sockets that socket load balancing connected to a backend
//! that has left its service: the application's next call fails and it
//! connects again, to a backend that exists (Cilium does the same with
//! bpf_sock_destroy). Call it on a thread inside
//! the namespace ([`crate::netns::run_in`]).

use crate::{Error, Result};
use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const HDR: usize = 16;
/// struct inet_diag_req_v2: family, protocol, ext, pad, states, sockid.
const REQ: usize = 8 + SOCKID;
/// struct inet_diag_sockid: sport, dport, src[4], dst[4], if, cookie[2].
const SOCKID: usize = 48;
/// struct inet_diag_msg: family, state, timer, retrans, sockid, 5 × u32.
const MSG: usize = 4 + SOCKID + 20;

/// A UDP socket as sock_diag identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpSocket {
    pub local: (Ipv4Addr, u16),
    pub peer: (Ipv4Addr, u16),
    /// The socket cookie (bpf_get_socket_cookie's).
    pub cookie: u64,
    sockid: [u8; SOCKID],
}

fn open() -> Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned from here on.
    let fd =
        unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(Error(format!("sock_diag socket: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval { tv_sec: 2, tv_usec: 0 };
    // SAFETY: setsockopt with a timeval we own; a receive that never ends
    // would hang the caller.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            size_of::<libc::timeval>() as u32,
        )
    };
    Ok(fd)
}

fn request(kind: u16, flags: u16, seq: u32, sockid: &[u8; SOCKID]) -> Vec<u8> {
    let len = HDR + REQ;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&[libc::AF_INET as u8, libc::IPPROTO_UDP as u8, 0, 0]);
    b.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    b.extend_from_slice(sockid);
    b
}

fn send(fd: &OwnedFd, msg: &[u8]) -> Result<()> {
    // SAFETY: send(2) of a buffer we own, to the kernel (a zeroed address).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr() as *const libc::c_void,
            msg.len(),
            0,
            &addr as *const _ as *const libc::sockaddr,
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if n < 0 {
        return Err(Error(format!("sock_diag send: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: recv(2) into a buffer we own.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n < 0 {
        return Err(Error(format!("sock_diag receive: {}", std::io::Error::last_os_error())));
    }
    Ok(n as usize)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// The connected UDP sockets (those with a peer) of this namespace.
pub fn connected_udp() -> Result<Vec<UdpSocket>> {
    let fd = open()?;
    send(
        &fd,
        &request(SOCK_DIAG_BY_FAMILY, (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16, 1, &[0; SOCKID]),
    )?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = recv(&fd, &mut buf)?;
        let mut off = 0;
        while off + HDR <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            if len < HDR || off + len > n {
                return Err(Error("sock_diag: a truncated message".into()));
            }
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let code = i32::from_ne_bytes(buf[off + HDR..off + HDR + 4].try_into().unwrap());
                    return Err(Error(format!(
                        "sock_diag dump: {}",
                        std::io::Error::from_raw_os_error(-code)
                    )));
                }
                SOCK_DIAG_BY_FAMILY if len >= HDR + MSG => {
                    let m = &buf[off + HDR..off + HDR + MSG];
                    let id: [u8; SOCKID] = m[4..4 + SOCKID].try_into().unwrap();
                    let peer = (ip(&id[20..24]), be16(&id[2..4]));
                    if peer.1 != 0 {
                        out.push(UdpSocket {
                            local: (ip(&id[4..8]), be16(&id[0..2])),
                            peer,
                            cookie: u32::from_ne_bytes(id[40..44].try_into().unwrap()) as u64
                                | (u32::from_ne_bytes(id[44..48].try_into().unwrap()) as u64) << 32,
                            sockid: id,
                        });
                    }
                }
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
}

/// Destroys one socket: it is disconnected, its owner's next call fails
/// (ECONNABORTED, or EDESTADDRREQ for a send without an address).
pub fn destroy_udp(s: &UdpSocket) -> Result<()> {
    let fd = open()?;
    send(&fd, &request(SOCK_DESTROY, (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16, 2, &s.sockid))?;
    let mut buf = vec![0u8; 4096];
    let n = recv(&fd, &mut buf)?;
    if n >= HDR + 4 && u16::from_ne_bytes(buf[4..6].try_into().unwrap()) == NLMSG_ERROR {
        let code = i32::from_ne_bytes(buf[HDR..HDR + 4].try_into().unwrap());
        if code != 0 && code != -libc::ENOENT {
            return Err(Error(format!(
                "destroying the UDP socket {}:{} -> {}:{}: {} (the kernel needs CONFIG_INET_DIAG_DESTROY)",
                s.local.0,
                s.local.1,
                s.peer.0,
                s.peer.1,
                std::io::Error::from_raw_os_error(-code)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testns::TestNs;

    #[test]
    fn a_connected_udp_socket_is_listed_and_destroyed() {
        let ns = TestNs::new("sockdiag");
        let got = crate::netns::run_in(&ns.path(), || {
            crate::ip::batch(&["link set lo up".into()])?;
            let s = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| Error(e.to_string()))?;
            s.connect("127.0.0.1:5353").map_err(|e| Error(e.to_string()))?;
            let listed = connected_udp()?;
            let mine = listed
                .iter()
                .find(|u| u.peer == (Ipv4Addr::LOCALHOST, 5353))
                .copied()
                .ok_or_else(|| Error(format!("not listed: {listed:?}")))?;
            destroy_udp(&mine)?;
            let after = s.send(b"x").map_err(|e| e.raw_os_error());
            Ok((mine.cookie != 0, after))
        })
        .unwrap();
        assert!(got.0, "the socket's cookie is read");
        // Aborted: the pending error is ECONNABORTED, and the socket is
        // connected to nothing any more.
        assert!(
            matches!(got.1, Err(Some(libc::ECONNABORTED | libc::EDESTADDRREQ))),
            "its owner learns it is gone: {:?}",
            got.1
        );
    }
}
