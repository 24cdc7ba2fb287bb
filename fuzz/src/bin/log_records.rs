//! A pod's captured output: writes of any bytes to either stream are
//! encoded as log records, then read back as a reader does, from a tail
//! found by scanning from the end. Chunks stay within 64 KiB, the whole
//! log decodes to exactly what was written, and a tail of N lines is the
//! end of it that holds at most N line ends (fewer only when the log has
//! fewer lines).

#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_host::logs::records::{RecordDecoder, Stream, decode_records, encode_records};
use pod_host::logs::tail::tail_offset;

fuzz_target!(|data: &[u8]| {
    let Some((sel, rest)) = ipa_fuzz::split_selector(data) else {
        return;
    };
    let max_len = 1 + usize::from(sel % 32);
    let lines = u32::from(sel / 32);
    // Writes separated by 0xff; the first byte of each picks the stream.
    let mut bytes = Vec::new();
    let mut written: Vec<(Stream, Vec<u8>)> = Vec::new();
    for w in rest.split(|&b| b == 0xff) {
        let Some((&s, payload)) = w.split_first() else {
            continue;
        };
        let stream = if s & 1 == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        encode_records(stream, payload, max_len, |r| bytes.extend_from_slice(r));
        match written.last_mut() {
            Some((ls, d)) if *ls == stream => d.extend_from_slice(payload),
            _ if payload.is_empty() => {}
            _ => written.push((stream, payload.to_vec())),
        }
    }
    let all: Vec<(Stream, Vec<u8>)> = decode_records(&bytes)
        .into_iter()
        .map(|c| (c.stream, c.data))
        .collect();
    assert_eq!(all, written);

    // Chunks from a decoder fed in pieces stay within the limit.
    let mut d = RecordDecoder::new(7);
    for piece in bytes.chunks(usize::from(sel).max(1)) {
        d.feed(piece);
    }
    d.finish();
    while let Some(c) = d.pop() {
        assert!(!c.data.is_empty() && c.data.len() <= 7);
    }

    let off = tail_offset(&[bytes.as_slice()], lines).expect("in memory") as usize;
    assert!(off <= bytes.len());
    assert!(
        off == 0 || bytes[off - 1] == b'\n',
        "a tail starts at a record"
    );
    let tail: Vec<u8> = decode_records(&bytes[off..])
        .into_iter()
        .flat_map(|c| c.data)
        .collect();
    let total: Vec<u8> = written.iter().flat_map(|(_, d)| d.clone()).collect();
    assert!(total.ends_with(&tail));
    if lines > 0 {
        // Line ends inside the tail (a final one does not start a line).
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        let inner = body.iter().filter(|&&b| b == b'\n').count() as u32;
        assert!(inner < lines, "{inner} line ends in a tail of {lines}");
        if off > 0 {
            assert_eq!(inner, lines - 1, "a shorter tail than asked for");
        }
    }
});
