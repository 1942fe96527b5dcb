//! The secondary's side of a zone transfer: AXFR (RFC 5936), or IXFR (RFC 1995) from the serial
//! held, over one TCP connection, read message by message into a new zone. Anything unexpected
//! (a wrong ID, an error RCODE, a record outside the zone, a transfer that ends early, more than
//! `--secondary-max-size`) fails the transfer, and the zone held before stays.

use std::net::SocketAddr;
use std::time::Duration;

use dns_wire::rtype;
use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::zone::{Rec, Zone, ZoneBuilder, ZoneError, soa_fields};

/// What a transfer may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes read, and bytes the new zone holds, at most (`--secondary-max-size`).
    pub max_bytes: usize,
    /// The whole transfer, from connecting to the last message.
    pub timeout: Duration,
}

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("connecting to {primary}: {source}")]
    Connect {
        primary: SocketAddr,
        source: std::io::Error,
    },
    #[error("reading the transfer: {0}")]
    Io(#[from] std::io::Error),
    #[error("the transfer took longer than {0:?}")]
    Timeout(Duration),
    #[error("the primary answered {0}")]
    Rcode(String),
    #[error("malformed transfer: {0}")]
    Malformed(String),
    #[error("the transfer ended before its closing SOA")]
    Ended,
    /// RFC 1995 §4: an IXFR answered with only a newer SOA means "transfer the whole zone".
    #[error("the primary answered the IXFR with its SOA alone: the whole zone is asked for")]
    UseAxfr,
    #[error("more than {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Zone(#[from] ZoneError),
}

impl TransferError {
    /// Failures of an IXFR that an AXFR might not have: everything but an unreachable or
    /// silent primary (a difference that does not apply, NOTIMP or FORMERR from a primary
    /// without IXFR, a transfer cut short).
    pub fn try_full_next(&self) -> bool {
        !matches!(
            self,
            TransferError::Connect { .. } | TransferError::Timeout(_) | TransferError::Io(_)
        )
    }
}

/// What a transfer brought.
#[derive(Debug)]
pub enum Fetched {
    /// The primary's serial is the one held.
    Current,
    /// The whole zone (AXFR, or an IXFR answered in full).
    Full(Zone),
    /// The zone held, changed by an IXFR.
    Incremental(Zone),
}

/// Transfers `apex` from `primary`: IXFR from `have`'s serial, AXFR without one.
pub async fn fetch(
    primary: SocketAddr,
    apex: &str,
    have: Option<&Zone>,
    limits: Limits,
) -> Result<Fetched, TransferError> {
    tokio::time::timeout(limits.timeout, fetch_within(primary, apex, have, limits))
        .await
        .map_err(|_| TransferError::Timeout(limits.timeout))?
}

async fn fetch_within(
    primary: SocketAddr,
    apex: &str,
    have: Option<&Zone>,
    limits: Limits,
) -> Result<Fetched, TransferError> {
    let mut stream = TcpStream::connect(primary)
        .await
        .map_err(|source| TransferError::Connect { primary, source })?;
    stream.set_nodelay(true)?;
    let id: u16 = rand::random();
    let query = match have {
        Some(zone) => ixfr_query(id, apex, zone),
        None => dns_wire::build_query(id, apex, rtype::AXFR, None),
    };
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
    framed.extend_from_slice(&query);
    stream.write_all(&framed).await?;
    let mut reader = Reader {
        stream,
        id,
        pending: std::collections::VecDeque::new(),
        read: 0,
        max: limits.max_bytes,
        messages: 0,
    };
    let first = reader.next().await?.ok_or(TransferError::Ended)?;
    let (owner, first) = convert(&first, apex)?;
    let newest = match (owner == apex, first.rtype == rtype::SOA) {
        (true, true) => soa_fields(&first.rdata)
            .ok_or_else(|| TransferError::Malformed("an unreadable SOA".into()))?,
        _ => {
            return Err(TransferError::Malformed(
                "the first record is not the zone's SOA".into(),
            ));
        }
    };
    if let Some(zone) = have {
        if newest.serial == zone.soa().serial {
            return Ok(Fetched::Current);
        }
        // Another version, and nothing more in the message: the primary has no difference to
        // send (its serial moved on without a journal, or backwards).
        if reader.pending.is_empty() && reader.messages == 1 {
            return Err(TransferError::UseAxfr);
        }
    }
    let second = reader.next().await?.ok_or(TransferError::Ended)?;
    let (second_owner, second) = convert(&second, apex)?;
    if second.rtype == rtype::SOA && second_owner != apex {
        return Err(TransferError::Malformed(format!(
            "an SOA at {second_owner}"
        )));
    }
    if let Some(zone) = have
        && second.rtype == rtype::SOA
    {
        return incremental(&mut reader, apex, zone, newest.serial, second, limits)
            .await
            .map(Fetched::Incremental);
    }
    // AXFR form: every record until the SOA again.
    let mut builder = ZoneBuilder::new(apex, limits.max_bytes);
    builder.add(apex, first)?;
    if second.rtype == rtype::SOA {
        // A zone holding only its SOA.
        return Ok(Fetched::Full(builder.build()?));
    }
    builder.add(&second_owner, second)?;
    loop {
        let record = reader.next().await?.ok_or(TransferError::Ended)?;
        let (owner, rec) = convert(&record, apex)?;
        if rec.rtype == rtype::SOA {
            if owner != apex || soa_fields(&rec.rdata).map(|s| s.serial) != Some(newest.serial) {
                return Err(TransferError::Malformed(
                    "a second SOA inside the zone".into(),
                ));
            }
            return Ok(Fetched::Full(builder.build()?));
        }
        builder.add(&owner, rec)?;
    }
}

/// Applies an IXFR's differences (old SOA, deletions, new SOA, additions; repeated) to a copy
/// of `zone`, up to the closing SOA at `newest`.
async fn incremental(
    reader: &mut Reader,
    apex: &str,
    zone: &Zone,
    newest: u32,
    first_old: Rec,
    limits: Limits,
) -> Result<Zone, TransferError> {
    let serial_of = |rec: &Rec| {
        soa_fields(&rec.rdata)
            .map(|s| s.serial)
            .ok_or_else(|| TransferError::Malformed("an unreadable SOA".into()))
    };
    if serial_of(&first_old)? != zone.soa().serial {
        return Err(TransferError::Malformed(
            "the difference does not start at the serial held".into(),
        ));
    }
    // The differences are read whole first (within the transfer's byte bound), then applied.
    let mut changes: Vec<(bool, String, Rec)> = Vec::new();
    let mut adding = false;
    let mut version = serial_of(&first_old)?;
    loop {
        let record = reader.next().await?.ok_or(TransferError::Ended)?;
        let (owner, rec) = convert(&record, apex)?;
        if rec.rtype == rtype::SOA {
            if owner != apex {
                return Err(TransferError::Malformed(format!("an SOA at {owner}")));
            }
            let serial = serial_of(&rec)?;
            if adding {
                if serial == newest && version == newest {
                    // The closing SOA.
                    break;
                }
                if serial != version {
                    return Err(TransferError::Malformed("differences out of order".into()));
                }
                adding = false;
            } else {
                // The end of the deletions: this version's SOA replaces the old one.
                version = serial;
                changes.push((true, owner, rec));
                adding = true;
            }
            continue;
        }
        changes.push((adding, owner, rec));
    }
    // Applied to a copy of the changed names over the shared base: a few milliseconds, not a
    // rebuild of the zone. A change of a delegation, DNAME or wildcard builds it anew.
    let mut edit = zone.edit(limits.max_bytes);
    let applied = changes.iter().try_for_each(|(add, owner, rec)| {
        if *add {
            edit.add(owner, rec.clone())
        } else {
            edit.remove(owner, rec.rtype, &rec.rdata)
        }
    });
    match applied {
        Ok(()) => Ok(edit.finish()?),
        Err(ZoneError::NeedsRebuild) => {
            let mut builder = zone.to_builder(limits.max_bytes)?;
            for (add, owner, rec) in changes {
                if add {
                    builder.add(&owner, rec)?;
                } else {
                    builder.remove(&owner, rec.rtype, &rec.rdata)?;
                }
            }
            Ok(builder.build()?)
        }
        Err(error) => Err(error.into()),
    }
}

/// An IXFR query with the SOA held in the authority section.
fn ixfr_query(id: u16, apex: &str, zone: &Zone) -> Vec<u8> {
    let mut out = dns_wire::build_query(id, apex, rtype::IXFR, None);
    out[9] = 1; // NSCOUNT
    for label in apex.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    let rdata = zone.soa_rdata();
    out.extend_from_slice(&rtype::SOA.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
    out
}

/// A record as the zone keeps it: lower-case owner without the trailing dot, RDATA in
/// canonical (uncompressed, lower-case) wire form.
fn convert(record: &Record, apex: &str) -> Result<(String, Rec), TransferError> {
    if record.dns_class != DNSClass::IN {
        return Err(TransferError::Malformed(format!(
            "a record of class {}",
            record.dns_class
        )));
    }
    let owner = record.name.to_lowercase().to_ascii();
    let owner = owner.trim_end_matches('.').to_owned();
    if !super::zone::in_zone(&owner, apex) {
        return Err(ZoneError::OutsideZone(owner).into());
    }
    let mut rdata = Vec::new();
    let mut encoder = BinEncoder::new(&mut rdata);
    encoder.set_canonical_form(true);
    record
        .data
        .emit(&mut encoder)
        .map_err(|e| TransferError::Malformed(format!("record data of {owner}: {e}")))?;
    Ok((
        owner,
        Rec {
            rtype: u16::from(record.record_type()),
            ttl: record.ttl,
            rdata: rdata.into_boxed_slice(),
        },
    ))
}

/// Reads the transfer's messages and hands out their answer records one at a time.
struct Reader {
    stream: TcpStream,
    id: u16,
    pending: std::collections::VecDeque<Record>,
    read: usize,
    max: usize,
    /// Messages read so far.
    messages: usize,
}

impl Reader {
    /// The next record; `None` when the primary closed the connection between messages.
    async fn next(&mut self) -> Result<Option<Record>, TransferError> {
        while self.pending.is_empty() {
            let mut len = [0u8; 2];
            match self.stream.read_exact(&mut len).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            let len = usize::from(u16::from_be_bytes(len));
            self.read += len + 2;
            if self.read > self.max {
                return Err(TransferError::TooLarge(self.max));
            }
            let mut message = vec![0u8; len];
            self.stream.read_exact(&mut message).await?;
            let message = Message::from_vec(&message)
                .map_err(|e| TransferError::Malformed(format!("an unreadable message: {e}")))?;
            if message.metadata.id != self.id {
                return Err(TransferError::Malformed(format!(
                    "a message with ID {} (asked with {})",
                    message.metadata.id, self.id
                )));
            }
            let rcode = message.metadata.response_code;
            if rcode != hickory_proto::op::ResponseCode::NoError {
                return Err(TransferError::Rcode(rcode.to_string()));
            }
            if message.metadata.truncation {
                return Err(TransferError::Malformed("a truncated message".into()));
            }
            if message.answers.is_empty() {
                return Err(TransferError::Malformed("a message with no records".into()));
            }
            self.messages += 1;
            self.pending.extend(message.answers);
        }
        Ok(self.pending.pop_front())
    }
}
