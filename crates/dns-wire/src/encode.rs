//! Encoding a response from an [`Answer`] straight into a reused buffer, with name compression.

use crate::header::read_u16;
use crate::message::{Answer, DnsName, RData, ResourceRecord};
use crate::query::{EdnsInfo, Query};
use crate::types::Rcode;
use crate::types::{HEADER_LEN, MAX_TCP_MESSAGE, MIN_UDP_PAYLOAD, class};

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
    let limit = ctx.limit.max(MIN_UDP_PAYLOAD)
        - if ctx.edns.is_some() {
            crate::opt::opt_len(answer.ede)
        } else {
            0
        };
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
    if let Some(edns) = ctx.edns {
        // Extended rcode: BADVERS (16) puts 1 in the high bits.
        let ext_rcode: u8 = if badvers { 1 } else { answer.rcode.high_bits() };
        let ede = if badvers { None } else { answer.ede };
        crate::opt::push_opt(enc.buf, ext_rcode, edns.dnssec_ok, ede);
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

/// Encodes a header-only reply with `rcode` (and TC when asked) echoing the question.
pub fn encode_header_only(
    ctx: &ResponseContext<'_>,
    rcode: Rcode,
    truncated: bool,
    out: &mut Vec<u8>,
) {
    let mut answer = Answer::error(rcode);
    answer.recursion_available = true;
    encode_response(ctx, &answer, out);
    if truncated && out.len() > 2 {
        out[2] |= 0x02;
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::build::build_query;
    use crate::query::parse_query;
    use crate::types::rtype;

    fn query_bytes(name: &str, qtype: u16) -> Vec<u8> {
        build_query(0x1234, name, qtype, None)
    }

    #[test]
    fn srv_targets_are_written_uncompressed() {
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
}
