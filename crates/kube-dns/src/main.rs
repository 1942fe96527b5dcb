//! The `kube-dns` binary: parse flags (exit 64 on bad usage), bind, run, exit 0 after SIGTERM.

use std::process::ExitCode;

use kube_dns::Config;
use kube_dns::cli::{Cli, MetricsEnv};
use tokio_util::sync::CancellationToken;

use daemon_support::EXIT_USAGE;

fn main() -> ExitCode {
    let blocked = daemon_support::signals::block_early();
    let cli = match Cli::parse_args(std::env::args()) {
        Ok(cli) => cli,
        Err(error) => return daemon_support::usage_exit(&error),
    };
    if let Some(version) = &cli.version {
        let version_text = env!("CARGO_PKG_VERSION");
        match version.as_str() {
            "raw" => println!("{version_text:?}"),
            "true" | "1" | "t" | "T" | "TRUE" | "True" => println!("Kube-DNS {version_text}"),
            _ => {}
        }
        if version != "false" {
            return ExitCode::SUCCESS;
        }
    }
    let config = match MetricsEnv::from_env(|k| std::env::var(k).ok())
        .map_err(|e| e.to_string())
        .and_then(|env| Config::from_cli(&cli, env).map_err(|e| e.to_string()))
    {
        Ok(config) => config,
        Err(message) => {
            eprintln!("kube-dns: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    daemon_support::init_tracing(&format!(
        "{},kube_client=warn,hyper=warn,tower=warn",
        daemon_support::klog_level(cli.klog.v)
    ));
    tracing::info!(?config, "starting kube-dns {}", env!("CARGO_PKG_VERSION"));
    let listeners = match kube_dns::Listeners::bind(&config.listen) {
        Ok(listeners) => listeners,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match daemon_support::runtime(None) {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let signals = daemon_support::signals::Signals::install(blocked)
            .map_err(kube_dns::RunError::Signals)?;
        let client = kube_dns::api_client(&config.api).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(daemon_support::cancel_on_signal(
            signals,
            shutdown.clone(),
            "stopping",
        ));
        kube_dns::run(config, listeners, client, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "kube-dns failed");
            ExitCode::FAILURE
        }
    }
}
