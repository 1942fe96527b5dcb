//! `hostile-bench`: runs issue 12's attacks at full size, each against a fresh server (dns-cache,
//! kube-dns, the sidecar, the nanny, and the `dnsmasq` on PATH for the DNS rows), and prints the peak
//! memory, what a well-behaved client got meanwhile and what was refused. `bench/hostile/run.sh`
//! builds the release binaries and runs it; see docs/security.md for the results.
// A benchmark times real processes on the real clocks (see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod attacks;
mod report;
mod servers;

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "hostile-bench")]
struct Args {
    /// Where kube-dns, dns-cache, sidecar and dnsmasq-nanny are (a release target directory).
    #[arg(long)]
    bin_dir: PathBuf,
    /// The cluster kube-dns serves (the fake API server loads it).
    #[arg(long)]
    cluster: PathBuf,
    /// Write every row as JSON here too.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Only the attacks whose name contains one of these (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binaries = servers::Binaries {
        dir: args.bin_dir,
        cluster: args.cluster,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rows = runtime.block_on(attacks::run_all(&binaries, &args.only))?;
    println!("{}", report::markdown(&rows));
    if let Some(path) = args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
