//! Client-side query builders, and the question comparison a client does on the reply.

use crate::query::{EdnsInfo, parse_message};
use crate::types::{HEADER_LEN, OPT_RR_LEN, class, rtype};

/// Builds the wire bytes of a simple recursive query (used to chase ExternalName targets).
pub fn build_query(id: u16, name: &str, qtype: u16, edns: Option<EdnsInfo>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(&0x0100u16.to_be_bytes());
    buf.extend_from_slice(&1u16.to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0, 0]);
    buf.extend_from_slice(&u16::from(edns.is_some()).to_be_bytes());
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let label = &label.as_bytes()[..label.len().min(63)];
        buf.push(label.len() as u8);
        buf.extend_from_slice(label);
    }
    buf.push(0);
    buf.extend_from_slice(&qtype.to_be_bytes());
    buf.extend_from_slice(&class::IN.to_be_bytes());
    if let Some(e) = edns {
        buf.push(0);
        buf.extend_from_slice(&rtype::OPT.to_be_bytes());
        buf.extend_from_slice(&e.payload.max(512).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&(if e.dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
    }
    buf
}

/// Whether `response` answers the question of `query` (same name ignoring case, type, class).
pub fn same_question(query: &[u8], response: &[u8]) -> bool {
    match (parse_message(query), parse_message(response)) {
        (Ok(q), Ok(r)) => q.name() == r.name() && q.qtype == r.qtype && q.qclass == r.qclass,
        _ => false,
    }
}

/// Our upstream query for a client's `query`: our `id`, its question byte for byte, its RD and
/// CD bits and DO in our OPT; nothing else the client sent.
pub fn forward_query_for(id: u16, query: &crate::query::Query<'_>) -> Vec<u8> {
    build_forward_query(
        id,
        query.question_bytes(),
        query.recursion_desired,
        query.checking_disabled,
        query.edns.is_some_and(|e| e.dnssec_ok),
    )
}

/// Builds an upstream query from a client's question section (kept byte for byte, so odd
/// names survive), with RD and CD as the client sent them and our own OPT RR.
pub fn build_forward_query(
    id: u16,
    question: &[u8],
    recursion_desired: bool,
    checking_disabled: bool,
    dnssec_ok: bool,
) -> Vec<u8> {
    let mut flags: u16 = 0;
    if recursion_desired {
        flags |= 0x0100;
    }
    if checking_disabled {
        flags |= 0x0010;
    }
    let mut buf = Vec::with_capacity(HEADER_LEN + question.len() + OPT_RR_LEN);
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(&flags.to_be_bytes());
    buf.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]);
    buf.extend_from_slice(question);
    crate::opt::push_opt(&mut buf, 0, dnssec_ok, None);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::rtype;

    fn query_bytes(name: &str, qtype: u16) -> Vec<u8> {
        build_query(0x1234, name, qtype, None)
    }

    #[test]
    fn same_question_matches_responses_with_compressed_answers() {
        use hickory_proto::op::{Message, Query as HQuery};
        use hickory_proto::rr::{Name, RData as HRData, Record, RecordType, rdata::A};
        let query = query_bytes("www.Example.com", rtype::A);
        let name: Name = "WWW.example.com.".parse().expect("name");
        let mut reply = Message::response(0x1234, hickory_proto::op::OpCode::Query);
        reply.add_query(HQuery::query(name.clone(), RecordType::A));
        reply.add_answer(Record::from_rdata(
            name,
            60,
            HRData::A(A::new(192, 0, 2, 1)),
        ));
        let bytes = reply.to_vec().expect("encodes");
        assert!(same_question(&query, &bytes));
        let other = query_bytes("www.example.org", rtype::A);
        assert!(!same_question(&other, &bytes));
        let aaaa = query_bytes("www.example.com", rtype::AAAA);
        assert!(!same_question(&aaaa, &bytes));
    }
}
