//! The cache's view of an upstream response: TTL offsets, negative TTL, OPT and rotation range,
//! found in one walk without allocating names.

use crate::query::{WireError, skip_name, skip_record};
use crate::types::{HEADER_LEN, rtype};

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
