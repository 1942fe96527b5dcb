//! DNS wire format: the one module that reads and writes packet bytes.
//!
//! Queries are parsed with a hand-written walker (header, one question, the OPT RR) into a
//! [`Query`] that borrows the packet, and responses are encoded straight into a reused buffer
//! from an [`Answer`](crate::answer::Answer): no allocation and no `Message` tree per query.
//! hickory-proto stays the reference decoder for tests and for the slow forwarding path.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use crate::answer::{Answer, DnsName, RData, ResourceRecord};

/// Record types this server encodes or matches on.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const HINFO: u16 = 13;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;
}

/// Query classes.
pub mod class {
    pub const IN: u16 = 1;
    pub const CH: u16 = 3;
    pub const ANY: u16 = 255;
}

/// The smallest UDP payload every client accepts (RFC 1035 §4.2.1).
pub const MIN_UDP_PAYLOAD: usize = 512;
/// The payload size we advertise in our OPT RR (the DNS flag day 2020 value).
pub const ADVERTISED_UDP_PAYLOAD: u16 = 1232;
/// The largest message a TCP frame carries.
pub const MAX_TCP_MESSAGE: usize = 65535;
const HEADER_LEN: usize = 12;
const OPT_RR_LEN: usize = 11;
const MAX_NAME_LEN: usize = 255;

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

fn read_u16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Reads the header ID of any packet with at least two bytes.
pub fn packet_id(packet: &[u8]) -> Option<u16> {
    read_u16(packet, 0)
}

/// Overwrites a packet's ID.
pub fn set_packet_id(packet: &mut [u8], id: u16) {
    if packet.len() >= 2 {
        packet[..2].copy_from_slice(&id.to_be_bytes());
    }
}

/// Parses a query packet (QR clear).
pub fn parse_query(packet: &[u8]) -> Result<Query<'_>, WireError> {
    if packet.len() >= HEADER_LEN && packet[2] & 0x80 != 0 {
        return Err(WireError::NotAQuery);
    }
    parse_message(packet)
}

/// Parses the header, the single question and the OPT RR of any message.
fn parse_message(packet: &[u8]) -> Result<Query<'_>, WireError> {
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
fn skip_record(p: &[u8], mut at: usize) -> Result<(u16, usize, usize), WireError> {
    loop {
        let len = *p.get(at).ok_or(WireError::Truncated("record name"))?;
        if len == 0 {
            at += 1;
            break;
        }
        if len & 0xC0 == 0xC0 {
            at += 2;
            break;
        }
        at += 1 + usize::from(len);
    }
    let fixed = at;
    let rr_type = read_u16(p, at).ok_or(WireError::Truncated("record"))?;
    let rdlen = usize::from(read_u16(p, at + 8).ok_or(WireError::Truncated("record"))?);
    let end = at + 10 + rdlen;
    if end > p.len() {
        return Err(WireError::Truncated("record data"));
    }
    Ok((rr_type, end, fixed))
}

/// What the encoder needs to know about the query being answered.
#[derive(Debug, Clone, Copy)]
pub struct ResponseContext<'q> {
    pub id: u16,
    pub opcode: u8,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    /// The question section to echo, or empty for a header-only error reply.
    pub question: &'q [u8],
    pub edns: Option<EdnsInfo>,
    /// The size the response must fit in.
    pub limit: usize,
}

impl<'q> ResponseContext<'q> {
    /// Context for answering `query` over UDP (`tcp = false`) or TCP.
    pub fn for_query(query: &Query<'q>, tcp: bool) -> Self {
        ResponseContext {
            id: query.id,
            opcode: query.opcode,
            recursion_desired: query.recursion_desired,
            checking_disabled: query.checking_disabled,
            question: query.question_bytes(),
            edns: query.edns,
            limit: if tcp {
                MAX_TCP_MESSAGE
            } else {
                query.udp_limit()
            },
        }
    }

    /// Context for a FORMERR reply to a packet that could not be parsed.
    pub fn for_bad_packet(packet: &'q [u8]) -> Option<Self> {
        let flags = read_u16(packet, 2)?;
        Some(ResponseContext {
            id: read_u16(packet, 0)?,
            opcode: ((flags >> 11) & 0xF) as u8,
            recursion_desired: flags & 0x0100 != 0,
            checking_disabled: false,
            question: &[],
            edns: None,
            limit: MIN_UDP_PAYLOAD,
        })
    }
}

/// Encodes `answer` for the query described by `ctx` into `out` (cleared first).
///
/// Sections are written in order; an additional record that does not fit is dropped silently,
/// an answer or authority record that does not fit sets TC and ends the message at the last
/// whole record (RFC 2181 §9). The OPT RR always fits because its bytes are reserved up front.
pub fn encode_response(ctx: &ResponseContext<'_>, answer: &Answer<'_>, out: &mut Vec<u8>) {
    out.clear();
    let mut enc = Encoder {
        buf: out,
        name_offsets: [0; MAX_COMPRESSION_TARGETS],
        name_count: 0,
    };
    let badvers = ctx.edns.is_some_and(|e| e.version > 0);
    let rcode = if badvers { 0 } else { answer.rcode.low_bits() };
    let mut flags: u16 = 0x8000 | (u16::from(ctx.opcode & 0xF) << 11) | u16::from(rcode);
    if answer.authoritative && !badvers {
        flags |= 0x0400;
    }
    if ctx.recursion_desired {
        flags |= 0x0100;
    }
    if answer.recursion_available {
        flags |= 0x0080;
    }
    if ctx.checking_disabled {
        flags |= 0x0010;
    }
    let qdcount = u16::from(!ctx.question.is_empty());
    enc.buf.extend_from_slice(&ctx.id.to_be_bytes());
    enc.buf.extend_from_slice(&flags.to_be_bytes());
    enc.buf.extend_from_slice(&qdcount.to_be_bytes());
    enc.buf.extend_from_slice(&[0; 6]);
    enc.buf.extend_from_slice(ctx.question);
    if !ctx.question.is_empty() {
        enc.register_question_labels();
    }
    let limit = ctx.limit.max(MIN_UDP_PAYLOAD) - if ctx.edns.is_some() { OPT_RR_LEN } else { 0 };
    let mut truncated = false;
    let mut counts = [0u16; 3];
    if !badvers {
        let sections: [&[ResourceRecord<'_>]; 3] =
            [&answer.answers, &answer.authority, &answer.additionals];
        'sections: for (index, records) in sections.into_iter().enumerate() {
            for record in records {
                let mark = enc.buf.len();
                let names = enc.name_count;
                enc.write_record(record);
                if enc.buf.len() > limit {
                    enc.buf.truncate(mark);
                    enc.name_count = names;
                    truncated = index < 2;
                    break 'sections;
                }
                counts[index] += 1;
            }
        }
    }
    if truncated {
        enc.buf[2] |= 0x02;
    }
    enc.buf[6..8].copy_from_slice(&counts[0].to_be_bytes());
    enc.buf[8..10].copy_from_slice(&counts[1].to_be_bytes());
    let mut arcount = counts[2];
    if ctx.edns.is_some() {
        // OPT: root owner, our payload size, extended rcode (BADVERS = 16 -> high bits 1).
        enc.buf.push(0);
        enc.buf.extend_from_slice(&rtype::OPT.to_be_bytes());
        enc.buf
            .extend_from_slice(&ADVERTISED_UDP_PAYLOAD.to_be_bytes());
        let ext_rcode: u8 = if badvers { 1 } else { answer.rcode.high_bits() };
        let do_bit: u16 = if ctx.edns.is_some_and(|e| e.dnssec_ok) {
            0x8000
        } else {
            0
        };
        enc.buf.push(ext_rcode);
        enc.buf.push(0);
        enc.buf.extend_from_slice(&do_bit.to_be_bytes());
        enc.buf.extend_from_slice(&[0, 0]);
        arcount += 1;
    }
    enc.buf[10..12].copy_from_slice(&arcount.to_be_bytes());
}

const MAX_COMPRESSION_TARGETS: usize = 64;

struct Encoder<'b> {
    buf: &'b mut Vec<u8>,
    /// Offsets of label starts already in the message, for name compression.
    name_offsets: [u16; MAX_COMPRESSION_TARGETS],
    name_count: usize,
}

impl Encoder<'_> {
    fn remember(&mut self, offset: usize) {
        if self.name_count < MAX_COMPRESSION_TARGETS && offset < 0x3FFF {
            self.name_offsets[self.name_count] = offset as u16;
            self.name_count += 1;
        }
    }

    fn register_question_labels(&mut self) {
        let mut at = HEADER_LEN;
        while at < self.buf.len() {
            let len = usize::from(self.buf[at]);
            if len == 0 {
                break;
            }
            self.remember(at);
            at += 1 + len;
        }
    }

    fn write_record(&mut self, record: &ResourceRecord<'_>) {
        self.write_name(&record.owner);
        self.buf
            .extend_from_slice(&record.data.rtype().to_be_bytes());
        self.buf.extend_from_slice(&class::IN.to_be_bytes());
        self.buf.extend_from_slice(&record.ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        match &record.data {
            RData::A(ip) => self.buf.extend_from_slice(&ip.octets()),
            RData::Aaaa(ip) => self.buf.extend_from_slice(&ip.octets()),
            RData::Cname(n) | RData::Ptr(n) | RData::Ns(n) => self.write_name(n),
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                self.buf.extend_from_slice(&priority.to_be_bytes());
                self.buf.extend_from_slice(&weight.to_be_bytes());
                self.buf.extend_from_slice(&port.to_be_bytes());
                self.write_name_with(target, false);
            }
            RData::Txt(text) => write_character_string(self.buf, text.as_bytes()),
            RData::Hinfo { cpu, os } => {
                write_character_string(self.buf, cpu.as_bytes());
                write_character_string(self.buf, os.as_bytes());
            }
            RData::Soa { zone, serial, ttl } => {
                self.write_name(&DnsName::Joined("ns.dns", zone));
                self.write_name(&DnsName::Joined("hostmaster", zone));
                for value in [*serial, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, *ttl] {
                    self.buf.extend_from_slice(&value.to_be_bytes());
                }
            }
            RData::Raw { data, .. } => self.buf.extend_from_slice(data),
        }
        let rdlen = (self.buf.len() - len_at - 2).min(usize::from(u16::MAX)) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    }

    /// Writes a name compressed against earlier names (RFC 1035 §4.1.4).
    fn write_name(&mut self, name: &DnsName<'_>) {
        self.write_name_with(name, true);
    }

    /// `compress = false` writes every label and offers none for later compression: SRV targets
    /// (RFC 2782: "name compression is not to be used for this field"; RFC 3597 §4).
    fn write_name_with(&mut self, name: &DnsName<'_>, compress: bool) {
        let (first, second) = match name {
            DnsName::Query => {
                self.buf.extend_from_slice(&0xC00Cu16.to_be_bytes());
                return;
            }
            DnsName::Text(text) => (text.as_ref(), ""),
            DnsName::Joined(label, base) => (*label, *base),
        };
        let labels = first
            .split('.')
            .chain(second.split('.'))
            .filter(|l| !l.is_empty());
        let mut stack: [&str; 128] = [""; 128];
        let mut n = 0;
        for label in labels {
            if n == stack.len() {
                break;
            }
            stack[n] = label;
            n += 1;
        }
        let labels = &stack[..n];
        for start in 0..labels.len() {
            if compress && let Some(pointer) = self.find_suffix(&labels[start..]) {
                self.buf
                    .extend_from_slice(&(0xC000 | pointer).to_be_bytes());
                return;
            }
            let label = labels[start].as_bytes();
            let label = &label[..label.len().min(63)];
            if compress {
                self.remember(self.buf.len());
            }
            self.buf.push(label.len() as u8);
            self.buf.extend_from_slice(label);
        }
        self.buf.push(0);
    }

    /// Finds an earlier occurrence of exactly these labels (case-insensitive).
    fn find_suffix(&self, labels: &[&str]) -> Option<u16> {
        self.name_offsets[..self.name_count]
            .iter()
            .copied()
            .find(|&offset| name_at_equals(self.buf, usize::from(offset), labels))
    }
}

const SOA_REFRESH: u32 = 28800;
const SOA_RETRY: u32 = 7200;
const SOA_EXPIRE: u32 = 604800;

fn write_character_string(buf: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(255)];
    buf.push(bytes.len() as u8);
    buf.extend_from_slice(bytes);
}

/// Whether the (possibly compressed) name at `offset` in `buf` is exactly `labels`.
fn name_at_equals(buf: &[u8], mut offset: usize, labels: &[&str]) -> bool {
    let mut hops = 0;
    let mut index = 0;
    loop {
        let Some(&len) = buf.get(offset) else {
            return false;
        };
        if len & 0xC0 == 0xC0 {
            let Some(&low) = buf.get(offset + 1) else {
                return false;
            };
            hops += 1;
            if hops > 32 {
                return false;
            }
            offset = (usize::from(len & 0x3F) << 8) | usize::from(low);
            continue;
        }
        if len == 0 {
            return index == labels.len();
        }
        let Some(want) = labels.get(index) else {
            return false;
        };
        let Some(have) = buf.get(offset + 1..offset + 1 + usize::from(len)) else {
            return false;
        };
        if !have.eq_ignore_ascii_case(want.as_bytes()) {
            return false;
        }
        index += 1;
        offset += 1 + usize::from(len);
    }
}

/// Extracts the records of a decoded upstream message section as owned [`ResourceRecord`]s,
/// keeping their owner names and RDATA (re-encoded without compression).
pub fn upstream_records(records: &[hickory_proto::rr::Record]) -> Vec<ResourceRecord<'static>> {
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let mut data = Vec::new();
        let mut encoder = BinEncoder::new(&mut data);
        encoder.set_canonical_form(true);
        if record.data.emit(&mut encoder).is_err() {
            continue;
        }
        let owner = record.name.to_ascii();
        out.push(ResourceRecord {
            owner: DnsName::Text(Cow::Owned(owner.trim_end_matches('.').to_owned())),
            ttl: record.ttl,
            data: RData::Raw {
                rtype: u16::from(record.record_type()),
                data: Cow::Owned(data),
            },
        });
    }
    out
}

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

/// What a cache needs to know about an upstream response, found in one walk over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseLayout {
    /// Low four bits of the RCODE.
    pub rcode: u8,
    pub truncated: bool,
    pub answer_count: u16,
    /// Offsets of every TTL field except the OPT RR's, with the TTL found there.
    pub ttls: Vec<(u16, u32)>,
    /// The smallest TTL of the answer and authority sections (None when both are empty).
    pub min_ttl: Option<u32>,
    /// min(SOA TTL, SOA MINIMUM) of an SOA in the authority section (RFC 2308 §5).
    pub negative_ttl: Option<u32>,
    /// Byte range of the OPT RR, if any.
    pub opt: Option<(u16, u16)>,
    /// Byte range and record length of the answer section when it holds only A (or only AAAA)
    /// records of one length, which can be rotated in place.
    pub rotatable: Option<(u16, u16, u16)>,
}

/// Walks a response (header, question, every RR) without allocating names.
pub fn response_layout(packet: &[u8]) -> Result<ResponseLayout, WireError> {
    if packet.len() < HEADER_LEN {
        return Err(WireError::ShortHeader(packet.len()));
    }
    if packet.len() > usize::from(u16::MAX) {
        return Err(WireError::Truncated("message longer than 65535 bytes"));
    }
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    let counts: Vec<u16> = (0..4)
        .map(|i| u16::from_be_bytes([packet[4 + 2 * i], packet[5 + 2 * i]]))
        .collect();
    let mut at = HEADER_LEN;
    for _ in 0..counts[0] {
        at = skip_name(packet, at)? + 4;
        if at > packet.len() {
            return Err(WireError::Truncated("question"));
        }
    }
    let mut layout = ResponseLayout {
        rcode: (flags & 0xF) as u8,
        truncated: flags & 0x0200 != 0,
        answer_count: counts[1],
        ttls: Vec::new(),
        min_ttl: None,
        negative_ttl: None,
        opt: None,
        rotatable: None,
    };
    let mut rotation: Option<(u16, u16, u16, usize)> = None; // (type, start, len, count)
    let mut rotatable = counts[1] > 1;
    for section in 0..3 {
        for _ in 0..counts[section + 1] {
            let start = at;
            let (rr_type, end, fixed) = skip_record(packet, at)?;
            let ttl_at = fixed + 4;
            let ttl = u32::from_be_bytes([
                packet[ttl_at],
                packet[ttl_at + 1],
                packet[ttl_at + 2],
                packet[ttl_at + 3],
            ]);
            if rr_type == rtype::OPT {
                layout.opt = Some((start as u16, end as u16));
            } else {
                layout.ttls.push((ttl_at as u16, ttl));
                if section < 2 {
                    layout.min_ttl = Some(layout.min_ttl.map_or(ttl, |m| m.min(ttl)));
                }
                if section == 1 && rr_type == rtype::SOA && end >= 4 {
                    let minimum = u32::from_be_bytes([
                        packet[end - 4],
                        packet[end - 3],
                        packet[end - 2],
                        packet[end - 1],
                    ]);
                    layout.negative_ttl = Some(ttl.min(minimum));
                }
            }
            if section == 0 && rotatable {
                let len = (end - start) as u16;
                match rotation {
                    None if matches!(rr_type, rtype::A | rtype::AAAA) => {
                        rotation = Some((rr_type, start as u16, len, 1));
                    }
                    Some((t, s, l, n)) if t == rr_type && l == len => {
                        rotation = Some((t, s, l, n + 1));
                    }
                    _ => rotatable = false,
                }
            }
            at = end;
        }
    }
    if rotatable && let Some((_, start, len, count)) = rotation {
        layout.rotatable = Some((start, len, count as u16));
    }
    Ok(layout)
}

fn skip_name(p: &[u8], mut at: usize) -> Result<usize, WireError> {
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
    buf.push(0);
    buf.extend_from_slice(&rtype::OPT.to_be_bytes());
    buf.extend_from_slice(&ADVERTISED_UDP_PAYLOAD.to_be_bytes());
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(if dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
    buf.extend_from_slice(&[0, 0]);
    buf
}

/// Encodes a header-only reply with `rcode` (and TC when asked) echoing the question.
pub fn encode_header_only(
    ctx: &ResponseContext<'_>,
    rcode: crate::answer::Rcode,
    truncated: bool,
    out: &mut Vec<u8>,
) {
    let mut answer = crate::answer::Answer::error(rcode);
    answer.recursion_available = true;
    encode_response(ctx, &answer, out);
    if truncated && out.len() > 2 {
        out[2] |= 0x02;
    }
}

/// Reads the response code (low four bits) and the TC bit of a response.
pub fn response_rcode_tc(response: &[u8]) -> Option<(u8, bool)> {
    let flags = read_u16(response, 2)?;
    Some(((flags & 0xF) as u8, flags & 0x0200 != 0))
}

/// IPv4 helper for tests and callers: the dotted `in-addr.arpa` owner of an address.
pub fn reverse_name_v4(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
}

/// The 32-nibble `ip6.arpa` owner of an address.
pub fn reverse_name_v6(ip: Ipv6Addr) -> String {
    let mut s = String::with_capacity(72);
    for byte in ip.octets().iter().rev() {
        for nibble in [byte & 0xF, byte >> 4] {
            s.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
            s.push('.');
        }
    }
    s.push_str("ip6.arpa");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn srv_targets_are_written_uncompressed() {
        use crate::answer::{Answer, Rcode};
        let bytes = query_bytes("_http._tcp.web.ns.svc.cluster.local", rtype::SRV);
        let q = parse_query(&bytes).expect("parses");
        let mut answer = Answer::error(Rcode::NoError);
        answer.answers.push(ResourceRecord {
            owner: DnsName::Query,
            ttl: 30,
            data: RData::Srv {
                priority: 10,
                weight: 100,
                port: 80,
                target: DnsName::Text(Cow::Borrowed("web.ns.svc.cluster.local")),
            },
        });
        let mut out = Vec::new();
        encode_response(&ResponseContext::for_query(&q, false), &answer, &mut out);
        let literal = b"\x03web\x02ns\x03svc\x07cluster\x05local\x00";
        let rdata = &out[out.len() - literal.len()..];
        assert_eq!(
            rdata, literal,
            "the target must not point into the question"
        );
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name_v4(Ipv4Addr::new(10, 0, 0, 1)),
            "1.0.0.10.in-addr.arpa"
        );
        let v6 = reverse_name_v6("2001:db8::1".parse().expect("ip"));
        assert!(v6.starts_with("1.0.0.0.0.0.0.0"));
        assert!(v6.ends_with("8.b.d.0.1.0.0.2.ip6.arpa"));
    }
}
