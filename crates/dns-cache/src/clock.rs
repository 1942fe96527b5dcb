//! dns-cache's one reading of the monotonic clock (see `clippy.toml`): the cache counts in
//! milliseconds since start; timers go through tokio, whose clock tests can pause.

/// Milliseconds since the cache started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: tokio::time::Instant,
}

impl Clock {
    pub fn start() -> Self {
        Clock {
            start: tokio::time::Instant::now(),
        }
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}
