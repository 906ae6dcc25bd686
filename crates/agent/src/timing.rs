//! Where an operation spent its time, reported in its log line so an
//! operator can see which step made an ADD or DEL slow.

use std::time::{Duration, Instant};

pub struct Phases {
    start: Instant,
    last: Instant,
    parts: Vec<(&'static str, Duration)>,
}

impl Phases {
    pub fn start() -> Phases {
        let now = Instant::now();
        Phases { start: now, last: now, parts: Vec::with_capacity(12) }
    }

    /// Ends the step called `name` (the time since the previous mark).
    pub fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.parts.push((name, now - self.last));
        self.last = now;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// "6.12 ms (ipam 0.40, identity 1.02, …)".
impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} ms (", ms(self.last - self.start))?;
        for (i, (name, d)) in self.parts.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name} {:.2}", ms(*d))?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_step_in_order() {
        let mut p = Phases::start();
        p.mark("one");
        std::thread::sleep(Duration::from_millis(2));
        p.mark("two");
        let s = p.to_string();
        let one = s.find("one ").expect("one reported");
        let two = s.find("two ").expect("two reported");
        assert!(one < two, "{s}");
        let total: f64 = s.split(' ').next().unwrap().parse().unwrap();
        assert!(total >= 2.0, "{s}");
    }
}
