//! The time rollcall runs on. Injected, so that tests and `rollcall demo` can
//! move through days in seconds.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock set to another time that then runs at the real pace: jumping
/// through days is a `set`, while waits of seconds (backoff, the per-member
/// window) take the seconds they say.
#[derive(Debug)]
pub struct SimulatedClock(Mutex<Duration>);

impl SimulatedClock {
    pub fn new(start: DateTime<Utc>) -> SimulatedClock {
        SimulatedClock(Mutex::new(start - Utc::now()))
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock().expect("clock") = to - Utc::now();
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().expect("clock") += by;
    }
}

impl Clock for SimulatedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.0.lock().expect("clock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_clock_jumps_then_runs() {
        let start: DateTime<Utc> = "2026-12-01T02:00:00Z".parse().unwrap();
        let clock = SimulatedClock::new(start);
        let first = clock.now();
        assert!(first >= start && first - start < Duration::seconds(1));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(clock.now() - first >= Duration::milliseconds(20));
        clock.advance(Duration::days(1));
        assert!(clock.now() - start >= Duration::days(1));
    }
}
