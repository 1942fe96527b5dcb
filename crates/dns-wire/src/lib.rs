//! The DNS wire format, with nothing below it but hickory-proto: the one crate that reads and
//! writes packet bytes.
//!
//! Queries are parsed with a hand-written walker (header, one question, the OPT RR) into a
//! [`Query`] that borrows the packet, and responses are encoded straight into a reused buffer
//! from an [`Answer`]: no allocation and no `Message` tree per query. hickory-proto stays the
//! reference decoder for tests and for the slow forwarding path ([`hickory`]).
//!
//! | module | job |
//! |---|---|
//! | [`types`] | record types, classes, response codes, message sizes |
//! | [`header`] | the 12-byte header read and written in place |
//! | [`query`] | query parsing |
//! | [`message`] | the record and answer model the encoder writes |
//! | [`encode`] | response encoding with name compression |
//! | [`layout`] | the cache's one-walk view of an upstream response |
//! | [`reply`] | checks on upstream replies, and our OPT in place of theirs |
//! | [`rewrite`] | upstream replies changed by an answer policy (records dropped, an EDE added) |
//! | [`build`] | client-side query builders |
//! | [`reverse`] | reverse names |
//! | [`hickory`] | the bridge to hickory-proto's decoded records |

pub mod build;
pub mod encode;
pub mod header;
pub mod hickory;
pub mod layout;
pub mod message;
pub mod opt;
pub mod query;
pub mod reply;
pub mod reverse;
pub mod rewrite;
pub mod types;

pub use build::{build_forward_query, build_query, forward_query_for, same_question};
pub use encode::{ResponseContext, encode_header_only, encode_response};
pub use header::{packet_id, response_rcode_tc, set_packet_id};
pub use hickory::upstream_records;
pub use layout::{ResponseLayout, response_layout};
pub use message::{Answer, DnsName, RData, ResourceRecord};
pub use opt::{ede, extended_error};
pub use query::{EdnsInfo, Query, WireError, compact_query, parse_query};
pub use reverse::{parse_reverse, reverse_name_v4, reverse_name_v6};
pub use types::{
    ADVERTISED_UDP_PAYLOAD, MAX_TCP_MESSAGE, MIN_UDP_PAYLOAD, Rcode, class, opcode, rtype,
};
