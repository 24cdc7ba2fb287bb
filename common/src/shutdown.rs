//! Turns SIGTERM and SIGINT into a [`CancellationToken`], so `main` can hand
//! the server one shutdown signal and tests can hand it their own token
//! (the mini-redis `run(listener, shutdown)` shape).

use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGTERM or SIGINT. A second signal
/// exits the process at once with status 130: an operator pressing Ctrl-C
/// twice means "now", and tokio keeps its handler installed, so without this
/// the second signal would be swallowed.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};

    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting immediately");
        std::process::exit(130);
    });
    Ok(token)
}
