//! The `central-manager` binary: parse flags, set up logging, bind the
//! listener, serve until SIGTERM/SIGINT. Everything else is in the library.

use std::process::ExitCode;

use central_manager::{Application, BoxError, Config};
use ipa_common::Telemetry;
use tokio::net::TcpListener;

/// How long a deposed leader may take to drain before it exits anyway.
const DEPOSED_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse_and_validate();
    let telemetry = Telemetry::init("central-manager", config.log_format);
    let result = serve(config).await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "central-manager failed");
    }
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Lost the leadership: a distinct status, so a supervisor (or a
        // person) can tell it from a failure; restarting makes a follower.
        Err(e) if e.is::<central_manager::server::Deposed>() => {
            eprintln!("central-manager: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("central-manager: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), BoxError> {
    // Signals first, so a SIGTERM during start-up is not lost.
    let shutdown = ipa_common::shutdown::on_signals()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("binding {}: {e}", config.listen))?;
    let app = Application::build(&config).await?;
    // A deposed leader stops at once: it drains what it can, but a drain
    // stuck on a database it cannot reach must not keep it alive.
    let deposed = app.deposed();
    tokio::spawn(async move {
        deposed.cancelled().await;
        tokio::time::sleep(DEPOSED_DRAIN).await;
        eprintln!("central-manager: {}", central_manager::server::Deposed);
        std::process::exit(3);
    });
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving ipa.v1.CentralManager");
    // Announced only now: when a parent reads this line, calls are served.
    ipa_common::announce_listening(addr);
    app.serve(listener, shutdown).await
}
