//! The cache's statistics over CHAOS TXT (contract §4.5), accumulated as in §4.4: absolute
//! values in, monotonic counters out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, RData, RecordType};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The five queries of one round, in the legacy order.
pub const STAT_NAMES: [&str; 5] = [
    "hits.bind.",
    "misses.bind.",
    "evictions.bind.",
    "insertions.bind.",
    "cachesize.bind.",
];

/// One round's values, in [`STAT_NAMES`] order.
pub type Round = [u64; 5];

/// Why a round of statistics could not be read. Every variant is retried at the next poll.
#[derive(Debug, thiserror::Error)]
pub enum StatError {
    #[error(transparent)]
    Query(#[from] dns_transport::client::QueryError),
    #[error("invalid number of Answer records for {name}: {count} (rcode {rcode})")]
    AnswerCount {
        name: String,
        count: usize,
        rcode: String,
    },
    #[error("missing TXT record for {name}: got {got}")]
    NotTxt { name: String, got: RecordType },
    #[error("invalid number of TXT records for {name}: {count}")]
    TxtCount { name: String, count: usize },
    #[error("{name}: {text:?} is not a non-negative integer")]
    NotANumber { name: String, text: String },
}

/// Reads one statistic from a reply: exactly one answer, a TXT with exactly one decimal string.
pub fn parse_stat_reply(name: &str, reply: &Message) -> Result<u64, StatError> {
    if reply.answers.len() != 1 {
        return Err(StatError::AnswerCount {
            name: name.to_owned(),
            count: reply.answers.len(),
            rcode: reply.metadata.response_code.to_string(),
        });
    }
    let record = &reply.answers[0];
    let RData::TXT(txt) = &record.data else {
        return Err(StatError::NotTxt {
            name: name.to_owned(),
            got: record.record_type(),
        });
    };
    if txt.txt_data.len() != 1 {
        return Err(StatError::TxtCount {
            name: name.to_owned(),
            count: txt.txt_data.len(),
        });
    }
    let text = String::from_utf8_lossy(&txt.txt_data[0]);
    text.parse().map_err(|_| StatError::NotANumber {
        name: name.to_owned(),
        text: text.into_owned(),
    })
}

/// One round of the five queries; any error discards the whole round.
pub async fn poll_once(server: SocketAddr) -> Result<Round, StatError> {
    let mut round = [0; 5];
    for (slot, name) in round.iter_mut().zip(STAT_NAMES) {
        let reply = crate::probe::query(server, name, RecordType::TXT, DNSClass::CH).await?;
        *slot = parse_stat_reply(name, &reply)?;
    }
    Ok(round)
}

/// Turns a series of absolute values into increments: the first value counts in full, a rise
/// counts by its difference, a drop (the cache restarted) resets the base and adds nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeltaTracker {
    last: u64,
}

impl DeltaTracker {
    /// The increment to add for `value`.
    pub fn advance(&mut self, value: u64) -> u64 {
        let delta = value.saturating_sub(self.last);
        self.last = value;
        delta
    }
}

/// Polls `server` every `interval` until `shutdown`, feeding `metrics`.
pub async fn run(
    server: SocketAddr,
    interval: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut trackers = [DeltaTracker::default(); 5];
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match poll_once(server).await {
            Ok(round) => {
                if failing {
                    tracing::info!(%server, "cache statistics readable again");
                    failing = false;
                }
                let mut deltas = [0; 5];
                for ((delta, tracker), value) in deltas.iter_mut().zip(&mut trackers).zip(round) {
                    *delta = tracker.advance(value);
                }
                metrics.add_cache_deltas(deltas, round);
            }
            Err(error) => {
                metrics.cache_poll_failed();
                // Once per outage at warning level, then debug: a dead cache is already
                // reported by its probe and would otherwise log every poll.
                if failing {
                    tracing::debug!(%server, %error, "Error getting metrics from dnsmasq");
                } else {
                    tracing::warn!(%server, %error, "Error getting metrics from dnsmasq");
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::TXT;
    use hickory_proto::rr::{Name, Record};

    fn reply(records: Vec<RData>) -> Message {
        let mut msg = Message::response(1, hickory_proto::op::OpCode::Query);
        for data in records {
            let mut record =
                Record::from_rdata(Name::from_ascii("hits.bind.").expect("name"), 0, data);
            record.dns_class = DNSClass::CH;
            msg.add_answer(record);
        }
        msg
    }

    #[test]
    fn a_single_decimal_txt_is_read() {
        let msg = reply(vec![RData::TXT(TXT::new(vec!["42".into()]))]);
        assert_eq!(parse_stat_reply("hits.bind.", &msg).expect("a number"), 42);
    }

    #[test]
    fn every_malformed_reply_is_an_error() {
        let cases = [
            (reply(vec![]), "invalid number of Answer records"),
            (
                reply(vec![
                    RData::TXT(TXT::new(vec!["1".into()])),
                    RData::TXT(TXT::new(vec!["2".into()])),
                ]),
                "invalid number of Answer records",
            ),
            (
                reply(vec![RData::TXT(TXT::new(vec!["1".into(), "2".into()]))]),
                "invalid number of TXT records",
            ),
            (
                reply(vec![RData::TXT(TXT::new(vec!["12x".into()]))]),
                "not a non-negative integer",
            ),
            (
                reply(vec![RData::TXT(TXT::new(vec!["-1".into()]))]),
                "not a non-negative integer",
            ),
            (
                reply(vec![RData::A(hickory_proto::rr::rdata::A::new(1, 2, 3, 4))]),
                "missing TXT record",
            ),
        ];
        for (msg, needle) in cases {
            let error = parse_stat_reply("hits.bind.", &msg)
                .expect_err(needle)
                .to_string();
            assert!(error.contains(needle), "{error}");
        }
    }

    #[test]
    fn deltas_are_monotonic_across_restarts() {
        let mut t = DeltaTracker::default();
        assert_eq!(t.advance(10), 10, "the first value counts in full");
        assert_eq!(t.advance(15), 5);
        assert_eq!(t.advance(15), 0);
        assert_eq!(t.advance(3), 0, "a restart resets the base");
        assert_eq!(t.advance(7), 4);
    }
}
