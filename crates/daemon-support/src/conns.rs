//! The open connections of one listener, bounded globally and per client address: shared by
//! the HTTP servers and DNS over TCP. A client at its maximum is refused at once; at the global
//! cap the client holding the most connections loses its idlest one, so one client can fill
//! neither its share nor the whole table for long, and a probe from elsewhere always gets in.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::prom;

/// How many connections a listener keeps open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections at most; at the cap the busiest client's idlest connection is closed.
    pub max_connections: usize,
    /// Open connections per client address; more are closed at once.
    pub max_per_client: usize,
}

/// What a listener's table admitted and refused, for the metrics.
#[derive(Debug, Default)]
pub struct ConnStats {
    pub accepted: AtomicU64,
    pub refused_per_client: AtomicU64,
    pub evicted_at_cap: AtomicU64,
    pub open: AtomicU64,
}

impl ConnStats {
    /// Appends the counters in the Prometheus text format as `{prefix}_{kind}_*`.
    pub fn render(&self, prefix: &str, kind: &str, out: &mut String) {
        let what = kind.to_ascii_uppercase();
        let counters = [
            (
                "accepted",
                format!("{what} connections accepted."),
                &self.accepted,
            ),
            (
                "refused_per_client",
                format!("{what} connections closed at once: the client had its maximum open."),
                &self.refused_per_client,
            ),
            (
                "evicted_at_cap",
                format!("{what} connections closed to make room at the connection cap."),
                &self.evicted_at_cap,
            ),
        ];
        for (name, help, value) in counters {
            let name = format!("{prefix}_{kind}_{name}_total");
            prom::counter(out, &name, &help, value.load(Ordering::Relaxed));
        }
        prom::gauge(
            out,
            &format!("{prefix}_{kind}_connections"),
            &format!("Open {what} connections."),
            self.open.load(Ordering::Relaxed),
        );
    }
}

#[derive(Debug)]
struct Entry {
    client: IpAddr,
    /// Cancelled when the connection is evicted.
    evicted: CancellationToken,
    /// A logical clock: the tick of the connection's last activity.
    last_active: u64,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    tick: u64,
    open: BTreeMap<u64, Entry>,
    per_client: HashMap<IpAddr, usize>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        if let Some(n) = self.per_client.get_mut(&entry.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&entry.client);
            }
        }
        Some(entry)
    }

    /// Closes the idlest connection of the client holding the most; whether one was closed.
    fn evict_busiest(&mut self) -> bool {
        let Some((&busiest, _)) = self.per_client.iter().max_by_key(|(_, n)| **n) else {
            return false;
        };
        let idlest = self
            .open
            .iter()
            .filter(|(_, e)| e.client == busiest)
            .min_by_key(|(_, e)| e.last_active)
            .map(|(&id, _)| id);
        match idlest.and_then(|id| self.remove(id)) {
            Some(entry) => {
                entry.evicted.cancel();
                true
            }
            None => false,
        }
    }
}

/// One listener's open connections.
#[derive(Debug)]
pub struct ConnectionTable {
    limits: ConnLimits,
    table: Mutex<Table>,
    pub stats: Arc<ConnStats>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The client already holds its maximum.
    PerClient,
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionGuard {
    table: Arc<ConnectionTable>,
    id: u64,
    /// Cancelled if the connection is evicted to make room: close it then.
    pub evicted: CancellationToken,
}

impl ConnectionTable {
    pub fn new(limits: ConnLimits, stats: Arc<ConnStats>) -> Arc<Self> {
        Arc::new(ConnectionTable {
            limits,
            table: Mutex::new(Table::default()),
            stats,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a connection from `client`, evicting another at the cap; counted in the stats.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<ConnectionGuard, Refused> {
        let mut table = self.lock();
        let held = table.per_client.get(&client).copied().unwrap_or(0);
        if held >= self.limits.max_per_client.max(1) {
            self.stats
                .refused_per_client
                .fetch_add(1, Ordering::Relaxed);
            return Err(Refused::PerClient);
        }
        if table.open.len() >= self.limits.max_connections.max(1) && table.evict_busiest() {
            self.stats.evicted_at_cap.fetch_add(1, Ordering::Relaxed);
            self.stats.open.fetch_sub(1, Ordering::Relaxed);
        }
        let id = table.next_id;
        table.next_id += 1;
        table.tick += 1;
        let evicted = CancellationToken::new();
        let last_active = table.tick;
        table.open.insert(
            id,
            Entry {
                client,
                evicted: evicted.clone(),
                last_active,
            },
        );
        *table.per_client.entry(client).or_default() += 1;
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionGuard {
            table: self.clone(),
            id,
            evicted,
        })
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn limits(&self) -> ConnLimits {
        self.limits
    }
}

impl ConnectionGuard {
    /// Marks the connection active (a message arrived): it is no longer the idlest.
    pub fn touch(&self) {
        let mut table = self.table.lock();
        table.tick += 1;
        let tick = table.tick;
        if let Some(entry) = table.open.get_mut(&self.id) {
            entry.last_active = tick;
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        // An evicted connection was removed (and uncounted) when it was evicted.
        if self.table.lock().remove(self.id).is_some() {
            self.table.stats.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn table(max_connections: usize, max_per_client: usize) -> Arc<ConnectionTable> {
        ConnectionTable::new(
            ConnLimits {
                max_connections,
                max_per_client,
            },
            Arc::default(),
        )
    }

    #[test]
    fn a_client_at_its_maximum_is_refused_and_others_are_not() {
        let table = table(10, 2);
        let _a = table.admit(ip(1));
        let _b = table.admit(ip(1));
        assert_eq!(table.admit(ip(1)).err(), Some(Refused::PerClient));
        assert!(table.admit(ip(2)).is_ok());
        assert_eq!(table.stats.refused_per_client.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn at_the_cap_the_busiest_clients_idlest_connection_goes() {
        let table = table(4, 3);
        let probe = table.admit(ip(9)).expect("admitted");
        let flood: Vec<_> = (0..3)
            .map(|_| table.admit(ip(1)).expect("admitted"))
            .collect();
        // The oldest of the flood is active again; the second is now the idlest.
        flood[0].touch();
        let newcomer = table.admit(ip(2)).expect("admitted");
        assert!(flood[1].evicted.is_cancelled());
        assert!(!flood[0].evicted.is_cancelled() && !flood[2].evicted.is_cancelled());
        assert!(!probe.evicted.is_cancelled() && !newcomer.evicted.is_cancelled());
        assert_eq!(table.len(), 4);
        assert_eq!(table.stats.evicted_at_cap.load(Ordering::Relaxed), 1);
        assert_eq!(table.stats.open.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn closed_and_evicted_connections_leave_no_state_behind() {
        let table = table(1, 1);
        let first = table.admit(ip(1)).expect("admitted");
        let second = table.admit(ip(2)).expect("admitted at the cap");
        assert!(first.evicted.is_cancelled());
        drop(first);
        drop(second);
        assert!(table.is_empty());
        assert!(table.lock().per_client.is_empty());
        assert_eq!(table.stats.open.load(Ordering::Relaxed), 0);
    }
}
