//! `pod-host` binary: flags, telemetry, listener, SIGTERM/SIGINT → [`pod_host::run`].
//! Run as `pod-host --internal-reaper` it is the orphan reaper instead (see
//! `pod_host::reaper`); that mode is checked before anything else starts.

use clap::Parser;
use tokio::net::TcpListener;

fn main() -> std::process::ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == pod_host::reaper::REAPER_ARG)
    {
        pod_host::reaper::reaper_main();
    }
    let args = pod_host::Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pod-host: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main(args))
}

async fn async_main(args: pod_host::Args) -> std::process::ExitCode {
    let telemetry = ipa_common::Telemetry::init("pod-host", args.log_format);
    let code = match pod_host::HostConfig::from_args(&args) {
        // A flag value that cannot be used: a usage error, like clap's.
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
        Ok(config) => match start(args, config).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                std::process::ExitCode::FAILURE
            }
        },
    };
    telemetry.shutdown();
    code
}

async fn start(
    args: pod_host::Args,
    config: pod_host::HostConfig,
) -> Result<(), Box<dyn std::error::Error>> {
    let shutdown = ipa_common::shutdown::on_signals()?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    // The metrics endpoint stops with the process (its own token, so
    // scrapes keep working while pods are being stopped).
    let metrics = tokio_util::task::TaskTracker::new();
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    if let Some(addr) = args.metrics_listen {
        pod_host::metrics::set_served();
        let source = std::sync::Arc::new(pod_host::metrics::HostSource);
        ipa_common::metrics::serve(addr, source, &metrics, metrics_stop.clone())
            .await
            .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    }
    ipa_common::announce_listening(listener.local_addr()?);
    let result = pod_host::run(config, listener, shutdown).await;
    metrics_stop.cancel();
    metrics.close();
    metrics.wait().await;
    result?;
    Ok(())
}
