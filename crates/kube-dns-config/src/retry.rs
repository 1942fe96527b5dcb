//! Trying a version again whose stub nameserver names did not resolve (kube-dns may not have
//! synced yet when the pod starts): after 1 s, doubling to every 30 s, until it resolves or a
//! newer version replaces it. Shared by kube-dns and the nanny.

use std::pin::Pin;
use std::time::Duration;

/// The first wait before resolving again, and the cap of its doubling.
pub const RESOLVE_RETRY_MIN: Duration = Duration::from_secs(1);
pub const RESOLVE_RETRY_MAX: Duration = Duration::from_secs(30);

/// At most one version waiting to be resolved again.
#[derive(Debug)]
pub struct ResolveRetry<T> {
    waiting: Option<(T, Pin<Box<tokio::time::Sleep>>)>,
    backoff: Duration,
}

impl<T> Default for ResolveRetry<T> {
    fn default() -> Self {
        ResolveRetry {
            waiting: None,
            backoff: Duration::ZERO,
        }
    }
}

impl<T> ResolveRetry<T> {
    /// `item` failed to resolve: try it again after the next backoff.
    pub fn schedule(&mut self, item: T) -> Duration {
        self.backoff = if self.backoff.is_zero() {
            RESOLVE_RETRY_MIN
        } else {
            (self.backoff * 2).min(RESOLVE_RETRY_MAX)
        };
        self.waiting = Some((item, Box::pin(tokio::time::sleep(self.backoff))));
        self.backoff
    }

    /// Nothing to retry any more (it resolved, or a new version came); the backoff restarts.
    pub fn clear(&mut self) {
        *self = ResolveRetry::default();
    }

    /// Waits until the waiting item is due (forever when there is none) and hands it over;
    /// [`Self::schedule`] it again if it still does not resolve.
    pub async fn due(&mut self) -> T {
        match self.waiting.as_mut() {
            Some((_, timer)) => timer.as_mut().await,
            None => std::future::pending().await,
        }
        match self.waiting.take() {
            Some((item, _)) => item,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // tokio's paused test clock, not the real one.
    #[allow(clippy::disallowed_methods)]
    #[tokio::test(start_paused = true)]
    async fn retries_double_up_to_the_cap_and_clear_restarts_them() {
        let mut retry = ResolveRetry::default();
        let mut waits = Vec::new();
        for _ in 0..7 {
            waits.push(retry.schedule("version"));
            let started = tokio::time::Instant::now();
            assert_eq!(retry.due().await, "version");
            assert_eq!(started.elapsed(), *waits.last().expect("a wait"));
        }
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 30, 30]);
        retry.clear();
        assert_eq!(retry.schedule("new"), RESOLVE_RETRY_MIN);
        retry.clear();
        let nothing = tokio::time::timeout(Duration::from_secs(3600), retry.due()).await;
        assert!(nothing.is_err(), "nothing is due after clear");
    }
}
