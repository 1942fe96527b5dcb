//! The `dnsmasq-nanny` binary: Go-flag command line (exit 64 on bad usage), then supervise.

use std::process::ExitCode;
use std::sync::Arc;

use dnsmasq_nanny::cli::{CliError, NannyConfig};
use tokio_util::sync::CancellationToken;

use daemon_support::EXIT_USAGE;
const USAGE: &str = "Manages the DNS cache (dns-cache or dnsmasq), handles configuration given by the ConfigMap. Any arguments given after \"--\" will be passed directly to the cache itself.";

fn main() -> ExitCode {
    let blocked = daemon_support::signals::block_early();
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
    daemon_support::init_tracing(daemon_support::klog_level(config.verbosity));
    let runtime = match daemon_support::runtime(Some(1)) {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let signals = match daemon_support::signals::Signals::install(blocked) {
            Ok(signals) => signals,
            Err(error) => {
                tracing::error!(%error, "cannot install signal handlers");
                return 1;
            }
        };
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
        tokio::spawn(daemon_support::cancel_on_signal(
            signals,
            shutdown.clone(),
            "stopping the child",
        ));
        dnsmasq_nanny::run(config, Arc::default(), health, shutdown).await
    });
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
