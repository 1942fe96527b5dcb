//! Coalescing: identical misses in flight share one upstream exchange. The first becomes the
//! leader; the others wait for what it finishes with, and hear nothing (an error) if the
//! leader goes away without finishing, instead of waiting for ever. Each key takes at most
//! `max_waiters` waiters ([`Join::Full`] beyond), and all of them share the leader's one value.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

/// The in-flight table, by a hash of the question.
#[derive(Debug)]
pub struct Coalescer<V> {
    inflight: Mutex<HashMap<u64, broadcast::Sender<V>>>,
    max_waiters: usize,
}

impl<V> Default for Coalescer<V> {
    fn default() -> Self {
        Coalescer::with_limit(usize::MAX)
    }
}

impl<V> Coalescer<V> {
    /// A table that lets at most `max_waiters` queries wait for each key.
    pub fn with_limit(max_waiters: usize) -> Self {
        Coalescer {
            inflight: Mutex::new(HashMap::new()),
            max_waiters,
        }
    }
}

/// What joining the table made of a query.
#[derive(Debug)]
pub enum Join<'a, V: Clone> {
    /// First with this key: resolve it and [`Leader::finish`].
    Leader(Leader<'a, V>),
    /// Another query with this key is in flight: wait for its result.
    Waiter(Waiter<V>),
    /// Another query with this key is in flight and has as many waiters as allowed.
    Full,
}

/// The query that does the work for its key.
#[derive(Debug)]
pub struct Leader<'a, V: Clone> {
    table: &'a Coalescer<V>,
    /// `None` once finished.
    key: Option<u64>,
}

/// A query waiting for its leader.
#[derive(Debug)]
pub struct Waiter<V: Clone> {
    receiver: broadcast::Receiver<V>,
}

impl<V: Clone> Coalescer<V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, broadcast::Sender<V>>> {
        self.inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn join(&self, key: u64) -> Join<'_, V> {
        let mut inflight = self.lock();
        match inflight.get(&key) {
            Some(sender) if sender.receiver_count() >= self.max_waiters => Join::Full,
            Some(sender) => Join::Waiter(Waiter {
                receiver: sender.subscribe(),
            }),
            None => {
                inflight.insert(key, broadcast::channel(1).0);
                Join::Leader(Leader {
                    table: self,
                    key: Some(key),
                })
            }
        }
    }

    /// Whether a query with this key is in flight.
    pub fn contains(&self, key: u64) -> bool {
        self.lock().contains_key(&key)
    }

    /// Keys in flight.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V: Clone> Leader<'_, V> {
    /// Hands `value` to every waiter; queries joining after this start afresh.
    pub fn finish(mut self, value: V) {
        if let Some(sender) = self.take() {
            let _ = sender.send(value);
        }
    }

    /// Removes this leader's entry, once.
    fn take(&mut self) -> Option<broadcast::Sender<V>> {
        let key = self.key.take()?;
        self.table.lock().remove(&key)
    }
}

impl<V: Clone> Drop for Leader<'_, V> {
    fn drop(&mut self) {
        // A leader dropped unfinished (its task cancelled): its waiters get an error.
        self.take();
    }
}

impl<V: Clone> Waiter<V> {
    /// The leader's value, or `None` if it went away without one.
    pub async fn wait(mut self) -> Option<V> {
        self.receiver.recv().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_get_the_leaders_value_and_the_key_is_then_free() {
        let table = Coalescer::<u32>::default();
        let Join::Leader(leader) = table.join(7) else {
            panic!("first is the leader")
        };
        let waiters: Vec<_> = (0..3)
            .map(|_| match table.join(7) {
                Join::Waiter(w) => w,
                Join::Leader(_) | Join::Full => panic!("second is a waiter"),
            })
            .collect();
        assert!(matches!(table.join(8), Join::Leader(_)), "other keys lead");
        assert_eq!(table.len(), 1, "a dropped leader frees its key");
        leader.finish(42);
        for waiter in waiters {
            assert_eq!(waiter.wait().await, Some(42));
        }
        assert!(table.is_empty());
        assert!(matches!(table.join(7), Join::Leader(_)));
    }

    #[tokio::test]
    async fn a_key_takes_at_most_its_waiters_and_more_once_they_are_gone() {
        let table = Coalescer::<u32>::with_limit(2);
        let Join::Leader(leader) = table.join(5) else {
            panic!("leader")
        };
        let first = table.join(5);
        let second = table.join(5);
        assert!(matches!(first, Join::Waiter(_)) && matches!(second, Join::Waiter(_)));
        assert!(
            matches!(table.join(5), Join::Full),
            "a third waiter is refused"
        );
        assert!(table.contains(5) && !table.contains(6));
        drop(first);
        assert!(matches!(table.join(5), Join::Waiter(_)), "room again");
        leader.finish(1);
        if let Join::Waiter(w) = second {
            assert_eq!(w.wait().await, Some(1));
        }
        assert!(!table.contains(5));
    }

    #[tokio::test]
    async fn a_leader_dropped_unfinished_releases_its_waiters() {
        let table = Coalescer::<u32>::default();
        let leader = table.join(1);
        let Join::Waiter(waiter) = table.join(1) else {
            panic!("waiter")
        };
        drop(leader);
        assert_eq!(waiter.wait().await, None);
        assert!(table.is_empty(), "the key is free again");
    }

    #[tokio::test]
    async fn a_finish_after_the_key_was_taken_over_does_not_disturb_the_new_leader() {
        let table = Coalescer::<u32>::default();
        let Join::Leader(first) = table.join(1) else {
            panic!("leader")
        };
        first.finish(1);
        let Join::Leader(second) = table.join(1) else {
            panic!("the key is free after finish")
        };
        let Join::Waiter(waiter) = table.join(1) else {
            panic!("waiter of the second")
        };
        second.finish(2);
        assert_eq!(waiter.wait().await, Some(2));
    }
}
