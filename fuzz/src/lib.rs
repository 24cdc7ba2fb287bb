//! Shared helpers of the fuzz targets in `src/bin/` (one file per target;
//! `scripts/fuzz --seconds N` runs each for N seconds).
//!
//! Each target feeds what a peer controls (a request's bytes, a pod's
//! status line, a config file) to the parser the server uses, and checks
//! the properties its callers rely on, not just the absence of a panic.

/// Splits `data` into a selector byte and the rest.
pub fn split_selector(data: &[u8]) -> Option<(u8, &[u8])> {
    let (&first, rest) = data.split_first()?;
    Some((first, rest))
}
