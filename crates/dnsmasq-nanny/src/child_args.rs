//! Turning the ConfigMap into the child's configuration (contract §3.2): `--server` arguments
//! for a real dnsmasq, or `server=` lines of a servers file for dns-cache. Domains are sorted so
//! the result is deterministic (legacy used Go's random map order).

use std::collections::BTreeMap;

/// dnsmasq separates the port with `#`: `1.2.3.4:53` -> `1.2.3.4#53`,
/// `[2001:db8::3]:53` -> `[2001:db8::3]#53`; bare IPv6 and bracketed IPv6 without a port stay.
pub fn munge_port(server: &str) -> String {
    if server.starts_with('[') {
        if let Some(close) = server.rfind(']')
            && server[close + 1..].starts_with(':')
        {
            return format!("{}#{}", &server[..=close], &server[close + 2..]);
        }
        return server.to_owned();
    }
    match server.matches(':').count() {
        1 => server.replacen(':', "#", 1),
        _ => server.to_owned(),
    }
}

/// The resolved configuration: stub domains with their servers (already munged and resolved)
/// and the upstream servers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardingConfig {
    pub stub_domains: BTreeMap<String, Vec<String>>,
    pub upstreams: Vec<String>,
    /// The ConfigMap's `ipFamily` (dns-cache only: dnsmasq has no such mode).
    pub ip_family: Option<kube_dns_config::config_map::IpFamily>,
}

/// A real dnsmasq's argv: the extra args, then `--server /<domain>/<server>` per stub server,
/// `--server <server>` per upstream, and `--no-resolv` when there are upstreams.
pub fn dnsmasq_argv(extra: &[String], config: &ForwardingConfig) -> Vec<String> {
    let mut argv = extra.to_vec();
    for (domain, servers) in &config.stub_domains {
        for server in servers {
            argv.push("--server".into());
            argv.push(format!("/{domain}/{}", munge_port(server)));
        }
    }
    for server in &config.upstreams {
        argv.push("--server".into());
        argv.push(munge_port(server));
    }
    if !config.upstreams.is_empty() {
        argv.push("--no-resolv".into());
    }
    argv
}

/// dns-cache's servers file: the same servers as `server=` lines. Default servers in the file
/// make dns-cache ignore its resolv file, as `--no-resolv` does for dnsmasq.
pub fn servers_file(config: &ForwardingConfig) -> String {
    let mut text = String::from("# written by dnsmasq-nanny from the kube-dns ConfigMap\n");
    for (domain, servers) in &config.stub_domains {
        for server in servers {
            text.push_str(&format!("server=/{domain}/{}\n", munge_port(server)));
        }
    }
    for server in &config.upstreams {
        text.push_str(&format!("server={}\n", munge_port(server)));
    }
    match config.ip_family {
        Some(kube_dns_config::config_map::IpFamily::IPv4) => text.push_str("ipv4-only\n"),
        Some(kube_dns_config::config_map::IpFamily::IPv6) => text.push_str("ipv6-only\n"),
        None => {}
    }
    text
}

/// dns-cache's argv: the extra args plus `--servers-file=<path>` unless already given.
pub fn dns_cache_argv(extra: &[String], servers_file: &std::path::Path) -> Vec<String> {
    let mut argv = extra.to_vec();
    if !argv.iter().any(|a| a.starts_with("--servers-file")) {
        argv.push(format!("--servers-file={}", servers_file.display()));
    }
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(stubs: &[(&str, &[&str])], upstreams: &[&str]) -> ForwardingConfig {
        ForwardingConfig {
            stub_domains: stubs
                .iter()
                .map(|(d, s)| (d.to_string(), s.iter().map(|x| x.to_string()).collect()))
                .collect(),
            upstreams: upstreams.iter().map(|s| s.to_string()).collect(),
            ip_family: None,
        }
    }

    /// The argv table of contract §3.2 (domains sorted, hostnames already resolved).
    #[test]
    fn legacy_argv_table() {
        let extra = vec!["--abc".to_owned()];
        assert_eq!(dnsmasq_argv(&extra, &config(&[], &[])), vec!["--abc"]);
        assert_eq!(
            dnsmasq_argv(
                &extra,
                &config(
                    &[
                        ("acme.local", &["1.1.1.1"]),
                        ("widget.local", &["2.2.2.2:10053", "3.3.3.3"]),
                        ("google.local", &["8.8.8.8"])
                    ],
                    &[]
                )
            ),
            vec![
                "--abc",
                "--server",
                "/acme.local/1.1.1.1",
                "--server",
                "/google.local/8.8.8.8",
                "--server",
                "/widget.local/2.2.2.2#10053",
                "--server",
                "/widget.local/3.3.3.3"
            ]
        );
        assert_eq!(
            dnsmasq_argv(&extra, &config(&[], &["2.2.2.2:10053", "3.3.3.3"])),
            vec![
                "--abc",
                "--server",
                "2.2.2.2#10053",
                "--server",
                "3.3.3.3",
                "--no-resolv"
            ]
        );
        assert_eq!(
            dnsmasq_argv(
                &extra,
                &config(
                    &[],
                    &["2001:db8:1::1", "[2001:db8:2::2]", "[2001:db8:3::3]:53"]
                )
            ),
            vec![
                "--abc",
                "--server",
                "2001:db8:1::1",
                "--server",
                "[2001:db8:2::2]",
                "--server",
                "[2001:db8:3::3]#53",
                "--no-resolv"
            ]
        );
        assert_eq!(
            dnsmasq_argv(&extra, &config(&[("acme.local", &["1.2.3.4"])], &[])),
            vec!["--abc", "--server", "/acme.local/1.2.3.4"]
        );
        assert_eq!(
            dnsmasq_argv(&extra, &config(&[], &["5.6.7.8"])),
            vec!["--abc", "--server", "5.6.7.8", "--no-resolv"]
        );
    }

    #[test]
    fn servers_file_lines() {
        let text = servers_file(&config(&[("acme.local", &["1.2.3.4:5353"])], &["8.8.8.8"]));
        assert!(text.contains("server=/acme.local/1.2.3.4#5353\n"));
        assert!(text.ends_with("server=8.8.8.8\n"));
        let argv = dns_cache_argv(&["-k".into()], std::path::Path::new("/tmp/s"));
        assert_eq!(argv, vec!["-k", "--servers-file=/tmp/s"]);
        let mut v4 = config(&[], &[]);
        v4.ip_family = Some(kube_dns_config::config_map::IpFamily::IPv4);
        assert!(servers_file(&v4).ends_with("\nipv4-only\n"));
        v4.ip_family = Some(kube_dns_config::config_map::IpFamily::IPv6);
        assert!(servers_file(&v4).ends_with("\nipv6-only\n"));
    }
}
