//! The response cache: upstream answers stored once as wire bytes, served by copying, patching
//! the ID, restoring the client's letter case and decrementing TTLs at offsets found at insert.
//!
//! Sharded LRU (the `lru` crate) keyed by a hash of (lower-cased name, type, class, DO, CD);
//! the stored key is compared on hit, so a hash collision is a miss, never a wrong answer.
//! Bounded twice: `--cache-size` entries and `--cache-max-bytes` bytes (each entry costs its
//! answer, its name and [`ENTRY_OVERHEAD`]), least recently used first out; answers over
//! `--cache-max-answer` are served but not cached.
//! Every method takes `now` (milliseconds on a monotonic clock) so TTL math is tested without
//! sleeping.

use std::hash::{BuildHasher, Hash};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use dns_wire::{self as wire, ResponseLayout};
use lru::LruCache;

/// Shards of the LRU; each has its own lock.
const SHARDS: usize = 16;

/// What an entry costs beyond its answer, name and TTL offsets: the entry itself, its `Arc`,
/// the LRU's node and hash slot, and the allocator's share (measured: a full cache's resident
/// memory over its entries, in the byte-ceiling process test).
pub const ENTRY_OVERHEAD: usize = std::mem::size_of::<CacheEntry>() + 128;

/// The cache's bounds beside its entry count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// `--cache-max-bytes`: what all entries may cost together.
    pub max_bytes: usize,
    /// `--cache-max-answer`: the largest answer stored.
    pub max_answer: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_bytes: crate::config::DEFAULT_CACHE_MAX_BYTES,
            max_answer: crate::config::DEFAULT_CACHE_MAX_ANSWER,
        }
    }
}

/// One lock's part of the cache, and what its entries cost.
#[derive(Debug)]
struct Shard {
    lru: LruCache<u64, std::sync::Arc<CacheEntry>>,
    bytes: usize,
}

impl Shard {
    fn pop(&mut self, hash: &u64) {
        if let Some(entry) = self.lru.pop(hash) {
            self.bytes -= entry.cost();
        }
    }
}

/// TTL policy (dnsmasq's options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    pub min_cache_ttl: u32,
    pub max_cache_ttl: Option<u32>,
    pub max_ttl: Option<u32>,
    pub negative_caching: bool,
    /// TTL for negative answers that carry no SOA (`--neg-ttl`); without it they are not cached.
    pub neg_ttl: Option<u32>,
    /// How long past expiry an entry may be served (`--use-stale-cache`); `Some(0)` = forever.
    pub stale_for: Option<u32>,
}

/// What identifies a cached answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey<'n> {
    /// Lower-cased dotted name.
    pub name: &'n str,
    pub qtype: u16,
    pub qclass: u16,
    pub dnssec_ok: bool,
    pub checking_disabled: bool,
}

impl<'n> CacheKey<'n> {
    /// The key of a plain `IN A` question for `name` (tests).
    #[cfg(test)]
    pub(crate) fn a_in(name: &'n str) -> Self {
        CacheKey {
            name,
            qtype: 1,
            qclass: 1,
            dnssec_ok: false,
            checking_disabled: false,
        }
    }

    fn hash64(&self, hasher: &std::collections::hash_map::RandomState) -> u64 {
        hasher.hash_one(self)
    }
}

/// One stored answer.
#[derive(Debug)]
pub struct CacheEntry {
    name: Box<str>,
    qtype: u16,
    qclass: u16,
    flags: u8,
    bytes: Box<[u8]>,
    layout: ResponseLayout,
    inserted_ms: u64,
    /// Lifetime in the cache, seconds.
    lifetime: u32,
    /// The route (servers) it came from, for reloads.
    pub route: u64,
    served: AtomicU64,
}

impl CacheEntry {
    fn matches(&self, key: &CacheKey<'_>) -> bool {
        &*self.name == key.name
            && self.qtype == key.qtype
            && self.qclass == key.qclass
            && self.flags == flags(key)
    }

    /// What the entry counts against `--cache-max-bytes`.
    fn cost(&self) -> usize {
        self.bytes.len()
            + self.name.len()
            + self.layout.ttls.capacity() * std::mem::size_of::<(u16, u32)>()
            + ENTRY_OVERHEAD
    }

    fn expires_ms(&self) -> u64 {
        self.inserted_ms + u64::from(self.lifetime) * 1000
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// NXDOMAIN, or NOERROR without answers (NODATA).
    pub fn is_negative(&self) -> bool {
        self.layout.rcode == 3 || (self.layout.rcode == 0 && self.layout.answer_count == 0)
    }
}

fn flags(key: &CacheKey<'_>) -> u8 {
    u8::from(key.dnssec_ok) | (u8::from(key.checking_disabled) << 1)
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Fresh(std::sync::Arc<CacheEntry>),
    /// Expired but within the stale window: serve with TTL 0 and refresh (RFC 8767).
    Stale(std::sync::Arc<CacheEntry>),
    Miss,
}

/// Counters dnsmasq reports over CHAOS TXT.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub insertions: AtomicU64,
    /// Live (unexpired) entries pushed out to make room (entries or bytes).
    pub evictions: AtomicU64,
    /// Answers over `--cache-max-answer`, served and not cached.
    pub too_large: AtomicU64,
}

/// The cache.
#[derive(Debug)]
pub struct ResponseCache {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    pub policy: TtlPolicy,
    pub capacity: usize,
    pub limits: CacheLimits,
    pub counters: CacheCounters,
}

/// Why an answer is not cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCached {
    Disabled,
    Unparsable,
    /// Over `--cache-max-answer`.
    TooLarge,
    Truncated,
    ErrorRcode,
    NegativeCachingOff,
    NegativeWithoutSoa,
    ZeroTtl,
}

impl ResponseCache {
    /// A cache of `capacity` entries (0 disables caching) within the default [`CacheLimits`].
    pub fn new(capacity: usize, policy: TtlPolicy) -> Self {
        Self::with_limits(capacity, CacheLimits::default(), policy)
    }

    /// A cache of `capacity` entries (0 disables caching) within `limits`.
    pub fn with_limits(capacity: usize, limits: CacheLimits, policy: TtlPolicy) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    lru: LruCache::new(NonZeroUsize::new(per_shard).unwrap_or(NonZeroUsize::MIN)),
                    bytes: 0,
                })
            })
            .collect();
        ResponseCache {
            shards,
            hasher: std::collections::hash_map::RandomState::new(),
            policy,
            capacity,
            limits,
            counters: CacheCounters::default(),
        }
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[(hash as usize) % SHARDS]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Looks `key` up at `now_ms`.
    pub fn get(&self, key: &CacheKey<'_>, now_ms: u64) -> Lookup {
        if self.capacity == 0 {
            return Lookup::Miss;
        }
        let hash = key.hash64(&self.hasher);
        let mut shard = self.shard(hash);
        let Some(entry) = shard.lru.get(&hash) else {
            return Lookup::Miss;
        };
        if !entry.matches(key) {
            return Lookup::Miss;
        }
        let expires = entry.expires_ms();
        if now_ms < expires {
            return Lookup::Fresh(entry.clone());
        }
        match self.policy.stale_for {
            Some(0) => Lookup::Stale(entry.clone()),
            Some(window) if now_ms < expires + u64::from(window) * 1000 => {
                Lookup::Stale(entry.clone())
            }
            _ => {
                shard.pop(&hash);
                Lookup::Miss
            }
        }
    }

    /// The lifetime an upstream answer gets in the cache, or why it is not cached.
    pub fn lifetime(&self, layout: &ResponseLayout) -> Result<u32, NotCached> {
        if layout.truncated {
            return Err(NotCached::Truncated);
        }
        let negative = match layout.rcode {
            0 => layout.answer_count == 0,
            3 => true,
            _ => return Err(NotCached::ErrorRcode),
        };
        let ttl = if negative {
            if !self.policy.negative_caching {
                return Err(NotCached::NegativeCachingOff);
            }
            match layout.negative_ttl.or(self.policy.neg_ttl) {
                Some(ttl) => ttl,
                None => return Err(NotCached::NegativeWithoutSoa),
            }
        } else {
            layout.min_ttl.unwrap_or(0).max(self.policy.min_cache_ttl)
        };
        let ttl = self.policy.max_cache_ttl.map_or(ttl, |max| ttl.min(max));
        if ttl == 0 {
            return Err(NotCached::ZeroTtl);
        }
        Ok(ttl)
    }

    /// Stores an upstream answer (its ID is irrelevant). Returns why it was not stored.
    pub fn insert(
        &self,
        key: &CacheKey<'_>,
        response: &[u8],
        route: u64,
        now_ms: u64,
    ) -> Result<(), NotCached> {
        if self.capacity == 0 {
            return Err(NotCached::Disabled);
        }
        if response.len() > self.limits.max_answer {
            self.counters.too_large.fetch_add(1, Ordering::Relaxed);
            return Err(NotCached::TooLarge);
        }
        let mut layout = wire::response_layout(response).map_err(|_| NotCached::Unparsable)?;
        layout.ttls.shrink_to_fit();
        let lifetime = self.lifetime(&layout)?;
        let entry = std::sync::Arc::new(CacheEntry {
            name: key.name.into(),
            qtype: key.qtype,
            qclass: key.qclass,
            flags: flags(key),
            bytes: response.into(),
            layout,
            inserted_ms: now_ms,
            lifetime,
            route,
            served: AtomicU64::new(0),
        });
        let hash = key.hash64(&self.hasher);
        let cost = entry.cost();
        let per_shard = self.limits.max_bytes / SHARDS;
        if cost > per_shard {
            self.counters.too_large.fetch_add(1, Ordering::Relaxed);
            return Err(NotCached::TooLarge);
        }
        let mut shard = self.shard(hash);
        self.counters.insertions.fetch_add(1, Ordering::Relaxed);
        shard.bytes += cost;
        let mut pushed_out = shard.lru.push(hash, entry);
        loop {
            if let Some((out_hash, out)) = pushed_out.take() {
                shard.bytes -= out.cost();
                if out_hash != hash && now_ms < out.expires_ms() {
                    self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
            if shard.bytes <= per_shard {
                break;
            }
            // Over the byte ceiling: the least recently used go (never the new entry, which
            // fits alone).
            pushed_out = shard.lru.pop_lru();
        }
        Ok(())
    }

    fn each_shard(&self) -> impl Iterator<Item = std::sync::MutexGuard<'_, Shard>> {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Entries currently held.
    pub fn len(&self) -> usize {
        self.each_shard().map(|s| s.lru.len()).sum()
    }

    /// What the entries held cost against `--cache-max-bytes`.
    pub fn bytes(&self) -> usize {
        self.each_shard().map(|s| s.bytes).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the negative answers for names in `zone` (lower case, no dots at the ends): the
    /// zone changed, and a name that did not exist may exist now.
    pub fn drop_negative_in_zone(&self, zone: &str) -> usize {
        self.retain_routes(|entry| {
            let name = entry.name();
            let in_zone = name == zone
                || name
                    .strip_suffix(zone)
                    .is_some_and(|head| head.ends_with('.'));
            !(in_zone && entry.is_negative())
        })
    }

    /// Drops every entry `keep` rejects (after a reload changed its route's servers).
    pub fn retain_routes(&self, keep: impl Fn(&CacheEntry) -> bool) -> usize {
        let mut dropped = 0;
        for mut shard in self.each_shard() {
            let stale: Vec<u64> = shard
                .lru
                .iter()
                .filter(|(_, entry)| !keep(entry))
                .map(|(hash, _)| *hash)
                .collect();
            for hash in stale {
                shard.pop(&hash);
                dropped += 1;
            }
        }
        dropped
    }
}

/// How to shape a cached answer for one client.
#[derive(Debug, Clone, Copy)]
pub struct ServeAs<'q> {
    pub id: u16,
    /// The client's question section (same name modulo case, same type and class).
    pub question: &'q [u8],
    pub client_has_edns: bool,
    /// Largest reply the client takes (UDP size, or 65535 over TCP).
    pub limit: usize,
    pub rotate: bool,
}

/// Writes the reply for `entry` at `now_ms` into `out`. Returns false when it does not fit the
/// client's limit (the caller then answers with TC set).
pub fn serve(
    entry: &CacheEntry,
    policy: &TtlPolicy,
    how: ServeAs<'_>,
    now_ms: u64,
    out: &mut Vec<u8>,
) -> bool {
    let expired = now_ms >= entry.expires_ms();
    let age = (now_ms.saturating_sub(entry.inserted_ms) / 1000) as u32;
    let ttl_for = |original: u32| {
        // Clamp like the entry's lifetime, then count down; stale answers say 0.
        let mut ttl = original.max(policy.min_cache_ttl);
        if let Some(max) = policy.max_cache_ttl {
            ttl = ttl.min(max);
        }
        ttl = if expired { 0 } else { ttl.saturating_sub(age) };
        policy.max_ttl.map_or(ttl, |max| ttl.min(max))
    };
    let turn = how
        .rotate
        .then(|| entry.served.fetch_add(1, Ordering::Relaxed));
    shape_reply(&entry.bytes, &entry.layout, ttl_for, turn, how, out)
}

/// Shapes upstream bytes for one client: its ID and question (letter case), TTLs from
/// `ttl_for`, A/AAAA rotated by `turn`, the OPT RR removed for clients without EDNS. Returns
/// false when the result exceeds the client's limit.
pub fn shape_reply(
    bytes: &[u8],
    layout: &ResponseLayout,
    ttl_for: impl Fn(u32) -> u32,
    turn: Option<u64>,
    how: ServeAs<'_>,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    out.extend_from_slice(bytes);
    wire::set_packet_id(out, how.id);
    let question_end = 12 + how.question.len();
    if out.len() >= question_end {
        out[12..question_end].copy_from_slice(how.question);
    }
    for (offset, original) in &layout.ttls {
        let at = usize::from(*offset);
        out[at..at + 4].copy_from_slice(&ttl_for(*original).to_be_bytes());
    }
    if let (Some(turn), Some((start, len, count))) = (turn, layout.rotatable) {
        let turn = (turn % u64::from(count)) as usize;
        let (start, len) = (usize::from(start), usize::from(len));
        let end = start + len * usize::from(count);
        out[start..end].rotate_left(len * turn);
    }
    if !how.client_has_edns
        && let Some((start, end)) = layout.opt
    {
        out.drain(usize::from(start)..usize::from(end));
        let arcount = u16::from_be_bytes([out[10], out[11]]).saturating_sub(1);
        out[10..12].copy_from_slice(&arcount.to_be_bytes());
    }
    out.len() <= how.limit
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    fn key(name: &str) -> CacheKey<'_> {
        CacheKey::a_in(name)
    }

    fn policy() -> TtlPolicy {
        TtlPolicy {
            min_cache_ttl: 0,
            max_cache_ttl: None,
            max_ttl: None,
            negative_caching: true,
            neg_ttl: None,
            stale_for: None,
        }
    }

    fn response(name: &str, ttls: &[u32], rcode: ResponseCode, soa: Option<(u32, u32)>) -> Vec<u8> {
        let owner: Name = name.parse().expect("name");
        let mut m = Message::response(7, OpCode::Query);
        m.add_query(Query::query(owner.clone(), RecordType::A));
        m.metadata.response_code = rcode;
        for (i, ttl) in ttls.iter().enumerate() {
            m.add_answer(Record::from_rdata(
                owner.clone(),
                *ttl,
                RData::A(A::new(10, 0, 0, i as u8 + 1)),
            ));
        }
        if let Some((ttl, minimum)) = soa {
            let zone: Name = "example.".parse().expect("zone");
            m.add_authority(Record::from_rdata(
                zone.clone(),
                ttl,
                RData::SOA(SOA::new(zone.clone(), zone, 1, 2, 3, 4, minimum)),
            ));
        }
        m.set_edns(Edns::new());
        m.to_vec().expect("encodes")
    }

    fn client_question(name: &str) -> Vec<u8> {
        let q = wire::build_query(9, name, 1, None);
        q[12..q.len()].to_vec()
    }

    #[test]
    fn hits_count_ttl_down_and_keep_the_client_case() {
        let cache = ResponseCache::new(100, policy());
        let bytes = response("www.example.com.", &[60, 30], ResponseCode::NoError, None);
        cache
            .insert(&key("www.example.com"), &bytes, 0, 1_000)
            .expect("cached");
        let Lookup::Fresh(entry) = cache.get(&key("www.example.com"), 11_000) else {
            panic!("fresh hit expected")
        };
        let question = client_question("WWW.Example.COM");
        let mut out = Vec::new();
        let fits = serve(
            &entry,
            &cache.policy,
            ServeAs {
                id: 0xBEEF,
                question: &question,
                client_has_edns: false,
                limit: 512,
                rotate: false,
            },
            11_000,
            &mut out,
        );
        assert!(fits);
        let m = Message::from_vec(&out).expect("decodes");
        assert_eq!(m.metadata.id, 0xBEEF);
        assert_eq!(m.queries[0].name().to_ascii(), "WWW.Example.COM.");
        let ttls: Vec<u32> = m.answers.iter().map(|r| r.ttl).collect();
        assert_eq!(ttls, vec![50, 20]);
        assert!(m.edns.is_none(), "OPT removed for a client without EDNS");
        // The entry lives for the smallest TTL (30 s).
        assert!(matches!(
            cache.get(&key("www.example.com"), 30_999),
            Lookup::Fresh(_)
        ));
        assert!(matches!(
            cache.get(&key("www.example.com"), 31_000),
            Lookup::Miss
        ));
    }

    #[test]
    fn negative_answers_follow_rfc2308_and_the_switches() {
        let cache = ResponseCache::new(100, policy());
        let nx = response("nx.example.", &[], ResponseCode::NXDomain, Some((300, 60)));
        cache.insert(&key("nx.example"), &nx, 0, 0).expect("cached");
        assert!(matches!(
            cache.get(&key("nx.example"), 59_000),
            Lookup::Fresh(_)
        ));
        assert!(matches!(
            cache.get(&key("nx.example"), 60_000),
            Lookup::Miss
        ));
        let nodata_without_soa = response("a.example.", &[], ResponseCode::NoError, None);
        assert_eq!(
            cache.insert(&key("a.example"), &nodata_without_soa, 0, 0),
            Err(NotCached::NegativeWithoutSoa)
        );
        let off = ResponseCache::new(
            100,
            TtlPolicy {
                negative_caching: false,
                ..policy()
            },
        );
        assert_eq!(
            off.insert(&key("nx.example"), &nx, 0, 0),
            Err(NotCached::NegativeCachingOff)
        );
        let servfail = response("s.example.", &[], ResponseCode::ServFail, None);
        assert_eq!(
            cache.insert(&key("s.example"), &servfail, 0, 0),
            Err(NotCached::ErrorRcode)
        );
        let neg_ttl = ResponseCache::new(
            100,
            TtlPolicy {
                neg_ttl: Some(5),
                ..policy()
            },
        );
        neg_ttl
            .insert(&key("a.example"), &nodata_without_soa, 0, 0)
            .expect("neg-ttl caches it");
    }

    #[test]
    fn clamps_and_stale_serving() {
        let cache = ResponseCache::new(
            100,
            TtlPolicy {
                min_cache_ttl: 100,
                max_cache_ttl: Some(200),
                max_ttl: Some(10),
                stale_for: Some(60),
                ..policy()
            },
        );
        let bytes = response("x.example.", &[5], ResponseCode::NoError, None);
        cache
            .insert(&key("x.example"), &bytes, 0, 0)
            .expect("cached");
        let Lookup::Fresh(entry) = cache.get(&key("x.example"), 50_000) else {
            panic!("min-cache-ttl keeps it")
        };
        let mut out = Vec::new();
        let question = client_question("x.example");
        let how = ServeAs {
            id: 1,
            question: &question,
            client_has_edns: true,
            limit: 4096,
            rotate: false,
        };
        serve(&entry, &cache.policy, how, 50_000, &mut out);
        assert_eq!(
            Message::from_vec(&out).expect("decodes").answers[0].ttl,
            10,
            "max-ttl caps what clients see"
        );
        let Lookup::Stale(entry) = cache.get(&key("x.example"), 120_000) else {
            panic!("stale within the window")
        };
        serve(&entry, &cache.policy, how, 120_000, &mut out);
        assert_eq!(Message::from_vec(&out).expect("decodes").answers[0].ttl, 0);
        assert!(matches!(
            cache.get(&key("x.example"), 161_000),
            Lookup::Miss
        ));
    }

    #[test]
    fn evictions_count_live_entries_only_and_zero_disables() {
        let cache = ResponseCache::new(16, policy());
        for i in 0..64 {
            let name = format!("n{i}.example");
            let bytes = response(&format!("{name}."), &[60], ResponseCode::NoError, None);
            cache.insert(&key(&name), &bytes, 0, 0).expect("cached");
        }
        assert_eq!(cache.counters.insertions.load(Ordering::Relaxed), 64);
        assert!(cache.counters.evictions.load(Ordering::Relaxed) >= 48);
        assert!(cache.len() <= 16);
        let off = ResponseCache::new(0, policy());
        let bytes = response("a.example.", &[60], ResponseCode::NoError, None);
        assert_eq!(
            off.insert(&key("a.example"), &bytes, 0, 0),
            Err(NotCached::Disabled)
        );
    }

    #[test]
    fn the_byte_ceiling_holds_and_large_answers_are_not_cached() {
        let limits = CacheLimits {
            max_bytes: SHARDS * 2048,
            max_answer: 600,
        };
        let cache = ResponseCache::with_limits(10_000, limits, policy());
        let mut last = String::new();
        for i in 0..1000 {
            last = format!("n{i}.example");
            let bytes = response(&format!("{last}."), &[60, 60], ResponseCode::NoError, None);
            cache.insert(&key(&last), &bytes, 0, 0).expect("cached");
            assert!(
                cache.bytes() <= limits.max_bytes,
                "after {i}: {}",
                cache.bytes()
            );
        }
        assert!(cache.len() < 1000, "{} entries kept", cache.len());
        assert!(cache.counters.evictions.load(Ordering::Relaxed) > 500);
        assert!(
            matches!(cache.get(&key(&last), 0), Lookup::Fresh(_)),
            "the newest entry stays"
        );
        let answers = vec![60; 40];
        let big = response("big.example.", &answers, ResponseCode::NoError, None);
        assert!(big.len() > 600);
        assert_eq!(
            cache.insert(&key("big.example"), &big, 0, 0),
            Err(NotCached::TooLarge)
        );
        assert_eq!(cache.counters.too_large.load(Ordering::Relaxed), 1);
        assert!(matches!(cache.get(&key("big.example"), 0), Lookup::Miss));
        let held = cache.len();
        assert_eq!(cache.retain_routes(|_| false), held);
        assert_eq!(cache.bytes(), 0, "dropped entries give their bytes back");
    }

    #[test]
    fn a_records_rotate_between_hits() {
        let cache = ResponseCache::new(100, policy());
        let bytes = response("r.example.", &[60, 60, 60], ResponseCode::NoError, None);
        cache
            .insert(&key("r.example"), &bytes, 0, 0)
            .expect("cached");
        let Lookup::Fresh(entry) = cache.get(&key("r.example"), 0) else {
            panic!("hit")
        };
        let question = client_question("r.example");
        let mut firsts = Vec::new();
        for _ in 0..3 {
            let mut out = Vec::new();
            let how = ServeAs {
                id: 1,
                question: &question,
                client_has_edns: true,
                limit: 4096,
                rotate: true,
            };
            serve(&entry, &cache.policy, how, 0, &mut out);
            firsts.push(
                Message::from_vec(&out).expect("decodes").answers[0]
                    .data
                    .to_string(),
            );
        }
        firsts.sort();
        firsts.dedup();
        assert_eq!(firsts.len(), 3, "each hit starts with another address");
    }
}
