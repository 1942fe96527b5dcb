//! The `sidecar` binary: parse flags (exit 64 on bad usage), serve, exit 0 after SIGTERM.

use std::process::ExitCode;

use sidecar::cli::Cli;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let blocked = daemon_support::signals::block_early();
    let cli = match Cli::parse_args(std::env::args()) {
        Ok(cli) => cli,
        Err(error) => return daemon_support::usage_exit(&error),
    };
    if cli.version.as_deref().is_some_and(|v| v != "false") {
        println!("Kube-DNS {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    daemon_support::init_tracing(&format!(
        "{},hyper=warn,tower=warn",
        daemon_support::klog_level(cli.klog.v)
    ));
    tracing::info!(?cli, "starting sidecar {}", env!("CARGO_PKG_VERSION"));
    let runtime = match daemon_support::runtime(Some(1)) {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let signals = daemon_support::signals::Signals::install(blocked)?;
        let listener = sidecar::bind(&cli).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(daemon_support::cancel_on_signal(
            signals,
            shutdown.clone(),
            "stopping",
        ));
        sidecar::run(cli, listener, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("sidecar failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}
