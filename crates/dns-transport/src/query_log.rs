//! Query logs, off by default, for both servers: dnsmasq's `--log-queries` lines (so parsers of
//! dnsmasq logs keep working) or one JSON object per query. The query path only decides whether
//! a query is logged (sampling, then a lines-per-second limit, both a few atomic operations) and
//! hands a copy of the reply to a writer thread over a bounded channel; parsing, formatting and
//! writing happen there, in batches every [`BATCH_PERIOD`]. A full channel drops the record;
//! every drop is counted.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};

/// Records waiting for the writer at most.
pub const QUEUE: usize = 4096;
/// The most of a reply a record copies (dnsmasq lines; JSON records copy only the header and
/// question): the queue holds 4 MiB at most, whatever clients ask. A longer reply's records
/// are not listed.
pub const MAX_COPY: usize = 1024;

/// How lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// dnsmasq 2.90's `--log-queries` lines, after `<program>[<pid>]: `.
    Dnsmasq,
    /// One JSON object per query.
    Json,
}

/// What to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryLogConfig {
    pub format: Format,
    /// Log one query in this many (1: every query).
    pub sample: u64,
    /// Lines (queries) per second at most; 0: no limit.
    pub rate: u64,
    /// The server's name in JSON records (`kube-dns`, `dns-cache`) and, for dnsmasq lines,
    /// the program name before the PID.
    pub server: &'static str,
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// dns-cache's cache.
    Cache,
    /// Local data or policy (`--address`, hosts files, local-only domains, family modes).
    Config,
    /// A hosts file.
    Hosts,
    /// kube-dns's cluster zone.
    Zone,
    /// An upstream server (none when an identical query in flight was joined).
    Upstream(Option<SocketAddr>),
}

/// One logged query.
#[derive(Debug)]
pub struct Record {
    pub time: SystemTime,
    pub client: SocketAddr,
    /// The reply as sent (its question, RCODE and answers are what is logged).
    pub reply: Vec<u8>,
    pub latency: Duration,
    pub source: Source,
}

/// What the log did, for the metrics.
#[derive(Debug, Default)]
pub struct QueryLogStats {
    pub written: AtomicU64,
    /// Over the lines-per-second limit.
    pub over_rate: AtomicU64,
    /// The writer fell behind (channel full).
    pub queue_full: AtomicU64,
}

impl QueryLogStats {
    /// `<prefix>_query_log_lines_total` and `<prefix>_query_log_dropped_total{reason}`.
    pub fn render(&self, prefix: &str, out: &mut String) {
        use std::fmt::Write as _;
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# HELP {prefix}_query_log_lines_total Queries written to the query log.\n\
             # TYPE {prefix}_query_log_lines_total counter\n\
             {prefix}_query_log_lines_total {}\n\
             # HELP {prefix}_query_log_dropped_total Sampled queries not logged: over the lines-per-second limit (rate) or while the writer was behind (queue).\n\
             # TYPE {prefix}_query_log_dropped_total counter\n\
             {prefix}_query_log_dropped_total{{reason=\"rate\"}} {}\n\
             {prefix}_query_log_dropped_total{{reason=\"queue\"}} {}\n",
            load(&self.written),
            load(&self.over_rate),
            load(&self.queue_full)
        );
    }
}

/// The query path's handle on the log.
#[derive(Debug)]
pub struct QueryLog {
    format: Format,
    sample: u64,
    rate: u64,
    seen: AtomicU64,
    /// The second (since the epoch) `in_second` counts for.
    second: AtomicU64,
    in_second: AtomicU64,
    tx: SyncSender<Record>,
    pub stats: Arc<QueryLogStats>,
}

impl QueryLog {
    /// Starts the writer thread, writing to `out` (stderr in the binaries).
    pub fn start(
        config: QueryLogConfig,
        out: Box<dyn Write + Send>,
    ) -> std::io::Result<Arc<QueryLog>> {
        let (tx, rx) = sync_channel(QUEUE);
        let stats = Arc::new(QueryLogStats::default());
        let writer_stats = stats.clone();
        let writer_config = config.clone();
        std::thread::Builder::new()
            .name("query-log".into())
            .spawn(move || write_loop(&writer_config, &rx, out, &writer_stats))?;
        Ok(Arc::new(QueryLog {
            format: config.format,
            sample: config.sample.max(1),
            rate: config.rate,
            seen: AtomicU64::new(0),
            second: AtomicU64::new(0),
            in_second: AtomicU64::new(0),
            tx,
            stats,
        }))
    }

    /// Whether this query is logged (call before copying its reply).
    pub fn wants(&self) -> bool {
        if !self
            .seen
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(self.sample)
        {
            return false;
        }
        if self.rate == 0 {
            return true;
        }
        let now = daemon_support::clock::unix_secs();
        let second = self.second.load(Ordering::Relaxed);
        // One thread starts the new second's count.
        if second != now
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.in_second.store(0, Ordering::Relaxed);
        }
        if self.in_second.fetch_add(1, Ordering::Relaxed) < self.rate {
            return true;
        }
        self.stats.over_rate.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Logs the reply to `client` when this query is sampled and under the rate: a copy of
    /// the reply goes to the writer, nothing else happens here.
    pub fn offer(&self, client: SocketAddr, reply: &[u8], started: Instant, source: Source) {
        if self.wants() {
            let keep = match self.format {
                Format::Json => question_end(reply),
                Format::Dnsmasq => reply.len(),
            };
            self.log(Record {
                time: daemon_support::clock::wall(),
                client,
                reply: reply[..keep.min(MAX_COPY)].to_vec(),
                latency: started.elapsed(),
                source,
            });
        }
    }

    /// Hands a record to the writer; dropped (and counted) when it is behind.
    pub fn log(&self, record: Record) {
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The writer wakes this often, writes what came meanwhile in one go and sleeps again: a
/// sender never has to wake it (no futex call, no context switch per query), and lines appear
/// within this long. The queue holds 4,096 records: 200,000 lines a second before any drop.
pub const BATCH_PERIOD: Duration = Duration::from_millis(20);

fn write_loop(
    config: &QueryLogConfig,
    rx: &Receiver<Record>,
    out: Box<dyn Write + Send>,
    stats: &QueryLogStats,
) {
    use std::sync::mpsc::TryRecvError;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let prefix = format!("{}[{}]: ", config.server, std::process::id());
    let mut text = String::with_capacity(512);
    loop {
        let mut wrote = false;
        loop {
            let record = match rx.try_recv() {
                Ok(record) => record,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            };
            text.clear();
            match config.format {
                Format::Dnsmasq => dnsmasq_lines(&record, &prefix, &mut text),
                Format::Json => json_line(&record, config.server, &mut text),
            }
            if text.is_empty() {
                continue;
            }
            if out.write_all(text.as_bytes()).is_err() {
                return;
            }
            wrote = true;
            stats.written.fetch_add(1, Ordering::Relaxed);
        }
        if wrote && out.flush().is_err() {
            return;
        }
        std::thread::sleep(BATCH_PERIOD);
    }
}

/// `1.2.3.4`, or `1.2.3.4#5353` off port 53 (dnsmasq's way).
fn server_text(addr: SocketAddr) -> String {
    match addr.port() {
        53 => addr.ip().to_string(),
        port => format!("{}#{port}", addr.ip()),
    }
}

fn trim_dot(name: &str) -> &str {
    if name.len() > 1 {
        name.trim_end_matches('.')
    } else {
        name
    }
}

/// dnsmasq's lines for one query: `query[A] x from c`, `forwarded x to s`, then
/// `reply x is ip` (or `cached`, `config`, `/etc/hosts`), `reply x is NXDOMAIN`,
/// `reply x is NODATA-IPv4`, `reply error is SERVFAIL`.
pub fn dnsmasq_lines(record: &Record, prefix: &str, out: &mut String) {
    use std::fmt::Write as _;
    let Some(summary) = summarize(&record.reply) else {
        return;
    };
    let name = trim_dot(&summary.name);
    let qtype = RecordType::from(summary.qtype);
    let _ = writeln!(
        out,
        "{prefix}query[{qtype}] {name} from {}",
        record.client.ip()
    );
    let verb = match record.source {
        Source::Cache => "cached",
        Source::Config | Source::Zone => "config",
        Source::Hosts => "/etc/hosts",
        Source::Upstream(server) => {
            if let Some(server) = server {
                let _ = writeln!(out, "{prefix}forwarded {name} to {}", server_text(server));
            }
            "reply"
        }
    };
    // A reply longer than the copy is not decoded: its records are not listed.
    let Ok(reply) = Message::from_vec(&record.reply) else {
        return;
    };
    let rcode = reply.metadata.response_code;
    match rcode {
        hickory_proto::op::ResponseCode::NoError => {}
        hickory_proto::op::ResponseCode::NXDomain => {
            let _ = writeln!(out, "{prefix}{verb} {name} is NXDOMAIN");
            return;
        }
        other => {
            let _ = writeln!(out, "{prefix}reply error is {}", rcode_text(other));
            return;
        }
    }
    if reply.answers.is_empty() {
        let nodata = match qtype {
            RecordType::A => "NODATA-IPv4",
            RecordType::AAAA => "NODATA-IPv6",
            _ => "NODATA",
        };
        let _ = writeln!(out, "{prefix}{verb} {name} is {nodata}");
        return;
    }
    for answer in &reply.answers {
        let owner = answer.name.to_ascii();
        let owner = trim_dot(&owner);
        let _ = match &answer.data {
            RData::A(a) => writeln!(out, "{prefix}{verb} {owner} is {a}"),
            RData::AAAA(a) => writeln!(out, "{prefix}{verb} {owner} is {a}"),
            RData::CNAME(_) => writeln!(out, "{prefix}{verb} {owner} is <CNAME>"),
            RData::PTR(target) => {
                let address = dns_wire::parse_reverse(&owner.to_ascii_lowercase())
                    .map_or_else(|| owner.to_owned(), |ip: IpAddr| ip.to_string());
                writeln!(
                    out,
                    "{prefix}{verb} {address} is {}",
                    trim_dot(&target.0.to_ascii())
                )
            }
            RData::TXT(txt) => writeln!(out, "{prefix}{verb} {owner} is {txt}"),
            other => writeln!(out, "{prefix}{verb} {owner} is <{}>", other.record_type()),
        };
    }
}

fn rcode_text(rcode: hickory_proto::op::ResponseCode) -> String {
    use hickory_proto::op::ResponseCode;
    match rcode {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

/// One JSON object: `time`, `server`, `client`, `name`, `type`, `rcode`, `answers`,
/// `latency_us`, `source` (`cache`, `config`, `hosts`, `zone`, `upstream`) and `upstream`.
pub fn json_line(record: &Record, server: &str, out: &mut String) {
    use std::fmt::Write as _;
    let Some(summary) = summarize(&record.reply) else {
        return;
    };
    let (source, upstream) = match record.source {
        Source::Cache => ("cache", None),
        Source::Config => ("config", None),
        Source::Hosts => ("hosts", None),
        Source::Zone => ("zone", None),
        Source::Upstream(server) => ("upstream", server),
    };
    out.push_str("{\"time\":\"");
    rfc3339(record.time, out);
    let _ = write!(
        out,
        "\",\"server\":\"{server}\",\"client\":\"{}\",\"name\":",
        record.client
    );
    json_string(&summary.name, out);
    let _ = write!(
        out,
        ",\"type\":\"{}\",\"rcode\":\"{}\",\"answers\":{},\"latency_us\":{},\"source\":\"{source}\"",
        RecordType::from(summary.qtype),
        rcode_text(hickory_proto::op::ResponseCode::from(0, summary.rcode)),
        summary.answers,
        record.latency.as_micros()
    );
    if let Some(upstream) = upstream {
        let _ = write!(out, ",\"upstream\":\"{upstream}\"");
    }
    out.push_str("}\n");
}

/// What a JSON record says of a reply, read from its header and question only (no record is
/// decoded: the writer keeps up with more queries).
struct Summary {
    name: String,
    qtype: u16,
    rcode: u8,
    answers: u16,
}

/// The length of a reply's header and question (the whole reply if they cannot be found).
fn question_end(reply: &[u8]) -> usize {
    let mut at = 12;
    if reply.len() < at {
        return reply.len();
    }
    while let Some(&len) = reply.get(at) {
        if len == 0 {
            return (at + 5).min(reply.len());
        }
        if len & 0xC0 != 0 {
            return reply.len();
        }
        at += 1 + usize::from(len);
    }
    reply.len()
}

fn summarize(reply: &[u8]) -> Option<Summary> {
    if reply.len() < 12 || u16::from_be_bytes([reply[4], reply[5]]) == 0 {
        return None;
    }
    let mut name = String::new();
    let mut at = 12;
    loop {
        let len = usize::from(*reply.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        // A question name is never compressed; a pointer (or anything odd) ends the summary.
        let label = reply.get(at + 1..at + 1 + len).filter(|_| len < 64)?;
        for &b in label {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                name.push(char::from(b));
            } else {
                let _ = std::fmt::Write::write_fmt(&mut name, format_args!("\\{b:03}"));
            }
        }
        name.push('.');
        at += 1 + len;
    }
    if name.is_empty() {
        name.push('.');
    }
    Some(Summary {
        name,
        qtype: u16::from_be_bytes([*reply.get(at)?, *reply.get(at + 1)?]),
        rcode: reply[3] & 0x0F,
        answers: u16::from_be_bytes([reply[6], reply[7]]),
    })
}

/// A JSON string literal (names may hold any byte as `\DDD`, quotes and backslashes).
fn json_string(text: &str, out: &mut String) {
    use std::fmt::Write as _;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `2026-12-07T17:30:00.123Z`.
fn rfc3339(time: SystemTime, out: &mut String) {
    use std::fmt::Write as _;
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = daemon_support::clock::civil_from_days(days);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    );
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, Record as Rr};

    use super::*;

    fn reply(name: &str, rtype: RecordType, rcode: ResponseCode, ips: &[[u8; 4]]) -> Vec<u8> {
        let owner = Name::from_labels(name.trim_end_matches('.').split('.').map(str::as_bytes))
            .expect("name");
        let mut m = Message::response(1, OpCode::Query);
        m.add_query(Query::query(owner.clone(), rtype));
        m.metadata.response_code = rcode;
        for ip in ips {
            m.add_answer(Rr::from_rdata(
                owner.clone(),
                30,
                RData::A(A::from(std::net::Ipv4Addr::from(*ip))),
            ));
        }
        m.to_vec().expect("encodes")
    }

    fn record(reply: Vec<u8>, source: Source) -> Record {
        Record {
            time: UNIX_EPOCH + Duration::from_millis(1_796_664_600_123),
            client: "10.1.2.3:40000".parse().expect("addr"),
            reply,
            latency: Duration::from_micros(1500),
            source,
        }
    }

    #[test]
    fn dnsmasq_lines_as_dnsmasq_writes_them() {
        let mut out = String::new();
        let forwarded = record(
            reply(
                "pub.example.",
                RecordType::A,
                ResponseCode::NoError,
                &[[93, 184, 216, 34]],
            ),
            Source::Upstream(Some("127.0.0.1:15353".parse().expect("addr"))),
        );
        dnsmasq_lines(&forwarded, "dnsmasq[7]: ", &mut out);
        assert_eq!(
            out,
            "dnsmasq[7]: query[A] pub.example from 10.1.2.3\n\
             dnsmasq[7]: forwarded pub.example to 127.0.0.1#15353\n\
             dnsmasq[7]: reply pub.example is 93.184.216.34\n"
        );
        out.clear();
        let cached = record(
            reply("x.example.", RecordType::AAAA, ResponseCode::NoError, &[]),
            Source::Cache,
        );
        dnsmasq_lines(&cached, "", &mut out);
        assert_eq!(
            out,
            "query[AAAA] x.example from 10.1.2.3\ncached x.example is NODATA-IPv6\n"
        );
        out.clear();
        let failed = record(
            reply("y.example.", RecordType::A, ResponseCode::ServFail, &[]),
            Source::Upstream(Some("8.8.8.8:53".parse().expect("addr"))),
        );
        dnsmasq_lines(&failed, "", &mut out);
        assert!(
            out.ends_with("forwarded y.example to 8.8.8.8\nreply error is SERVFAIL\n"),
            "{out}"
        );
    }

    #[test]
    fn json_lines_hold_every_field_and_escape_names() {
        let mut out = String::new();
        let r = record(
            reply(
                "a\\\"b.example.",
                RecordType::A,
                ResponseCode::NXDomain,
                &[],
            ),
            Source::Zone,
        );
        json_line(&r, "kube-dns", &mut out);
        assert!(out.ends_with("}\n"));
        assert!(
            out.starts_with("{\"time\":\"2026-12-07T17:30:00.123Z\",\"server\":\"kube-dns\""),
            "{out}"
        );
        assert!(
            out.contains(
                "\"rcode\":\"NXDOMAIN\",\"answers\":0,\"latency_us\":1500,\"source\":\"zone\""
            ),
            "{out}"
        );
        assert!(!out.contains("upstream\":"));
        let parsed: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(parsed["client"], "10.1.2.3:40000");
        assert!(parsed["name"].as_str().expect("name").contains("b.example"));
    }

    #[test]
    fn json_records_keep_only_the_header_and_question() {
        let bytes = reply(
            "pub.example.",
            RecordType::A,
            ResponseCode::NoError,
            &[[93, 184, 216, 34]; 40],
        );
        let end = question_end(&bytes);
        assert_eq!(end, 12 + "\x03pub\x07example\x00".len() + 4);
        let mut out = String::new();
        json_line(
            &record(bytes[..end].to_vec(), Source::Cache),
            "dns-cache",
            &mut out,
        );
        assert!(
            out.contains(
                "\"name\":\"pub.example.\",\"type\":\"A\",\"rcode\":\"NOERROR\",\"answers\":40"
            ),
            "{out}"
        );
        // A dnsmasq line for a reply cut at the copy limit still names the query.
        let mut lines = String::new();
        dnsmasq_lines(
            &record(bytes[..end + 3].to_vec(), Source::Cache),
            "",
            &mut lines,
        );
        assert_eq!(lines, "query[A] pub.example from 10.1.2.3\n");
    }

    #[test]
    fn sampling_and_the_rate_limit_bound_the_lines() {
        let log = QueryLog::start(
            QueryLogConfig {
                format: Format::Json,
                sample: 10,
                rate: 3,
                server: "test",
            },
            Box::new(std::io::sink()),
        )
        .expect("writer");
        let wanted = (0..100).filter(|_| log.wants()).count();
        // One in ten sampled (10), three of them in this second.
        assert!(wanted <= 3, "{wanted}");
        assert!(log.stats.over_rate.load(Ordering::Relaxed) >= 7);
    }
}
