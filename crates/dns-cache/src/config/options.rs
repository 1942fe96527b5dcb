//! The option table: every option the parser knows, with its short letter and whether it takes
//! a value; the dnsmasq options that are accepted without effect are listed apart.

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arg {
    None,
    Required,
    Optional,
}

/// (long name, short letter, argument) of every option we implement.
const OPTIONS: &[(&str, Option<char>, Arg)] = &[
    ("keep-in-foreground", Some('k'), Arg::None),
    ("no-daemon", Some('d'), Arg::None),
    ("port", Some('p'), Arg::Required),
    ("listen-address", Some('a'), Arg::Required),
    ("bind-interfaces", Some('z'), Arg::None),
    ("bind-dynamic", None, Arg::None),
    ("cache-size", Some('c'), Arg::Required),
    ("no-negcache", Some('N'), Arg::None),
    ("neg-ttl", None, Arg::Required),
    ("min-cache-ttl", None, Arg::Required),
    ("max-cache-ttl", None, Arg::Required),
    ("max-ttl", None, Arg::Required),
    ("local-ttl", Some('T'), Arg::Required),
    ("dns-loop-detect", None, Arg::None),
    ("log-facility", Some('8'), Arg::Required),
    ("log-queries", Some('q'), Arg::Optional),
    ("server", Some('S'), Arg::Required),
    ("local", None, Arg::Required),
    ("no-resolv", Some('R'), Arg::None),
    ("resolv-file", Some('r'), Arg::Required),
    ("servers-file", None, Arg::Required),
    ("no-hosts", Some('h'), Arg::None),
    ("addn-hosts", Some('H'), Arg::Required),
    ("dns-forward-max", Some('0'), Arg::Required),
    ("max-tcp-connections", None, Arg::Required),
    ("all-servers", None, Arg::None),
    ("strict-order", Some('o'), Arg::None),
    ("use-stale-cache", None, Arg::Optional),
    ("no-round-robin", None, Arg::None),
    ("conf-file", Some('C'), Arg::Optional),
    ("upstream-policy", None, Arg::Required),
    ("upstream-weight", None, Arg::Required),
    ("upstream-timeout", None, Arg::Required),
    ("forward-deadline", None, Arg::Required),
    ("max-inflight", None, Arg::Required),
    ("max-inflight-bytes", None, Arg::Required),
    ("max-coalesced", None, Arg::Required),
    ("lameduck", None, Arg::Required),
    ("cache-max-bytes", None, Arg::Required),
    ("cache-max-answer", None, Arg::Required),
    ("metrics-address", None, Arg::Required),
    ("workers", None, Arg::Required),
    ("version", Some('v'), Arg::None),
    ("watch-soa", None, Arg::Required),
    ("watch-soa-interval", None, Arg::Required),
];

/// dnsmasq options accepted with a warning (their effect does not apply to this cache).
const IGNORED: &[(&str, Option<char>, Arg)] = &[
    ("user", Some('u'), Arg::Required),
    ("group", Some('g'), Arg::Required),
    ("pid-file", Some('x'), Arg::Optional),
    ("interface", Some('i'), Arg::Required),
    ("except-interface", Some('I'), Arg::Required),
    ("no-dhcp-interface", Some('2'), Arg::Required),
    ("domain-needed", None, Arg::None),
    ("bogus-priv", Some('b'), Arg::None),
    ("domain", Some('s'), Arg::Required),
    ("expand-hosts", Some('E'), Arg::None),
    ("local-service", None, Arg::Optional),
    ("edns-packet-max", Some('P'), Arg::Required),
    ("query-port", Some('Q'), Arg::Required),
    ("min-port", None, Arg::Required),
    ("max-port", None, Arg::Required),
    ("cache-rr", None, Arg::Required),
    ("clear-on-reload", None, Arg::None),
    ("no-poll", Some('n'), Arg::None),
    ("log-async", None, Arg::Optional),
    ("fast-dns-retry", None, Arg::Optional),
    ("no-ident", None, Arg::None),
    ("stop-dns-rebind", None, Arg::None),
    ("filterwin2k", Some('f'), Arg::None),
    ("address", Some('A'), Arg::Required),
    ("auth-ttl", None, Arg::Required),
];

/// Every option this parser knows, as `(long name, short letter, implemented)`; the options that
/// are not implemented are accepted with a warning. For the reference documentation's check.
pub fn known_options() -> impl Iterator<Item = (&'static str, Option<char>, bool)> {
    OPTIONS
        .iter()
        .map(|(long, short, _)| (*long, *short, true))
        .chain(
            IGNORED
                .iter()
                .map(|(long, short, _)| (*long, *short, false)),
        )
}

pub(crate) fn find_long(name: &str) -> Option<(&'static str, Arg, bool)> {
    OPTIONS
        .iter()
        .map(|o| (o, false))
        .chain(IGNORED.iter().map(|o| (o, true)))
        .find(|((long, _, _), _)| *long == name)
        .map(|((long, _, arg), ignored)| (*long, *arg, ignored))
}

pub(crate) fn find_short(c: char) -> Option<(&'static str, Arg, bool)> {
    OPTIONS
        .iter()
        .map(|o| (o, false))
        .chain(IGNORED.iter().map(|o| (o, true)))
        .find(|((_, short, _), _)| *short == Some(c))
        .map(|((long, _, arg), ignored)| (*long, *arg, ignored))
}
