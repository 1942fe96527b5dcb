//! The option table: every option the parser knows, with its short letter and whether it takes
//! a value; the dnsmasq options accepted without effect and those refused are listed apart,
//! each with its reason.

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
    ("address", Some('A'), Arg::Required),
    ("domain-needed", None, Arg::None),
    ("bogus-priv", Some('b'), Arg::None),
    ("stop-dns-rebind", None, Arg::None),
    ("rebind-localhost-ok", None, Arg::None),
    ("rebind-domain-ok", None, Arg::Required),
    ("filter-A", None, Arg::None),
    ("filter-AAAA", None, Arg::None),
    ("ipv4-only", None, Arg::Optional),
    ("ipv6-only", None, Arg::Optional),
    ("edns-packet-max", Some('P'), Arg::Required),
    ("pid-file", Some('x'), Arg::Optional),
    ("clear-on-reload", None, Arg::None),
    ("no-poll", Some('n'), Arg::None),
    ("no-ident", None, Arg::None),
    ("log-format", None, Arg::Required),
    ("log-sample", None, Arg::Required),
    ("log-rate", None, Arg::Required),
    ("secondary", None, Arg::Required),
    ("secondary-max-size", None, Arg::Required),
    ("node-local", None, Arg::None),
    ("local-ip", None, Arg::Required),
    ("interface-name", None, Arg::Required),
    ("interface-kind", None, Arg::Required),
    ("netfilter", None, Arg::Required),
    ("skip-teardown", None, Arg::None),
    ("node-sync-interval", None, Arg::Required),
    ("tcp-upstream", None, Arg::Required),
    ("tcp-pool-size", None, Arg::Required),
    ("handover-lock", None, Arg::Required),
    ("health-socket", None, Arg::Required),
    ("health-probe", None, Arg::Required),
];

/// dnsmasq options accepted on purpose without effect, each with the reason (one warning at
/// start). None of them changes an answer or what the process exposes.
const NO_EFFECT: &[(&str, Option<char>, Arg, &str)] = &[
    (
        "no-dhcp-interface",
        Some('2'),
        Arg::Required,
        "dns-cache serves DNS only; there is no DHCP or TFTP server to turn off",
    ),
    (
        "domain",
        Some('s'),
        Arg::Required,
        "names the DHCP domain; without DHCP and --expand-hosts (refused) it changes no answer",
    ),
    (
        "cache-rr",
        None,
        Arg::Required,
        "every record type is cached already",
    ),
    (
        "log-async",
        None,
        Arg::Optional,
        "query log lines are always written off the query path",
    ),
    (
        "fast-dns-retry",
        None,
        Arg::Optional,
        "upstream tries are timed by --upstream-timeout (adaptive) and --forward-deadline",
    ),
];

/// dnsmasq options dns-cache cannot honour: refused at start (exit 64) with the reason, so a
/// configuration that relies on them is not served differently without notice.
const REFUSED: &[(&str, Option<char>, Arg, &str)] = &[
    (
        "user",
        Some('u'),
        Arg::Required,
        "dns-cache does not change its user; set runAsUser in the container's securityContext",
    ),
    (
        "group",
        Some('g'),
        Arg::Required,
        "dns-cache does not change its group; set runAsGroup in the container's securityContext",
    ),
    (
        "interface",
        Some('i'),
        Arg::Required,
        "listening by interface is not supported; use --listen-address",
    ),
    (
        "except-interface",
        Some('I'),
        Arg::Required,
        "listening by interface is not supported; use --listen-address",
    ),
    (
        "local-service",
        None,
        Arg::Optional,
        "answering only local subnets is not supported; use --listen-address and a NetworkPolicy",
    ),
    (
        "expand-hosts",
        Some('E'),
        Arg::None,
        "adding --domain to hosts-file names is not supported",
    ),
    (
        "query-port",
        Some('Q'),
        Arg::Required,
        "every upstream query goes from a new random port of the kernel's ephemeral range",
    ),
    (
        "min-port",
        None,
        Arg::Required,
        "upstream source ports are the kernel's ephemeral range (net.ipv4.ip_local_port_range)",
    ),
    (
        "max-port",
        None,
        Arg::Required,
        "upstream source ports are the kernel's ephemeral range (net.ipv4.ip_local_port_range)",
    ),
    (
        "filterwin2k",
        Some('f'),
        Arg::None,
        "filtering Windows' SOA, SRV and ANY queries is not supported",
    ),
    (
        "auth-ttl",
        None,
        Arg::Required,
        "authoritative zones (--auth-zone) are not supported",
    ),
];

/// What dns-cache does with a known option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Implemented,
    /// Accepted without effect, for this reason.
    NoEffect(&'static str),
    /// Refused at start, for this reason.
    Refused(&'static str),
}

/// Every option this parser knows, as `(long name, short letter, status)`. For the reference
/// documentation's check.
pub fn known_options() -> impl Iterator<Item = (&'static str, Option<char>, Status)> {
    OPTIONS
        .iter()
        .map(|(long, short, _)| (*long, *short, Status::Implemented))
        .chain(
            NO_EFFECT
                .iter()
                .map(|(long, short, _, why)| (*long, *short, Status::NoEffect(why))),
        )
        .chain(
            REFUSED
                .iter()
                .map(|(long, short, _, why)| (*long, *short, Status::Refused(why))),
        )
}

fn all() -> impl Iterator<Item = (&'static str, Option<char>, Arg, Status)> {
    OPTIONS
        .iter()
        .map(|(long, short, arg)| (*long, *short, *arg, Status::Implemented))
        .chain(
            NO_EFFECT
                .iter()
                .map(|(long, short, arg, why)| (*long, *short, *arg, Status::NoEffect(why))),
        )
        .chain(
            REFUSED
                .iter()
                .map(|(long, short, arg, why)| (*long, *short, *arg, Status::Refused(why))),
        )
}

pub(crate) fn find_long(name: &str) -> Option<(&'static str, Arg, Status)> {
    all()
        .find(|(long, ..)| *long == name)
        .map(|(long, _, arg, status)| (long, arg, status))
}

pub(crate) fn find_short(c: char) -> Option<(&'static str, Arg, Status)> {
    all()
        .find(|(_, short, ..)| *short == Some(c))
        .map(|(long, _, arg, status)| (long, arg, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options that change answers or what is exposed must work or be refused, never be
    /// accepted without effect (issue 14).
    #[test]
    fn no_option_that_changes_answers_or_security_is_accepted_without_effect() {
        let must_work_or_refuse = [
            "address",
            "local",
            "stop-dns-rebind",
            "rebind-localhost-ok",
            "rebind-domain-ok",
            "bogus-priv",
            "domain-needed",
            "filter-AAAA",
            "filter-A",
            "edns-packet-max",
            "max-tcp-connections",
            "query-port",
            "min-port",
            "max-port",
            "auth-ttl",
            "local-ttl",
            "user",
            "group",
            "interface",
            "except-interface",
            "local-service",
            "expand-hosts",
            "filterwin2k",
            "no-ident",
            "server",
        ];
        for name in must_work_or_refuse {
            let (_, _, status) = find_long(name).unwrap_or_else(|| panic!("--{name} unknown"));
            assert!(
                !matches!(status, Status::NoEffect(_)),
                "--{name} must not be accepted without effect"
            );
        }
    }

    #[test]
    fn every_option_is_listed_once_and_short_letters_are_unique() {
        let mut longs: Vec<&str> = all().map(|(long, ..)| long).collect();
        let n = longs.len();
        longs.sort_unstable();
        longs.dedup();
        assert_eq!(longs.len(), n);
        let mut shorts: Vec<char> = all().filter_map(|(_, short, ..)| short).collect();
        let n = shorts.len();
        shorts.sort_unstable();
        shorts.dedup();
        assert_eq!(shorts.len(), n);
    }
}
