//! `weft lab serve`: the echo servers a lab pod runs (TCP and UDP), so
//! probes from other pods can tell "connected and answered" from "refused"
//! and "dropped". Started in the pod's namespace by `weft lab up -f`.

use std::{
    io::{Read, Write},
    net::{TcpListener, UdpSocket},
};

use crate::file::Serve;

/// Binds every port, prints "ready" (the lab waits for it), then serves
/// until killed.
pub fn run_announcing(serves: &[Serve]) -> Result<(), String> {
    run(serves, || {
        println!("ready");
        let _ = std::io::stdout().flush();
    })
}

/// Serves every listed port until killed. Binding all of them first, so a
/// port that cannot be had is an error at start, not a silent gap.
pub fn run(serves: &[Serve], bound: impl FnOnce()) -> Result<(), String> {
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    for s in serves {
        match *s {
            Serve::Tcp(port) => {
                tcp.push(TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("tcp/{port}: {e}"))?)
            }
            Serve::Udp(port) => {
                udp.push(UdpSocket::bind(("0.0.0.0", port)).map_err(|e| format!("udp/{port}: {e}"))?)
            }
        }
    }
    bound();
    let mut threads = Vec::new();
    for l in tcp {
        threads.push(std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }));
    }
    for sock in udp {
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
