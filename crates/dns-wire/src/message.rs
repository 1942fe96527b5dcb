//! The message model the encoder writes: names, record data, records and a whole answer.

use std::borrow::Cow;

use crate::types::{Rcode, rtype};

/// A domain name in an answer, written without copying where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsName<'a> {
    /// The query name as the client wrote it (a pointer to the question).
    Query,
    /// A dotted name without the trailing dot.
    Text(Cow<'a, str>),
    /// `<label>.<base>`, both dotted without trailing dots.
    Joined(&'a str, &'a str),
}

impl std::fmt::Display for DnsName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsName::Query => f.write_str("@"),
            DnsName::Text(t) => write!(f, "{t}."),
            DnsName::Joined(l, b) => write!(f, "{l}.{b}."),
        }
    }
}

/// Record data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData<'a> {
    A(std::net::Ipv4Addr),
    Aaaa(std::net::Ipv6Addr),
    Cname(DnsName<'a>),
    Ptr(DnsName<'a>),
    Ns(DnsName<'a>),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: DnsName<'a>,
    },
    Txt(&'a str),
    Hinfo {
        cpu: &'a str,
        os: &'a str,
    },
    /// The zone SOA: `ns.dns.<zone>. hostmaster.<zone>. serial 28800 7200 604800 <ttl>`.
    Soa {
        zone: &'a str,
        serial: u32,
        ttl: u32,
    },
    /// Uncompressed RDATA copied from an upstream answer.
    Raw {
        rtype: u16,
        data: Cow<'a, [u8]>,
    },
}

impl RData<'_> {
    pub fn rtype(&self) -> u16 {
        match self {
            RData::A(_) => rtype::A,
            RData::Aaaa(_) => rtype::AAAA,
            RData::Cname(_) => rtype::CNAME,
            RData::Ptr(_) => rtype::PTR,
            RData::Ns(_) => rtype::NS,
            RData::Srv { .. } => rtype::SRV,
            RData::Txt(_) => rtype::TXT,
            RData::Hinfo { .. } => rtype::HINFO,
            RData::Soa { .. } => rtype::SOA,
            RData::Raw { rtype, .. } => *rtype,
        }
    }
}

/// One resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRecord<'a> {
    pub owner: DnsName<'a>,
    pub ttl: u32,
    pub data: RData<'a>,
}

/// A complete local answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<'a> {
    pub rcode: Rcode,
    pub authoritative: bool,
    pub recursion_available: bool,
    pub answers: Vec<ResourceRecord<'a>>,
    pub authority: Vec<ResourceRecord<'a>>,
    pub additionals: Vec<ResourceRecord<'a>>,
    /// An Extended DNS Error info code (RFC 8914) for the OPT record, when the query has one.
    pub ede: Option<u16>,
}

impl<'a> Answer<'a> {
    /// An empty answer with `rcode`, not authoritative.
    pub fn error(rcode: Rcode) -> Self {
        Answer {
            rcode,
            authoritative: false,
            recursion_available: true,
            answers: Vec::new(),
            authority: Vec::new(),
            additionals: Vec::new(),
            ede: None,
        }
    }

    /// An empty NOERROR answer with AA set (a zone's own answer before records are added).
    pub fn authoritative() -> Self {
        Answer {
            authoritative: true,
            ..Answer::error(Rcode::NoError)
        }
    }
}
