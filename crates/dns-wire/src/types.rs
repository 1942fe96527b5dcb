//! Record types, classes, response codes and the sizes every DNS message obeys.

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
    /// Incremental zone transfer (RFC 1995).
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;
}

/// Header opcodes beyond QUERY (0).
pub mod opcode {
    /// A primary tells a secondary its zone changed (RFC 1996).
    pub const NOTIFY: u8 = 4;
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
/// Length of the fixed DNS header.
pub(crate) const HEADER_LEN: usize = 12;
/// Length of an OPT RR with the root owner and no options.
pub(crate) const OPT_RR_LEN: usize = 11;
/// The longest name on the wire (RFC 1035 §2.3.4).
pub(crate) const MAX_NAME_LEN: usize = 255;

/// Response codes this server produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError,
    FormErr,
    ServFail,
    NxDomain,
    NotImp,
    Refused,
}

impl Rcode {
    pub fn low_bits(self) -> u8 {
        match self {
            Rcode::NoError => 0,
            Rcode::FormErr => 1,
            Rcode::ServFail => 2,
            Rcode::NxDomain => 3,
            Rcode::NotImp => 4,
            Rcode::Refused => 5,
        }
    }

    pub fn high_bits(self) -> u8 {
        0
    }

    pub fn from_low_bits(bits: u8) -> Self {
        match bits {
            0 => Rcode::NoError,
            1 => Rcode::FormErr,
            3 => Rcode::NxDomain,
            4 => Rcode::NotImp,
            5 => Rcode::Refused,
            _ => Rcode::ServFail,
        }
    }

    /// Lower-case name for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Rcode::NoError => "noerror",
            Rcode::FormErr => "formerr",
            Rcode::ServFail => "servfail",
            Rcode::NxDomain => "nxdomain",
            Rcode::NotImp => "notimp",
            Rcode::Refused => "refused",
        }
    }
}
