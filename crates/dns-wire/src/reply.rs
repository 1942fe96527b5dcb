//! Checking and normalising what an upstream sends back, before anything is cached or relayed.
//!
//! [`check_reply`] walks a reply completely: the header against the query we sent, the question,
//! every record (names with compression pointers followed, backwards only; RDLENGTH inside the
//! message; names inside the RDATA of the common types; fixed sizes of A and AAAA), the counts
//! against what is there, and the OPT record (at most one, in the additional section, EDNS
//! version 0, no extended RCODE bits). [`replace_opt`] then swaps the upstream's OPT for ours, so
//! a client never sees an upstream's EDNS options, version or payload size.

use thiserror::Error;

use crate as wire;
use crate::types::rtype;

const HEADER_LEN: usize = 12;
const MAX_NAME_LEN: usize = 255;
/// Compression pointers followed per name; a longer chain is a loop (a name has at most 127
/// labels, and each pointer must move backwards anyway).
const MAX_POINTERS: usize = 64;

/// Why an upstream reply is refused. Such a reply is never cached or relayed.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    #[error("reply shorter than a DNS header ({0} bytes)")]
    Short(usize),
    #[error("packet is not a response (QR clear)")]
    NotAResponse,
    #[error("reply ID does not match the query")]
    WrongId,
    #[error("reply does not carry the question that was asked")]
    WrongQuestion,
    #[error("reply ends inside the {0}")]
    Truncated(&'static str),
    #[error("malformed name in the {0}: {1}")]
    BadName(&'static str, &'static str),
    #[error("RDATA of a type {rr_type} record has the wrong length {len}")]
    BadRdata { rr_type: u16, len: u16 },
    #[error("{0} bytes after the last record the header counts")]
    TrailingBytes(usize),
    #[error("more than one OPT record, or one outside the additional section")]
    MisplacedOpt,
    #[error("EDNS version {0} in the reply (we sent version 0)")]
    EdnsVersion(u8),
    #[error("extended RCODE bits {0:#x} in the reply's OPT record")]
    ExtendedRcode(u8),
}

/// What a valid reply says, for the forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyInfo {
    /// The RCODE (low four bits; the extended bits are checked to be zero).
    pub rcode: u8,
    pub truncated: bool,
    /// Byte range of the OPT record, if any.
    pub opt: Option<(usize, usize)>,
}

impl ReplyInfo {
    /// SERVFAIL and REFUSED say "ask someone else": another server may answer.
    pub fn is_usable(&self) -> bool {
        !matches!(self.rcode, 2 | 5)
    }
}

fn read_u16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Walks the name at `at`; returns the offset just after it (where the name ends in the
/// message, not where a pointer leads). Pointers must point strictly backwards.
fn walk_name(p: &[u8], start: usize, part: &'static str) -> Result<usize, ReplyError> {
    let mut at = start;
    let mut end = None;
    let mut pointers = 0;
    let mut wire_len = 0usize;
    // The lowest offset a pointer may target: below the label it sits in.
    let mut floor = start;
    loop {
        let len = *p.get(at).ok_or(ReplyError::Truncated(part))?;
        match len & 0xC0 {
            0x00 => {
                wire_len += usize::from(len) + 1;
                if wire_len > MAX_NAME_LEN {
                    return Err(ReplyError::BadName(part, "longer than 255 bytes"));
                }
                if len == 0 {
                    return Ok(end.unwrap_or(at + 1));
                }
                if at + 1 + usize::from(len) > p.len() {
                    return Err(ReplyError::Truncated(part));
                }
                at += 1 + usize::from(len);
            }
            0xC0 => {
                let low = *p.get(at + 1).ok_or(ReplyError::Truncated(part))?;
                let target = usize::from(len & 0x3F) << 8 | usize::from(low);
                if end.is_none() {
                    end = Some(at + 2);
                }
                pointers += 1;
                if target >= floor || pointers > MAX_POINTERS {
                    return Err(ReplyError::BadName(part, "compression pointer loop"));
                }
                if target < HEADER_LEN {
                    return Err(ReplyError::BadName(part, "pointer into the header"));
                }
                floor = target;
                at = target;
            }
            _ => return Err(ReplyError::BadName(part, "unknown label type")),
        }
    }
}

/// Checks the names and sizes inside the RDATA of the types whose layout we know.
fn check_rdata(p: &[u8], rr_type: u16, start: usize, len: u16) -> Result<(), ReplyError> {
    let end = start + usize::from(len);
    let bad = || ReplyError::BadRdata { rr_type, len };
    let name_at = |at: usize| -> Result<usize, ReplyError> {
        if at >= end {
            return Err(bad());
        }
        let after = walk_name(p, at, "record data")?;
        if after > end { Err(bad()) } else { Ok(after) }
    };
    let exact = |after: usize| if after == end { Ok(()) } else { Err(bad()) };
    match rr_type {
        rtype::A if len != 4 => Err(bad()),
        rtype::AAAA if len != 16 => Err(bad()),
        rtype::NS | rtype::CNAME | rtype::PTR | 39 /* DNAME */ => exact(name_at(start)?),
        rtype::MX => exact(name_at(start + 2)?),
        rtype::SRV => exact(name_at(start + 6)?),
        rtype::SOA => {
            let rname = name_at(start)?;
            let after = name_at(rname)?;
            exact(after + 20)
        }
        _ => Ok(()),
    }
}

/// Checks `reply` as the answer to `query` (the bytes we sent upstream).
pub fn check_reply(query: &[u8], reply: &[u8]) -> Result<ReplyInfo, ReplyError> {
    if reply.len() < HEADER_LEN {
        return Err(ReplyError::Short(reply.len()));
    }
    let flags = read_u16(reply, 2).ok_or(ReplyError::Short(reply.len()))?;
    if flags & 0x8000 == 0 {
        return Err(ReplyError::NotAResponse);
    }
    if wire::packet_id(reply) != wire::packet_id(query) {
        return Err(ReplyError::WrongId);
    }
    let mut info = ReplyInfo {
        rcode: (flags & 0xF) as u8,
        truncated: flags & 0x0200 != 0,
        opt: None,
    };
    let counts: [u16; 4] = [
        read_u16(reply, 4).unwrap_or(0),
        read_u16(reply, 6).unwrap_or(0),
        read_u16(reply, 8).unwrap_or(0),
        read_u16(reply, 10).unwrap_or(0),
    ];
    if counts[0] != 1 {
        return Err(ReplyError::WrongQuestion);
    }
    let mut at = walk_name(reply, HEADER_LEN, "question")? + 4;
    if at > reply.len() {
        return Err(ReplyError::Truncated("question"));
    }
    // The question as asked, letters in any case (label lengths are below 64, so folding the
    // whole byte string leaves them alone).
    let asked = walk_name(query, HEADER_LEN, "question")
        .ok()
        .and_then(|end| query.get(HEADER_LEN..end + 4));
    if !asked.is_some_and(|asked| asked.eq_ignore_ascii_case(&reply[HEADER_LEN..at])) {
        return Err(ReplyError::WrongQuestion);
    }
    // A truncated reply is only a signal to ask again over TCP: its sections may be cut.
    if info.truncated {
        return Ok(info);
    }
    for (section, &count) in counts.iter().enumerate().skip(1) {
        for _ in 0..count {
            let owner_at = at;
            at = walk_name(reply, at, "record owner")?;
            let rr_type = read_u16(reply, at).ok_or(ReplyError::Truncated("record"))?;
            let rdlen = read_u16(reply, at + 8).ok_or(ReplyError::Truncated("record"))?;
            let rdata = at + 10;
            if rdata + usize::from(rdlen) > reply.len() {
                return Err(ReplyError::Truncated("record data"));
            }
            if rr_type == rtype::OPT {
                if section != 3 || info.opt.is_some() || reply[owner_at] != 0 {
                    return Err(ReplyError::MisplacedOpt);
                }
                info.opt = Some((owner_at, rdata + usize::from(rdlen)));
                let (extended, version) = (reply[at + 4], reply[at + 5]);
                if version != 0 {
                    return Err(ReplyError::EdnsVersion(version));
                }
                if extended != 0 {
                    return Err(ReplyError::ExtendedRcode(extended));
                }
            } else {
                check_rdata(reply, rr_type, rdata, rdlen)?;
            }
            at = rdata + usize::from(rdlen);
        }
    }
    if at != reply.len() {
        return Err(ReplyError::TrailingBytes(reply.len() - at));
    }
    Ok(info)
}

/// A checked reply with the upstream's OPT record removed and, when `ours` is `Some(dnssec_ok)`
/// (the query carried EDNS), our own appended, carrying the upstream's Extended DNS Error code
/// if it sent one (kube-dns's "Not Ready" reaches the sidecar through dns-cache). A truncated
/// reply keeps only its header and question. The reply must have passed [`check_reply`].
pub fn replace_opt(reply: &[u8], ours: Option<bool>) -> Vec<u8> {
    let mut out = Vec::with_capacity(reply.len() + 11);
    let truncated = reply.len() > 3 && reply[2] & 0x02 != 0;
    let Ok(question_end) = walk_name(reply, HEADER_LEN, "question").map(|end| end + 4) else {
        out.extend_from_slice(reply);
        return out;
    };
    out.extend_from_slice(&reply[..question_end.min(reply.len())]);
    let mut counts: [u16; 4] = [1, 0, 0, 0];
    let mut ede = None;
    if !truncated {
        let mut at = question_end;
        for (section, &count) in [read_u16(reply, 6), read_u16(reply, 8), read_u16(reply, 10)]
            .iter()
            .enumerate()
        {
            for _ in 0..count.unwrap_or(0) {
                let start = at;
                let Ok(after_owner) = walk_name(reply, at, "record owner") else {
                    break;
                };
                let rr_type = read_u16(reply, after_owner).unwrap_or(0);
                let rdlen = usize::from(read_u16(reply, after_owner + 8).unwrap_or(0));
                at = (after_owner + 10 + rdlen).min(reply.len());
                if rr_type != rtype::OPT {
                    out.extend_from_slice(&reply[start..at]);
                    counts[section + 1] += 1;
                } else if let Some(rdata) = reply.get(after_owner + 10..at) {
                    ede = ede.or(crate::opt::extended_error(rdata));
                }
            }
        }
    }
    if let Some(dnssec_ok) = ours {
        crate::opt::push_opt(&mut out, 0, dnssec_ok, ede);
        counts[3] += 1;
    }
    for (i, count) in counts.iter().enumerate() {
        out[4 + 2 * i..6 + 2 * i].copy_from_slice(&count.to_be_bytes());
    }
    out
}

/// [`replace_opt`] on a reply as [`check_reply`] found it: in place when the upstream's OPT is
/// the last record and carries no options (the usual case), else by a copy.
pub fn replace_opt_in_place(reply: &mut Vec<u8>, info: &ReplyInfo, ours: Option<bool>) {
    let last_and_bare = info
        .opt
        .is_some_and(|(start, end)| end == reply.len() && end - start == 11);
    if info.truncated || !last_and_bare {
        if info.opt.is_some() || ours.is_some() || info.truncated {
            *reply = replace_opt(reply, ours);
        }
        return;
    }
    let Some((start, _)) = info.opt else {
        return;
    };
    match ours {
        Some(dnssec_ok) => {
            reply.truncate(start);
            crate::opt::push_opt(reply, 0, dnssec_ok, None);
        }
        None => {
            reply.truncate(start);
            let arcount = read_u16(reply, 10).unwrap_or(1).saturating_sub(1);
            reply[10..12].copy_from_slice(&arcount.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply to `query` with the given sections appended after the question.
    fn reply_to(query: &[u8], counts: [u16; 3], records: &[u8]) -> Vec<u8> {
        let parsed = wire::parse_query(query).expect("query");
        let mut out = query[..12].to_vec();
        out[2] |= 0x80;
        out[4..6].copy_from_slice(&1u16.to_be_bytes());
        for (i, c) in counts.iter().enumerate() {
            out[6 + 2 * i..8 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
        out.extend_from_slice(parsed.question_bytes());
        out.extend_from_slice(records);
        out
    }

    /// An A record owned by a pointer to the question name.
    fn a_record(ip: [u8; 4]) -> Vec<u8> {
        let mut r = vec![0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4];
        r.extend_from_slice(&ip);
        r
    }

    fn opt(version: u8, extended: u8) -> Vec<u8> {
        vec![0, 0, 41, 0x10, 0, extended, version, 0, 0, 0, 0]
    }

    fn query() -> Vec<u8> {
        wire::build_query(0x4242, "www.example.com", rtype::A, None)
    }

    /// An upstream's Extended DNS Error (kube-dns's "Not Ready") reaches a client that sent
    /// EDNS, in our OPT; a client without EDNS gets no OPT at all.
    #[test]
    fn an_extended_error_is_relayed_in_our_opt() {
        let q = query();
        let mut with_ede = opt(0, 0);
        with_ede[9..11].copy_from_slice(&6u16.to_be_bytes());
        with_ede.extend_from_slice(&[0, 15, 0, 2, 0, 14]);
        let mut reply = reply_to(&q, [0, 0, 1], &with_ede);
        reply[3] = (reply[3] & 0xF0) | 2;
        let info = check_reply(&q, &reply).expect("valid");
        assert!(!info.is_usable(), "SERVFAIL");
        let mut relayed = reply.clone();
        replace_opt_in_place(&mut relayed, &info, Some(false));
        let layout = wire::response_layout(&relayed).expect("layout");
        let (start, end) = layout.opt.expect("our OPT");
        let record = &relayed[usize::from(start)..usize::from(end)];
        assert_eq!(crate::opt::extended_error(&record[11..]), Some(14));
        let mut bare = reply;
        replace_opt_in_place(&mut bare, &info, None);
        assert_eq!(wire::response_layout(&bare).expect("layout").opt, None);
    }

    #[test]
    fn a_well_formed_reply_passes_and_its_opt_is_replaced() {
        let q = query();
        let mut records = a_record([192, 0, 2, 1]);
        let mut with_option = opt(0, 0);
        // An NSID option the client must not see.
        with_option[9..11].copy_from_slice(&6u16.to_be_bytes());
        with_option.extend_from_slice(&[0, 3, 0, 2, b'n', b's']);
        records.extend_from_slice(&with_option);
        let reply = reply_to(&q, [1, 0, 1], &records);
        let info = check_reply(&q, &reply).expect("valid");
        assert_eq!((info.rcode, info.truncated), (0, false));
        assert!(info.opt.is_some());
        let ours = replace_opt(&reply, Some(true));
        let layout = wire::response_layout(&ours).expect("layout");
        let (start, end) = layout.opt.expect("our OPT");
        assert_eq!(end - start, 11, "no options");
        let record = &ours[usize::from(start)..usize::from(end)];
        assert_eq!(&record[3..5], &wire::ADVERTISED_UDP_PAYLOAD.to_be_bytes());
        assert_eq!(&record[5..9], &[0, 0, 0x80, 0], "version 0, DO as asked");
        let stripped = replace_opt(&reply, None);
        assert_eq!(wire::response_layout(&stripped).expect("layout").opt, None);
        assert_eq!(stripped.len(), ours.len() - 11);
        check_reply(&q, &ours).expect("still valid");
        // In place: the same bytes whichever way, options or not.
        for (mut bytes, ours_opt) in [
            (reply.clone(), Some(true)),
            (reply.clone(), None),
            (
                reply_to(
                    &q,
                    [1, 0, 1],
                    &[a_record([192, 0, 2, 1]), opt(0, 0)].concat(),
                ),
                Some(true),
            ),
            (
                reply_to(
                    &q,
                    [1, 0, 1],
                    &[a_record([192, 0, 2, 1]), opt(0, 0)].concat(),
                ),
                None,
            ),
            (
                reply_to(&q, [1, 0, 0], &a_record([192, 0, 2, 1])),
                Some(false),
            ),
        ] {
            let info = check_reply(&q, &bytes).expect("valid");
            let copied = replace_opt(&bytes, ours_opt);
            replace_opt_in_place(&mut bytes, &info, ours_opt);
            assert_eq!(bytes, copied);
        }
    }

    #[test]
    fn each_broken_kind_is_named() {
        let q = query();
        let good = a_record([192, 0, 2, 1]);
        let cases: Vec<(Vec<u8>, ReplyError)> = vec![
            (
                reply_to(&q, [1, 0, 0], &good)[..11].to_vec(),
                ReplyError::Short(11),
            ),
            (
                reply_to(&q, [1, 0, 0], &good[..good.len() - 2]),
                ReplyError::Truncated("record data"),
            ),
            (
                reply_to(&q, [2, 0, 0], &good),
                ReplyError::Truncated("record owner"),
            ),
            (
                reply_to(&q, [0, 0, 0], &good),
                ReplyError::TrailingBytes(good.len()),
            ),
            (
                {
                    let mut r = good.clone();
                    r[11] = 200; // RDLENGTH past the end
                    reply_to(&q, [1, 0, 0], &r)
                },
                ReplyError::Truncated("record data"),
            ),
            (
                {
                    // The owner points at itself.
                    let at = 12 + wire::parse_query(&q).expect("q").question_bytes().len();
                    let mut r = good.clone();
                    r[0] = 0xC0 | (at >> 8) as u8;
                    r[1] = at as u8;
                    reply_to(&q, [1, 0, 0], &r)
                },
                ReplyError::BadName("record owner", "compression pointer loop"),
            ),
            (
                {
                    let mut r = good.clone();
                    r[11] = 5;
                    r.push(0);
                    reply_to(&q, [1, 0, 0], &r)
                },
                ReplyError::BadRdata { rr_type: 1, len: 5 },
            ),
            (
                {
                    let mut r = good.clone();
                    r.extend_from_slice(&opt(1, 0));
                    reply_to(&q, [1, 0, 1], &r)
                },
                ReplyError::EdnsVersion(1),
            ),
            (
                {
                    let mut r = good.clone();
                    r.extend_from_slice(&opt(0, 0x7F));
                    reply_to(&q, [1, 0, 1], &r)
                },
                ReplyError::ExtendedRcode(0x7F),
            ),
            (
                {
                    let mut r = opt(0, 0);
                    r.extend_from_slice(&opt(0, 0));
                    reply_to(&q, [0, 0, 2], &r)
                },
                ReplyError::MisplacedOpt,
            ),
            (
                {
                    let other = wire::build_query(0x4242, "evil.example.com", rtype::A, None);
                    reply_to(&other, [1, 0, 0], &good)
                },
                ReplyError::WrongQuestion,
            ),
            (
                {
                    let mut r = reply_to(&q, [1, 0, 0], &good);
                    r[0] ^= 1;
                    r
                },
                ReplyError::WrongId,
            ),
            (q.clone(), ReplyError::NotAResponse),
        ];
        for (reply, expected) in cases {
            assert_eq!(check_reply(&q, &reply), Err(expected), "{reply:?}");
        }
    }

    #[test]
    fn names_inside_record_data_are_checked() {
        let q = wire::build_query(7, "alias.example.com", rtype::CNAME, None);
        // CNAME whose target is a pointer to the question name: fine.
        let good = vec![0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xC0, 12];
        check_reply(&q, &reply_to(&q, [1, 0, 0], &good)).expect("valid");
        // Target pointer forward, past the end of the message.
        let mut bad = good.clone();
        bad[13] = 0xF0;
        assert!(matches!(
            check_reply(&q, &reply_to(&q, [1, 0, 0], &bad)),
            Err(ReplyError::BadName(..))
        ));
        // RDLENGTH longer than the name inside it.
        let mut long = good.clone();
        long[11] = 3;
        long.push(0);
        assert_eq!(
            check_reply(&q, &reply_to(&q, [1, 0, 0], &long)),
            Err(ReplyError::BadRdata { rr_type: 5, len: 3 })
        );
    }

    #[test]
    fn a_truncated_reply_needs_only_its_question() {
        let q = query();
        let mut reply = reply_to(&q, [3, 0, 0], &a_record([1, 2, 3, 4])[..6]);
        reply[2] |= 0x02;
        let info = check_reply(&q, &reply).expect("TC");
        assert!(info.truncated);
        let shaped = replace_opt(&reply, None);
        assert_eq!(&shaped[6..12], &[0, 0, 0, 0, 0, 0]);
    }
}
