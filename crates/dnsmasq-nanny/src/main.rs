//! The `dnsmasq-nanny` binary: Go-flag command line (exit 64 on bad usage), then supervise.

use std::process::ExitCode;
use std::sync::Arc;

use dnsmasq_nanny::cli::{CliError, NannyConfig};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

const EXIT_USAGE: u8 = 64;
const USAGE: &str = "Manages the DNS cache (dns-cache or dnsmasq), handles configuration given by the ConfigMap. Any arguments given after \"--\" will be passed directly to the cache itself.";

fn main() -> ExitCode {
    let config = match NannyConfig::parse_args(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(CliError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("dnsmasq-nanny: {error}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let level = match config.verbosity {
        0..=2 => "info",
        3..=4 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let health = match config.health_address {
            Some(addr) => {
                match dns_transport::bind_tcp(addr).and_then(tokio::net::TcpListener::from_std) {
                    Ok(listener) => Some(listener),
                    Err(error) => {
                        tracing::error!(%addr, %error, "cannot bind the health address");
                        return 1;
                    }
                }
            }
            None => None,
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        dnsmasq_nanny::run(config, Arc::default(), health, shutdown).await
    });
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; stopping the child"),
        _ = int.recv() => tracing::info!("SIGINT received; stopping the child"),
    }
    shutdown.cancel();
}
