//! The binaries' one reading of the clocks (see `clippy.toml`): the monotonic clock for
//! latencies and intervals, the wall clock for what is shown or stored as a date. dns-cache and
//! dns-transport keep their own on tokio's clock, whose time tests can pause.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Now, on the monotonic clock.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

/// Now, on the wall clock.
#[allow(clippy::disallowed_methods)]
pub fn wall() -> SystemTime {
    SystemTime::now()
}

/// Seconds since the Unix epoch on the wall clock (0 before it).
pub fn unix_secs() -> u64 {
    wall().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
