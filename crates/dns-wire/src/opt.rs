//! Our OPT record (RFC 6891) and the Extended DNS Error (RFC 8914) it may carry: one writer for
//! queries, answers and relayed replies, and the reader of an upstream's error code.

use crate::types::{ADVERTISED_UDP_PAYLOAD, rtype};

/// The EDNS option code of an Extended DNS Error (RFC 8914 §2).
pub const EDE_OPTION: u16 = 15;

/// Extended DNS Error info codes (RFC 8914 §4).
pub mod ede {
    /// "Not Ready": the server cannot answer yet (kube-dns before its first sync with the API).
    pub const NOT_READY: u16 = 14;
    /// "Blocked": refused by the server's own policy (dnsmasq's rebinding protection).
    pub const BLOCKED: u16 = 15;
    /// "Filtered": removed as configured (dnsmasq's `--filter-A`/`--filter-AAAA`, our
    /// `--ipv4-only`/`--ipv6-only`).
    pub const FILTERED: u16 = 17;
}

/// Bytes of the OPT record [`push_opt`] writes.
pub(crate) fn opt_len(ede: Option<u16>) -> usize {
    crate::types::OPT_RR_LEN + if ede.is_some() { 6 } else { 0 }
}

/// Appends our OPT record: root owner, our payload size, the extended RCODE bits, version 0,
/// the DO bit, and an Extended DNS Error option (without text) when `ede` is set.
pub(crate) fn push_opt(out: &mut Vec<u8>, ext_rcode: u8, dnssec_ok: bool, ede: Option<u16>) {
    out.push(0);
    out.extend_from_slice(&rtype::OPT.to_be_bytes());
    out.extend_from_slice(&ADVERTISED_UDP_PAYLOAD.to_be_bytes());
    out.extend_from_slice(&[ext_rcode, 0]);
    out.extend_from_slice(&(if dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
    match ede {
        Some(code) => {
            out.extend_from_slice(&6u16.to_be_bytes());
            out.extend_from_slice(&EDE_OPTION.to_be_bytes());
            out.extend_from_slice(&2u16.to_be_bytes());
            out.extend_from_slice(&code.to_be_bytes());
        }
        None => out.extend_from_slice(&[0, 0]),
    }
}

/// The info code of the first Extended DNS Error option in an OPT record's RDATA, if any.
pub fn extended_error(rdata: &[u8]) -> Option<u16> {
    let mut at = 0;
    while at + 4 <= rdata.len() {
        let code = u16::from_be_bytes([rdata[at], rdata[at + 1]]);
        let len = usize::from(u16::from_be_bytes([rdata[at + 2], rdata[at + 3]]));
        let data = rdata.get(at + 4..at + 4 + len)?;
        if code == EDE_OPTION && len >= 2 {
            return Some(u16::from_be_bytes([data[0], data[1]]));
        }
        at += 4 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extended_error_written_is_read_back() {
        let mut opt = Vec::new();
        push_opt(&mut opt, 0, true, Some(ede::NOT_READY));
        assert_eq!(opt.len(), opt_len(Some(ede::NOT_READY)));
        // Owner, type, class, TTL, then RDLENGTH and RDATA.
        assert_eq!(&opt[9..11], &6u16.to_be_bytes());
        assert_eq!(extended_error(&opt[11..]), Some(ede::NOT_READY));
        let mut bare = Vec::new();
        push_opt(&mut bare, 0, false, None);
        assert_eq!(bare.len(), opt_len(None));
        assert_eq!(extended_error(&bare[11..]), None);
    }

    #[test]
    fn other_options_are_skipped_and_broken_ones_give_nothing() {
        // A padding option (12) of three bytes, then an EDE with text.
        let rdata = [0, 12, 0, 3, 0, 0, 0, 0, 15, 0, 4, 0, 14, b'h', b'i'];
        assert_eq!(extended_error(&rdata), Some(14));
        assert_eq!(
            extended_error(&[0, 15, 0, 9, 0, 14]),
            None,
            "length past the end"
        );
        assert_eq!(
            extended_error(&[0, 15, 0, 1, 0]),
            None,
            "too short for a code"
        );
    }
}
