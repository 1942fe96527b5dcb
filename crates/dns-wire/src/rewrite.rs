//! Upstream replies changed by an answer policy (dnsmasq's `--stop-dns-rebind`, `--filter-A`,
//! `--filter-AAAA`): the addresses of the answer section read, records dropped, and an Extended
//! DNS Error put in the OPT record. Works on replies as the forwarder hands them over (checked,
//! with our OPT record last).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::header::read_u16;
use crate::query::{WireError, skip_name, skip_record};
use crate::types::{HEADER_LEN, rtype};

/// The end of the question section.
fn question_end(reply: &[u8]) -> Result<usize, WireError> {
    let mut at = HEADER_LEN;
    for _ in 0..read_u16(reply, 4).ok_or(WireError::ShortHeader(reply.len()))? {
        at = skip_name(reply, at)?;
        at += 4;
    }
    if at > reply.len() {
        return Err(WireError::Truncated("question"));
    }
    Ok(at)
}

/// One record of a reply: its section (0 answer, 1 authority, 2 additional), type, where its
/// RDATA starts and where it ends.
struct Record {
    section: usize,
    rr_type: u16,
    end: usize,
    rdata: usize,
}

fn records(reply: &[u8]) -> Result<(usize, Vec<Record>), WireError> {
    let mut at = question_end(reply)?;
    let question = at;
    let mut out = Vec::new();
    for section in 0..3 {
        let count = read_u16(reply, 6 + 2 * section).ok_or(WireError::ShortHeader(reply.len()))?;
        for _ in 0..count {
            let (rr_type, end, fixed) = skip_record(reply, at)?;
            out.push(Record {
                section,
                rr_type,
                end,
                rdata: fixed + 10,
            });
            at = end;
        }
    }
    Ok((question, out))
}

/// The A and AAAA addresses of a reply's answer section (at any owner: a CNAME chain's end
/// counts too).
pub fn answer_addresses(reply: &[u8]) -> Result<Vec<IpAddr>, WireError> {
    let (_, records) = records(reply)?;
    Ok(records
        .iter()
        .filter(|r| r.section == 0)
        .filter_map(|r| {
            let data = &reply[r.rdata..r.end];
            match (r.rr_type, data.len()) {
                (rtype::A, 4) => Some(IpAddr::V4(Ipv4Addr::new(
                    data[0], data[1], data[2], data[3],
                ))),
                (rtype::AAAA, 16) => {
                    let bytes: [u8; 16] = data.try_into().ok()?;
                    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
                }
                _ => None,
            }
        })
        .collect())
}

/// What to drop from a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Every record of every section, and the TC bit (a reply without records, its RCODE
    /// kept): dnsmasq's answer to a rebinding attempt.
    Everything,
    /// Answer-section records of this type and class IN, from a NOERROR reply only (dnsmasq's
    /// `--filter-A`/`--filter-AAAA`).
    Type(u16),
}

/// `reply` without what `drop` names, its OPT record (kept, with its DO bit) carrying the
/// Extended DNS Error `ede`. `None` when nothing was dropped (the reply stands as it is).
///
/// [`Drop::Everything`] keeps only bytes before the first record, so no name can point into
/// what went. [`Drop::Type`] keeps records after removed ones, whose names may be compressed
/// against them: that reply is decoded and encoded again, with names compressed afresh.
pub fn drop_records(reply: &[u8], drop: Drop, ede: u16) -> Result<Option<Vec<u8>>, WireError> {
    match drop {
        Drop::Everything => drop_everything(reply, ede),
        Drop::Type(rr_type) => drop_answers_of_type(reply, rr_type, ede),
    }
}

fn drop_everything(reply: &[u8], ede: u16) -> Result<Option<Vec<u8>>, WireError> {
    let (question, records) = records(reply)?;
    if !records.iter().any(|r| r.rr_type != rtype::OPT) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(question + crate::opt::opt_len(Some(ede)));
    out.extend_from_slice(&reply[..question]);
    let mut additional = 0u16;
    if let Some(opt) = records.iter().find(|r| r.rr_type == rtype::OPT) {
        // The flags are the low half of the OPT record's TTL field (before RDLENGTH).
        let flags = read_u16(reply, opt.rdata - 4).unwrap_or(0);
        crate::opt::push_opt(&mut out, 0, flags & 0x8000 != 0, Some(ede));
        additional = 1;
    }
    for (i, count) in [0u16, 0, additional].iter().enumerate() {
        out[6 + 2 * i..8 + 2 * i].copy_from_slice(&count.to_be_bytes());
    }
    out[2] &= !0x02;
    Ok(Some(out))
}

fn drop_answers_of_type(
    reply: &[u8],
    rr_type: u16,
    ede: u16,
) -> Result<Option<Vec<u8>>, WireError> {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::DNSClass;
    use hickory_proto::rr::rdata::opt::EdnsOption;
    let undecodable = || WireError::Truncated("reply (undecodable)");
    let mut message = Message::from_vec(reply).map_err(|_| undecodable())?;
    if message.metadata.response_code != ResponseCode::NoError {
        return Ok(None);
    }
    let before = message.answers.len();
    message
        .answers
        .retain(|r| !(u16::from(r.record_type()) == rr_type && r.dns_class == DNSClass::IN));
    if message.answers.len() == before {
        return Ok(None);
    }
    if let Some(edns) = message.edns.as_mut() {
        edns.options_mut().insert(EdnsOption::Unknown(
            crate::opt::EDE_OPTION,
            ede.to_be_bytes().to_vec(),
        ));
    }
    message.to_vec().map(Some).map_err(|_| undecodable())
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Edns, Message, OpCode, Query};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;

    fn reply(qtype: RecordType, answers: &[RData], additional: &[RData], edns: bool) -> Vec<u8> {
        let owner: Name = "x.example.".parse().expect("name");
        let mut m = Message::response(7, OpCode::Query);
        m.add_query(Query::query(owner.clone(), qtype));
        m.metadata.authoritative = true;
        for data in answers {
            m.add_answer(Record::from_rdata(owner.clone(), 60, data.clone()));
        }
        for data in additional {
            m.add_additional(Record::from_rdata(owner.clone(), 60, data.clone()));
        }
        if edns {
            let mut e = Edns::new();
            e.set_dnssec_ok(true);
            m.set_edns(e);
        }
        m.to_vec().expect("encodes")
    }

    fn ede_of(bytes: &[u8]) -> Option<u16> {
        let (start, end) = crate::layout::response_layout(bytes).ok()?.opt?;
        crate::opt::extended_error(&bytes[usize::from(start) + 11..usize::from(end)])
    }

    #[test]
    fn addresses_of_the_answer_section_at_any_owner() {
        let cname = RData::CNAME(CNAME("y.example.".parse().expect("name")));
        let bytes = reply(
            RecordType::A,
            &[cname, RData::A(A::new(10, 1, 2, 3))],
            &[RData::AAAA(AAAA::new(0xfd00, 0, 0, 0, 0, 0, 0, 1))],
            true,
        );
        assert_eq!(
            answer_addresses(&bytes).expect("walk"),
            vec![IpAddr::from([10, 1, 2, 3])],
            "additional records are not answers"
        );
    }

    #[test]
    fn everything_dropped_keeps_header_question_and_opt_with_the_error() {
        let bytes = reply(
            RecordType::A,
            &[RData::A(A::new(10, 1, 2, 3)), RData::A(A::new(8, 8, 8, 8))],
            &[],
            true,
        );
        let out = drop_records(&bytes, Drop::Everything, 15)
            .expect("walk")
            .expect("changed");
        let m = Message::from_vec(&out).expect("decodes");
        assert!(m.answers.is_empty() && m.authorities.is_empty());
        assert!(m.metadata.authoritative);
        assert_eq!(m.queries.len(), 1);
        assert!(m.edns.as_ref().expect("opt").flags().dnssec_ok);
        assert_eq!(ede_of(&out), Some(15));
    }

    #[test]
    fn a_type_is_dropped_from_answers_only_and_only_when_present() {
        let bytes = reply(
            RecordType::AAAA,
            &[RData::AAAA(AAAA::new(0x2001, 0x4860, 0, 0, 0, 0, 0, 1))],
            &[RData::A(A::new(1, 2, 3, 4))],
            false,
        );
        let out = drop_records(&bytes, Drop::Type(rtype::AAAA), 17)
            .expect("walk")
            .expect("changed");
        let m = Message::from_vec(&out).expect("decodes");
        assert!(m.answers.is_empty());
        assert_eq!(m.additionals.len(), 1, "other sections stay");
        assert!(
            m.edns.is_none(),
            "no OPT record is added where there was none"
        );
        assert_eq!(
            drop_records(&bytes, Drop::Type(rtype::MX), 17).expect("walk"),
            None
        );
    }

    /// A record kept after a removed one may have its names compressed against it: the
    /// result must still name what it named before.
    #[test]
    fn names_compressed_against_a_removed_record_survive() {
        use hickory_proto::rr::rdata::NS;
        let owner: Name = "x.example.".parse().expect("name");
        let ns: Name = "ns1.x.example.".parse().expect("name");
        let mut m = Message::response(7, OpCode::Query);
        m.add_query(Query::query(
            "y.example.".parse().expect("name"),
            RecordType::AAAA,
        ));
        // The AAAA's owner is the first spelling of x.example; everything after points at it.
        m.add_answer(Record::from_rdata(
            owner.clone(),
            60,
            RData::AAAA(AAAA::new(0x2001, 0x4860, 0, 0, 0, 0, 0, 1)),
        ));
        m.add_authority(Record::from_rdata(
            owner.clone(),
            60,
            RData::NS(NS(ns.clone())),
        ));
        m.add_additional(Record::from_rdata(
            ns.clone(),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        m.set_edns(Edns::new());
        let bytes = m.to_vec().expect("encodes");
        let out = drop_records(&bytes, Drop::Type(rtype::AAAA), 17)
            .expect("walk")
            .expect("changed");
        let m = Message::from_vec(&out).expect("decodes");
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities[0].name, owner);
        assert_eq!(m.authorities[0].data, RData::NS(NS(ns.clone())));
        assert_eq!(m.additionals[0].name, ns);
        assert_eq!(ede_of(&out), Some(17));
        // Only NOERROR replies are filtered.
        let mut nx = Message::from_vec(&bytes).expect("decodes");
        nx.metadata.response_code = hickory_proto::op::ResponseCode::NXDomain;
        let nx = nx.to_vec().expect("encodes");
        assert_eq!(
            drop_records(&nx, Drop::Type(rtype::AAAA), 17).expect("walk"),
            None
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for len in 0..40 {
            let bytes = reply(RecordType::A, &[RData::A(A::new(1, 2, 3, 4))], &[], true);
            let cut = &bytes[..len.min(bytes.len())];
            let _ = answer_addresses(cut);
            let _ = drop_records(cut, Drop::Everything, 15);
        }
    }
}
