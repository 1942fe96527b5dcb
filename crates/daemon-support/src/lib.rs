//! What every binary of the pod does alike around its own work: the klog flags the legacy
//! command lines carry, logging to stderr through `tracing`, the async runtime, and stopping on
//! SIGTERM or SIGINT.

pub mod clock;
pub mod conns;
pub mod go_flags;
pub mod http;
pub mod prom;
pub mod signals;

pub use http::{HttpLimits, HttpStats, serve_http};

use std::time::Duration;

use crate::go_flags::{parse_go_bool, parse_go_duration};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Exit code of a bad command line (BSD `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// The logging flags of the legacy pflag binaries (kube-dns, sidecar): `--v` maps onto tracing
/// levels, the rest are accepted and ignored (logs always go to stderr, unbuffered).
#[derive(Debug, Clone, clap::Args)]
pub struct KlogFlags {
    /// klog verbosity: 0-2 info, 3-4 debug, 5+ trace (RUST_LOG overrides).
    #[arg(long, default_value_t = 0)]
    pub v: u8,
    /// klog per-file verbosity; accepted and ignored.
    #[arg(long, default_value = "")]
    pub vmodule: String,
    /// Accepted for compatibility; logs are written unbuffered.
    #[arg(long, default_value = "5s", value_parser = parse_go_duration)]
    pub log_flush_frequency: Duration,
    /// klog flags of the 1.14.13 manifests: accepted, logs always go to stderr.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value = "true", value_parser = parse_go_bool, hide = true)]
    pub logtostderr: bool,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value = "false", value_parser = parse_go_bool, hide = true)]
    pub alsologtostderr: bool,
}

/// The tracing level of a klog verbosity.
pub fn klog_level(verbosity: u8) -> &'static str {
    match verbosity {
        0..=2 => "info",
        3..=4 => "debug",
        _ => "trace",
    }
}

/// Logs to stderr without colours, filtered by `RUST_LOG` or else `default_filter`.
pub fn init_tracing(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
}

/// A multi-threaded tokio runtime with `workers` threads (`None`: one per CPU).
pub fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    builder.enable_all().build()
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT; `then` says what happens next, for the log.
pub async fn cancel_on_signal(
    mut signals: signals::Signals,
    shutdown: CancellationToken,
    then: &'static str,
) {
    let name = signals.stop_requested().await;
    tracing::info!("{name} received; {then}");
    shutdown.cancel();
}

/// Parses a pflag-style command line (`_` equals `-`, single-dash long flags accepted) into a
/// clap parser, then applies `check`; errors carry clap's message, which names the flag.
pub fn parse_pflag_args<T, E, I, S>(
    args: I,
    check: impl FnOnce(&T) -> Result<(), E>,
) -> Result<T, clap::Error>
where
    T: clap::Parser,
    E: std::fmt::Display,
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let parsed = T::try_parse_from(go_flags::normalize_pflag_args(args))?;
    check(&parsed).map_err(|message| {
        clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            format!("{message}\n"),
        )
    })?;
    Ok(parsed)
}

/// Prints a rejected command line's message; help exits 0, anything else [`EXIT_USAGE`].
pub fn usage_exit(error: &clap::Error) -> std::process::ExitCode {
    let code = match error.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
        _ => EXIT_USAGE,
    };
    let _ = error.print();
    std::process::ExitCode::from(code)
}

/// The Content-Type of the Prometheus text exposition.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A Prometheus text response.
pub fn metrics_response(text: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response()
}

/// How often a warning raised per query under overload may be logged.
pub const OVERLOAD_LOG_PERIOD: Duration = Duration::from_secs(1);

/// Lets a message through at most once per period and counts what it held back: for warnings
/// raised per query under overload, where logging every query would add to the overload.
#[derive(Debug)]
pub struct Throttle {
    period_ms: u64,
    epoch: std::time::Instant,
    next_ms: std::sync::atomic::AtomicU64,
    held_back: std::sync::atomic::AtomicU64,
}

impl Throttle {
    pub fn new(period: Duration) -> Self {
        Throttle {
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
            epoch: clock::now(),
            next_ms: std::sync::atomic::AtomicU64::new(0),
            held_back: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(n)` when the message may be logged now, `n` being how many were held back since the
    /// last one; `None` otherwise.
    pub fn allow(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now.saturating_add(self.period_ms), Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Relaxed));
        }
        self.held_back.fetch_add(1, Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_one_through_per_period_and_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        let open = Throttle::new(Duration::ZERO);
        assert_eq!(open.allow(), Some(0));
        assert_eq!(open.allow(), Some(0));
    }
}
