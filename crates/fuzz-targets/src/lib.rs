//! The fuzz targets' bodies, one function per target, each taking the fuzzer's bytes. The
//! cargo-fuzz crate in `fuzz/` calls them (nightly, libFuzzer); `tests/corpus.rs` replays the
//! checked-in seed corpus (`fuzz/corpus/<target>/`) and every crash found (`fuzz/regressions/`)
//! through them on stable, so CI runs them without nightly. A target must never panic: every
//! input is either answered or refused with an error.
//!
//! | target | what it drives |
//! |---|---|
//! | [`query`] | query parsing and answer encoding: kube-dns's cluster answers and dns-cache's fast path |
//! | [`splice`] | dns-cache reading an upstream reply, caching it and serving it as a hit |
//! | [`forward_reply`] | the forwarder's checks of an upstream reply and its OPT rewrite |
//! | [`config_map`] | the kube-dns ConfigMap parsers (files, as the nanny and kube-dns read them) |
//! | [`cli`] | each binary's command-line parser |

mod fixtures;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use dns_wire as wire;

/// Splits an input into NUL-separated strings (lossy UTF-8): argv, or ConfigMap keys and values.
fn fields(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == 0)
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

/// Query parsing and answer encoding, as kube-dns (from a small cluster) and dns-cache (hosts,
/// local names, CHAOS, cache hits) answer it over UDP and TCP.
pub fn query(data: &[u8]) {
    let peer = SocketAddr::from(([10, 0, 0, 1], 5353));
    let mut out = Vec::with_capacity(512);
    for tcp in [false, true] {
        fixtures::kube_dns_answer(data, tcp, &mut out);
        fixtures::cache_fast(data, tcp, peer, &mut out);
    }
    if let Ok(query) = wire::parse_query(data) {
        let compact = wire::compact_query(&query);
        let again = wire::parse_query(&compact).expect("a compact query parses");
        assert_eq!(again.name(), query.name(), "compacting keeps the question");
        assert_eq!(again.qtype, query.qtype);
    }
}

/// An upstream reply to dns-cache's query for `www.example.com A`: checked, cached and served
/// as a hit to clients with and without EDNS, over UDP and TCP, rotated or not.
pub fn splice(data: &[u8]) {
    fixtures::cache_splice(data);
}

/// What the forwarder does with each upstream reply: match it to the query it sent, then put
/// its own OPT in (as kube-dns does for its clients).
pub fn forward_reply(data: &[u8]) {
    let query = wire::build_query(
        0x4242,
        "www.example.com",
        wire::rtype::A,
        Some(wire::EdnsInfo {
            payload: 1232,
            version: 0,
            dnssec_ok: false,
        }),
    );
    let Ok(info) = wire::reply::check_reply(&query, data) else {
        return;
    };
    let _ = info.is_usable();
    for ours in [None, Some(false), Some(true)] {
        // The rewrite keeps a subset of the records and adds at most our 11-byte OPT.
        let copied = wire::reply::replace_opt(data, ours);
        assert!(
            copied.len() <= data.len() + 11,
            "the OPT rewrite grew the reply"
        );
        let mut in_place = data.to_vec();
        wire::reply::replace_opt_in_place(&mut in_place, &info, ours);
        assert!(
            in_place.len() <= data.len() + 11,
            "the OPT rewrite grew the reply"
        );
    }
    // dns-cache's answer policy reads the addresses and drops records of checked replies.
    let _ = wire::rewrite::answer_addresses(data);
    if let Ok(Some(changed)) =
        wire::rewrite::drop_records(data, wire::rewrite::Drop::Everything, wire::ede::BLOCKED)
    {
        // Only the header and question stay, with our OPT (its 6-byte error included) in
        // place of theirs (11 bytes at least).
        assert!(
            changed.len() <= data.len() + 6,
            "dropping every record grew the reply"
        );
    }
    if let Ok(Some(changed)) = wire::rewrite::drop_records(
        data,
        wire::rewrite::Drop::Type(wire::rtype::AAAA),
        wire::ede::FILTERED,
    ) {
        assert!(
            wire::response_layout(&changed).is_ok(),
            "a filtered reply must be whole"
        );
    }
}

/// The kube-dns ConfigMap: NUL-separated file names and contents.
pub fn config_map(data: &[u8]) {
    let parts: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    let mut files = BTreeMap::new();
    for pair in parts.chunks(2) {
        let name = String::from_utf8_lossy(pair[0]).into_owned();
        files.insert(name, pair.get(1).map(|v| v.to_vec()).unwrap_or_default());
    }
    let _ = kube_dns_config::config_map::DnsConfig::from_files(&files);
    let _ = kube_dns_config::config_map::config_version(&files);
    let text: BTreeMap<String, String> = files
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    let _ = kube_dns_config::config_map::DnsConfig::from_data(&text);
}

/// Each binary's command line: the input's first byte picks the binary, the rest is argv
/// (NUL-separated).
pub fn cli(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let args = fields(rest);
    match which % 5 {
        0 => {
            if let Ok(cli) = kube_dns::cli::Cli::parse_args(args) {
                let _ = kube_dns::config::Config::from_cli(&cli, fixtures::metrics_env());
            }
        }
        1 => {
            let _ = dns_cache::CacheConfig::parse_args(args);
        }
        2 => {
            let _ = dnsmasq_nanny::cli::NannyConfig::parse_args(args);
        }
        3 => {
            let _ = sidecar::cli::Cli::parse_args(args);
        }
        _ => {
            for spec in &args {
                let _ = sidecar::probe::ProbeSpec::parse(spec);
            }
        }
    }
}

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus replay.
pub const TARGETS: [(&str, Target); 5] = [
    ("query", query),
    ("splice", splice),
    ("forward_reply", forward_reply),
    ("config_map", config_map),
    ("cli", cli),
];
