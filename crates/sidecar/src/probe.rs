//! `--probe` (contract §4.2): the flag's syntax, and the loop that queries a DNS server and keeps
//! the last result for `/healthcheck/<label>`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};
use tokio_util::sync::CancellationToken;

use dns_transport::LookupError;
use dns_transport::client::QueryError;

use crate::metrics::ProbeMetrics;

/// Legacy default probe interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// The miekg client's default read timeout, which the legacy probes used.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The state of a probe before its first result.
pub const WAITING: &str = "waiting for first probe";

/// The record types a probe may ask for: the legacy four, then ours.
const TYPES: &[(&str, RecordType)] = &[
    ("A", RecordType::A),
    ("AAAA", RecordType::AAAA),
    ("ANY", RecordType::ANY),
    ("SRV", RecordType::SRV),
    ("TXT", RecordType::TXT),
    ("PTR", RecordType::PTR),
    ("CNAME", RecordType::CNAME),
    ("NS", RecordType::NS),
    ("SOA", RecordType::SOA),
];

/// Where a probe sends its query: an address, or a host name looked up before every query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeServer {
    Addr(SocketAddr),
    Host(String, u16),
}

impl fmt::Display for ProbeServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeServer::Addr(addr) => write!(f, "{addr}"),
            ProbeServer::Host(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

impl ProbeServer {
    async fn resolve(&self) -> Result<SocketAddr, LookupError> {
        match self {
            ProbeServer::Addr(addr) => Ok(*addr),
            ProbeServer::Host(host, port) => {
                let found = dns_transport::lookup_host(host, *port).await?;
                found
                    .first()
                    .copied()
                    .ok_or_else(|| LookupError::NoAddress { host: host.clone() })
            }
        }
    }
}

/// Why one probe failed; all of them are retried at the next interval.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The legacy rule: a reply without answer records is a failure, whatever its rcode.
    #[error("no RRs for domain {0:?}")]
    NoRecords(String),
    /// SERVFAIL with the Extended DNS Error "Not Ready" (RFC 8914): kube-dns before its first
    /// sync, directly or through dns-cache. The server answers, so it is alive, not ready.
    #[error("not ready: {0:?} answered SERVFAIL with Extended DNS Error 14 (Not Ready)")]
    NotReady(String),
}

/// Why a `--probe` value was rejected; each form has its own message, legacy wording first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeSpecError {
    #[error(
        "invalid format to --probe: {0:?} (want <label>,<server>[:port],<name>[,<interval seconds>][,<type>])"
    )]
    Format(String),
    #[error("label must be of format ^[a-zA-Z0-9_]+$, got {0:?}")]
    Label(String),
    #[error("empty server in --probe")]
    EmptyServer,
    #[error("invalid port {port:?} in server {server:?} of --probe")]
    Port { port: String, server: String },
    #[error("invalid server {0:?} in --probe: not an ip[:port], [ipv6]:port or host[:port]")]
    Server(String),
    #[error("invalid DNS name {name:?} in --probe{reason}")]
    Name { name: String, reason: String },
    #[error(
        "invalid interval {0:?} in --probe: strconv.Atoi: parsing {0:?}: invalid syntax (whole seconds)"
    )]
    IntervalSyntax(String),
    #[error("invalid interval {0:?} in --probe: must be at least 1 second")]
    IntervalTooShort(String),
    #[error("invalid type for DNS: {given} (one of {known})")]
    Type { given: String, known: String },
}

/// One parsed `--probe=<label>,<server>[:port],<name>[,<interval>][,<type>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub label: String,
    pub server: ProbeServer,
    /// Fully qualified, with its trailing dot.
    pub name: String,
    pub interval: Duration,
    pub rtype: RecordType,
}

impl ProbeSpec {
    /// Parses the flag value. Each invalid form gets its own message, legacy wording first.
    pub fn parse(value: &str) -> Result<Self, ProbeSpecError> {
        let fields: Vec<&str> = value.split(',').collect();
        if !(3..=5).contains(&fields.len()) {
            return Err(ProbeSpecError::Format(value.to_owned()));
        }
        let label = fields[0];
        if label.is_empty()
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(ProbeSpecError::Label(label.to_owned()));
        }
        let server = parse_server(fields[1])?;
        let name = parse_name(fields[2])?;
        let interval = match fields.get(3) {
            Some(s) => parse_interval(s)?,
            None => DEFAULT_INTERVAL,
        };
        let rtype = match fields.get(4) {
            Some(s) => parse_type(s)?,
            None => RecordType::ANY,
        };
        Ok(ProbeSpec {
            label: label.to_owned(),
            server,
            name,
            interval,
            rtype,
        })
    }
}

fn parse_server(s: &str) -> Result<ProbeServer, ProbeSpecError> {
    if s.is_empty() {
        return Err(ProbeSpecError::EmptyServer);
    }
    // A bare IPv6 address would be ambiguous with legacy's "append :53 when there is no colon";
    // it means port 53.
    if let Ok(ip) = s.parse::<Ipv6Addr>() {
        return Ok(ProbeServer::Addr(SocketAddr::new(IpAddr::V6(ip), 53)));
    }
    let with_port = if s.contains(':') {
        s.to_owned()
    } else {
        format!("{s}:53")
    };
    if let Ok(addr) = with_port.parse::<SocketAddr>() {
        return Ok(ProbeServer::Addr(addr));
    }
    let (host, port) = with_port
        .rsplit_once(':')
        .ok_or_else(|| ProbeSpecError::Server(s.to_owned()))?;
    let port: u16 = port.parse().map_err(|_| ProbeSpecError::Port {
        port: port.to_owned(),
        server: s.to_owned(),
    })?;
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(ProbeSpecError::Server(s.to_owned()));
    }
    Ok(ProbeServer::Host(host.to_owned(), port))
}

fn parse_name(s: &str) -> Result<String, ProbeSpecError> {
    let invalid = |reason: String| ProbeSpecError::Name {
        name: s.to_owned(),
        reason,
    };
    let name = if s.ends_with('.') {
        s.to_owned()
    } else {
        format!("{s}.")
    };
    if name == "." || name.contains("..") {
        return Err(invalid(String::new()));
    }
    Name::from_ascii(&name).map_err(|e| invalid(format!(": {e}")))?;
    Ok(name)
}

fn parse_interval(s: &str) -> Result<Duration, ProbeSpecError> {
    let seconds: i64 = s
        .parse()
        .map_err(|_| ProbeSpecError::IntervalSyntax(s.to_owned()))?;
    if seconds < 1 {
        return Err(ProbeSpecError::IntervalTooShort(s.to_owned()));
    }
    Ok(Duration::from_secs(seconds.unsigned_abs()))
}

fn parse_type(s: &str) -> Result<RecordType, ProbeSpecError> {
    TYPES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map(|&(_, rtype)| rtype)
        .ok_or_else(|| {
            let known: Vec<&str> = TYPES.iter().map(|(n, _)| *n).collect();
            ProbeSpecError::Type {
                given: s.to_owned(),
                known: known.join(", "),
            }
        })
}

/// The last result of a probe, as `/healthcheck/<label>` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeStatus {
    /// Alive: answered with records, or said "Not Ready" (`/healthcheck/<label>`).
    pub ok: bool,
    /// Answered with records (`/readiness/<label>`).
    pub ready: bool,
    pub latency: Duration,
    pub error: String,
}

/// One probe: its spec, its last result and its metrics.
#[derive(Debug)]
pub struct Probe {
    pub spec: ProbeSpec,
    status: Mutex<ProbeStatus>,
    metrics: ProbeMetrics,
}

impl Probe {
    pub fn new(spec: ProbeSpec, metrics: ProbeMetrics) -> Self {
        Probe {
            spec,
            status: Mutex::new(ProbeStatus {
                ok: false,
                ready: false,
                latency: Duration::ZERO,
                error: WAITING.into(),
            }),
            metrics,
        }
    }

    pub fn status(&self) -> ProbeStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sleeps a random part of the interval (so probes spread out), then probes every interval
    /// until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let interval = self.spec.interval;
        let first = interval.mul_f64(rand::random::<f64>());
        tokio::select! {
            _ = tokio::time::sleep(first) => {}
            _ = shutdown.cancelled() => return,
        }
        loop {
            let started = dns_transport::clock::now();
            self.probe_once().await;
            let rest = interval.saturating_sub(started.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(rest) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One query and its bookkeeping.
    pub async fn probe_once(&self) {
        let started = dns_transport::clock::now();
        let outcome = self.exchange().await;
        let latency = started.elapsed();
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match outcome {
            Ok(()) => {
                self.metrics
                    .succeeded(latency, daemon_support::clock::wall());
                if !status.ok {
                    tracing::info!(probe = %self.spec.label, ?latency, "probe ok");
                }
                *status = ProbeStatus {
                    ok: true,
                    ready: true,
                    latency,
                    error: String::new(),
                };
            }
            Err(error @ ProbeError::NotReady(_)) => {
                self.metrics.not_ready();
                if status.ready || !status.ok {
                    tracing::info!(probe = %self.spec.label, server = %self.spec.server, "probe answered: not ready");
                }
                *status = ProbeStatus {
                    ok: true,
                    ready: false,
                    latency,
                    error: error.to_string(),
                };
            }
            Err(error) => {
                self.metrics.failed();
                tracing::warn!(probe = %self.spec.label, server = %self.spec.server, name = %self.spec.name, %error, "probe failed");
                *status = ProbeStatus {
                    ok: false,
                    ready: false,
                    latency: Duration::ZERO,
                    error: error.to_string(),
                };
            }
        }
    }

    /// The legacy rule: success is a reply with at least one answer RR, whatever its rcode.
    async fn exchange(&self) -> Result<(), ProbeError> {
        let spec = &self.spec;
        let server = spec.server.resolve().await?;
        let reply = query(
            server,
            &spec.name,
            spec.rtype,
            hickory_proto::rr::DNSClass::IN,
        )
        .await?;
        self.metrics
            .rcode(&rcode_name(u16::from(reply.metadata.response_code)));
        if reply.answers.is_empty() {
            if says_not_ready(&reply) {
                return Err(ProbeError::NotReady(spec.name.clone()));
            }
            return Err(ProbeError::NoRecords(spec.name.clone()));
        }
        Ok(())
    }
}

/// SERVFAIL carrying the Extended DNS Error "Not Ready".
fn says_not_ready(reply: &Message) -> bool {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    reply.metadata.response_code == hickory_proto::op::ResponseCode::ServFail
        && reply.edns.as_ref().is_some_and(|edns| {
            edns.options()
                .get_all(EdnsCode::Unknown(dns_wire::opt::EDE_OPTION))
                .into_iter()
                .any(|option| match option {
                    EdnsOption::Unknown(_, data) => {
                        data.get(..2) == Some(&dns_wire::ede::NOT_READY.to_be_bytes()[..])
                    }
                    _ => false,
                })
        })
}

/// The conventional mnemonic of an rcode (`NOERROR`, `NXDOMAIN`, ...), else its number.
pub fn rcode_name(rcode: u16) -> String {
    const NAMES: [&str; 11] = [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
        "NXRRSET", "NOTAUTH", "NOTZONE",
    ];
    NAMES
        .get(usize::from(rcode))
        .map_or_else(|| rcode.to_string(), |name| (*name).to_owned())
}

/// One UDP query with RD set and a random ID, waiting [`PROBE_TIMEOUT`]; the reply must carry
/// the query's ID and question and come from `server` ([`dns_transport::client::query`]).
pub async fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    class: hickory_proto::rr::DNSClass,
) -> Result<Message, QueryError> {
    dns_transport::client::query(server, name, rtype, class, PROBE_TIMEOUT).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(value: &str) -> ProbeSpec {
        ProbeSpec::parse(value).unwrap_or_else(|e| panic!("{value}: {e}"))
    }

    fn err(value: &str) -> String {
        ProbeSpec::parse(value).expect_err(value).to_string()
    }

    #[test]
    fn canonical_probes_parse() {
        let p = ok("kubedns,127.0.0.1:10053,kubernetes.default.svc.cluster.local,5,SRV");
        assert_eq!(p.label, "kubedns");
        assert_eq!(
            p.server,
            ProbeServer::Addr("127.0.0.1:10053".parse().expect("addr"))
        );
        assert_eq!(p.name, "kubernetes.default.svc.cluster.local.");
        assert_eq!(p.interval, Duration::from_secs(5));
        assert_eq!(p.rtype, RecordType::SRV);
    }

    #[test]
    fn defaults_port_dot_interval_and_type() {
        let p = ok("dnsmasq,127.0.0.1,example.com");
        assert_eq!(
            p.server,
            ProbeServer::Addr("127.0.0.1:53".parse().expect("addr"))
        );
        assert_eq!(p.name, "example.com.");
        assert_eq!(p.interval, DEFAULT_INTERVAL);
        assert_eq!(p.rtype, RecordType::ANY);
        let p = ok("x_1,[::1]:53,example.com.,10");
        assert_eq!(
            p.server,
            ProbeServer::Addr("[::1]:53".parse().expect("addr"))
        );
        assert_eq!(p.name, "example.com.");
        assert_eq!(p.interval, Duration::from_secs(10));
        let p = ok("v6,::1,example.com,1,aaaa");
        assert_eq!(
            p.server,
            ProbeServer::Addr("[::1]:53".parse().expect("addr"))
        );
        assert_eq!(p.rtype, RecordType::AAAA);
        let p = ok("h,localhost:5353,example.com,1,A");
        assert_eq!(p.server, ProbeServer::Host("localhost".into(), 5353));
        let p = ok("h,kube-dns.kube-system,example.com,1,A");
        assert_eq!(
            p.server,
            ProbeServer::Host("kube-dns.kube-system".into(), 53)
        );
    }

    #[test]
    fn every_type() {
        for (name, rtype) in TYPES {
            assert_eq!(
                ok(&format!("t,127.0.0.1,example.com,5,{name}")).rtype,
                *rtype
            );
        }
    }

    #[test]
    fn invalid_forms_are_rejected_with_their_reason() {
        let cases = [
            ("kubedns,127.0.0.1:53", "invalid format to --probe"),
            ("a,b,c,1,A,extra", "invalid format to --probe"),
            ("", "invalid format to --probe"),
            ("kube-dns,127.0.0.1,example.com", "label must be of format"),
            (",127.0.0.1,example.com", "label must be of format"),
            ("a,127.0.0.1,example.com,0.5", "invalid syntax"),
            ("a,127.0.0.1,example.com,abc", "invalid syntax"),
            ("a,127.0.0.1,example.com,0", "at least 1 second"),
            ("a,127.0.0.1,example.com,-5", "at least 1 second"),
            ("a,127.0.0.1,example.com,5,MX", "invalid type for DNS: MX"),
            ("a,127.0.0.1,example.com,,A", "invalid syntax"),
            ("a,127.0.0.1:99999,example.com", "invalid port"),
            ("a,127.0.0.1:x,example.com", "invalid port"),
            ("a,,example.com", "empty server"),
            ("a,bad host!,example.com", "invalid server"),
            ("a,127.0.0.1,,5", "invalid DNS name"),
            ("a,127.0.0.1,a..b", "invalid DNS name"),
        ];
        for (value, needle) in cases {
            let message = err(value);
            assert!(message.contains(needle), "{value:?}: {message}");
        }
    }

    #[test]
    fn rcode_names() {
        assert_eq!(rcode_name(0), "NOERROR");
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(23), "23");
    }

    #[tokio::test]
    async fn the_first_state_is_waiting() {
        let metrics = crate::metrics::Metrics::new("kubedns").expect("metrics");
        let spec = ok("a,127.0.0.1:9,example.com,5,A");
        let probe = Probe::new(spec.clone(), metrics.probe(&spec.label).expect("probe"));
        let status = probe.status();
        assert!(!status.ok);
        assert_eq!(status.error, WAITING);
    }
}
