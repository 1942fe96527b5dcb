//! The one-shot upstream client: one question, one UDP exchange, the reply decoded. Every
//! control-plane query goes through it (the sidecar's probes and statistics, dns-cache's SOA
//! watch and loop probes, the nanny's stub nameserver names).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use thiserror::Error;

use crate::forward;

/// Why a one-shot query got no usable reply.
#[derive(Debug, Error)]
pub enum QueryError {
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("cannot encode a query for {name:?}: {reason}")]
    Encode { name: String, reason: String },
    #[error("read udp {server}: i/o timeout after {after:?}")]
    TimedOut { server: SocketAddr, after: Duration },
    #[error("udp exchange with {server}: {source}")]
    Io {
        server: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("malformed reply from {server}: {reason}")]
    Malformed { server: SocketAddr, reason: String },
}

impl QueryError {
    /// Whether asking again later may succeed (the server was slow, away or broken), as opposed
    /// to a question that can never be asked.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            QueryError::InvalidName { .. } | QueryError::Encode { .. }
        )
    }
}

/// One UDP exchange with an upstream from a fresh socket (a random source port); the reply is
/// accepted only from that server (connected socket), with the query's ID and question, and only
/// when well formed (RFC 5452; [`forward::udp_exchange`]). Other datagrams are ignored until
/// `timeout`.
pub async fn exchange_udp(
    server: SocketAddr,
    packet: &[u8],
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    let deadline = crate::clock::now() + timeout;
    forward::udp_exchange(server, packet, deadline, &|| {})
        .await
        .map(|(reply, _)| reply)
}

/// Asks `server` one question (RD set, a random ID, EDNS) and decodes the reply, waiting at
/// most `timeout`.
pub async fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    class: DNSClass,
    timeout: Duration,
) -> Result<Message, QueryError> {
    let qname = Name::from_ascii(name).map_err(|e| QueryError::InvalidName {
        name: name.to_owned(),
        reason: e.to_string(),
    })?;
    let mut message = Message::query();
    message.metadata.id = rand::random();
    message.metadata.recursion_desired = true;
    let mut question = Query::query(qname, rtype);
    question.set_query_class(class);
    message.add_query(question);
    // With EDNS, so a server can say why it fails (RFC 8914: kube-dns's "Not Ready").
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(dns_wire::ADVERTISED_UDP_PAYLOAD);
    message.set_edns(edns);
    let packet = message.to_vec().map_err(|e| QueryError::Encode {
        name: name.to_owned(),
        reason: e.to_string(),
    })?;
    let reply = exchange_udp(server, &packet, timeout)
        .await
        .map_err(|source| match source.kind() {
            io::ErrorKind::TimedOut => QueryError::TimedOut {
                server,
                after: timeout,
            },
            _ => QueryError::Io { server, source },
        })?;
    Message::from_vec(&reply).map_err(|e| QueryError::Malformed {
        server,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};

    /// A server that answers once with `reply(query)`, after `delay`.
    async fn answer_once(
        delay: Duration,
        reply: impl Fn(&Message) -> Vec<u8> + Send + 'static,
    ) -> SocketAddr {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = socket.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = vec![0; 512];
            let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..len]) else {
                return;
            };
            tokio::time::sleep(delay).await;
            let _ = socket.send_to(&reply(&query), peer).await;
        });
        addr
    }

    fn a_reply(query: &Message) -> Vec<u8> {
        let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
        reply.add_query(query.queries[0].clone());
        reply.add_answer(Record::from_rdata(
            query.queries[0].name().clone(),
            30,
            RData::A(A::new(192, 0, 2, 7)),
        ));
        reply.to_vec().expect("encode")
    }

    #[tokio::test]
    async fn answers_are_decoded() {
        let server = answer_once(Duration::ZERO, a_reply).await;
        let reply = query(
            server,
            "x.example.",
            RecordType::A,
            DNSClass::IN,
            Duration::from_secs(2),
        )
        .await
        .expect("reply");
        assert_eq!(reply.answers.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_times_out_with_a_retryable_error() {
        let server = answer_once(Duration::from_secs(3600), a_reply).await;
        let error = query(
            server,
            "x.example.",
            RecordType::A,
            DNSClass::IN,
            Duration::from_millis(300),
        )
        .await
        .expect_err("timeout");
        assert!(matches!(error, QueryError::TimedOut { .. }), "{error}");
        assert!(error.is_retryable());
        assert!(error.to_string().contains("i/o timeout after 300ms"));
    }

    #[tokio::test]
    async fn a_bad_name_is_not_retryable() {
        let error = query(
            "127.0.0.1:9".parse().expect("addr"),
            &"a".repeat(300),
            RecordType::A,
            DNSClass::IN,
            Duration::from_millis(100),
        )
        .await
        .expect_err("invalid");
        assert!(!error.is_retryable(), "{error}");
    }
}
