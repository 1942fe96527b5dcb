//! The dnsmasq-compatible command line (dnsmasq 2.90 syntax: short and long options, `=` or a
//! separate argument, `--conf-file` lines without dashes) plus the options of ours, parsed into
//! one typed [`CacheConfig`].
//!
//! - [`options`]: the table of every option (implemented, accepted without effect, refused);
//! - [`getopt`]: the getopt-style parser and the `--conf-file` reader;
//! - [`servers`]: `--server`/`--local` specs and the `--servers-file` format.
//!
//! An unknown option is an error naming it, and so is a dnsmasq option dns-cache cannot honour
//! (with the reason); the few that cannot matter to a DNS-only cache are accepted with one
//! warning each.

pub mod getopt;
pub mod options;
pub mod servers;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

pub use options::Status;
pub use options::known_options;
pub use servers::{
    AddressSpec, ServerError, ServerSpec, ServerTarget, ServersFile, parse_address,
    parse_address_rule, parse_domain_list, parse_secondary, parse_server, parse_servers_file,
};

/// `--log-rate`: at most this many queries a second are logged (the rest counted).
pub const DEFAULT_LOG_RATE: u64 = 5000;
/// dnsmasq's default `--cache-size`.
pub const DEFAULT_CACHE_SIZE: usize = 150;
/// `--cache-max-bytes`: 8 MiB, what the cache's entries may hold (answers, names and
/// bookkeeping). With the manifest's `--cache-size=10000` and answers up to
/// [`DEFAULT_CACHE_MAX_ANSWER`], a full cache could hold 40 MiB; this keeps it, the in-flight
/// budget and the TCP buffers together under 48 MiB (the container's limit is 64Mi).
pub const DEFAULT_CACHE_MAX_BYTES: usize = 8 << 20;
/// `--cache-max-answer`: answers larger than this are served but not cached.
pub const DEFAULT_CACHE_MAX_ANSWER: usize = 4096;
/// dnsmasq's default `--dns-forward-max`.
pub const DEFAULT_FORWARD_MAX: usize = 150;
/// Our default `--max-tcp-connections` (dnsmasq's is 20, one process each): 256 connections
/// of at most one 64 KiB query each is 16 MiB at worst.
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 256;
/// `--max-inflight`: misses waiting on upstreams (and TCP answers being written) at once.
pub const DEFAULT_MAX_INFLIGHT: usize = 4096;
/// `--max-inflight-bytes`: 16 MiB, what those hold at most (each miss is charged its compact
/// copy and 4 KiB for its task and answer), well under the manifest's 64Mi.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 16 << 20;
/// `--max-coalesced`: queries that may wait for one identical miss in flight.
pub const DEFAULT_MAX_COALESCED: usize = 256;
/// dnsmasq's default port.
pub const DEFAULT_PORT: u16 = 53;
/// `--forward-deadline`: under glibc's 5 s resolver timeout, so a client that gets nothing
/// from upstreams hears SERVFAIL (and moves on to its next search suffix or server) before it
/// would time out and resend, while a slow upstream still has 4 s to answer.
pub const DEFAULT_FORWARD_DEADLINE: Duration = Duration::from_secs(4);
/// `--lameduck`: after SIGTERM, how long DNS keeps being answered before the process exits
/// (kube-dns's default), so clients still sent here while kube-proxy moves them away are
/// answered.
pub const DEFAULT_LAMEDUCK: Duration = Duration::from_secs(5);
/// Where dnsmasq reads upstreams by default.
pub const DEFAULT_RESOLV_FILE: &str = "/etc/resolv.conf";
/// `--node-sync-interval`: NodeLocal DNSCache's default.
pub const DEFAULT_NODE_SYNC_INTERVAL: Duration = Duration::from_secs(60);
/// `--tcp-pool-size`: connections per `--tcp-upstream` server. Each is pipelined, so two
/// carry a node's misses; the second keeps queries flowing while the first is replaced.
pub const DEFAULT_TCP_POOL_SIZE: usize = 2;
/// dnsmasq's default for `--use-stale-cache` without a value: one day.
pub const DEFAULT_STALE_SECS: u32 = 86400;

/// Why the command line was rejected (exit 64).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CliError {
    #[error("unknown option {0}")]
    Unknown(String),
    #[error("option {0} needs a value")]
    MissingValue(String),
    #[error("option {option}: {reason}")]
    BadValue { option: String, reason: String },
    #[error("option {option} is not supported: {reason}")]
    Refused {
        option: String,
        reason: &'static str,
    },
    #[error("cannot read --conf-file {path}: {reason}")]
    ConfFile { path: String, reason: String },
}

/// How a route picks among its upstreams (`--upstream-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamPolicy {
    /// dnsmasq: race all servers now and then, stick with the fastest.
    #[default]
    Fastest,
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    WeightedLeastConnections,
    ShortestExpectedDelay,
    NeverQueue,
    SourceHashing,
    DestinationHashing,
}

/// An `--upstream-policy` name that is not one of ours.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0:?} is not one of fastest, rr, wrr, lc, wlc, sed, nq, sh, dh")]
pub struct UnknownPolicy(pub String);

impl std::str::FromStr for UpstreamPolicy {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "fastest" => UpstreamPolicy::Fastest,
            "rr" => UpstreamPolicy::RoundRobin,
            "wrr" => UpstreamPolicy::WeightedRoundRobin,
            "lc" => UpstreamPolicy::LeastConnections,
            "wlc" => UpstreamPolicy::WeightedLeastConnections,
            "sed" => UpstreamPolicy::ShortestExpectedDelay,
            "nq" => UpstreamPolicy::NeverQueue,
            "sh" => UpstreamPolicy::SourceHashing,
            "dh" => UpstreamPolicy::DestinationHashing,
            other => return Err(UnknownPolicy(other.to_owned())),
        })
    }
}

/// Everything the command line says.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// `-v`/`--version`: print the version and exit.
    pub version: bool,
    pub keep_in_foreground: bool,
    pub port: u16,
    pub listen_addresses: Vec<IpAddr>,
    pub cache_size: usize,
    /// `--cache-max-bytes`: the cache's byte ceiling beside `--cache-size` (entries).
    pub cache_max_bytes: usize,
    /// `--cache-max-answer`: the largest answer cached, in bytes.
    pub cache_max_answer: usize,
    pub no_negcache: bool,
    pub neg_ttl: Option<u32>,
    pub min_cache_ttl: u32,
    pub max_cache_ttl: Option<u32>,
    pub max_ttl: Option<u32>,
    pub dns_loop_detect: bool,
    pub log_queries: bool,
    /// `--log-format`: dnsmasq's lines (default) or JSON.
    pub log_format: dns_transport::query_log::Format,
    /// `--log-sample`: one query in this many is logged.
    pub log_sample: u64,
    /// `--log-rate`: logged queries per second at most (0: no limit).
    pub log_rate: u64,
    pub servers: Vec<ServerSpec>,
    pub no_resolv: bool,
    pub resolv_file: PathBuf,
    pub servers_file: Option<PathBuf>,
    pub no_hosts: bool,
    pub addn_hosts: Vec<PathBuf>,
    pub forward_max: usize,
    /// DNS-over-TCP connections kept open at most (`--max-tcp-connections`); an eighth of
    /// them per client address.
    pub max_tcp_connections: usize,
    pub all_servers: bool,
    pub strict_order: bool,
    /// Seconds past expiry an entry may still be served (`--use-stale-cache`); 0 = unlimited.
    pub use_stale_cache: Option<u32>,
    pub no_round_robin: bool,
    pub local_ttl: u32,
    // ---- ours ----
    pub upstream_policy: UpstreamPolicy,
    pub upstream_weights: Vec<(SocketAddr, u32)>,
    pub metrics_address: Option<SocketAddr>,
    pub workers: usize,
    pub upstream_timeout: Duration,
    /// How long a forwarded query may wait for any valid reply before SERVFAIL
    /// (`--forward-deadline`, ms).
    pub forward_deadline: Duration,
    /// Misses waiting on upstreams and TCP answers being written, at most (`--max-inflight`);
    /// a client address holds at most what is left (half, when alone).
    pub max_inflight: usize,
    /// The bytes those hold at most (`--max-inflight-bytes`).
    pub max_inflight_bytes: usize,
    /// How long DNS keeps answering after SIGTERM (`--lameduck`).
    pub lameduck: Duration,
    /// Queries that may wait for one identical miss in flight (`--max-coalesced`); more are
    /// REFUSED.
    pub max_coalesced: usize,
    /// Zones whose SOA serial is watched (`--watch-soa`): lower case, without dots at the ends.
    pub watch_soa: Vec<String>,
    pub watch_soa_interval: Duration,
    /// `--secondary` zones, held as transferred copies.
    pub secondaries: Vec<crate::secondary::SecondarySpec>,
    /// `--secondary-max-size`: bytes a transfer reads, and a copy holds, at most.
    pub secondary_max_size: usize,
    // ---- node-local mode ----
    /// `--node-local`: set up the interface and conntrack bypass rules, hand the sockets over
    /// to a successor on SIGTERM.
    pub node_local: bool,
    /// `--local-ip`: the addresses carried by the interface and listened on.
    pub local_ips: Vec<IpAddr>,
    /// `--interface-name`.
    pub interface_name: String,
    /// `--interface-kind`.
    pub interface_kind: node_local::InterfaceKind,
    /// `--netfilter`.
    pub netfilter: node_local::NetfilterMode,
    /// `--skip-teardown`: leave the interface and rules in place on exit.
    pub skip_teardown: bool,
    /// `--node-sync-interval`: how often the interface and rules are checked.
    pub node_sync_interval: Duration,
    /// `--tcp-upstream`: servers asked over pooled TCP connections.
    pub tcp_upstreams: Vec<SocketAddr>,
    /// `--tcp-pool-size`: connections per such server.
    pub tcp_pool_size: usize,
    /// `--handover-lock`: the file node-local instances hold shared; the last one out tears
    /// down.
    pub handover_lock: Option<PathBuf>,
    /// `--health-socket`: a Unix socket answering `ok` (or `lameduck`) for this instance.
    pub health_socket: Option<PathBuf>,
    /// `--health-probe`: ask that socket and exit 0 when healthy (an exec probe).
    pub health_probe: Option<PathBuf>,
    // ---- answer policy (dnsmasq's, then ours) ----
    /// `--address=/domain/.../ip` lines with addresses (those without are local-only servers).
    pub addresses: Vec<AddressSpec>,
    pub domain_needed: bool,
    pub bogus_priv: bool,
    pub stop_dns_rebind: bool,
    pub rebind_localhost_ok: bool,
    /// `--rebind-domain-ok` domains (lower case, without dots at the ends).
    pub rebind_domain_ok: Vec<String>,
    pub filter_a: bool,
    pub filter_aaaa: bool,
    /// `--ipv4-only`: AAAA answered NODATA here for these domains ("" is every name).
    pub ipv4_only: Vec<String>,
    /// `--ipv6-only`: A answered NODATA here for these domains ("" is every name).
    pub ipv6_only: Vec<String>,
    /// `--edns-packet-max`: the largest UDP reply sent, whatever the client offers.
    pub edns_packet_max: Option<usize>,
    pub pid_file: Option<PathBuf>,
    pub clear_on_reload: bool,
    pub no_ident: bool,
    /// Options accepted without effect, with the reason (warned about once).
    pub ignored: Vec<(String, &'static str)>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            version: false,
            keep_in_foreground: false,
            port: DEFAULT_PORT,
            listen_addresses: Vec::new(),
            cache_size: DEFAULT_CACHE_SIZE,
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
            cache_max_answer: DEFAULT_CACHE_MAX_ANSWER,
            no_negcache: false,
            neg_ttl: None,
            min_cache_ttl: 0,
            max_cache_ttl: None,
            max_ttl: None,
            dns_loop_detect: false,
            log_queries: false,
            log_format: dns_transport::query_log::Format::Dnsmasq,
            log_sample: 1,
            log_rate: DEFAULT_LOG_RATE,
            servers: Vec::new(),
            no_resolv: false,
            resolv_file: PathBuf::from(DEFAULT_RESOLV_FILE),
            servers_file: None,
            no_hosts: false,
            addn_hosts: Vec::new(),
            forward_max: DEFAULT_FORWARD_MAX,
            max_tcp_connections: DEFAULT_MAX_TCP_CONNECTIONS,
            all_servers: false,
            strict_order: false,
            use_stale_cache: None,
            no_round_robin: false,
            local_ttl: 0,
            upstream_policy: UpstreamPolicy::default(),
            upstream_weights: Vec::new(),
            metrics_address: None,
            workers: 0,
            upstream_timeout: Duration::from_millis(1500),
            forward_deadline: DEFAULT_FORWARD_DEADLINE,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            lameduck: DEFAULT_LAMEDUCK,
            max_coalesced: DEFAULT_MAX_COALESCED,
            watch_soa: Vec::new(),
            watch_soa_interval: Duration::from_millis(250),
            secondaries: Vec::new(),
            secondary_max_size: crate::secondary::DEFAULT_MAX_SIZE,
            node_local: false,
            local_ips: Vec::new(),
            interface_name: node_local::interface::DEFAULT_INTERFACE.to_owned(),
            interface_kind: node_local::InterfaceKind::default(),
            netfilter: node_local::NetfilterMode::default(),
            skip_teardown: false,
            node_sync_interval: DEFAULT_NODE_SYNC_INTERVAL,
            tcp_upstreams: Vec::new(),
            tcp_pool_size: DEFAULT_TCP_POOL_SIZE,
            handover_lock: None,
            health_socket: None,
            health_probe: None,
            addresses: Vec::new(),
            domain_needed: false,
            bogus_priv: false,
            stop_dns_rebind: false,
            rebind_localhost_ok: false,
            rebind_domain_ok: Vec::new(),
            filter_a: false,
            filter_aaaa: false,
            ipv4_only: Vec::new(),
            ipv6_only: Vec::new(),
            edns_packet_max: None,
            pid_file: None,
            clear_on_reload: false,
            no_ident: false,
            ignored: Vec::new(),
        }
    }
}

impl CacheConfig {
    /// The addresses to listen on (dnsmasq listens on every address by default; node-local
    /// mode on its `--local-ip` addresses and any `--listen-address`).
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        if self.node_local {
            let mut ips = self.local_ips.clone();
            ips.extend(
                self.listen_addresses
                    .iter()
                    .filter(|ip| !self.local_ips.contains(ip)),
            );
            return ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, self.port))
                .collect();
        }
        if self.listen_addresses.is_empty() {
            return vec![SocketAddr::new(IpAddr::from([0, 0, 0, 0]), self.port)];
        }
        self.listen_addresses
            .iter()
            .map(|ip| SocketAddr::new(*ip, self.port))
            .collect()
    }

    /// What node-local mode sets up (None when it is off).
    pub fn node_local_spec(&self) -> Option<node_local::NodeLocalSpec> {
        self.node_local.then(|| node_local::NodeLocalSpec {
            ips: self.local_ips.clone(),
            port: self.port,
            interface: node_local::InterfaceSpec {
                name: self.interface_name.clone(),
                kind: self.interface_kind,
            },
            netfilter: self.netfilter,
            tools: node_local::Tools::default(),
            lock: self.handover_lock.clone(),
        })
    }
}
