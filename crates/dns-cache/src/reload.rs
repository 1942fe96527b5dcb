//! Reload and signals: SIGHUP re-reads the servers, resolv and hosts files without closing
//! sockets or dropping cache entries whose servers did not change; SIGUSR1 logs statistics;
//! SIGTERM and SIGINT stop.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use crate::hosts::Hosts;
use crate::loop_probe::detect_loops;
use crate::state::CacheState;
use crate::upstream::routes::build_routes;

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// New routes are in place; `dropped` cache entries belonged to routes whose servers changed.
    Routes { routes: usize, dropped: usize },
    /// The servers could not be read: the current routes keep serving (hosts were re-read).
    KeptRoutes,
}

/// Re-reads the servers, resolv and hosts files (SIGHUP), and logs statistics (SIGUSR1).
#[derive(Debug, Clone)]
pub struct Reloader {
    state: Arc<CacheState>,
}

impl Reloader {
    pub fn new(state: Arc<CacheState>) -> Self {
        Reloader { state }
    }

    pub fn reload(&self) -> Reloaded {
        let state = &self.state;
        let previous = state.routes.load_full();
        let outcome = match build_routes(&state.config, &previous.upstreams) {
            Ok(routes) => {
                state.routes.store(Arc::new(routes));
                let routes = state.routes.load();
                // Keep entries whose route still has the same servers (none with
                // `--clear-on-reload`).
                let clear = state.config.clear_on_reload;
                let dropped = state.cache.retain_routes(|entry| {
                    !clear
                        && routes
                            .route_for(entry.name())
                            .is_some_and(|route| route.signature == entry.route)
                });
                tracing::info!(routes = routes.routes.len(), dropped, "reloaded servers");
                Reloaded::Routes {
                    routes: routes.routes.len(),
                    dropped,
                }
            }
            Err(error) => {
                tracing::error!(%error, "reload failed; keeping the current servers");
                Reloaded::KeptRoutes
            }
        };
        state
            .hosts
            .store(Arc::new(Hosts::for_config(&state.config)));
        if state.config.dns_loop_detect {
            tokio::spawn(detect_loops(state.clone()));
        }
        outcome
    }

    /// Logs the statistics dnsmasq logs on SIGUSR1.
    pub fn log_statistics(&self) {
        let state = &self.state;
        tracing::info!(
            cache_size = state.cache.capacity,
            entries = state.cache.len(),
            insertions = state.cache.counters.insertions.load(Ordering::Relaxed),
            evictions = state.cache.counters.evictions.load(Ordering::Relaxed),
            hits = state.stats.hits.load(Ordering::Relaxed),
            misses = state.stats.misses.load(Ordering::Relaxed),
            stale = state.stats.stale_served.load(Ordering::Relaxed),
            "cache statistics"
        );
        for upstream in state.routes.load().distinct_upstreams() {
            tracing::info!(
                server = %upstream.addr,
                queries = upstream.queries.load(Ordering::Relaxed),
                failed = upstream.failures.load(Ordering::Relaxed),
                srtt_us = upstream.srtt_us(),
                "server statistics"
            );
        }
    }
}

/// Runs the signal handlers until SIGTERM or SIGINT, then cancels `shutdown` (the lameduck
/// follows). Signals that arrive before the cache serves (`ready`) wait for it.
pub async fn handle_signals(
    mut signals: daemon_support::signals::Signals,
    shutdown: CancellationToken,
    ready: tokio::sync::oneshot::Receiver<Reloader>,
) {
    use daemon_support::signals::Received;
    let Ok(reloader) = ready.await else { return };
    loop {
        match signals.next().await {
            Received::Stop(name) => {
                tracing::info!("{name} received; answering for the lameduck period, then stopping");
                break;
            }
            Received::Hangup => {
                reloader.reload();
            }
            Received::User1 => reloader.log_statistics(),
        }
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;
    use crate::cache::{CacheKey, Lookup};
    use crate::state::testing::state;

    fn answer(name: &str) -> Vec<u8> {
        let name = Name::from_ascii(name).expect("name");
        let mut reply = Message::new(1, MessageType::Response, OpCode::Query);
        reply.add_query(Query::query(name.clone(), RecordType::A));
        reply.add_answer(Record::from_rdata(
            name,
            300,
            RData::A(std::net::Ipv4Addr::new(192, 0, 2, 1).into()),
        ));
        reply.to_vec().expect("reply")
    }

    fn cache_answer(state: &CacheState, name: &str) {
        let key = CacheKey::a_in(name);
        let route = state
            .routes
            .load()
            .route_for(name)
            .expect("route")
            .signature;
        state
            .cache
            .insert(&key, &answer(&format!("{name}.")), route, state.now_ms())
            .expect("cached");
    }

    fn cached(state: &CacheState, name: &str) -> bool {
        !matches!(
            state.cache.get(&CacheKey::a_in(name), state.now_ms()),
            Lookup::Miss
        )
    }

    #[tokio::test]
    async fn reload_reads_the_servers_file_and_keeps_entries_of_unchanged_routes() {
        let dir = std::env::temp_dir().join(format!("dns-cache-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("servers");
        std::fs::write(&file, "server=/corp/10.0.0.1\nserver=/lab/10.0.0.2\n").expect("write");
        let arg = format!("--servers-file={}", file.display());
        let state = state(&["--no-resolv", "--no-hosts", &arg]);
        let reloader = Reloader::new(state.clone());
        cache_answer(&state, "www.corp");
        cache_answer(&state, "www.lab");

        // The lab route's server changes: its entries go, the corp entries stay.
        std::fs::write(&file, "server=/corp/10.0.0.1\nserver=/lab/10.0.0.3\n").expect("write");
        assert_eq!(
            reloader.reload(),
            Reloaded::Routes {
                routes: 2,
                dropped: 1
            }
        );
        assert!(cached(&state, "www.corp"));
        assert!(!cached(&state, "www.lab"));
        let lab = state.routes.load();
        let lab = lab.route_for("x.lab").expect("lab route");
        assert_eq!(lab.servers()[0].addr.to_string(), "10.0.0.3:53");

        // A broken file: the current routes keep serving.
        std::fs::write(&file, "server=/corp/not-an-address\n").expect("write");
        assert_eq!(reloader.reload(), Reloaded::KeptRoutes);
        assert!(state.routes.load().route_for("x.lab").is_some());
        assert!(cached(&state, "www.corp"));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[tokio::test]
    async fn reload_rereads_the_hosts_files() {
        let dir = std::env::temp_dir().join(format!("dns-cache-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("hosts");
        std::fs::write(&file, "10.1.1.1 one.test\n").expect("write");
        let arg = format!("--addn-hosts={}", file.display());
        let state = state(&["--no-resolv", "--no-hosts", &arg]);
        assert!(state.hosts.load().addresses("one.test").is_some());
        std::fs::write(&file, "10.1.1.2 two.test\n").expect("write");
        Reloader::new(state.clone()).reload();
        assert!(state.hosts.load().addresses("one.test").is_none());
        assert!(state.hosts.load().addresses("two.test").is_some());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
