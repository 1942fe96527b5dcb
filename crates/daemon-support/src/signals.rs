//! Process signals, caught from the first line of `main`: [`block_early`] holds SIGTERM, SIGINT,
//! SIGHUP and SIGUSR1 pending before any thread starts (every thread inherits the mask), and
//! [`Signals::install`] registers the handlers and only then lets them through. A signal that
//! arrives while the process starts (the nanny's SIGHUP or SIGUSR1 to a child it has just
//! spawned, the kubelet's SIGTERM to a container that is still starting) is handled, never the
//! default action that would kill the process.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use tokio::signal::unix::{SignalKind, signal};

const HANDLED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
];

/// The handled signals, blocked in the thread that called [`block_early`] and every thread
/// it starts afterwards.
#[derive(Debug)]
#[must_use = "the signals stay blocked until Signals::install"]
pub struct BlockedSignals(SigSet);

/// Blocks the handled signals in this thread; call it first in `main`, before the runtime's
/// threads exist. Child processes start with an empty mask whatever this thread's is (the
/// standard library resets it between fork and exec).
pub fn block_early() -> BlockedSignals {
    let mut set = SigSet::empty();
    for signal in HANDLED {
        set.add(signal);
    }
    if let Err(error) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        // Only an invalid argument fails; the handlers are installed all the same.
        eprintln!("cannot block signals while starting: {error}");
    }
    BlockedSignals(set)
}

/// Handlers for the handled signals.
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    user1: tokio::signal::unix::Signal,
}

/// What [`Signals::next`] received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// SIGTERM or SIGINT.
    Stop(&'static str),
    Hangup,
    User1,
}

impl Signals {
    /// Registers the handlers, then unblocks the signals in this thread, so any that arrived
    /// meanwhile are delivered now. Call it from the future `block_on` runs (the thread that
    /// called [`block_early`]), inside the runtime.
    pub fn install(blocked: BlockedSignals) -> std::io::Result<Signals> {
        let signals = Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
            user1: signal(SignalKind::user_defined1())?,
        };
        pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&blocked.0), None)
            .map_err(std::io::Error::from)?;
        Ok(signals)
    }

    /// The next signal.
    pub async fn next(&mut self) -> Received {
        tokio::select! {
            _ = self.term.recv() => Received::Stop("SIGTERM"),
            _ = self.int.recv() => Received::Stop("SIGINT"),
            _ = self.hangup.recv() => Received::Hangup,
            _ = self.user1.recv() => Received::User1,
        }
    }

    /// Waits for SIGTERM or SIGINT, logging and ignoring SIGHUP and SIGUSR1 meanwhile (a
    /// process with no use for them is not killed by them); returns the signal's name.
    pub async fn stop_requested(&mut self) -> &'static str {
        loop {
            match self.next().await {
                Received::Stop(name) => return name,
                other => tracing::info!(signal = ?other, "signal ignored"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signal raised while blocked waits, and reaches the handler once installed; before
    /// the fix this test's process would have died of SIGUSR1's default action.
    #[tokio::test(flavor = "current_thread")]
    async fn a_signal_raised_before_the_handlers_is_delivered_to_them() {
        let blocked = block_early();
        nix::sys::signal::raise(Signal::SIGUSR1).expect("raise");
        nix::sys::signal::raise(Signal::SIGTERM).expect("raise");
        let mut signals = Signals::install(blocked).expect("install");
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(
                tokio::time::timeout(std::time::Duration::from_secs(5), signals.next())
                    .await
                    .expect("delivered"),
            );
        }
        got.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(got, vec![Received::Stop("SIGTERM"), Received::User1]);
    }
}
