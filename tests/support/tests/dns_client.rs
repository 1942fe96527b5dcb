//! The DNS test client against a tiny in-test responder over UDP and TCP.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use kube_dns_test_support::dns_client::{self, answer_lines};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// Answers every A question with 10.0.0.1 and 10.0.0.2 (TTL 30); class CH gets REFUSED.
/// Undecodable datagrams get no reply; `wrong_id` replies with a mismatched ID.
fn respond(query: &[u8], wrong_id: bool) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    let mut reply = Message::response(
        query.metadata.id ^ u16::from(wrong_id),
        query.metadata.op_code,
    );
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.authoritative = true;
    let q = query.queries.first()?.clone();
    if q.query_class() == DNSClass::CH {
        reply.metadata.response_code = ResponseCode::Refused;
    } else if q.query_type() == RecordType::A {
        for ip in [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1)] {
            reply.add_answer(Record::from_rdata(q.name().clone(), 30, RData::A(A(ip))));
        }
    }
    reply.add_query(q);
    reply.to_vec().ok()
}

async fn udp_responder(wrong_id: bool) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = vec![0; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            if let Some(reply) = respond(&buf[..n], wrong_id) {
                let _ = socket.send_to(&reply, peer).await;
            }
        }
    });
    addr
}

async fn tcp_responder() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(len) = stream.read_u16().await else {
                    return;
                };
                let mut query = vec![0; usize::from(len)];
                if stream.read_exact(&mut query).await.is_err() {
                    return;
                }
                if let Some(reply) = respond(&query, false) {
                    let len = u16::try_from(reply.len()).expect("small reply");
                    let _ = stream.write_all(&len.to_be_bytes()).await;
                    let _ = stream.write_all(&reply).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn udp_and_tcp_queries_return_the_answer_as_sorted_zone_lines() {
    let expected = [
        "web.default.svc.cluster.local. 30 IN A 10.0.0.1",
        "web.default.svc.cluster.local. 30 IN A 10.0.0.2",
    ];
    let udp = udp_responder(false).await;
    let reply = dns_client::query_udp(udp, "Web.default.svc.cluster.local.", RecordType::A)
        .await
        .expect("udp");
    assert!(reply.metadata.recursion_desired, "the query must set RD");
    assert_eq!(answer_lines(&reply), expected);

    let tcp = tcp_responder().await;
    let reply = dns_client::query_tcp(tcp, "web.default.svc.cluster.local.", RecordType::A)
        .await
        .expect("tcp");
    assert_eq!(answer_lines(&reply), expected);
}

#[tokio::test]
async fn custom_messages_go_out_as_built() {
    let udp = udp_responder(false).await;
    let mut msg = dns_client::query_message("version.bind.", RecordType::TXT).expect("query");
    msg.queries[0].set_query_class(DNSClass::CH);
    let reply = dns_client::query_udp_with(udp, msg).await.expect("reply");
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
}

#[tokio::test]
async fn mismatched_reply_ids_and_silence_are_errors() {
    let liar = udp_responder(true).await;
    let err = dns_client::query_udp(liar, "a.example.", RecordType::A)
        .await
        .expect_err("wrong id");
    assert!(err.to_string().contains("does not match"), "{err:#}");

    let silent = udp_responder(false).await;
    let garbage = dns_client::raw_udp_timeout(silent, b"\x01\x02", Duration::from_millis(200))
        .await
        .expect("raw");
    assert_eq!(garbage, None);
    let query = dns_client::query_message("a.example.", RecordType::A)
        .expect("query")
        .to_vec()
        .expect("encode");
    let answered = dns_client::raw_udp(silent, &query)
        .await
        .expect("raw")
        .expect("a reply");
    assert_eq!(&answered[..2], &query[..2], "the raw reply echoes the ID");
}

#[tokio::test]
async fn dig_runs_against_the_server_or_reports_that_it_is_missing() {
    let udp = udp_responder(false).await;
    let installed = std::process::Command::new("dig").arg("-v").output().is_ok();
    let result = dns_client::dig(udp, &["web.default.svc.cluster.local.", "A", "+short"]).await;
    if installed {
        let out = result.expect("dig");
        assert_eq!(out.lines().collect::<Vec<_>>(), ["10.0.0.2", "10.0.0.1"]);
    } else {
        let err = result.expect_err("no dig binary");
        assert!(format!("{err:#}").contains("dig"), "{err:#}");
    }
}
