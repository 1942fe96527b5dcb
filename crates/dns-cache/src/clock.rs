//! dns-cache's clock (see `clippy.toml`): the cache counts in milliseconds since start; both
//! read dns-transport's clock, which is tokio's, so tests can pause it.

pub use dns_transport::clock::now;

/// Milliseconds since the cache started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: tokio::time::Instant,
}

impl Clock {
    pub fn start() -> Self {
        Clock { start: now() }
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}
