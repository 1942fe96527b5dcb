//! The getopt-style parser: short bundles (`-kN`, `-p5353`), long options with `=` or a
//! separate value, and `--conf-file` lines (`option[=value]`, `#` comments).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::options::{Arg, Status, find_long, find_short};
use super::servers::{
    ServerTarget, parse_address, parse_address_rule, parse_domain_list, parse_secondary,
    parse_server,
};
use super::{CacheConfig, CliError, DEFAULT_STALE_SECS, UpstreamPolicy};

/// A number of milliseconds, as our time options take, or a Go duration (`5s`, `500ms`).
fn ms_or_duration(v: &str) -> Result<Duration, String> {
    match v.parse::<u64>() {
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) => daemon_support::go_flags::parse_go_duration(v).map_err(|e| e.to_string()),
    }
}

impl CacheConfig {
    /// Parses argv (without the program name).
    pub fn parse_args<I, S>(args: I) -> Result<Self, CliError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args = expand_short_bundles(args.into_iter().map(Into::into).collect())?;
        let mut config = CacheConfig::default();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            let (long, inline) = if let Some(body) = arg.strip_prefix("--") {
                let (name, value) = match body.split_once('=') {
                    Some((name, value)) => (name, Some(value.to_owned())),
                    None => (body, None),
                };
                let (long, ..) =
                    find_long(name).ok_or_else(|| CliError::Unknown(format!("--{name}")))?;
                (long, value)
            } else {
                // After expansion a short option is exactly `-c`.
                let c = arg.chars().nth(1).unwrap_or('-');
                let (long, ..) = find_short(c).ok_or_else(|| CliError::Unknown(arg.clone()))?;
                (long, None)
            };
            let (_, kind, _) = find_long(long).ok_or_else(|| CliError::Unknown(arg.clone()))?;
            let value = match (kind, inline) {
                (Arg::None, Some(_)) => {
                    return Err(CliError::BadValue {
                        option: format!("--{long}"),
                        reason: "takes no value".into(),
                    });
                }
                (Arg::None, None) => None,
                (Arg::Required, Some(v)) => Some(v),
                (Arg::Required, None) => {
                    let v = args
                        .get(i)
                        .cloned()
                        .ok_or_else(|| CliError::MissingValue(format!("--{long}")))?;
                    i += 1;
                    Some(v)
                }
                (Arg::Optional, v) => v,
            };
            config.apply(long, value.as_deref())?;
        }
        config.check_node_local()?;
        Ok(config)
    }

    /// `--node-local` needs its addresses, and its options mean nothing without it.
    fn check_node_local(&self) -> Result<(), CliError> {
        let bad = |option: &str, reason: &str| CliError::BadValue {
            option: option.to_owned(),
            reason: reason.to_owned(),
        };
        if self.node_local && self.local_ips.is_empty() {
            return Err(bad(
                "--node-local",
                "needs --local-ip (the link-local address, and the DNS Service IP where kube-proxy does not hold it)",
            ));
        }
        if !self.node_local {
            let defaults = CacheConfig::default();
            let given = [
                ("--local-ip", !self.local_ips.is_empty()),
                (
                    "--interface-name",
                    self.interface_name != defaults.interface_name,
                ),
                (
                    "--interface-kind",
                    self.interface_kind != defaults.interface_kind,
                ),
                ("--netfilter", self.netfilter != defaults.netfilter),
                ("--skip-teardown", self.skip_teardown),
                (
                    "--node-sync-interval",
                    self.node_sync_interval != defaults.node_sync_interval,
                ),
                ("--handover-lock", self.handover_lock.is_some()),
            ];
            if let Some((option, _)) = given.iter().find(|(_, set)| *set) {
                return Err(bad(option, "only with --node-local"));
            }
        }
        Ok(())
    }

    /// Applies one option (long name) with its value.
    fn apply(&mut self, long: &str, value: Option<&str>) -> Result<(), CliError> {
        let bad = |reason: String| CliError::BadValue {
            option: format!("--{long}"),
            reason,
        };
        let need = || value.ok_or_else(|| CliError::MissingValue(format!("--{long}")));
        let number = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| bad(format!("{v:?} is not a number")))
        };
        match find_long(long) {
            Some((_, _, Status::NoEffect(reason))) => {
                self.ignored.push((format!("--{long}"), reason));
                return Ok(());
            }
            Some((_, _, Status::Refused(reason))) => {
                return Err(CliError::Refused {
                    option: format!("--{long}"),
                    reason,
                });
            }
            _ => {}
        }
        let domains = |v: &str| parse_domain_list(v).map_err(|e| bad(e.to_string()));
        match long {
            "keep-in-foreground" | "no-daemon" => self.keep_in_foreground = true,
            "port" => {
                self.port =
                    u16::try_from(number(need()?)?).map_err(|_| bad("port out of range".into()))?
            }
            "listen-address" => {
                for part in need()?.split(',').filter(|p| !p.is_empty()) {
                    let ip = part
                        .trim()
                        .parse()
                        .map_err(|_| bad(format!("{part:?} is not an IP address")))?;
                    self.listen_addresses.push(ip);
                }
            }
            "bind-interfaces" | "bind-dynamic" => {}
            "cache-size" => self.cache_size = number(need()?)? as usize,
            "no-negcache" => self.no_negcache = true,
            "neg-ttl" => self.neg_ttl = Some(number(need()?)? as u32),
            "min-cache-ttl" => {
                // dnsmasq limits it to one hour.
                self.min_cache_ttl = (number(need()?)? as u32).min(3600);
            }
            "max-cache-ttl" => self.max_cache_ttl = Some(number(need()?)? as u32),
            "max-ttl" => self.max_ttl = Some(number(need()?)? as u32),
            "local-ttl" => self.local_ttl = number(need()?)? as u32,
            "dns-loop-detect" => self.dns_loop_detect = true,
            "log-facility" => {}
            "log-queries" => match value {
                None | Some("") => self.log_queries = true,
                Some(other) => {
                    return Err(bad(format!(
                        "{other:?}: only the plain form is supported; --log-format=json gives each query's client, latency and upstream"
                    )));
                }
            },
            "log-format" => {
                self.log_format = match need()? {
                    "dnsmasq" => dns_transport::query_log::Format::Dnsmasq,
                    "json" => dns_transport::query_log::Format::Json,
                    other => return Err(bad(format!("{other:?} is not dnsmasq or json"))),
                }
            }
            "log-sample" => self.log_sample = number(need()?)?.max(1),
            "log-rate" => self.log_rate = number(need()?)?,
            "secondary" => self
                .secondaries
                .extend(parse_secondary(need()?).map_err(|e| bad(e.to_string()))?),
            "secondary-max-size" => self.secondary_max_size = number(need()?)?.max(1024) as usize,
            "node-local" => self.node_local = true,
            "local-ip" => {
                for part in need()?.split(',').filter(|p| !p.trim().is_empty()) {
                    let ip: IpAddr = part
                        .trim()
                        .parse()
                        .map_err(|_| bad(format!("{part:?} is not an IP address")))?;
                    if ip.is_unspecified() || ip.is_multicast() {
                        return Err(bad(format!("{ip} cannot be a node's address")));
                    }
                    if !self.local_ips.contains(&ip) {
                        self.local_ips.push(ip);
                    }
                }
            }
            "interface-name" => {
                let name = need()?;
                node_local::interface::valid_name(name).map_err(bad)?;
                self.interface_name = name.to_owned();
            }
            "interface-kind" => self.interface_kind = need()?.parse().map_err(bad)?,
            "netfilter" => self.netfilter = need()?.parse().map_err(bad)?,
            "skip-teardown" => self.skip_teardown = true,
            "node-sync-interval" => {
                let v = need()?;
                let interval = ms_or_duration(v).map_err(bad)?;
                if interval < Duration::from_millis(100) {
                    return Err(bad(format!("{v:?} is under 100ms")));
                }
                self.node_sync_interval = interval;
            }
            "tcp-upstream" => {
                let addr = parse_address(need()?).map_err(|e| bad(e.to_string()))?;
                if !self.tcp_upstreams.contains(&addr) {
                    self.tcp_upstreams.push(addr);
                }
            }
            "handover-lock" => self.handover_lock = Some(PathBuf::from(need()?)),
            "health-socket" => self.health_socket = Some(PathBuf::from(need()?)),
            "health-probe" => self.health_probe = Some(PathBuf::from(need()?)),
            "tcp-pool-size" => {
                let n = number(need()?)?;
                if !(1..=64).contains(&n) {
                    return Err(bad(format!("{n} is not 1 to 64")));
                }
                self.tcp_pool_size = n as usize;
            }
            "server" | "local" => self
                .servers
                .push(parse_server(need()?).map_err(|e| bad(e.to_string()))?),
            "no-resolv" => self.no_resolv = true,
            "resolv-file" => self.resolv_file = PathBuf::from(need()?),
            "servers-file" => self.servers_file = Some(PathBuf::from(need()?)),
            "no-hosts" => self.no_hosts = true,
            "addn-hosts" => self.addn_hosts.push(PathBuf::from(need()?)),
            "dns-forward-max" => self.forward_max = (number(need()?)? as usize).max(1),
            "max-tcp-connections" => self.max_tcp_connections = (number(need()?)? as usize).max(1),
            "all-servers" => self.all_servers = true,
            "strict-order" => self.strict_order = true,
            "use-stale-cache" => {
                self.use_stale_cache = Some(match value {
                    Some(v) => number(v)? as u32,
                    None => DEFAULT_STALE_SECS,
                })
            }
            "no-round-robin" => self.no_round_robin = true,
            "conf-file" => {
                if let Some(path) = value {
                    self.read_conf_file(path)?;
                }
            }
            "upstream-policy" => {
                self.upstream_policy = need()?
                    .parse::<UpstreamPolicy>()
                    .map_err(|e| bad(e.to_string()))?
            }
            "upstream-weight" => {
                let v = need()?;
                let (server, weight) = v
                    .rsplit_once('=')
                    .ok_or_else(|| bad(format!("{v:?} is not <ip>[#port]=<weight>")))?;
                let addr = parse_address(server).map_err(|e| bad(e.to_string()))?;
                let weight = number(weight)? as u32;
                self.upstream_weights.push((addr, weight.max(1)));
            }
            "upstream-timeout" => {
                self.upstream_timeout = Duration::from_millis(number(need()?)?.max(10))
            }
            "forward-deadline" => {
                self.forward_deadline = Duration::from_millis(number(need()?)?.max(100))
            }
            "max-inflight" => self.max_inflight = (number(need()?)? as usize).max(1),
            "max-inflight-bytes" => self.max_inflight_bytes = (number(need()?)? as usize).max(1),
            "max-coalesced" => self.max_coalesced = (number(need()?)? as usize).max(1),
            "lameduck" => {
                // kube-dns's syntax (`5s`, `500ms`), or a number of milliseconds as our other
                // time options take.
                self.lameduck = ms_or_duration(need()?).map_err(bad)?;
            }
            "cache-max-bytes" => self.cache_max_bytes = number(need()?)? as usize,
            "cache-max-answer" => self.cache_max_answer = number(need()?)? as usize,
            "metrics-address" => {
                let v = need()?;
                self.metrics_address = Some(
                    v.parse()
                        .map_err(|_| bad(format!("{v:?} is not ip:port")))?,
                )
            }
            "workers" => self.workers = number(need()?)? as usize,
            "version" => self.version = true,
            "watch-soa" => {
                let domain = need()?
                    .trim_matches(|c| c == '/' || c == '.')
                    .to_ascii_lowercase();
                if domain.is_empty() {
                    return Err(CliError::BadValue {
                        option: "--watch-soa".into(),
                        reason: "needs a zone such as cluster.local".into(),
                    });
                }
                self.watch_soa.push(domain);
            }
            "address" => {
                let rule = parse_address_rule(need()?).map_err(|e| bad(e.to_string()))?;
                match rule.addresses.is_empty() {
                    // `--address=/domain/` is `--server=/domain/`: NXDOMAIN here.
                    true if rule.domains.iter().any(String::is_empty) => {
                        return Err(bad(
                            "/#/ without an address would answer every name NXDOMAIN".into(),
                        ));
                    }
                    true => self.servers.push(super::ServerSpec {
                        domains: rule.domains,
                        target: ServerTarget::LocalOnly,
                    }),
                    false => self.addresses.push(rule),
                }
            }
            "domain-needed" => self.domain_needed = true,
            "bogus-priv" => self.bogus_priv = true,
            "stop-dns-rebind" => self.stop_dns_rebind = true,
            "rebind-localhost-ok" => self.rebind_localhost_ok = true,
            "rebind-domain-ok" => self.rebind_domain_ok.extend(domains(need()?)?),
            "filter-A" => self.filter_a = true,
            "filter-AAAA" => self.filter_aaaa = true,
            "ipv4-only" | "ipv6-only" => {
                let list = match value {
                    Some(v) if !v.is_empty() => domains(v)?,
                    _ => vec![String::new()],
                };
                match long {
                    "ipv4-only" => self.ipv4_only.extend(list),
                    _ => self.ipv6_only.extend(list),
                }
            }
            "edns-packet-max" => {
                let size = number(need()?)?;
                if !(512..=65535).contains(&size) {
                    return Err(bad(format!("{size} is not between 512 and 65535")));
                }
                self.edns_packet_max = Some(size as usize);
            }
            "pid-file" => self.pid_file = value.filter(|v| !v.is_empty()).map(PathBuf::from),
            "clear-on-reload" => self.clear_on_reload = true,
            // The resolv file is only read at start and on SIGHUP: never polled.
            "no-poll" => {}
            "no-ident" => self.no_ident = true,
            "watch-soa-interval" => {
                self.watch_soa_interval = Duration::from_millis(number(need()?)?.max(10))
            }
            other => return Err(CliError::Unknown(format!("--{other}"))),
        }
        Ok(())
    }

    /// Reads `option[=value]` lines (dnsmasq.conf syntax; `#` comments).
    fn read_conf_file(&mut self, path: &str) -> Result<(), CliError> {
        let text = std::fs::read_to_string(path).map_err(|e| CliError::ConfFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = match line.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim())),
                None => (line, None),
            };
            let Some((long, _, _)) = find_long(name) else {
                return Err(CliError::ConfFile {
                    path: path.to_owned(),
                    reason: format!("line {}: unknown option {name:?}", n + 1),
                });
            };
            self.apply(long, value)?;
        }
        Ok(())
    }
}

/// Splits getopt bundles: `-kN` becomes `-k -N`, `-p5353` becomes `-p 5353`.
fn expand_short_bundles(args: Vec<String>) -> Result<Vec<String>, CliError> {
    let mut out = Vec::with_capacity(args.len());
    for arg in args {
        if arg.starts_with("--") || !arg.starts_with('-') || arg.len() <= 2 {
            out.push(arg);
            continue;
        }
        let mut rest = &arg[1..];
        while let Some(c) = rest.chars().next() {
            let (_, kind, _) = find_short(c).ok_or_else(|| CliError::Unknown(format!("-{c}")))?;
            out.push(format!("-{c}"));
            rest = &rest[c.len_utf8()..];
            if kind != Arg::None && !rest.is_empty() {
                out.push(rest.to_owned());
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::{ServerTarget, UpstreamPolicy};
    use super::*;

    fn parse(args: &[&str]) -> Result<CacheConfig, CliError> {
        CacheConfig::parse_args(args.iter().copied())
    }

    #[test]
    fn legacy_manifest_args_are_accepted() {
        let config = parse(&[
            "-k",
            "--cache-size=1000",
            "--no-negcache",
            "--dns-loop-detect",
            "--log-facility=-",
            "--server=/cluster.local/127.0.0.1#10053",
            "--server=/in-addr.arpa/127.0.0.1#10053",
            "--server=/ip6.arpa/127.0.0.1#10053",
        ])
        .expect("legacy args");
        assert!(config.keep_in_foreground && config.no_negcache && config.dns_loop_detect);
        assert_eq!(config.cache_size, 1000);
        assert_eq!(config.servers.len(), 3);
        assert_eq!(config.servers[0].domains, vec!["cluster.local"]);
        assert_eq!(
            config.servers[0].target,
            ServerTarget::Address("127.0.0.1:10053".parse().expect("addr"))
        );
        let nanny = parse(&[
            "-k",
            "--cache-size=1000",
            "--server",
            "8.8.8.8",
            "--no-resolv",
        ])
        .expect("nanny");
        assert_eq!(
            nanny.servers[0].target,
            ServerTarget::Address("8.8.8.8:53".parse().expect("addr"))
        );
        assert!(nanny.no_resolv);
    }

    #[test]
    fn defaults_match_dnsmasq() {
        let config = parse(&[]).expect("defaults");
        assert_eq!(config.cache_size, 150);
        assert_eq!(config.forward_max, 150);
        assert_eq!(config.port, 53);
        assert_eq!(config.resolv_file, PathBuf::from("/etc/resolv.conf"));
        assert_eq!(config.upstream_policy, UpstreamPolicy::Fastest);
    }

    #[test]
    fn short_forms_with_separate_attached_and_bundled_values() {
        let config = parse(&[
            "-p",
            "5353",
            "-c500",
            "-kN",
            "-a",
            "127.0.0.1,::1",
            "-S",
            "/x/1.2.3.4",
        ])
        .expect("short forms");
        assert_eq!(config.port, 5353);
        assert_eq!(config.cache_size, 500);
        assert!(config.keep_in_foreground && config.no_negcache);
        assert_eq!(config.listen_addresses.len(), 2);
        assert_eq!(config.servers.len(), 1);
    }

    #[test]
    fn unknown_and_bad_options_are_named() {
        assert_eq!(
            parse(&["--bogus"]),
            Err(CliError::Unknown("--bogus".into()))
        );
        assert_eq!(parse(&["-Y"]), Err(CliError::Unknown("-Y".into())));
        let err = parse(&["--cache-size=lots"]).expect_err("bad");
        assert!(err.to_string().contains("--cache-size"), "{err}");
        assert_eq!(
            parse(&["--port"]),
            Err(CliError::MissingValue("--port".into()))
        );
        let err = parse(&["--upstream-policy=random"]).expect_err("bad");
        assert!(err.to_string().contains("--upstream-policy"));
    }

    #[test]
    fn options_without_effect_are_listed_and_unhonourable_ones_refused() {
        let config = parse(&["--no-dhcp-interface=eth0", "-b", "--cache-size=10"]).expect("ok");
        assert_eq!(
            config
                .ignored
                .iter()
                .map(|(o, _)| o.as_str())
                .collect::<Vec<_>>(),
            ["--no-dhcp-interface"]
        );
        assert!(config.bogus_priv);
        assert_eq!(config.cache_size, 10);
        for refused in [
            &["--user=root"][..],
            &["-Q", "53"],
            &["--interface=eth0"],
            &["-f"],
        ] {
            match parse(refused) {
                Err(CliError::Refused { option, reason }) => {
                    assert!(option.starts_with("--") && !reason.is_empty())
                }
                other => panic!("{refused:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn answer_policy_options() {
        let config = parse(&[
            "--address=/ads.example/tracker.example/0.0.0.0",
            "--address=/null.example/#",
            "--address=/nx.example/",
            "--address=/#/5.5.5.5",
            "--rebind-domain-ok=/cluster.local/svc.example/",
            "--rebind-domain-ok=corp",
            "--ipv4-only",
            "--ipv6-only=/cluster.local/",
            "--edns-packet-max=1232",
            "--filter-AAAA",
        ])
        .expect("ok");
        assert_eq!(config.addresses.len(), 3);
        assert_eq!(
            config.addresses[0].domains,
            ["ads.example", "tracker.example"]
        );
        assert_eq!(
            config.addresses[1].addresses,
            [
                "0.0.0.0".parse::<std::net::IpAddr>().expect("ip"),
                "::".parse().expect("ip")
            ]
        );
        assert_eq!(config.addresses[2].domains, [""]);
        assert_eq!(
            config.servers.len(),
            1,
            "an empty --address is a local-only domain"
        );
        assert_eq!(config.servers[0].target, ServerTarget::LocalOnly);
        assert_eq!(
            config.rebind_domain_ok,
            ["cluster.local", "svc.example", "corp"]
        );
        assert_eq!(config.ipv4_only, [""]);
        assert_eq!(config.ipv6_only, ["cluster.local"]);
        assert_eq!(config.edns_packet_max, Some(1232));
        assert!(config.filter_aaaa && !config.filter_a);
        for bad in [
            "--address=1.2.3.4",
            "--address=/x/not-an-ip",
            "--address=/#/",
            "--address=//1.2.3.4",
            "--address=/example.com//1.2.3.4",
            "--edns-packet-max=100",
        ] {
            assert!(
                matches!(parse(&[bad]), Err(CliError::BadValue { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn stale_weights_and_conf_file() {
        let dir = std::env::temp_dir().join(format!("dns-cache-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let conf = dir.join("dnsmasq.conf");
        std::fs::write(
            &conf,
            "# comment\nno-negcache\nserver=/corp/10.1.1.1\ncache-size=42\n",
        )
        .expect("write");
        let config = parse(&[
            "--use-stale-cache",
            "--upstream-policy=wrr",
            "--upstream-weight=10.0.0.1#53=3",
            &format!("--conf-file={}", conf.display()),
        ])
        .expect("ok");
        assert_eq!(config.use_stale_cache, Some(DEFAULT_STALE_SECS));
        assert_eq!(
            config.upstream_weights,
            vec![("10.0.0.1:53".parse().expect("addr"), 3)]
        );
        assert!(config.no_negcache);
        assert_eq!(config.cache_size, 42);
        assert_eq!(config.servers.len(), 1);
        let err = parse(&["--conf-file=/nonexistent/x.conf"]).expect_err("missing file");
        assert!(err.to_string().contains("/nonexistent/x.conf"));
    }
}
