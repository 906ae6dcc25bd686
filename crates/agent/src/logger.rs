//! A minimal stderr logger with timestamps (the lab sends it to a file).
//!
//! Every line is bounded: a message is cut at [`MAX_MESSAGE`] bytes (saying
//! how much was cut) and its control characters are escaped, so what a client
//! sends (a request, a container id) can neither flood the log nor forge
//! lines in it. The message is never formatted in full first.

use std::fmt::{self, Write as _};

/// The longest message logged, in bytes (after escaping).
pub const MAX_MESSAGE: usize = 2048;

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            eprintln!("{}.{:03} {:5} {}", t.as_secs(), t.subsec_millis(), r.level(), bound(r.args()));
        }
    }
    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

pub fn init() {
    let _ = log::set_logger(&LOGGER).map(|_| log::set_max_level(log::LevelFilter::Info));
}

/// A message as logged: control characters escaped, at most MAX_MESSAGE
/// bytes, then "… (N bytes cut)".
pub fn bound(args: &fmt::Arguments) -> String {
    let mut b = Bounded { out: String::new(), cut: 0 };
    let _ = b.write_fmt(*args);
    if b.cut > 0 {
        let _ = write!(b.out, "… ({} bytes cut)", b.cut);
    }
    b.out
}

/// Keeps the first MAX_MESSAGE bytes written to it and counts the rest.
struct Bounded {
    out: String,
    cut: usize,
}

impl Bounded {
    fn keep(&mut self, s: &str) {
        if self.cut > 0 {
            self.cut += s.len();
            return;
        }
        let room = MAX_MESSAGE - self.out.len();
        if s.len() <= room {
            self.out.push_str(s);
            return;
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.out.push_str(&s[..end]);
        self.cut += s.len() - end;
    }
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(i) = rest.find(char::is_control) {
            self.keep(&rest[..i]);
            let c = rest[i..].chars().next().unwrap_or_default();
            let mut esc = [0u8; 16];
            let mut w = Escaped { buf: &mut esc, len: 0 };
            let _ = write!(w, "{}", c.escape_default());
            let len = w.len;
            self.keep(std::str::from_utf8(&esc[..len]).unwrap_or("?"));
            rest = &rest[i + c.len_utf8()..];
        }
        self.keep(rest);
        Ok(())
    }
}

/// A small stack buffer to escape one character into.
struct Escaped<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lines_pass_unchanged() {
        assert_eq!(bound(&format_args!("agent ready: node {}", "n1")), "agent ready: node n1");
    }

    #[test]
    fn long_lines_are_cut_and_say_so() {
        let huge = "x".repeat(10 << 20);
        let s = bound(&format_args!("request {huge} end"));
        assert!(s.len() < MAX_MESSAGE + 64, "{}", s.len());
        assert!(s.starts_with("request xxx"));
        assert!(
            s.ends_with(&format!(
                "… ({} bytes cut)",
                "request ".len() + (10 << 20) + " end".len() - MAX_MESSAGE
            )),
            "{}",
            &s[s.len() - 40..]
        );
        // Never in the middle of a character.
        let s = bound(&format_args!("{}", "é".repeat(MAX_MESSAGE)));
        assert!(s.starts_with("éé"));
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        let s = bound(&format_args!("container {}", "c1\n1700000000.000 INFO  forged\r\x1b[31m"));
        assert!(!s.contains('\n') && !s.contains('\r') && !s.contains('\x1b'), "{s}");
        assert!(s.contains("c1\\n1700000000.000 INFO  forged\\r\\u{1b}[31m"), "{s}");
    }
}
