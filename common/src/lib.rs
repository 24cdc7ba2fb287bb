//! Process plumbing shared by `central-manager` and `pod-host`: logging and
//! trace export ([`telemetry`]), trace-context propagation
//! ([`trace_context`]), the gRPC observation layer ([`grpc`]), the answer to
//! oversized messages ([`message_limit`]), the metrics
//! endpoint ([`metrics`]), SIGTERM/SIGINT handling ([`shutdown`]) and
//! the one stdout line that tells a parent process (tests, central-manager's
//! `--local-pod-host`) which port a server bound ([`announce_listening`]).

pub mod grpc;
pub mod message_limit;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
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

/// Parses a line printed by [`announce_listening`].
pub fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    line.trim().strip_prefix(LISTENING_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_round_trips() {
        let addr: SocketAddr = "127.0.0.1:43210".parse().unwrap();
        let line = format!("{LISTENING_PREFIX}{addr}\n");
        assert_eq!(parse_listening_line(&line), Some(addr));
        assert_eq!(parse_listening_line("something else"), None);
    }
}
