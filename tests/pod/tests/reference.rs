//! docs/reference.md lists exactly the flags each binary's parser knows: a flag added to the code
//! without its documentation, or documented but gone, fails here. (Endpoints and metrics are
//! checked against the running binaries by the pod test.)

use std::collections::BTreeSet;

use anyhow::ensure;
use clap::CommandFactory;
use kube_dns_pod_tests::reference_entries;

fn documented(binary: &str) -> anyhow::Result<BTreeSet<String>> {
    Ok(reference_entries(binary, "Flags")?.into_iter().collect())
}

fn compare(binary: &str, code: BTreeSet<String>) -> anyhow::Result<()> {
    let doc = documented(binary)?;
    let missing: Vec<&String> = code.difference(&doc).collect();
    let stale: Vec<&String> = doc.difference(&code).collect();
    ensure!(
        missing.is_empty() && stale.is_empty(),
        "{binary}: flags not in docs/reference.md: {missing:?}; documented but unknown to the code: {stale:?}"
    );
    Ok(())
}

fn clap_flags(command: clap::Command) -> BTreeSet<String> {
    command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|long| *long != "help")
        .map(|long| format!("--{long}"))
        .collect()
}

#[test]
fn kube_dns_flags_are_documented() -> anyhow::Result<()> {
    compare("kube-dns", clap_flags(kube_dns::cli::Cli::command()))
}

#[test]
fn sidecar_flags_are_documented() -> anyhow::Result<()> {
    compare("sidecar", clap_flags(sidecar::cli::Cli::command()))
}

#[test]
fn dnsmasq_nanny_flags_are_documented() -> anyhow::Result<()> {
    compare(
        "dnsmasq-nanny",
        dnsmasq_nanny::cli::known_flags()
            .map(|f| format!("-{f}"))
            .collect(),
    )
}

#[test]
fn dns_cache_options_are_documented() -> anyhow::Result<()> {
    let mut code = BTreeSet::new();
    for (long, short, _) in dns_cache::config::known_options() {
        code.insert(format!("--{long}"));
        if let Some(c) = short {
            code.insert(format!("-{c}"));
        }
    }
    compare("dns-cache", code)
}

/// Each dnsmasq option dns-cache accepts without effect, or refuses, says so in its row of
/// docs/reference.md with the reason the code gives.
#[test]
fn dns_cache_options_without_effect_and_refused_give_their_reason() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/reference.md"),
    )?;
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("`dns-cache`"))
        .ok_or_else(|| anyhow::anyhow!("docs/reference.md has no dns-cache section"))?;
    for (long, _, status) in dns_cache::config::known_options() {
        let expected = match status {
            dns_cache::config::Status::Implemented => continue,
            dns_cache::config::Status::NoEffect(why) => format!("no effect: {why} |"),
            dns_cache::config::Status::Refused(why) => format!("refused: {why} |"),
        };
        let flag = format!("`--{long}` |");
        let row = section
            .lines()
            .find(|l| l.starts_with("| `") && l.contains(&flag));
        ensure!(
            row.is_some_and(|r| r.ends_with(&expected)),
            "--{long}: its row must end with {expected:?}, found {row:?}"
        );
    }
    Ok(())
}
