//! The conntrack bypass rules: NOTRACK for the cache's addresses on its port, UDP and TCP, in
//! both directions, so its queries never enter the conntrack table (the race of
//! kubernetes/kubernetes#56903 and the table's size limit do not apply).
//!
//! Two backends, as kube-proxy has them:
//! - [`Backend::Iptables`]: `iptables`/`ip6tables` rules in the `raw` table (NOTRACK) and the
//!   `filter` table (ACCEPT, for nodes whose firewall drops by default), inserted first in their
//!   chain, checked with `-C` and removed with `-D`, exactly as NodeLocal DNSCache lays them out.
//! - [`Backend::Nftables`]: our own table `inet node-local-dns`, replaced in one transaction
//!   when any rule is missing and deleted on teardown. It holds no accept rules: in nftables an
//!   accept ends only its own chain, and another table's drop still applies.
//!
//! The tools are run as programs (as kube-proxy and NodeLocal DNSCache do): the rules are then
//! exactly what `iptables -S` and `nft list` show an operator.

use std::io::{self, Write};
use std::net::IpAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `--netfilter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetfilterMode {
    /// nftables when kube-proxy's nftables table exists, iptables otherwise.
    #[default]
    Auto,
    Iptables,
    Nftables,
    /// No rules (the operator installs them).
    None,
}

impl std::str::FromStr for NetfilterMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(NetfilterMode::Auto),
            "iptables" => Ok(NetfilterMode::Iptables),
            "nftables" => Ok(NetfilterMode::Nftables),
            "none" => Ok(NetfilterMode::None),
            other => Err(format!("{other:?} is not auto, iptables, nftables or none")),
        }
    }
}

/// Where the rules go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Iptables,
    Nftables,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
        }
    }
}

/// Our nftables table.
pub const NFT_TABLE: &str = "node-local-dns";
/// kube-proxy's nftables-mode table: its presence means kube-proxy runs in nftables mode.
pub const KUBE_PROXY_NFT_TABLE: &str = "kube-proxy";

/// Why a rule could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NetfilterError {
    #[error("cannot run {program}: {source} (install iptables and nftables, or --netfilter=none)")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{command} did not finish within {after:?}; killed")]
    TimedOut { command: String, after: Duration },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
}

/// The programs (found on PATH by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub iptables: String,
    pub ip6tables: String,
    pub nft: String,
    /// How long one run may take ([`TOOL_TIMEOUT`]).
    pub timeout: Duration,
}

impl Default for Tools {
    fn default() -> Self {
        Tools {
            iptables: "iptables".into(),
            ip6tables: "ip6tables".into(),
            nft: "nft".into(),
            timeout: TOOL_TIMEOUT,
        }
    }
}

/// How long one run of a tool may take before it is killed (a hung `iptables` waiting on a
/// lock, say): the start-up, the checks and the teardown must not hang with it.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

fn run(
    timeout: Duration,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<Output, NetfilterError> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn_err = |source| NetfilterError::Spawn {
        program: program.to_owned(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_err)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that exits without reading is reported by its status below.
        let _ = pipe.write_all(text.as_bytes());
    }
    // The tools print little (a rule check, our own small table, the list of table names), so
    // their output fits the pipes until they exit; the child is only reaped here, so a kill
    // cannot reach another process that took its pid.
    let deadline = daemon_support::clock::now() + timeout;
    loop {
        match child.try_wait().map_err(spawn_err)? {
            Some(_) => return child.wait_with_output().map_err(spawn_err),
            None if daemon_support::clock::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NetfilterError::TimedOut {
                    command: format!("{program} {}", args.join(" ")),
                    after: timeout,
                });
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn failed(program: &str, args: &[&str], output: &Output) -> NetfilterError {
    NetfilterError::Failed {
        command: format!("{program} {}", args.join(" ")),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    }
}

/// Picks the backend for `mode` (None for `--netfilter=none`).
pub fn detect(mode: NetfilterMode, tools: &Tools) -> Option<Backend> {
    match mode {
        NetfilterMode::None => None,
        NetfilterMode::Iptables => Some(Backend::Iptables),
        NetfilterMode::Nftables => Some(Backend::Nftables),
        NetfilterMode::Auto => {
            // The table names only: kube-proxy's table itself can be megabytes.
            let tables = run(tools.timeout, &tools.nft, &["list", "tables"], None);
            Some(match tables {
                Ok(output) if output.status.success() => {
                    let text = String::from_utf8_lossy(&output.stdout);
                    if kube_proxy_nftables(&text) {
                        Backend::Nftables
                    } else {
                        tracing::info!("no kube-proxy nftables table: iptables rules");
                        Backend::Iptables
                    }
                }
                Ok(output) => {
                    tracing::info!(stderr = %String::from_utf8_lossy(&output.stderr).trim(), "nft list tables failed: iptables rules");
                    Backend::Iptables
                }
                Err(error) => {
                    tracing::info!(%error, "no nft: iptables rules");
                    Backend::Iptables
                }
            })
        }
    }
}

/// Whether `nft list tables` shows kube-proxy's table (IPv4 or IPv6-only clusters).
pub fn kube_proxy_nftables(tables: &str) -> bool {
    tables.lines().any(|line| {
        matches!(
            line.split_whitespace().collect::<Vec<_>>().as_slice(),
            ["table", "ip" | "ip6", KUBE_PROXY_NFT_TABLE]
        )
    })
}

/// One iptables rule: family, table, chain and the match/target words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesRule {
    pub v6: bool,
    pub table: &'static str,
    pub chain: &'static str,
    pub spec: Vec<String>,
}

/// NodeLocal DNSCache's rules for each address: NOTRACK of queries to it (PREROUTING, and
/// OUTPUT for the node's own processes), NOTRACK of its replies (OUTPUT), and ACCEPT of both in
/// the filter table.
pub fn iptables_rules(ips: &[IpAddr], port: u16) -> Vec<IptablesRule> {
    let mut rules = Vec::new();
    for ip in ips {
        let v6 = ip.is_ipv6();
        for proto in ["udp", "tcp"] {
            let to = |target: &str| -> Vec<String> {
                [
                    "-d",
                    &ip.to_string(),
                    "-p",
                    proto,
                    "--dport",
                    &port.to_string(),
                    "-j",
                    target,
                ]
                .map(str::to_owned)
                .to_vec()
            };
            let from = |target: &str| -> Vec<String> {
                [
                    "-s",
                    &ip.to_string(),
                    "-p",
                    proto,
                    "--sport",
                    &port.to_string(),
                    "-j",
                    target,
                ]
                .map(str::to_owned)
                .to_vec()
            };
            let rule = |table, chain, spec| IptablesRule {
                v6,
                table,
                chain,
                spec,
            };
            rules.push(rule("raw", "PREROUTING", to("NOTRACK")));
            rules.push(rule("raw", "OUTPUT", to("NOTRACK")));
            rules.push(rule("raw", "OUTPUT", from("NOTRACK")));
            rules.push(rule("filter", "INPUT", to("ACCEPT")));
            rules.push(rule("filter", "OUTPUT", from("ACCEPT")));
        }
    }
    rules
}

/// The rule lines of our nftables table, chain by chain, as `nft list` prints them.
pub fn nft_chains(ips: &[IpAddr], port: u16) -> [(&'static str, &'static str, Vec<String>); 2] {
    let mut prerouting = Vec::new();
    let mut output = Vec::new();
    for ip in ips {
        let family = if ip.is_ipv6() { "ip6" } else { "ip" };
        for proto in ["udp", "tcp"] {
            prerouting.push(format!("{family} daddr {ip} {proto} dport {port} notrack"));
            output.push(format!("{family} daddr {ip} {proto} dport {port} notrack"));
            output.push(format!("{family} saddr {ip} {proto} sport {port} notrack"));
        }
    }
    [
        ("prerouting", "prerouting", prerouting),
        ("output", "output", output),
    ]
}

/// The rules of `nft list table` output, as (chain, rule line with single spaces).
pub fn nft_rules(listing: &str) -> Vec<(String, String)> {
    let mut chain = String::new();
    let mut rules = Vec::new();
    for line in listing.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["chain", name, "{"] => chain = (*name).to_owned(),
            ["}"] | [] | ["table", ..] | ["type", ..] => {}
            _ => rules.push((chain.clone(), words.join(" "))),
        }
    }
    rules
}

/// The script that adds the `missing` rules (creating the table and chains if need be, which
/// leaves existing ones as they are).
fn nft_add_script(missing: &[&(String, String)]) -> String {
    let mut script = format!("table inet {NFT_TABLE} {{\n");
    for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
        script.push_str(&format!(
            "  chain {chain} {{ type filter hook {hook} priority raw; policy accept; }}\n"
        ));
    }
    script.push_str("}\n");
    for (chain, line) in missing {
        script.push_str(&format!("add rule inet {NFT_TABLE} {chain} {line}\n"));
    }
    script
}

/// The script that replaces our table in one transaction (creating it first, so the delete
/// cannot fail).
pub fn nft_script(ips: &[IpAddr], port: u16) -> String {
    let mut script = format!("table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n");
    script.push_str(&format!("table inet {NFT_TABLE} {{\n"));
    for (chain, hook, lines) in nft_chains(ips, port) {
        script.push_str(&format!(
            "  chain {chain} {{\n    type filter hook {hook} priority raw; policy accept;\n"
        ));
        for line in lines {
            script.push_str(&format!("    {line}\n"));
        }
        script.push_str("  }\n");
    }
    script.push_str("}\n");
    script
}

/// The rules for a set of addresses on one backend.
#[derive(Debug, Clone)]
pub struct Rules {
    pub backend: Backend,
    pub ips: Vec<IpAddr>,
    pub port: u16,
    pub tools: Tools,
}

impl Rules {
    fn iptables(&self, v6: bool) -> &str {
        if v6 {
            &self.tools.ip6tables
        } else {
            &self.tools.iptables
        }
    }

    /// Whether an iptables rule is in place (`-C`: 0 yes, 1 no, anything else an error).
    fn has(&self, rule: &IptablesRule) -> Result<bool, NetfilterError> {
        let program = self.iptables(rule.v6);
        let mut args = vec!["-w", "5", "-t", rule.table, "-C", rule.chain];
        args.extend(rule.spec.iter().map(String::as_str));
        let output = run(self.tools.timeout, program, &args, None)?;
        match output.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(failed(program, &args, &output)),
        }
    }

    fn change(&self, rule: &IptablesRule, op: &str) -> Result<(), NetfilterError> {
        let program = self.iptables(rule.v6);
        let mut args = vec!["-w", "5", "-t", rule.table, op, rule.chain];
        if op == "-I" {
            args.push("1");
        }
        args.extend(rule.spec.iter().map(String::as_str));
        let output = run(self.tools.timeout, program, &args, None)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(failed(program, &args, &output))
        }
    }

    /// The rules our table holds now, as (chain, rule line) (None: no table).
    pub fn nft_present(&self) -> Result<Option<Vec<(String, String)>>, NetfilterError> {
        let args = ["list", "table", "inet", NFT_TABLE];
        let output = run(self.tools.timeout, &self.tools.nft, &args, None)?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(failed(&self.tools.nft, &args, &output));
        }
        Ok(Some(nft_rules(&String::from_utf8_lossy(&output.stdout))))
    }

    /// Puts every missing rule in place; returns how many were missing. With `prune` (at
    /// start) the nftables table is also rid of rules that are not ours (an earlier
    /// `--local-ip`); without, only what is missing is added, so an instance with other
    /// addresses beside this one keeps its rules.
    pub fn ensure(&self, prune: bool) -> Result<usize, NetfilterError> {
        match self.backend {
            Backend::Iptables => {
                let mut added = 0;
                for rule in iptables_rules(&self.ips, self.port) {
                    if !self.has(&rule)? {
                        self.change(&rule, "-I")?;
                        added += 1;
                    }
                }
                Ok(added)
            }
            Backend::Nftables => {
                let present = self.nft_present()?.unwrap_or_default();
                let expected: Vec<(String, String)> = nft_chains(&self.ips, self.port)
                    .into_iter()
                    .flat_map(|(chain, _, lines)| {
                        lines.into_iter().map(move |line| (chain.to_owned(), line))
                    })
                    .collect();
                let missing: Vec<&(String, String)> =
                    expected.iter().filter(|r| !present.contains(r)).collect();
                // With `prune`, rules of addresses no longer ours (a changed --local-ip) go too.
                let stale = present.iter().filter(|r| !expected.contains(r)).count();
                let script = if prune && (!missing.is_empty() || stale > 0) {
                    Some(nft_script(&self.ips, self.port))
                } else if !missing.is_empty() {
                    Some(nft_add_script(&missing))
                } else {
                    None
                };
                if let Some(script) = script {
                    let output = run(
                        self.tools.timeout,
                        &self.tools.nft,
                        &["-f", "-"],
                        Some(&script),
                    )?;
                    if !output.status.success() {
                        return Err(failed(&self.tools.nft, &["-f", "-"], &output));
                    }
                }
                Ok(missing.len())
            }
        }
    }

    /// Removes the rules (every copy of each).
    pub fn remove(&self) -> Result<(), NetfilterError> {
        match self.backend {
            Backend::Iptables => {
                for rule in iptables_rules(&self.ips, self.port) {
                    // A rule inserted twice (two instances racing) is removed twice.
                    for _ in 0..8 {
                        if !self.has(&rule)? {
                            break;
                        }
                        self.change(&rule, "-D")?;
                    }
                }
                Ok(())
            }
            Backend::Nftables => {
                if self.nft_present()?.is_none() {
                    return Ok(());
                }
                let args = ["delete", "table", "inet", NFT_TABLE];
                let output = run(self.tools.timeout, &self.tools.nft, &args, None)?;
                if output.status.success() {
                    Ok(())
                } else {
                    Err(failed(&self.tools.nft, &args, &output))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips() -> Vec<IpAddr> {
        vec![
            "169.254.20.10".parse().expect("ip"),
            "fd00::a".parse().expect("ip"),
        ]
    }

    #[test]
    fn iptables_rules_are_nodelocal_dnscaches_per_address_and_protocol() {
        let rules = iptables_rules(&ips(), 53);
        assert_eq!(rules.len(), 2 * 2 * 5);
        let first = &rules[0];
        assert!(!first.v6);
        assert_eq!((first.table, first.chain), ("raw", "PREROUTING"));
        assert_eq!(
            first.spec.join(" "),
            "-d 169.254.20.10 -p udp --dport 53 -j NOTRACK"
        );
        let lines: Vec<String> = rules
            .iter()
            .filter(|r| !r.v6)
            .map(|r| format!("{} {} {}", r.table, r.chain, r.spec.join(" ")))
            .collect();
        for expected in [
            "raw OUTPUT -d 169.254.20.10 -p tcp --dport 53 -j NOTRACK",
            "raw OUTPUT -s 169.254.20.10 -p udp --sport 53 -j NOTRACK",
            "filter INPUT -d 169.254.20.10 -p tcp --dport 53 -j ACCEPT",
            "filter OUTPUT -s 169.254.20.10 -p udp --sport 53 -j ACCEPT",
        ] {
            assert!(
                lines.iter().any(|l| l == expected),
                "{expected} in {lines:?}"
            );
        }
        assert_eq!(rules.iter().filter(|r| r.v6).count(), 10);
    }

    #[test]
    fn the_nft_table_is_replaced_in_one_script_without_accept_rules() {
        let script = nft_script(&ips(), 5353);
        assert!(script.starts_with(
            "table inet node-local-dns\ndelete table inet node-local-dns\ntable inet node-local-dns {\n"
        ));
        assert!(script.contains("type filter hook prerouting priority raw; policy accept;"));
        assert!(script.contains("ip daddr 169.254.20.10 udp dport 5353 notrack"));
        assert!(script.contains("ip6 saddr fd00::a tcp sport 5353 notrack"));
        assert!(!script.contains("accept\n"), "{script}");
        let [pre, out] = nft_chains(&ips(), 53);
        assert_eq!((pre.2.len(), out.2.len()), (4, 8));
    }

    #[test]
    fn modes_parse_and_fixed_modes_skip_detection() {
        assert_eq!("auto".parse(), Ok(NetfilterMode::Auto));
        assert_eq!("nftables".parse(), Ok(NetfilterMode::Nftables));
        assert!("ipvs".parse::<NetfilterMode>().is_err());
        let missing = Tools {
            nft: "/nonexistent/nft".into(),
            ..Tools::default()
        };
        assert_eq!(detect(NetfilterMode::None, &missing), None);
        assert_eq!(
            detect(NetfilterMode::Nftables, &missing),
            Some(Backend::Nftables)
        );
        // Without nft, auto falls back to iptables.
        assert_eq!(
            detect(NetfilterMode::Auto, &missing),
            Some(Backend::Iptables)
        );
    }

    #[test]
    fn nft_listings_are_read_chain_by_chain() {
        let listing = "table inet node-local-dns {\n\tchain prerouting {\n\t\ttype filter hook prerouting priority raw; policy accept;\n\t\tip daddr 169.254.20.10 udp dport 53 notrack\n\t}\n\n\tchain output {\n\t\ttype filter hook output priority raw; policy accept;\n\t\tip daddr 169.254.20.10 udp dport 53 notrack\n\t}\n}\n";
        let rules = nft_rules(listing);
        assert_eq!(
            rules,
            vec![
                (
                    "prerouting".into(),
                    "ip daddr 169.254.20.10 udp dport 53 notrack".into()
                ),
                (
                    "output".into(),
                    "ip daddr 169.254.20.10 udp dport 53 notrack".into()
                ),
            ]
        );
        // The same line in the other chain does not stand for a deleted one.
        let output_only: Vec<_> = rules
            .iter()
            .filter(|(c, _)| c == "output")
            .cloned()
            .collect();
        assert!(!output_only.contains(&rules[0]));
        let missing = [&rules[0]];
        let script = nft_add_script(&missing);
        assert!(script.contains(
            "add rule inet node-local-dns prerouting ip daddr 169.254.20.10 udp dport 53 notrack\n"
        ));
        assert!(!script.contains("delete"));
    }

    #[test]
    fn kube_proxy_is_found_by_its_tables_of_either_family() {
        assert!(kube_proxy_nftables(
            "table inet filter\ntable ip kube-proxy\n"
        ));
        assert!(kube_proxy_nftables("table ip6 kube-proxy\n"));
        assert!(!kube_proxy_nftables(
            "table inet kube-proxy-old\ntable ip nat\n"
        ));
        assert!(!kube_proxy_nftables(""));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // times the kill, on the real clock
    fn a_hung_tool_is_killed_and_named() {
        let started = std::time::Instant::now();
        let error = run(Duration::from_millis(200), "sleep", &["60"], None).expect_err("killed");
        assert!(matches!(error, NetfilterError::TimedOut { .. }), "{error}");
        assert!(error.to_string().contains("sleep 60"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_missing_tool_is_a_spawn_error_naming_it() {
        let rules = Rules {
            backend: Backend::Iptables,
            ips: ips(),
            port: 53,
            tools: Tools {
                iptables: "/nonexistent/iptables".into(),
                ..Tools::default()
            },
        };
        let error = rules.ensure(true).expect_err("no iptables");
        assert!(
            error.to_string().contains("/nonexistent/iptables"),
            "{error}"
        );
    }
}
