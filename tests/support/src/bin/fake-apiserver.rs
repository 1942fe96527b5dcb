//! `fake-apiserver`: serves the test fake Kubernetes API over HTTP for process-level tests and
//! manual runs (`kubectl --kubeconfig <out> get svc -A`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kube_dns_test_support::{FakeApiServer, write_kubeconfig};

/// Exit code for bad usage or configuration (sysexits EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "fake-apiserver",
    about = "A fake Kubernetes API server for kube-dns tests"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port (reported on stderr).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Cluster YAML to load (repeatable): `---` documents or a `kind: List`.
    #[arg(long = "cluster", value_name = "PATH")]
    clusters: Vec<PathBuf>,
    /// Write a kubeconfig pointing at this server.
    #[arg(long, value_name = "PATH")]
    kubeconfig_out: Option<PathBuf>,
    /// Interval between watch bookmarks, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    bookmark_interval_ms: u64,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let fake = FakeApiServer::new();
    if args.bookmark_interval_ms == 0 {
        eprintln!("fake-apiserver: --bookmark-interval-ms must be positive");
        return ExitCode::from(EXIT_USAGE);
    }
    fake.set_bookmark_interval(Duration::from_millis(args.bookmark_interval_ms));
    for path in &args.clusters {
        match fake.load_yaml_file(path) {
            Ok(n) => tracing::info!(path = %path.display(), objects = n, "loaded cluster"),
            Err(e) => {
                eprintln!("fake-apiserver: {e:#}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake-apiserver: starting runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(fake, &args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-apiserver: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(fake: FakeApiServer, args: &Args) -> anyhow::Result<()> {
    let (addr, server) = fake.serve(args.listen).await?;
    if let Some(path) = &args.kubeconfig_out {
        write_kubeconfig(path, &format!("http://{addr}"))?;
    }
    // Handlers first: a harness may send SIGTERM as soon as it reads the listening line.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let interrupt = tokio::signal::ctrl_c();
    // Harnesses read this exact phrase (see process::LISTENING_PHRASE); after the kubeconfig
    // is written, so a reader of the line can use it.
    eprintln!("listening on http {addr}");
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        r = interrupt => { r?; tracing::info!("interrupt: shutting down"); }
    }
    server.abort();
    Ok(())
}
