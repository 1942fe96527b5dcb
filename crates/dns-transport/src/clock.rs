//! dns-transport's one reading of the clock (see `clippy.toml`): tokio's, which tests can pause,
//! so deadlines, try timers and upstream health move with a paused test clock.

use std::sync::OnceLock;

use tokio::time::Instant;

/// Now, on tokio's clock.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

/// Milliseconds since the first call, on tokio's clock.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(now);
    now().saturating_duration_since(epoch).as_millis() as u64
}
