//! A transferred zone in a compact form, and the answers it gives.
//!
//! Every name (with its records, or none for an empty non-terminal) is written once into one
//! byte arena: `[name length][name][record count]` then each record as `[type][ttl][rdata
//! length][rdata]`, with RDATA in uncompressed wire form. A hash table holds only each name's
//! offset in the arena. Names under a delegation (a zone cut, such as kube-dns's `pod.<zone>`)
//! and CNAME targets outside the zone are not answered here: the query goes to the primary.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;

use dns_wire::{Answer, DnsName, RData, Rcode, ResourceRecord, rtype};
use hashbrown::{DefaultHashBuilder, HashTable};

/// DNAME's type code (RFC 6672).
const RTYPE_DNAME: u16 = 39;
/// CNAME chains longer than this inside the zone get SERVFAIL (as kube-dns).
const MAX_CNAME_CHAIN: usize = 8;
/// What a record costs a builder beyond its name and data (its `Vec` slot and box).
const RECORD_OVERHEAD: usize = 32;

/// Why a transferred zone cannot be used; the copy held before stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error("{0} is outside the zone")]
    OutsideZone(String),
    #[error(
        "the name {0:?} has characters this cache does not hold (only letters, digits, '-', '_', '*')"
    )]
    UnsupportedName(String),
    #[error("no SOA record at the apex")]
    NoSoa,
    #[error("an SOA record whose data is not an SOA")]
    BadSoa,
    #[error("larger than --secondary-max-size ({max} bytes)")]
    TooLarge { max: usize },
    #[error("IXFR deletes a record the zone does not hold: {0}")]
    MissingRecord(String),
    /// An IXFR changes a delegation, a DNAME or a wildcard: applied by building the zone anew.
    #[error("the change needs the zone built anew")]
    NeedsRebuild,
}

/// One record while a zone is being built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: Box<[u8]>,
}

/// The SOA timers and serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoaFields {
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

/// SOA fields from its RDATA (two names, then five numbers).
pub fn soa_fields(rdata: &[u8]) -> Option<SoaFields> {
    let (_, first) = wire_name(rdata)?;
    let (_, second) = wire_name(rdata.get(first..)?)?;
    let numbers = rdata.get(first + second..)?;
    if numbers.len() != 20 {
        return None;
    }
    let at =
        |i: usize| u32::from_be_bytes([numbers[i], numbers[i + 1], numbers[i + 2], numbers[i + 3]]);
    Some(SoaFields {
        serial: at(0),
        refresh: at(4),
        retry: at(8),
        expire: at(12),
        minimum: at(16),
    })
}

/// An uncompressed wire name as lower-case dotted text without the trailing dot, and its
/// length in bytes. `None` for compressed or malformed names.
pub fn wire_name(bytes: &[u8]) -> Option<(String, usize)> {
    let mut text = String::new();
    let mut at = 0;
    loop {
        let len = usize::from(*bytes.get(at)?);
        if len == 0 {
            return Some((text, at + 1));
        }
        if len & 0xC0 != 0 || text.len() + len > 254 {
            return None;
        }
        if !text.is_empty() {
            text.push('.');
        }
        for &b in bytes.get(at + 1..at + 1 + len)? {
            text.push(char::from(b.to_ascii_lowercase()));
        }
        at += 1 + len;
    }
}

fn name_ok(name: &str) -> bool {
    name.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'*' | b'.')
    })
}

/// `name` is `apex` or below it.
pub fn in_zone(name: &str, apex: &str) -> bool {
    apex.is_empty()
        || name == apex
        || (name.len() > apex.len()
            && name.ends_with(apex)
            && name.as_bytes()[name.len() - apex.len() - 1] == b'.')
}

/// A zone being filled from a transfer, or changed by an IXFR.
#[derive(Debug, Clone)]
pub struct ZoneBuilder {
    apex: Box<str>,
    nodes: BTreeMap<Box<str>, Vec<Rec>>,
    bytes: usize,
    max_bytes: usize,
}

impl ZoneBuilder {
    /// An empty zone `apex` (lower case, no dots at the ends) holding at most `max_bytes`.
    pub fn new(apex: &str, max_bytes: usize) -> Self {
        ZoneBuilder {
            apex: apex.into(),
            nodes: BTreeMap::new(),
            bytes: 0,
            max_bytes,
        }
    }

    fn check_owner(&self, owner: &str) -> Result<(), ZoneError> {
        if !in_zone(owner, &self.apex) {
            return Err(ZoneError::OutsideZone(owner.to_owned()));
        }
        if !name_ok(owner) {
            return Err(ZoneError::UnsupportedName(owner.to_owned()));
        }
        Ok(())
    }

    /// Adds a record (a record added again with the same type and data is kept once, with the
    /// last TTL given).
    pub fn add(&mut self, owner: &str, rec: Rec) -> Result<(), ZoneError> {
        self.check_owner(owner)?;
        if rec.rtype == rtype::SOA {
            // One SOA: a newer one replaces it.
            if owner != &*self.apex {
                return Err(ZoneError::OutsideZone(format!("SOA at {owner}")));
            }
            if let Some(records) = self.nodes.get_mut(owner)
                && let Some(at) = records.iter().position(|r| r.rtype == rtype::SOA)
            {
                let old = records.swap_remove(at);
                self.bytes = self.bytes.saturating_sub(old.rdata.len() + RECORD_OVERHEAD);
            }
        }
        let size = rec.rdata.len() + RECORD_OVERHEAD;
        let records = match self.nodes.get_mut(owner) {
            Some(records) => records,
            None => {
                self.bytes += owner.len() + RECORD_OVERHEAD;
                self.nodes.entry(owner.into()).or_default()
            }
        };
        // Repeats are dropped when the zone is built (a linear search here would make a name
        // with many records quadratic); until then they count against the size.
        records.push(rec);
        self.bytes += size;
        if self.bytes > self.max_bytes {
            return Err(ZoneError::TooLarge {
                max: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Removes a record (IXFR): the same owner, type and data, whatever its TTL.
    pub fn remove(&mut self, owner: &str, rtype: u16, rdata: &[u8]) -> Result<(), ZoneError> {
        let missing = || ZoneError::MissingRecord(format!("{owner} type {rtype}"));
        let records = self.nodes.get_mut(owner).ok_or_else(missing)?;
        let before = records.len();
        records.retain(|r| !(r.rtype == rtype && &*r.rdata == rdata));
        let removed = before - records.len();
        if removed == 0 {
            return Err(missing());
        }
        self.bytes = self
            .bytes
            .saturating_sub(removed * (rdata.len() + RECORD_OVERHEAD));
        if records.is_empty() {
            self.nodes.remove(owner);
            self.bytes = self.bytes.saturating_sub(owner.len() + RECORD_OVERHEAD);
        }
        Ok(())
    }

    /// The compact zone: every owner, the empty non-terminals between them and the apex, one
    /// index. Fails without an SOA at the apex.
    pub fn build(self) -> Result<Zone, ZoneError> {
        let apex = self.apex;
        let (soa_ttl, soa_rdata) = self
            .nodes
            .get(&apex)
            .and_then(|records| records.iter().find(|r| r.rtype == rtype::SOA))
            .map(|r| (r.ttl, r.rdata.clone()))
            .ok_or(ZoneError::NoSoa)?;
        let soa = soa_fields(&soa_rdata).ok_or(ZoneError::BadSoa)?;
        let mut nodes = self.nodes;
        let mut bytes = self.bytes;
        let too_large = ZoneError::TooLarge {
            max: self.max_bytes,
        };
        for records in nodes.values_mut() {
            // One of each record (the last TTL given wins), in a stable order.
            records.reverse();
            records.sort_by(|a, b| (a.rtype, &a.rdata).cmp(&(b.rtype, &b.rdata)));
            records.dedup_by(|a, b| a.rtype == b.rtype && a.rdata == b.rdata);
            if records.len() > usize::from(u16::MAX) {
                return Err(too_large.clone());
            }
        }
        // Empty non-terminals: every ancestor of an owner, up to the apex. They count against
        // the size too: deep names would otherwise make many of them from few records.
        let owners: Vec<Box<str>> = nodes.keys().cloned().collect();
        for owner in &owners {
            let mut name: &str = owner;
            while name.len() > apex.len() {
                let Some((_, parent)) = name.split_once('.') else {
                    break;
                };
                name = parent;
                if !nodes.contains_key(name) {
                    nodes.insert(name.into(), Vec::new());
                    bytes += name.len() + RECORD_OVERHEAD;
                    if bytes > self.max_bytes {
                        return Err(too_large.clone());
                    }
                }
            }
        }
        // How many names sit directly under each name: a name with none and no records left
        // after an IXFR no longer exists.
        let mut children: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
        for name in nodes.keys() {
            if **name != *apex
                && let Some((_, parent)) = name.split_once('.')
            {
                *children.entry(parent).or_default() += 1;
            }
        }
        let mut cuts = Vec::new();
        let mut dnames = Vec::new();
        let mut has_wildcards = false;
        let mut records = 0;
        let mut arena = Vec::with_capacity(bytes);
        let mut offsets = Vec::with_capacity(nodes.len());
        for (name, recs) in &nodes {
            if **name != *apex && recs.iter().any(|r| r.rtype == rtype::NS) {
                cuts.push(name.clone());
            }
            if recs.iter().any(|r| r.rtype == RTYPE_DNAME) {
                dnames.push(name.clone());
            }
            has_wildcards |= name.starts_with("*.") || &**name == "*";
            records += recs.len();
            offsets.push(u32::try_from(arena.len()).map_err(|_| ZoneError::TooLarge {
                max: self.max_bytes,
            })?);
            arena.push(name.len() as u8);
            arena.extend_from_slice(name.as_bytes());
            arena.extend_from_slice(&(recs.len() as u16).to_be_bytes());
            arena.extend_from_slice(&children.get(&**name).copied().unwrap_or(0).to_be_bytes());
            encode_records(recs, &mut arena);
        }
        let hasher = DefaultHashBuilder::default();
        let mut index = HashTable::with_capacity(offsets.len());
        let arena: Box<[u8]> = arena.into_boxed_slice();
        for offset in offsets {
            let hash = hasher.hash_one(node_name(&arena, offset));
            index.insert_unique(hash, offset, |o| hasher.hash_one(node_name(&arena, *o)));
        }
        Ok(Zone {
            base: Arc::new(Base {
                apex,
                arena,
                index,
                hasher,
                cuts: cuts.into_boxed_slice(),
                dnames: dnames.into_boxed_slice(),
                has_wildcards,
                nodes: nodes.len(),
            }),
            delta: HashMap::new(),
            delta_bytes: 0,
            soa,
            soa_ttl,
            soa_rdata,
            records,
        })
    }
}

/// Records in the arena's form: `[type][ttl][rdata length][rdata]` each.
fn encode_records(records: &[Rec], out: &mut Vec<u8>) {
    for rec in records {
        out.extend_from_slice(&rec.rtype.to_be_bytes());
        out.extend_from_slice(&rec.ttl.to_be_bytes());
        out.extend_from_slice(&(rec.rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rec.rdata);
    }
}

impl Base {
    fn node(&self, name: &str) -> Option<Node<'_>> {
        let hash = self.hasher.hash_one(name.as_bytes());
        let offset = *self
            .index
            .find(hash, |o| node_name(&self.arena, *o) == name.as_bytes())?;
        let at = offset as usize;
        let len = usize::from(self.arena[at]);
        let name = std::str::from_utf8(&self.arena[at + 1..at + 1 + len]).ok()?;
        let count_at = at + 1 + len;
        let count = u16::from_be_bytes([self.arena[count_at], self.arena[count_at + 1]]);
        let children = u32::from_be_bytes(self.arena[count_at + 2..count_at + 6].try_into().ok()?);
        Some(Node {
            name,
            records: &self.arena[count_at + 6..],
            count,
            children,
        })
    }
}

fn node_name(arena: &[u8], offset: u32) -> &[u8] {
    let at = offset as usize;
    let len = usize::from(arena[at]);
    &arena[at + 1..at + 1 + len]
}

/// A name and its records, read from the arena.
#[derive(Debug, Clone, Copy)]
struct Node<'z> {
    name: &'z str,
    /// The records' bytes, `count` of them.
    records: &'z [u8],
    count: u16,
    /// Names directly below this one.
    children: u32,
}

impl<'z> Node<'z> {
    fn records(&self) -> impl Iterator<Item = (u16, u32, &'z [u8])> + 'z {
        let mut rest = self.records;
        (0..self.count).map_while(move |_| {
            let rtype = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
            let ttl = u32::from_be_bytes(rest.get(2..6)?.try_into().ok()?);
            let len = usize::from(u16::from_be_bytes([*rest.get(6)?, *rest.get(7)?]));
            let rdata = rest.get(8..8 + len)?;
            rest = &rest[8 + len..];
            Some((rtype, ttl, rdata))
        })
    }
}

/// The names and records as built from a whole transfer: one arena, an index of offsets.
struct Base {
    apex: Box<str>,
    arena: Box<[u8]>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    cuts: Box<[Box<str>]>,
    /// Owners of DNAME records: names below them are the primary's to answer.
    dnames: Box<[Box<str>]>,
    has_wildcards: bool,
    nodes: usize,
}

/// A name an IXFR changed since the base was built.
#[derive(Debug, Clone)]
struct Changed {
    /// Its records in the arena's form; `None`: the name no longer exists.
    records: Option<Box<[u8]>>,
    count: u16,
    children: u32,
}

/// A loaded zone: a base shared between versions, and the names IXFRs changed since it was
/// built (a new version copies only those). Once they are many, the next IXFR builds a new
/// base.
pub struct Zone {
    base: Arc<Base>,
    delta: HashMap<Box<str>, Changed>,
    delta_bytes: usize,
    soa: SoaFields,
    soa_ttl: u32,
    soa_rdata: Box<[u8]>,
    records: usize,
}

impl std::fmt::Debug for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zone")
            .field("apex", &self.base.apex)
            .field("soa", &self.soa)
            .field("names", &self.base.nodes)
            .field("changed", &self.delta.len())
            .field("records", &self.records)
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

/// What the zone says about a question.
#[derive(Debug)]
pub enum Lookup<'z> {
    /// Send this.
    Answer(Answer<'z>),
    /// Not answered here (a delegated name, a CNAME leaving the zone, ANY): ask the primary.
    Forward,
}

impl Zone {
    pub fn apex(&self) -> &str {
        &self.base.apex
    }

    pub fn soa(&self) -> SoaFields {
        self.soa
    }

    /// The SOA's RDATA (wire form).
    pub fn soa_rdata(&self) -> &[u8] {
        &self.soa_rdata
    }

    /// Records held (SOA included).
    pub fn records(&self) -> usize {
        self.records
    }

    /// Memory the zone takes: the arena, the index and the SOA copy.
    pub fn bytes(&self) -> usize {
        let base = &self.base;
        base.arena.len()
            + base.index.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.soa_rdata.len()
            + base.cuts.iter().map(|c| c.len() + 16).sum::<usize>()
            + self.delta_bytes
            + std::mem::size_of::<Self>()
    }

    fn node(&self, name: &str) -> Option<Node<'_>> {
        if !self.delta.is_empty()
            && let Some((key, changed)) = self.delta.get_key_value(name)
        {
            return changed.records.as_deref().map(|records| Node {
                name: key,
                records,
                count: changed.count,
                children: changed.children,
            });
        }
        self.base.node(name)
    }

    /// Names at or below a zone cut, and below a DNAME, are not answered from the copy.
    fn delegated(&self, name: &str) -> bool {
        let base = &self.base;
        base.cuts.iter().any(|cut| in_zone(name, cut))
            || base
                .dnames
                .iter()
                .any(|owner| name.len() > owner.len() && in_zone(name, owner))
    }

    /// The SOA for a negative answer: its TTL is at most the SOA's MINIMUM (RFC 2308 §3).
    fn soa_record(&self) -> ResourceRecord<'_> {
        ResourceRecord {
            owner: DnsName::Text(Cow::Borrowed(&self.base.apex)),
            ttl: self.soa_ttl.min(self.soa.minimum),
            data: RData::Raw {
                rtype: rtype::SOA,
                data: Cow::Borrowed(&self.soa_rdata),
            },
        }
    }

    /// Every record, with its owner (the zone as a transfer would list it; SOA first).
    pub fn all_records(&self) -> Vec<(String, u16, u32, Vec<u8>)> {
        let mut out = Vec::with_capacity(self.records);
        let base = &self.base;
        let changed = self.delta.keys().map(|name| &**name);
        let unchanged = base.index.iter().filter_map(|&offset| {
            let name = std::str::from_utf8(node_name(&base.arena, offset)).ok()?;
            (!self.delta.contains_key(name)).then_some(name)
        });
        for name in unchanged.chain(changed) {
            if let Some(node) = self.node(name) {
                for (rtype, ttl, rdata) in node.records() {
                    out.push((name.to_owned(), rtype, ttl, rdata.to_vec()));
                }
            }
        }
        out.sort_by(|a, b| (a.1 != rtype::SOA, &a.0).cmp(&(b.1 != rtype::SOA, &b.0)));
        out
    }

    /// A builder holding this zone's records, for an IXFR to change.
    pub fn to_builder(&self, max_bytes: usize) -> Result<ZoneBuilder, ZoneError> {
        let mut builder = ZoneBuilder::new(&self.base.apex, max_bytes);
        for (name, rtype, ttl, rdata) in self.all_records() {
            builder.add(
                &name,
                Rec {
                    rtype,
                    ttl,
                    rdata: rdata.into_boxed_slice(),
                },
            )?;
        }
        Ok(builder)
    }

    /// Answers `name` (lower case, no trailing dot, inside the zone) for `qtype`, the first of
    /// several addresses moved by `rotation`.
    pub fn answer(&self, name: &str, qtype: u16, rotation: Option<usize>) -> Lookup<'_> {
        if matches!(qtype, rtype::ANY | rtype::AXFR | rtype::IXFR | rtype::OPT)
            || self.delegated(name)
        {
            return Lookup::Forward;
        }
        let mut answer = Answer::authoritative();
        // The query's name, or a CNAME target (owned) once one is followed.
        let mut current: Cow<'_, str> = Cow::Borrowed(name);
        for depth in 0..MAX_CNAME_CHAIN {
            let Some(node) = self.node(&current) else {
                if self.base.has_wildcards {
                    return Lookup::Forward;
                }
                answer.rcode = Rcode::NxDomain;
                answer.authority.push(self.soa_record());
                return Lookup::Answer(answer);
            };
            let owner = if depth == 0 {
                DnsName::Query
            } else {
                DnsName::Text(Cow::Borrowed(node.name))
            };
            if qtype != rtype::CNAME
                && let Some((_, ttl, rdata)) = node.records().find(|r| r.0 == rtype::CNAME)
            {
                answer.answers.push(raw(owner, rtype::CNAME, ttl, rdata));
                let Some((target, _)) = wire_name(rdata) else {
                    return Lookup::Forward;
                };
                if !in_zone(&target, &self.base.apex) || self.delegated(&target) {
                    return Lookup::Forward;
                }
                current = Cow::Owned(target);
                continue;
            }
            let start = answer.answers.len();
            for (rtype, ttl, rdata) in node.records().filter(|r| r.0 == qtype) {
                answer.answers.push(raw(owner.clone(), rtype, ttl, rdata));
            }
            let added = answer.answers.len() - start;
            if added == 0 {
                // NODATA (after the CNAME, if one led here).
                answer.authority.push(self.soa_record());
                return Lookup::Answer(answer);
            }
            if let Some(turn) = rotation
                && added > 1
                && matches!(qtype, rtype::A | rtype::AAAA)
            {
                answer.answers[start..].rotate_left(turn % added);
            }
            self.glue(&mut answer, qtype, start);
            return Lookup::Answer(answer);
        }
        answer.rcode = Rcode::ServFail;
        Lookup::Answer(answer)
    }

    /// The addresses of in-zone SRV, NS and MX targets, in the additional section (kube-dns
    /// glues SRV targets; authoritative servers do all three).
    fn glue<'z>(&'z self, answer: &mut Answer<'z>, qtype: u16, start: usize) {
        let skip = match qtype {
            rtype::SRV => 6,
            rtype::MX => 2,
            rtype::NS => 0,
            _ => return,
        };
        let mut glued: Vec<&str> = Vec::new();
        let targets: Vec<String> = answer.answers[start..]
            .iter()
            .filter_map(|r| match &r.data {
                RData::Raw { data, .. } => data.get(skip..).and_then(wire_name).map(|(t, _)| t),
                _ => None,
            })
            .collect();
        for target in targets {
            if self.delegated(&target) {
                continue;
            }
            let Some(node) = self.node(&target) else {
                continue;
            };
            if glued.contains(&node.name) {
                continue;
            }
            glued.push(node.name);
            for (rtype, ttl, rdata) in node
                .records()
                .filter(|r| matches!(r.0, rtype::A | rtype::AAAA))
            {
                let owner = DnsName::Text(Cow::Borrowed(node.name));
                answer.additionals.push(raw(owner, rtype, ttl, rdata));
            }
        }
    }
}

/// Changed names beyond which an IXFR builds a new base (or an eighth of the base's names,
/// when that is more): a version copies its changed names, so they must stay few.
const MAX_CHANGED: usize = 4096;

/// An IXFR being applied to a zone: the zone's changed names, copied, and changed again; the
/// base is shared. Changes a base cannot take this way (delegations, DNAMEs, wildcards) are
/// [`ZoneError::NeedsRebuild`].
pub struct ZoneEdit<'z> {
    zone: &'z Zone,
    delta: HashMap<Box<str>, Changed>,
    delta_bytes: usize,
    soa: Option<Rec>,
    records: usize,
    max_bytes: usize,
}

impl Zone {
    /// Starts applying an IXFR.
    pub fn edit(&self, max_bytes: usize) -> ZoneEdit<'_> {
        ZoneEdit {
            zone: self,
            delta: self.delta.clone(),
            delta_bytes: self.delta_bytes,
            soa: None,
            records: self.records,
            max_bytes,
        }
    }
}

impl ZoneEdit<'_> {
    fn apex(&self) -> &str {
        &self.zone.base.apex
    }

    /// A name's records and children as they stand in this edit; `None` if it does not exist.
    fn current(&self, name: &str) -> Option<(Vec<Rec>, u32)> {
        let node = match self.delta.get_key_value(name) {
            Some((key, changed)) => Node {
                name: key,
                records: changed.records.as_deref()?,
                count: changed.count,
                children: changed.children,
            },
            None => self.zone.base.node(name)?,
        };
        let records = node
            .records()
            .map(|(rtype, ttl, rdata)| Rec {
                rtype,
                ttl,
                rdata: rdata.into(),
            })
            .collect();
        Some((records, node.children))
    }

    fn store(
        &mut self,
        name: &str,
        records: Option<Vec<Rec>>,
        children: u32,
    ) -> Result<(), ZoneError> {
        let encoded = records.map(|records| {
            let mut out = Vec::new();
            encode_records(&records, &mut out);
            (out.into_boxed_slice(), records.len() as u16)
        });
        let size = name.len() + RECORD_OVERHEAD + encoded.as_ref().map_or(0, |(r, _)| r.len());
        let changed = Changed {
            count: encoded.as_ref().map_or(0, |(_, c)| *c),
            records: encoded.map(|(r, _)| r),
            children,
        };
        if let Some(old) = self.delta.insert(name.into(), changed) {
            let old_size = name.len() + RECORD_OVERHEAD + old.records.map_or(0, |r| r.len());
            self.delta_bytes = self.delta_bytes.saturating_sub(old_size);
        }
        self.delta_bytes += size;
        if self.zone.bytes() - self.zone.delta_bytes + self.delta_bytes > self.max_bytes {
            return Err(ZoneError::TooLarge {
                max: self.max_bytes,
            });
        }
        Ok(())
    }

    fn special(&self, owner: &str, rtype: u16) -> bool {
        (rtype == rtype::NS && owner != self.apex())
            || rtype == RTYPE_DNAME
            || owner.split('.').any(|label| label == "*")
    }

    /// Adds a record (once: a repeat takes the new TTL).
    pub fn add(&mut self, owner: &str, rec: Rec) -> Result<(), ZoneError> {
        if !in_zone(owner, self.apex()) {
            return Err(ZoneError::OutsideZone(owner.to_owned()));
        }
        if !name_ok(owner) {
            return Err(ZoneError::UnsupportedName(owner.to_owned()));
        }
        if rec.rtype == rtype::SOA {
            if owner != self.apex() {
                return Err(ZoneError::OutsideZone(format!("SOA at {owner}")));
            }
            self.soa = Some(rec);
            return Ok(());
        }
        if self.special(owner, rec.rtype) {
            return Err(ZoneError::NeedsRebuild);
        }
        match self.current(owner) {
            Some((mut records, children)) => {
                match records
                    .iter_mut()
                    .find(|r| r.rtype == rec.rtype && r.rdata == rec.rdata)
                {
                    Some(held) => held.ttl = rec.ttl,
                    None => {
                        if records.len() >= usize::from(u16::MAX) {
                            return Err(ZoneError::TooLarge {
                                max: self.max_bytes,
                            });
                        }
                        records.push(rec);
                        self.records += 1;
                    }
                }
                self.store(owner, Some(records), children)
            }
            None => {
                self.store(owner, Some(vec![rec]), 0)?;
                self.records += 1;
                self.link(owner)
            }
        }
    }

    /// A new name: its parent (an empty non-terminal if it did not exist) has one more child.
    fn link(&mut self, name: &str) -> Result<(), ZoneError> {
        let Some((_, parent)) = name.split_once('.').filter(|_| name != self.apex()) else {
            return Ok(());
        };
        match self.current(parent) {
            Some((records, children)) => self.store(parent, Some(records), children + 1),
            None => {
                self.store(parent, Some(Vec::new()), 1)?;
                self.link(parent)
            }
        }
    }

    /// A name gone: its parent has one child less, and goes too if that leaves it empty.
    fn unlink(&mut self, name: &str) -> Result<(), ZoneError> {
        let Some((_, parent)) = name.split_once('.').filter(|_| name != self.apex()) else {
            return Ok(());
        };
        let Some((records, children)) = self.current(parent) else {
            return Ok(());
        };
        let children = children.saturating_sub(1);
        if records.is_empty() && children == 0 && parent != self.apex() {
            self.store(parent, None, 0)?;
            self.unlink(parent)
        } else {
            self.store(parent, Some(records), children)
        }
    }

    /// Removes a record (same owner, type and data, whatever its TTL).
    pub fn remove(&mut self, owner: &str, rtype: u16, rdata: &[u8]) -> Result<(), ZoneError> {
        if self.special(owner, rtype) {
            return Err(ZoneError::NeedsRebuild);
        }
        let missing = || ZoneError::MissingRecord(format!("{owner} type {rtype}"));
        let (mut records, children) = self.current(owner).ok_or_else(missing)?;
        let before = records.len();
        records.retain(|r| !(r.rtype == rtype && &*r.rdata == rdata));
        if records.len() == before {
            return Err(missing());
        }
        self.records -= before - records.len();
        if records.is_empty() && children == 0 && owner != self.apex() {
            self.store(owner, None, 0)?;
            self.unlink(owner)
        } else {
            self.store(owner, Some(records), children)
        }
    }

    /// The changed zone; a new base is built once many names have changed.
    pub fn finish(self) -> Result<Zone, ZoneError> {
        let (soa_ttl, soa_rdata) = match &self.soa {
            Some(rec) => (rec.ttl, rec.rdata.clone()),
            None => (self.zone.soa_ttl, self.zone.soa_rdata.clone()),
        };
        let soa = soa_fields(&soa_rdata).ok_or(ZoneError::BadSoa)?;
        let zone = Zone {
            base: self.zone.base.clone(),
            delta: self.delta,
            delta_bytes: self.delta_bytes,
            soa,
            soa_ttl,
            soa_rdata,
            records: self.records,
        };
        if zone.delta.len() > MAX_CHANGED.max(zone.base.nodes / 8) {
            return zone.to_builder(self.max_bytes)?.build();
        }
        Ok(zone)
    }
}

fn raw<'z>(owner: DnsName<'z>, rtype: u16, ttl: u32, rdata: &'z [u8]) -> ResourceRecord<'z> {
    ResourceRecord {
        owner,
        ttl,
        data: RData::Raw {
            rtype,
            data: Cow::Borrowed(rdata),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in text.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    fn soa(serial: u32) -> Rec {
        let mut rdata = name("ns.dns.cluster.local");
        rdata.extend(name("hostmaster.cluster.local"));
        for v in [serial, 28800, 7200, 604800, 30] {
            rdata.extend_from_slice(&v.to_be_bytes());
        }
        Rec {
            rtype: rtype::SOA,
            ttl: 30,
            rdata: rdata.into(),
        }
    }

    fn a(ip: [u8; 4]) -> Rec {
        Rec {
            rtype: rtype::A,
            ttl: 30,
            rdata: ip.into(),
        }
    }

    fn zone() -> Zone {
        let mut b = ZoneBuilder::new("cluster.local", 1 << 20);
        b.add("cluster.local", soa(5)).expect("soa");
        b.add("web.default.svc.cluster.local", a([10, 0, 0, 1]))
            .expect("a");
        b.add("web.default.svc.cluster.local", a([10, 0, 0, 2]))
            .expect("a");
        let mut srv = vec![0, 10, 0, 100, 0, 80];
        srv.extend(name("web.default.svc.cluster.local"));
        b.add(
            "_http._tcp.web.default.svc.cluster.local",
            Rec {
                rtype: rtype::SRV,
                ttl: 30,
                rdata: srv.into(),
            },
        )
        .expect("srv");
        b.add(
            "alias.default.svc.cluster.local",
            Rec {
                rtype: rtype::CNAME,
                ttl: 30,
                rdata: name("web.default.svc.cluster.local").into(),
            },
        )
        .expect("cname");
        b.add(
            "out.default.svc.cluster.local",
            Rec {
                rtype: rtype::CNAME,
                ttl: 30,
                rdata: name("www.example.com").into(),
            },
        )
        .expect("cname");
        b.add(
            "pod.cluster.local",
            Rec {
                rtype: rtype::NS,
                ttl: 30,
                rdata: name("ns.dns.cluster.local").into(),
            },
        )
        .expect("ns");
        b.build().expect("zone")
    }

    fn answer(zone: &Zone, name: &str, qtype: u16) -> (Rcode, usize, usize, usize) {
        match zone.answer(name, qtype, None) {
            Lookup::Answer(a) => (
                a.rcode,
                a.answers.len(),
                a.authority.len(),
                a.additionals.len(),
            ),
            Lookup::Forward => panic!("{name} forwarded"),
        }
    }

    #[test]
    fn names_answer_positive_nodata_and_nxdomain() {
        let z = zone();
        assert_eq!(z.soa().serial, 5);
        assert_eq!(
            answer(&z, "web.default.svc.cluster.local", rtype::A),
            (Rcode::NoError, 2, 0, 0)
        );
        assert_eq!(
            answer(&z, "web.default.svc.cluster.local", rtype::AAAA),
            (Rcode::NoError, 0, 1, 0)
        );
        // Empty non-terminals exist.
        assert_eq!(
            answer(&z, "default.svc.cluster.local", rtype::A),
            (Rcode::NoError, 0, 1, 0)
        );
        assert_eq!(
            answer(&z, "_tcp.web.default.svc.cluster.local", rtype::A),
            (Rcode::NoError, 0, 1, 0)
        );
        assert_eq!(
            answer(&z, "nope.default.svc.cluster.local", rtype::A),
            (Rcode::NxDomain, 0, 1, 0)
        );
        // SRV with the target's addresses as glue.
        assert_eq!(
            answer(&z, "_http._tcp.web.default.svc.cluster.local", rtype::SRV),
            (Rcode::NoError, 1, 0, 2)
        );
        // A CNAME inside the zone is followed.
        assert_eq!(
            answer(&z, "alias.default.svc.cluster.local", rtype::A),
            (Rcode::NoError, 3, 0, 0)
        );
        assert_eq!(
            answer(&z, "alias.default.svc.cluster.local", rtype::CNAME),
            (Rcode::NoError, 1, 0, 0)
        );
        // Out of the zone, delegated, or ANY: the primary answers.
        assert!(matches!(
            z.answer("out.default.svc.cluster.local", rtype::A, None),
            Lookup::Forward
        ));
        assert!(matches!(
            z.answer("10-0-0-1.default.pod.cluster.local", rtype::A, None),
            Lookup::Forward
        ));
        assert!(matches!(
            z.answer("web.default.svc.cluster.local", rtype::ANY, None),
            Lookup::Forward
        ));
    }

    #[test]
    fn an_edit_changes_names_over_the_shared_base() {
        let z = zone();
        let mut e = z.edit(1 << 20);
        e.remove("web.default.svc.cluster.local", rtype::A, &[10, 0, 0, 1])
            .expect("held");
        e.add("new.other.svc.cluster.local", a([10, 0, 0, 7]))
            .expect("new name");
        // The last record of a leaf: the name goes, and so do the empty names above it.
        let mut srv = vec![0, 10, 0, 100, 0, 80];
        srv.extend(name("web.default.svc.cluster.local"));
        e.remove("_http._tcp.web.default.svc.cluster.local", rtype::SRV, &srv)
            .expect("held");
        e.remove(
            "alias.default.svc.cluster.local",
            rtype::CNAME,
            &name("web.default.svc.cluster.local"),
        )
        .expect("held");
        assert_eq!(
            e.remove("web.default.svc.cluster.local", rtype::A, &[10, 0, 0, 9]),
            Err(ZoneError::MissingRecord(
                "web.default.svc.cluster.local type 1".into()
            ))
        );
        e.add("cluster.local", soa(6)).expect("soa");
        let changed = e.finish().expect("zone");
        assert_eq!(changed.soa().serial, 6);
        assert_eq!(
            answer(&changed, "web.default.svc.cluster.local", rtype::A),
            (Rcode::NoError, 1, 0, 0)
        );
        assert_eq!(
            answer(&changed, "new.other.svc.cluster.local", rtype::A),
            (Rcode::NoError, 1, 0, 0)
        );
        assert_eq!(
            answer(&changed, "other.svc.cluster.local", rtype::A),
            (Rcode::NoError, 0, 1, 0)
        );
        for gone in [
            "_http._tcp.web.default.svc.cluster.local",
            "_tcp.web.default.svc.cluster.local",
            "alias.default.svc.cluster.local",
        ] {
            assert_eq!(
                answer(&changed, gone, rtype::A),
                (Rcode::NxDomain, 0, 1, 0),
                "{gone}"
            );
        }
        // Names with other children stay: default.svc still holds web.
        assert_eq!(
            answer(&changed, "default.svc.cluster.local", rtype::A),
            (Rcode::NoError, 0, 1, 0)
        );
        assert_eq!(changed.records(), z.records() - 2);
        // The version it came from is untouched, and a full rebuild agrees with the edit.
        assert_eq!(
            answer(&z, "alias.default.svc.cluster.local", rtype::A),
            (Rcode::NoError, 3, 0, 0)
        );
        let rebuilt = changed
            .to_builder(1 << 20)
            .expect("builder")
            .build()
            .expect("zone");
        assert_eq!(rebuilt.all_records(), changed.all_records());
        // A delegation is not changed in place.
        let mut e = z.edit(1 << 20);
        let ns = Rec {
            rtype: rtype::NS,
            ttl: 30,
            rdata: name("ns.cluster.local").into(),
        };
        assert_eq!(e.add("sub.cluster.local", ns), Err(ZoneError::NeedsRebuild));
    }

    #[test]
    fn an_ixfr_changes_a_copy_and_bad_changes_are_refused() {
        let z = zone();
        let mut b = z.to_builder(1 << 20).expect("builder");
        b.remove("web.default.svc.cluster.local", rtype::A, &[10, 0, 0, 1])
            .expect("held");
        assert_eq!(
            b.remove("web.default.svc.cluster.local", rtype::A, &[10, 0, 0, 9]),
            Err(ZoneError::MissingRecord(
                "web.default.svc.cluster.local type 1".into()
            ))
        );
        b.add("cluster.local", soa(6)).expect("soa");
        let changed = b.build().expect("zone");
        assert_eq!(changed.soa().serial, 6);
        assert_eq!(
            answer(&changed, "web.default.svc.cluster.local", rtype::A),
            (Rcode::NoError, 1, 0, 0)
        );
        // The old copy is untouched.
        assert_eq!(
            answer(&z, "web.default.svc.cluster.local", rtype::A),
            (Rcode::NoError, 2, 0, 0)
        );
        let mut b = ZoneBuilder::new("cluster.local", 1 << 20);
        assert!(matches!(
            b.add("example.com", a([1, 2, 3, 4])),
            Err(ZoneError::OutsideZone(_))
        ));
        assert_eq!(b.clone().build().map(|_| ()), Err(ZoneError::NoSoa));
        // Deep names make many empty non-terminals: they count against the size too.
        let mut deep = ZoneBuilder::new("cluster.local", 4096);
        deep.add("cluster.local", soa(1)).expect("fits");
        let name = format!("{}cluster.local", "a.".repeat(100));
        deep.add(&name, a([1, 1, 1, 1])).expect("one record fits");
        assert_eq!(
            deep.build().map(|_| ()),
            Err(ZoneError::TooLarge { max: 4096 })
        );
        // A record added twice is held once.
        let mut twice = ZoneBuilder::new("cluster.local", 1 << 20);
        twice.add("cluster.local", soa(1)).expect("soa");
        twice.add("x.cluster.local", a([1, 1, 1, 1])).expect("a");
        twice
            .add("x.cluster.local", a([1, 1, 1, 1]))
            .expect("a again");
        assert_eq!(twice.build().expect("zone").records(), 2);
        let mut small = ZoneBuilder::new("cluster.local", 200);
        small.add("cluster.local", soa(1)).expect("fits");
        assert!(matches!(
            small.add("a-long-name.default.svc.cluster.local", a([1, 1, 1, 1])),
            Err(ZoneError::TooLarge { max: 200 })
        ));
    }
}
