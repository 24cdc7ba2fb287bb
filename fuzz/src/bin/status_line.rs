//! The pod contract's status channel: what a pod writes on fd 3, split
//! into lines ([`LineSplitter`], fed in pieces of any size) and parsed
//! ([`parse_status_line`]). Never a panic; memory bounded by the line
//! limit; the same lines whatever the piece sizes; accepted messages
//! within their limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_host::status::{Line, LineSplitter, MAX_LINE_BYTES, MAX_MESSAGE_BYTES, parse_status_line};

/// A small limit so the fuzzer reaches the oversized-line paths.
const SMALL: usize = 64;

fn lines(data: &[u8], max: usize, piece: usize) -> Vec<Line> {
    let mut s = LineSplitter::new(max);
    let mut out = Vec::new();
    for chunk in data.chunks(piece.max(1)) {
        out.extend(s.push(chunk));
    }
    out.extend(s.finish());
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((piece, rest)) = ipa_fuzz::split_selector(data) else {
        return;
    };
    // Piece sizes never change the lines.
    let whole = lines(rest, SMALL, rest.len());
    let pieces = lines(rest, SMALL, usize::from(piece));
    assert_eq!(whole, pieces);
    for line in &whole {
        if let Line::Complete(l) = line {
            assert!(l.len() <= SMALL);
            assert!(!l.contains(&b'\n'));
        }
    }
    for line in lines(rest, MAX_LINE_BYTES, usize::from(piece)) {
        let Line::Complete(l) = line else { continue };
        if let Ok(update) = parse_status_line(&l) {
            assert!(update.message.len() <= MAX_MESSAGE_BYTES);
        }
    }
    if let Ok(update) = parse_status_line(rest) {
        assert!(update.message.len() <= MAX_MESSAGE_BYTES);
        assert!(update.phase.is_some() || !rest.is_empty());
    }
});
