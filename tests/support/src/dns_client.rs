//! A small real DNS client for tests (UDP, TCP, raw bytes, and the `dig` binary), plus
//! rendering of answer sections as zone-file lines for table tests.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long a query waits for its reply.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// A recursive-desired query (random ID, class IN) for `name` and `rtype`.
pub fn query_message(name: &str, rtype: RecordType) -> anyhow::Result<Message> {
    // from_ascii keeps the letter case (from_str would lower-case it through IDNA).
    let name = Name::from_ascii(name).with_context(|| format!("invalid query name {name:?}"))?;
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name, rtype));
    Ok(msg)
}

/// Sends one query over UDP and returns the reply.
pub async fn query_udp(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
) -> anyhow::Result<Message> {
    query_udp_with(server, query_message(name, rtype)?).await
}

/// [`query_udp`] waiting up to `timeout` (for answers that come from slow upstreams).
pub async fn query_udp_timeout(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> anyhow::Result<Message> {
    query_udp_from(loopback_for(server), server, name, rtype, timeout).await
}

/// The loopback address of `server`'s family.
fn loopback_for(server: SocketAddr) -> std::net::IpAddr {
    if server.is_ipv6() {
        std::net::Ipv6Addr::LOCALHOST.into()
    } else {
        std::net::Ipv4Addr::LOCALHOST.into()
    }
}

/// [`query_udp_timeout`] from a chosen source address (a second client beside a flood).
pub async fn query_udp_from(
    source: std::net::IpAddr,
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> anyhow::Result<Message> {
    let msg = query_message(name, rtype)?;
    let bytes = msg.to_vec().context("encoding query")?;
    let reply = raw_udp_from(source, server, &bytes, timeout)
        .await?
        .ok_or_else(|| {
            anyhow!("no UDP reply from {server} to {source} within {timeout:?} for {name}")
        })?;
    decode_reply(&msg, &reply)
}

/// Sends a caller-built message over UDP (EDNS, class CH, odd flags, ...) and returns the reply,
/// checking that its ID matches.
pub async fn query_udp_with(server: SocketAddr, msg: Message) -> anyhow::Result<Message> {
    let bytes = msg.to_vec().context("encoding query")?;
    let reply = raw_udp(server, &bytes).await?.ok_or_else(|| {
        anyhow!(
            "no UDP reply from {server} within {QUERY_TIMEOUT:?} for {}",
            describe(&msg)
        )
    })?;
    decode_reply(&msg, &reply)
}

/// Sends one query over TCP (RFC 1035 section 4.2.2 length framing) and returns the reply.
pub async fn query_tcp(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
) -> anyhow::Result<Message> {
    query_tcp_with(server, query_message(name, rtype)?).await
}

/// [`query_tcp`], waiting up to `timeout` for the reply.
pub async fn query_tcp_timeout(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> anyhow::Result<Message> {
    query_tcp_with_timeout(server, query_message(name, rtype)?, timeout).await
}

/// Sends a caller-built message over TCP and returns the reply.
pub async fn query_tcp_with(server: SocketAddr, msg: Message) -> anyhow::Result<Message> {
    query_tcp_with_timeout(server, msg, QUERY_TIMEOUT).await
}

async fn query_tcp_with_timeout(
    server: SocketAddr,
    msg: Message,
    timeout: Duration,
) -> anyhow::Result<Message> {
    let bytes = msg.to_vec().context("encoding query")?;
    let exchange = async {
        let mut stream = TcpStream::connect(server)
            .await
            .with_context(|| format!("connecting to {server} over TCP"))?;
        let len = u16::try_from(bytes.len()).context("query longer than 65535 bytes")?;
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        stream
            .write_all(&framed)
            .await
            .context("writing TCP query")?;
        let reply_len = stream
            .read_u16()
            .await
            .context("reading TCP reply length")?;
        let mut reply = vec![0; usize::from(reply_len)];
        stream
            .read_exact(&mut reply)
            .await
            .context("reading TCP reply")?;
        anyhow::Ok(reply)
    };
    let reply = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            anyhow!(
                "no TCP reply from {server} within {timeout:?} for {}",
                describe(&msg)
            )
        })??;
    decode_reply(&msg, &reply)
}

/// Sends raw bytes over UDP; returns the first datagram back, or None after [`QUERY_TIMEOUT`].
pub async fn raw_udp(server: SocketAddr, bytes: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    raw_udp_timeout(server, bytes, QUERY_TIMEOUT).await
}

/// [`raw_udp`] with a chosen timeout (keeps "expect no reply" tests short).
pub async fn raw_udp_timeout(
    server: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> anyhow::Result<Option<Vec<u8>>> {
    raw_udp_from(loopback_for(server), server, bytes, timeout).await
}

/// [`raw_udp_timeout`] from a chosen source address (another client, e.g. 127.0.0.2).
pub async fn raw_udp_from(
    source: std::net::IpAddr,
    server: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> anyhow::Result<Option<Vec<u8>>> {
    let socket = UdpSocket::bind(SocketAddr::new(source, 0))
        .await
        .context("binding UDP client socket")?;
    socket
        .connect(server)
        .await
        .with_context(|| format!("connecting UDP socket to {server}"))?;
    socket.send(bytes).await.context("sending UDP datagram")?;
    let mut buf = vec![0; 65_535];
    match tokio::time::timeout(timeout, socket.recv(&mut buf)).await {
        Err(_) => Ok(None),
        Ok(Ok(n)) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        // An ICMP port-unreachable shows up as ECONNREFUSED on a connected socket: no server.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(None),
        Ok(Err(e)) => Err(e).context("receiving UDP reply"),
    }
}

fn decode_reply(query: &Message, reply: &[u8]) -> anyhow::Result<Message> {
    let msg =
        Message::from_vec(reply).with_context(|| format!("decoding {} byte reply", reply.len()))?;
    ensure!(
        msg.metadata.id == query.metadata.id,
        "reply ID {} does not match query ID {} for {}",
        msg.metadata.id,
        query.metadata.id,
        describe(query)
    );
    Ok(msg)
}

fn describe(msg: &Message) -> String {
    msg.queries.first().map_or_else(
        || "an empty query".to_owned(),
        |q| format!("{} {}", q.name(), q.query_type()),
    )
}

/// Runs `dig @ip -p port +tries=1 +time=2 <args>` and returns its stdout.
/// Fails if `dig` is not installed or exits non-zero.
pub async fn dig(server: SocketAddr, args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+tries=1", "+time=2"])
        .args(args)
        .output()
        .await
        .context("running dig (is bind9-dnsutils installed?)")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "dig {args:?} against {server} exited with {}:\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// One record as a zone-file line: `name TTL IN TYPE rdata`, with the owner name (and names
/// inside CNAME/PTR/NS/SRV/MX/SOA/DNAME data) lowercased.
pub fn zone_line(record: &Record) -> String {
    let rtype = record.record_type();
    let mut rdata = record.data.to_string();
    if matches!(
        rtype,
        RecordType::CNAME
            | RecordType::PTR
            | RecordType::NS
            | RecordType::SRV
            | RecordType::MX
            | RecordType::SOA
            | RecordType::DNAME
    ) {
        rdata = rdata.to_lowercase();
    }
    format!(
        "{} {} {} {} {}",
        record.name.to_lowercase(),
        record.ttl,
        record.dns_class,
        rtype,
        rdata
    )
}

/// Zone-file lines for a set of records, sorted, so tables compare independent of order.
pub fn zone_lines<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<String> {
    let mut lines: Vec<String> = records.into_iter().map(zone_line).collect();
    lines.sort();
    lines
}

/// The answer section of a reply as sorted zone-file lines.
pub fn answer_lines(msg: &Message) -> Vec<String> {
    zone_lines(&msg.answers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::RData;
    use hickory_proto::rr::rdata::{A, SRV};

    #[test]
    fn zone_lines_are_lowercase_and_sorted() {
        let name = Name::from_ascii("Web.Default.svc.Cluster.Local.").expect("name");
        let a = Record::from_rdata(name.clone(), 30, RData::A(A::new(10, 0, 0, 2)));
        let b = Record::from_rdata(name.clone(), 30, RData::A(A::new(10, 0, 0, 1)));
        let target = Name::from_ascii("Web-0.Web.default.svc.cluster.local.").expect("name");
        let srv = Record::from_rdata(name, 30, RData::SRV(SRV::new(0, 100, 80, target)));
        assert_eq!(
            zone_lines([&a, &b, &srv]),
            vec![
                "web.default.svc.cluster.local. 30 IN A 10.0.0.1",
                "web.default.svc.cluster.local. 30 IN A 10.0.0.2",
                "web.default.svc.cluster.local. 30 IN SRV 0 100 80 web-0.web.default.svc.cluster.local.",
            ]
        );
    }

    #[test]
    fn query_message_sets_recursion_desired() {
        let msg =
            query_message("kubernetes.default.svc.cluster.local.", RecordType::A).expect("query");
        assert!(msg.metadata.recursion_desired);
        assert_eq!(msg.queries.len(), 1);
    }
}
