//! Query parsing: a hand-written walker over the header, the one question and the OPT RR that
//! gives a [`Query`] borrowing the packet, with no allocation.

use thiserror::Error;

use crate::header::read_u16;
use crate::types::{HEADER_LEN, MAX_NAME_LEN, MIN_UDP_PAYLOAD, rtype};

/// Why a packet could not be read as a query.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("packet shorter than a DNS header ({0} bytes)")]
    ShortHeader(usize),
    #[error("packet is a response (QR set); dropped")]
    NotAQuery,
    #[error("query must carry exactly one question, found {0}")]
    QuestionCount(u16),
    #[error("question name is malformed: {0}")]
    BadName(&'static str),
    #[error("packet ends inside the {0}")]
    Truncated(&'static str),
    /// Bytes after the last record the header counts. FORMERR, as BIND answers: a query is
    /// read and kept as its header, question and OPT, and padding goes inside the OPT
    /// (RFC 7830), never after it.
    #[error("{0} bytes after the last record")]
    TrailingBytes(usize),
}

impl WireError {
    /// Whether the sender deserves a FORMERR reply (as opposed to silence).
    pub fn wants_formerr(&self) -> bool {
        !matches!(self, WireError::ShortHeader(_) | WireError::NotAQuery)
    }
}

/// EDNS(0) facts from the query's OPT RR (RFC 6891).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdnsInfo {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A parsed query. The name is kept twice: as sent (for the echoed question, so the client's
/// letter case survives) and lower-cased in dotted form without the final dot (for lookups).
pub struct Query<'p> {
    packet: &'p [u8],
    pub id: u16,
    pub opcode: u8,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<EdnsInfo>,
    question_end: usize,
    /// The offset just after the last record the header counts.
    end: usize,
    lower: [u8; MAX_NAME_LEN],
    lower_len: usize,
}

impl std::fmt::Debug for Query<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query")
            .field("id", &self.id)
            .field("name", &self.name())
            .field("qtype", &self.qtype)
            .field("qclass", &self.qclass)
            .field("edns", &self.edns)
            .finish()
    }
}

impl<'p> Query<'p> {
    /// The query name, lower-cased, dotted, without the trailing dot (`""` for the root).
    /// Bytes that cannot appear in a host name are written as `\DDD`, so they never match.
    pub fn name(&self) -> &str {
        // Only ASCII is ever written into `lower`.
        std::str::from_utf8(&self.lower[..self.lower_len]).unwrap_or("")
    }

    /// The question section exactly as the client sent it.
    pub fn question_bytes(&self) -> &'p [u8] {
        &self.packet[HEADER_LEN..self.question_end]
    }

    /// The largest response the client accepts over UDP.
    pub fn udp_limit(&self) -> usize {
        self.edns.map_or(MIN_UDP_PAYLOAD, |e| {
            usize::from(e.payload).max(MIN_UDP_PAYLOAD)
        })
    }
}

/// Parses a query packet (QR clear).
pub fn parse_query(packet: &[u8]) -> Result<Query<'_>, WireError> {
    if packet.len() >= HEADER_LEN && packet[2] & 0x80 != 0 {
        return Err(WireError::NotAQuery);
    }
    let query = parse_message(packet)?;
    if query.end < packet.len() {
        return Err(WireError::TrailingBytes(packet.len() - query.end));
    }
    Ok(query)
}

/// The query as a server keeps it: the header (no answer or authority records), the question
/// exactly as sent and, when the client sent EDNS, a plain OPT with its payload size, version
/// and DO bit (options dropped). What else the client sent is not copied.
pub fn compact_query(query: &Query<'_>) -> Vec<u8> {
    let question = query.question_bytes();
    let mut out = Vec::with_capacity(HEADER_LEN + question.len() + 11);
    out.extend_from_slice(&query.packet[..4]);
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(query.edns.is_some())]);
    out.extend_from_slice(question);
    if let Some(edns) = query.edns {
        out.push(0);
        out.extend_from_slice(&rtype::OPT.to_be_bytes());
        out.extend_from_slice(&edns.payload.to_be_bytes());
        out.extend_from_slice(&[0, edns.version]);
        out.extend_from_slice(&(if edns.dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
    out
}

/// Parses the header, the single question and the OPT RR of any message.
pub(crate) fn parse_message(packet: &[u8]) -> Result<Query<'_>, WireError> {
    if packet.len() < HEADER_LEN {
        return Err(WireError::ShortHeader(packet.len()));
    }
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    let qdcount = u16::from_be_bytes([packet[4], packet[5]]);
    let ancount = u16::from_be_bytes([packet[6], packet[7]]);
    let nscount = u16::from_be_bytes([packet[8], packet[9]]);
    let arcount = u16::from_be_bytes([packet[10], packet[11]]);
    if qdcount != 1 {
        return Err(WireError::QuestionCount(qdcount));
    }
    let mut query = Query {
        packet,
        id: u16::from_be_bytes([packet[0], packet[1]]),
        opcode: ((flags >> 11) & 0xF) as u8,
        recursion_desired: flags & 0x0100 != 0,
        checking_disabled: flags & 0x0010 != 0,
        qtype: 0,
        qclass: 0,
        edns: None,
        question_end: 0,
        end: 0,
        lower: [0; MAX_NAME_LEN],
        lower_len: 0,
    };
    let mut at = HEADER_LEN;
    let mut wire_len = 0usize;
    loop {
        let len = usize::from(
            *packet
                .get(at)
                .ok_or(WireError::Truncated("question name"))?,
        );
        if len == 0 {
            at += 1;
            break;
        }
        if len & 0xC0 != 0 {
            return Err(WireError::BadName(
                "compression or extended label in the question",
            ));
        }
        let label = packet
            .get(at + 1..at + 1 + len)
            .ok_or(WireError::Truncated("question name"))?;
        wire_len += len + 1;
        if wire_len + 1 > MAX_NAME_LEN {
            return Err(WireError::BadName("name longer than 255 bytes"));
        }
        if query.lower_len > 0 {
            push_lower(&mut query, b'.')?;
        }
        for &b in label {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*' {
                push_lower(&mut query, b.to_ascii_lowercase())?;
            } else {
                // Escape anything else so it can never equal a record name.
                let digits = [b'\\', b'0' + b / 100, b'0' + (b / 10) % 10, b'0' + b % 10];
                for d in digits {
                    push_lower(&mut query, d)?;
                }
            }
        }
        at += 1 + len;
    }
    query.qtype = read_u16(packet, at).ok_or(WireError::Truncated("question"))?;
    query.qclass = read_u16(packet, at + 2).ok_or(WireError::Truncated("question"))?;
    query.question_end = at + 4;
    at = query.question_end;
    // Skip answer and authority records (a plain query has none), then look for OPT.
    for _ in 0..(u32::from(ancount) + u32::from(nscount)) {
        at = skip_record(packet, at)?.1;
    }
    for _ in 0..arcount {
        let (rr_type, next, fixed) = skip_record(packet, at)?;
        if rr_type == rtype::OPT && query.edns.is_none() {
            let payload = read_u16(packet, fixed + 2).unwrap_or(0);
            let version = packet.get(fixed + 5).copied().unwrap_or(0);
            let ttl_flags = read_u16(packet, fixed + 6).unwrap_or(0);
            query.edns = Some(EdnsInfo {
                payload,
                version,
                dnssec_ok: ttl_flags & 0x8000 != 0,
            });
        }
        at = next;
    }
    query.end = at;
    Ok(query)
}

fn push_lower(query: &mut Query<'_>, b: u8) -> Result<(), WireError> {
    if query.lower_len >= MAX_NAME_LEN {
        return Err(WireError::BadName("name longer than 255 bytes"));
    }
    query.lower[query.lower_len] = b;
    query.lower_len += 1;
    Ok(())
}

/// Skips one resource record; returns its type, the offset after it and the offset of its
/// fixed part (type, class, TTL, RDLENGTH).
pub(crate) fn skip_record(p: &[u8], at: usize) -> Result<(u16, usize, usize), WireError> {
    let at = skip_name(p, at)?;
    let fixed = at;
    let rr_type = read_u16(p, at).ok_or(WireError::Truncated("record"))?;
    let rdlen = usize::from(read_u16(p, at + 8).ok_or(WireError::Truncated("record"))?);
    let end = at + 10 + rdlen;
    if end > p.len() {
        return Err(WireError::Truncated("record data"));
    }
    Ok((rr_type, end, fixed))
}

/// The end of the (possibly compressed) name at `at`, without following pointers.
pub(crate) fn skip_name(p: &[u8], mut at: usize) -> Result<usize, WireError> {
    loop {
        let len = *p.get(at).ok_or(WireError::Truncated("name"))?;
        if len == 0 {
            return Ok(at + 1);
        }
        if len & 0xC0 == 0xC0 {
            return Ok(at + 2);
        }
        at += 1 + usize::from(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::build_query;

    fn query_bytes(name: &str, qtype: u16) -> Vec<u8> {
        build_query(0x1234, name, qtype, None)
    }

    #[test]
    fn parses_name_lowercase_and_keeps_question_bytes() {
        let bytes = query_bytes("KuBe.Default.svc.cluster.local", rtype::A);
        let q = parse_query(&bytes).expect("parses");
        assert_eq!(q.name(), "kube.default.svc.cluster.local");
        assert_eq!(q.qtype, rtype::A);
        assert_eq!(q.id, 0x1234);
        assert!(q.question_bytes().starts_with(&[4, b'K', b'u']));
    }

    #[test]
    fn rejects_short_and_response_packets() {
        assert_eq!(parse_query(&[0; 5]).err(), Some(WireError::ShortHeader(5)));
        let mut bytes = query_bytes("a.b", rtype::A);
        bytes[2] |= 0x80;
        assert_eq!(parse_query(&bytes).err(), Some(WireError::NotAQuery));
    }

    #[test]
    fn truncated_question_is_formerr() {
        let bytes = query_bytes("abc.example", rtype::A);
        let err = parse_query(&bytes[..bytes.len() - 3]).expect_err("truncated");
        assert!(err.wants_formerr());
    }

    #[test]
    fn bytes_after_the_last_record_are_formerr() {
        let mut bytes = query_bytes("a.example", rtype::A);
        bytes.extend_from_slice(&[0; 60_000]);
        let err = parse_query(&bytes).expect_err("trailing bytes");
        assert_eq!(err, WireError::TrailingBytes(60_000));
        assert!(err.wants_formerr());
    }

    #[test]
    fn a_compact_query_keeps_header_question_and_a_plain_opt_only() {
        let edns = EdnsInfo {
            payload: 4096,
            version: 0,
            dnssec_ok: true,
        };
        let mut bytes = build_query(0x4242, "MiXed.Example", rtype::AAAA, Some(edns));
        // A cookie option in the OPT (RDLENGTH 12: code 10, length 8) and a second,
        // unknown additional record: neither is kept.
        let rdlen_at = bytes.len() - 2;
        bytes[rdlen_at..].copy_from_slice(&12u16.to_be_bytes());
        bytes.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        bytes[11] = 2;
        bytes.extend_from_slice(&[0, 0, 16, 0, 1, 0, 0, 0, 0, 0, 2, 1, b'x']);
        let query = parse_query(&bytes).expect("parses");
        let compact = compact_query(&query);
        let again = parse_query(&compact).expect("the compact form parses");
        assert_eq!(again.id, 0x4242);
        assert_eq!(again.question_bytes(), query.question_bytes());
        assert_eq!(again.edns, Some(edns));
        assert!(again.recursion_desired);
        assert_eq!(
            compact.len(),
            HEADER_LEN + query.question_bytes().len() + 11
        );
        let plain = query_bytes("a.b", rtype::A);
        let compact = compact_query(&parse_query(&plain).expect("parses"));
        assert_eq!(compact, plain);
    }

    #[test]
    fn odd_bytes_in_labels_are_escaped() {
        let mut bytes = query_bytes("a.b", rtype::A);
        bytes[13] = b'.';
        let q = parse_query(&bytes).expect("parses");
        assert_eq!(q.name(), "\\046.b");
    }

    #[test]
    fn reads_edns_payload_and_do_bit() {
        let bytes = build_query(
            1,
            "x.y",
            rtype::A,
            Some(EdnsInfo {
                payload: 4096,
                version: 0,
                dnssec_ok: true,
            }),
        );
        let q = parse_query(&bytes).expect("parses");
        assert_eq!(
            q.edns,
            Some(EdnsInfo {
                payload: 4096,
                version: 0,
                dnssec_ok: true
            })
        );
        assert_eq!(q.udp_limit(), 4096);
    }
}
