//! The `dns-cache` binary: dnsmasq-compatible flags (exit 64 on bad usage), bind, serve;
//! SIGHUP reloads, SIGUSR1 logs statistics, SIGTERM/SIGINT stop after `--lameduck`
//! ([`dns_cache::reload`]); the signals are held from the first line until handled.

use std::process::ExitCode;

use daemon_support::EXIT_USAGE;
use dns_cache::CacheConfig;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let blocked = daemon_support::signals::block_early();
    let config = match CacheConfig::parse_args(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("dns-cache: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some(path) = &config.health_probe {
        return match dns_cache::health::probe(path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(reason) => {
                eprintln!("dns-cache: unhealthy: {reason}");
                ExitCode::FAILURE
            }
        };
    }
    if config.version {
        println!(
            "dns-cache version {} (kube-dns-rs; dnsmasq 2.90-compatible command line and statistics)",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    daemon_support::init_tracing("info");
    let runtime = match daemon_support::runtime(None) {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let signals = daemon_support::signals::Signals::install(blocked)
            .map_err(dns_cache::RunError::Signals)?;
        let listeners = dns_cache::Listeners::bind(&config)?;
        let shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(dns_cache::handle_signals(
            signals,
            shutdown.clone(),
            ready_rx,
        ));
        dns_cache::run(config, listeners, shutdown, ready_tx).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "dns-cache failed");
            ExitCode::FAILURE
        }
    }
}
