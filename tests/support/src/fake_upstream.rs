//! A fake upstream nameserver on loopback UDP: answers `A` for any name with 192.0.2.53,
//! NXDOMAIN for names starting with `nx.`, and nothing at all for names starting with `drop.`.
//! It counts the queries it received.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType, rdata::A};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// The address every `A` answer carries.
pub const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

/// A running fake upstream; stops when dropped.
#[derive(Debug)]
pub struct FakeUpstream {
    pub addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FakeUpstream {
    pub async fn start() -> anyhow::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let queries = Arc::new(AtomicUsize::new(0));
        let counter = queries.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let Ok(query) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                let Some(question) = query.queries.first().cloned() else {
                    continue;
                };
                let name = question.name().to_ascii().to_ascii_lowercase();
                if name.starts_with("drop.") {
                    continue;
                }
                let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                reply.metadata.recursion_available = true;
                reply.add_query(question.clone());
                if name.starts_with("nx.") {
                    reply.metadata.response_code = ResponseCode::NXDomain;
                } else if question.query_type() == RecordType::A {
                    reply.add_answer(Record::from_rdata(
                        question.name().clone(),
                        300,
                        RData::A(A(UPSTREAM_ANSWER)),
                    ));
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        Ok(FakeUpstream {
            addr,
            queries,
            task,
        })
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
