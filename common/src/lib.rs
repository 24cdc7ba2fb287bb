//! Process plumbing shared by `central-manager` and `pod-host`: logging and
//! trace export ([`telemetry`]), trace-context propagation
//! ([`trace_context`]), the gRPC observation layer ([`grpc`]), the answer to
//! oversized messages ([`message_limit`]), the metrics
//! endpoint ([`metrics`]), SIGTERM/SIGINT handling ([`shutdown`]) and
//! the one stdout line that tells a parent process (tests, central-manager's
//! `--local-pod-host`) which port a server bound ([`announce_listening`]);
//! TLS with certificates re-read on change ([`tls`], [`reload`]), bearer
//! tokens on the client side ([`bearer`]), the plaintext health port for
//! probes ([`health`]) and the start-up warning for exposed plaintext
//! listeners ([`warn_if_exposed`]).

pub mod bearer;
pub mod grpc;
pub mod health;
pub mod message_limit;
pub mod metrics;
pub mod reload;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace_context;

use std::io::Write;
use std::net::SocketAddr;

pub use telemetry::{LogFormat, Telemetry};

/// The prefix of the line printed by [`announce_listening`].
pub const LISTENING_PREFIX: &str = "listening on ";

/// Prints `listening on ADDR` as one line on stdout and flushes it.
///
/// Logs go to stderr, so stdout carries only this line: a parent that
/// started the server with `--listen 127.0.0.1:0` reads it to learn the port.
pub fn announce_listening(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (parent gone) must not kill the server.
    let _ = writeln!(out, "{LISTENING_PREFIX}{addr}");
    let _ = out.flush();
}

/// Logs a warning at start when a gRPC listener is reachable from other
/// machines without TLS or without authentication: the defaults are for a
/// single machine, and a warning is the least a shared network deserves.
/// Returns the warnings (for tests).
pub fn warn_if_exposed(service: &str, addr: SocketAddr, tls: bool, auth: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    if addr.ip().is_loopback() {
        return warnings;
    }
    if !tls {
        warnings.push(format!(
            "{service} listens on {addr} without TLS: calls (and any tokens) cross the network in \
             plaintext; set --tls-cert and --tls-key"
        ));
    }
    if !auth {
        warnings.push(format!(
            "{service} listens on {addr} without authentication: anyone who can reach it may call \
             every method; see docs/security.md"
        ));
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    warnings
}

/// Parses a line printed by [`announce_listening`].
pub fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    line.trim().strip_prefix(LISTENING_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_plaintext_listeners_are_warned_about() {
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert!(warn_if_exposed("x", lo, false, false).is_empty());
        assert!(warn_if_exposed("x", any, true, true).is_empty());
        let w = warn_if_exposed("x", any, false, true);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("without TLS"), "{w:?}");
        let w = warn_if_exposed("x", any, true, false);
        assert!(w[0].contains("without authentication"), "{w:?}");
    }

    #[test]
    fn listening_line_round_trips() {
        let addr: SocketAddr = "127.0.0.1:43210".parse().unwrap();
        let line = format!("{LISTENING_PREFIX}{addr}\n");
        assert_eq!(parse_listening_line(&line), Some(addr));
        assert_eq!(parse_listening_line("something else"), None);
    }
}
