//! The trust boundary end to end (docs/security.md): TLS and mTLS with
//! certificates made in the test, token and certificate authentication,
//! roles and actor binding, every denial path with its exact reason (or, in
//! the handshake, a transport error) and nothing changed by it; the
//! pod-host refusing rogue clients while central's stream and pods carry
//! on; rotation on disk; pods apart from their host.

mod api_auth;
mod api_tls;
mod isolation;
mod pod_host;
mod rotation;
mod support;
