//! One budget for the work a server has in flight, in entries and bytes, shared fairly between
//! client addresses.
//!
//! Every piece of work that waits on the network takes a [`Charge`] before it starts: a query
//! on the slow path (forwarded, coalesced with another, or chasing a CNAME), a TCP answer being
//! written to a slow reader, an open upstream try and its receive buffer. Dropping the charge
//! gives it back. A process has one [`Budget`] for all its sockets and listeners; a route's
//! `--dns-forward-max` is a second, smaller one of the same kind, for its tries only.
//!
//! **Fairness.** A client that already holds something may hold at most as much as the budget
//! has left once it is charged: `held + used <= limit`, in entries and in bytes. A client alone can therefore fill half the
//! budget; two flooding clients a third each, and so on, and whatever they do the budget keeps
//! as much free as the largest holder holds. A client holding little is admitted until the
//! budget is truly full, so when room is short it is the client holding the most that is refused
//! first. Per-client state is one counter pair per client holding something, so it is bounded
//! by the entry limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use thiserror::Error;

/// How much work may be in flight at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLimits {
    /// Entries (queries, tries, pending answers).
    pub entries: usize,
    /// Bytes those entries hold (queries, answers and receive buffers, plus their bookkeeping).
    pub bytes: usize,
}

impl BudgetLimits {
    /// A budget of `entries` only (the bytes are not limited).
    pub fn entries(entries: usize) -> Self {
        BudgetLimits {
            entries,
            bytes: usize::MAX / 2,
        }
    }
}

/// Why a charge was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Refusal {
    /// The budget has no room left.
    #[error("the in-flight budget is full")]
    Full,
    /// The client already holds as much as the budget has left.
    #[error("the client holds its share of the in-flight budget")]
    Share,
}

/// What a budget admitted and refused, for the metrics.
#[derive(Debug, Default)]
pub struct BudgetStats {
    pub admitted: AtomicU64,
    pub refused_full: AtomicU64,
    pub refused_share: AtomicU64,
    pub entries: AtomicU64,
    pub bytes: AtomicU64,
    pub clients: AtomicU64,
}

impl BudgetStats {
    /// Appends the families as `{prefix}_inflight_*`.
    pub fn render(&self, prefix: &str, out: &mut String) {
        let families: [(&str, &str, &str, &AtomicU64); 6] = [
            (
                "admitted_total",
                "counter",
                "Queries, tries and TCP answers admitted to the in-flight budget.",
                &self.admitted,
            ),
            (
                "refused_full_total",
                "counter",
                "Work refused because the in-flight budget was full.",
                &self.refused_full,
            ),
            (
                "refused_share_total",
                "counter",
                "Work refused because its client held as much of the in-flight budget as was left.",
                &self.refused_share,
            ),
            (
                "entries",
                "gauge",
                "Queries, tries and TCP answers in flight.",
                &self.entries,
            ),
            (
                "bytes",
                "gauge",
                "Bytes charged to the in-flight budget.",
                &self.bytes,
            ),
            (
                "clients",
                "gauge",
                "Client addresses holding part of the in-flight budget.",
                &self.clients,
            ),
        ];
        for (name, kind, help, value) in families {
            let name = format!("{prefix}_inflight_{name}");
            daemon_support::prom::family(out, &name, kind, help, value.load(Ordering::Relaxed));
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Held {
    entries: usize,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Ledger {
    used: Held,
    clients: HashMap<IpAddr, Held>,
}

/// Work in flight, bounded in entries and bytes, shared fairly between clients.
#[derive(Debug)]
pub struct Budget {
    limits: BudgetLimits,
    ledger: Mutex<Ledger>,
    pub stats: Arc<BudgetStats>,
    refusal_log: daemon_support::Throttle,
    what: &'static str,
}

/// Admitted work; dropping it gives its entries and bytes back.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    client: IpAddr,
    held: Held,
}

/// Whether `add` more fits for a client holding `held` when `used` is in use of `limit`.
fn fits(used: usize, held: usize, add: usize, limit: usize) -> Result<(), Refusal> {
    let used = used.saturating_add(add);
    if used > limit {
        return Err(Refusal::Full);
    }
    // A client holding nothing is admitted while there is room (so a budget of one works).
    if held > 0 && held.saturating_add(add).saturating_add(used) > limit {
        return Err(Refusal::Share);
    }
    Ok(())
}

impl Budget {
    /// A budget within `limits`, counted in `stats`; `what` names it in log lines.
    pub fn new(limits: BudgetLimits, stats: Arc<BudgetStats>, what: &'static str) -> Arc<Self> {
        Arc::new(Budget {
            limits,
            ledger: Mutex::new(Ledger::default()),
            stats,
            refusal_log: daemon_support::Throttle::new(daemon_support::OVERLOAD_LOG_PERIOD),
            what,
        })
    }

    pub fn limits(&self) -> BudgetLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Charges `entries` and `bytes` to `client`, or refuses (counted, and logged at most once
    /// a second).
    pub fn charge(
        self: &Arc<Self>,
        client: IpAddr,
        entries: usize,
        bytes: usize,
    ) -> Result<Charge, Refusal> {
        let add = Held { entries, bytes };
        self.add(client, Held::default(), add)?;
        Ok(Charge {
            budget: self.clone(),
            client,
            held: add,
        })
    }

    /// Adds `add` to a client already holding `mine` under this budget.
    fn add(&self, client: IpAddr, mine: Held, add: Held) -> Result<(), Refusal> {
        let checked = {
            let mut ledger = self.lock();
            let held = ledger.clients.get(&client).copied().unwrap_or_default();
            let checked = fits(
                ledger.used.entries,
                held.entries,
                add.entries,
                self.limits.entries,
            )
            .and_then(|()| fits(ledger.used.bytes, held.bytes, add.bytes, self.limits.bytes));
            if checked.is_ok() {
                ledger.used.entries += add.entries;
                ledger.used.bytes += add.bytes;
                let slot = ledger.clients.entry(client).or_default();
                slot.entries += add.entries;
                slot.bytes += add.bytes;
                self.publish(&ledger);
            }
            checked
        };
        match checked {
            Ok(()) => {
                if mine.entries == 0 && mine.bytes == 0 {
                    self.stats.admitted.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(refusal) => {
                let counter = match refusal {
                    Refusal::Full => &self.stats.refused_full,
                    Refusal::Share => &self.stats.refused_share,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(held_back) = self.refusal_log.allow() {
                    tracing::warn!(
                        budget = self.what,
                        %client,
                        %refusal,
                        limit_entries = self.limits.entries,
                        limit_bytes = self.limits.bytes,
                        held_back,
                        "work refused"
                    );
                }
                Err(refusal)
            }
        }
    }

    fn release(&self, client: IpAddr, held: Held) {
        let mut ledger = self.lock();
        ledger.used.entries -= held.entries;
        ledger.used.bytes -= held.bytes;
        if let Some(slot) = ledger.clients.get_mut(&client) {
            slot.entries -= held.entries;
            slot.bytes -= held.bytes;
            if slot.entries == 0 && slot.bytes == 0 {
                ledger.clients.remove(&client);
            }
        }
        self.publish(&ledger);
    }

    /// Copies the ledger's totals to the metrics.
    fn publish(&self, ledger: &Ledger) {
        let store = |gauge: &AtomicU64, value: usize| gauge.store(value as u64, Ordering::Relaxed);
        store(&self.stats.entries, ledger.used.entries);
        store(&self.stats.bytes, ledger.used.bytes);
        store(&self.stats.clients, ledger.clients.len());
    }

    /// Entries and bytes in use.
    pub fn used(&self) -> (usize, usize) {
        let ledger = self.lock();
        (ledger.used.entries, ledger.used.bytes)
    }
}

impl Charge {
    /// Charges `bytes` more to the same client (a buffer about to grow), or refuses.
    pub fn grow(&mut self, bytes: usize) -> Result<(), Refusal> {
        let add = Held { entries: 0, bytes };
        self.budget.add(self.client, self.held, add)?;
        self.held.bytes += bytes;
        Ok(())
    }

    /// Gives `bytes` back (a buffer shrank or was freed), keeping the entry.
    pub fn shrink(&mut self, bytes: usize) {
        let bytes = bytes.min(self.held.bytes);
        self.budget.release(self.client, Held { entries: 0, bytes });
        self.held.bytes -= bytes;
    }

    pub fn client(&self) -> IpAddr {
        self.client
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.held.entries != 0 || self.held.bytes != 0 {
            self.budget.release(self.client, self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn budget(entries: usize, bytes: usize) -> Arc<Budget> {
        Budget::new(BudgetLimits { entries, bytes }, Arc::default(), "test")
    }

    #[test]
    fn a_client_alone_gets_half_and_others_the_rest() {
        let b = budget(100, usize::MAX / 2);
        let flood: Vec<_> = (0..50)
            .map(|_| b.charge(ip(1), 1, 10).expect("half"))
            .collect();
        assert_eq!(b.charge(ip(1), 1, 10).expect_err("refused"), Refusal::Share);
        // The others share the half the flooder left: the next client gets half of that.
        let second: Vec<_> = (0..25)
            .map(|_| b.charge(ip(2), 1, 10).expect("second"))
            .collect();
        assert_eq!(b.charge(ip(2), 1, 10).expect_err("refused"), Refusal::Share);
        assert_eq!(
            b.charge(ip(1), 1, 10).expect_err("refused"),
            Refusal::Share,
            "the biggest holder is refused first"
        );
        // A client holding nothing still gets in while there is any room.
        let third = b.charge(ip(3), 1, 10).expect("a newcomer");
        assert_eq!(b.used(), (76, 760));
        assert_eq!(b.stats.clients.load(Ordering::Relaxed), 3);
        assert_eq!(b.stats.refused_share.load(Ordering::Relaxed), 3);
        drop((flood, second, third));
        assert_eq!(b.used(), (0, 0));
        assert_eq!(b.stats.clients.load(Ordering::Relaxed), 0, "nothing kept");
        assert_eq!(b.stats.entries.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn many_small_clients_fill_it_to_the_limit_then_it_is_full() {
        let b = budget(10, usize::MAX / 2);
        let held: Vec<_> = (0..10)
            .map(|i| b.charge(ip(i), 1, 0).expect("one each"))
            .collect();
        assert_eq!(b.charge(ip(99), 1, 0).expect_err("refused"), Refusal::Full);
        assert_eq!(b.stats.refused_full.load(Ordering::Relaxed), 1);
        drop(held);
        assert!(b.charge(ip(99), 1, 0).is_ok());
    }

    #[test]
    fn a_budget_of_one_admits_one() {
        let b = budget(1, usize::MAX / 2);
        let only = b.charge(ip(1), 1, 0).expect("the only entry");
        assert_eq!(b.charge(ip(1), 1, 0).expect_err("refused"), Refusal::Full);
        assert_eq!(b.charge(ip(2), 1, 0).expect_err("refused"), Refusal::Full);
        drop(only);
        assert!(b.charge(ip(2), 1, 0).is_ok());
    }

    #[test]
    fn bytes_are_bounded_too_and_growing_counts() {
        let b = budget(1000, 10_000);
        let mut big = b.charge(ip(1), 1, 1000).expect("room");
        big.grow(3000).expect("still under half");
        assert_eq!(big.grow(1500).expect_err("refused"), Refusal::Share);
        assert_eq!(b.used(), (1, 4000));
        let other = b
            .charge(ip(2), 1, 2900)
            .expect("another client takes what is left");
        assert_eq!(
            b.charge(ip(3), 1, 3200).expect_err("refused"),
            Refusal::Full
        );
        big.shrink(4000);
        assert_eq!(b.used(), (2, 2900));
        drop(big);
        drop(other);
        assert_eq!(b.used(), (0, 0));
        assert_eq!(
            b.stats.admitted.load(Ordering::Relaxed),
            2,
            "growth is not admission"
        );
    }
}
