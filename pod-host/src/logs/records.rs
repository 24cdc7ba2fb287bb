//! The on-disk record format of a pod's log and the streaming decoder that
//! turns records back into bounded chunks.
//!
//! One record per line: `o ` or `e ` (stdout/stderr) then the line; a piece
//! of a line that continues in the next record is written `o+` / `e+` (no
//! newline follows it in the pod's output). A record never holds a newline
//! of the pod's output, so record boundaries are output line boundaries,
//! which is what lets the tail be found from the end of the file (see
//! `tail`) and a reader start at any record.

use std::collections::VecDeque;

/// Largest chunk a reader hands out: GetPodLogs sends chunks of at most
/// this many bytes (API.md Limits), far under any gRPC message limit.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub(super) fn tag(self) -> u8 {
        match self {
            Stream::Stdout => b'o',
            Stream::Stderr => b'e',
        }
    }

    pub(super) fn from_tag(b: u8) -> Option<Self> {
        match b {
            b'o' => Some(Stream::Stdout),
            b'e' => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// A piece of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub stream: Stream,
    pub data: Vec<u8>,
}

/// Whether a record's kind byte marks a complete line (`' '`), i.e. the
/// pod's output has a newline at the end of this record.
pub(super) fn is_complete_kind(tag: u8, kind: u8) -> bool {
    Stream::from_tag(tag).is_some() && kind == b' '
}

/// Encodes `data` (as read from `stream`) into log records, one per line,
/// long lines split into fragments of at most `max_len` bytes (so one
/// record can never blow the size cap). Calls `emit` per record.
pub fn encode_records(stream: Stream, data: &[u8], max_len: usize, mut emit: impl FnMut(&[u8])) {
    let max_len = max_len.max(1);
    let mut rec = Vec::with_capacity(data.len().min(max_len) + 3);
    let mut rest = data;
    while !rest.is_empty() {
        let (line, complete, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) if i <= max_len => (&rest[..i], true, &rest[i + 1..]),
            _ if rest.len() > max_len => (&rest[..max_len], false, &rest[max_len..]),
            _ => (rest, false, &[][..]),
        };
        rec.clear();
        rec.push(stream.tag());
        rec.push(if complete { b' ' } else { b'+' });
        rec.extend_from_slice(line);
        rec.push(b'\n');
        emit(&rec);
        rest = next;
    }
}

/// One record (without its newline) as output bytes; `None` for a damaged
/// record (a file cut mid-record, junk).
fn decode_record(rec: &[u8]) -> Option<(Stream, &[u8], bool)> {
    let (&tag, &kind) = (rec.first()?, rec.get(1)?);
    let stream = Stream::from_tag(tag)?;
    match kind {
        b' ' => Some((stream, &rec[2..], true)),
        b'+' => Some((stream, &rec[2..], false)),
        _ => None,
    }
}

/// Decodes log records back into chunks, merging neighbours of one stream,
/// whole (no size bound: for tests and small inputs). Damaged records are
/// skipped.
pub fn decode_records(bytes: &[u8]) -> Vec<Chunk> {
    let mut d = RecordDecoder::new(usize::MAX);
    d.feed(bytes);
    d.finish();
    std::iter::from_fn(|| d.pop()).collect()
}

/// Turns a byte stream of records, fed in pieces of any size, into chunks
/// of at most `max_chunk` bytes, merging neighbouring records of one
/// stream. Memory: one partial record plus the chunks not yet popped.
#[derive(Debug)]
pub struct RecordDecoder {
    max_chunk: usize,
    /// Bytes of a record whose newline has not been fed yet.
    carry: Vec<u8>,
    /// The chunk being filled.
    pending: Option<Chunk>,
    ready: VecDeque<Chunk>,
}

impl RecordDecoder {
    pub fn new(max_chunk: usize) -> Self {
        Self {
            max_chunk: max_chunk.max(1),
            carry: Vec::new(),
            pending: None,
            ready: VecDeque::new(),
        }
    }

    /// Feeds bytes that continue the record stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(i) = bytes.iter().position(|&b| b == b'\n') {
            if self.carry.is_empty() {
                self.record(&bytes[..i]);
            } else {
                let mut rec = std::mem::take(&mut self.carry);
                rec.extend_from_slice(&bytes[..i]);
                self.record(&rec);
            }
            bytes = &bytes[i + 1..];
        }
        self.carry.extend_from_slice(bytes);
    }

    /// The input ended: a last record without its newline (a file cut
    /// mid-record) still counts, and the pending chunk is ready.
    pub fn finish(&mut self) {
        if !self.carry.is_empty() {
            let rec = std::mem::take(&mut self.carry);
            self.record(&rec);
        }
        self.flush();
    }

    /// Makes the chunk being filled ready (the reader caught up with the
    /// writer: deliver what there is rather than wait for more).
    pub fn flush(&mut self) {
        if let Some(c) = self.pending.take() {
            self.ready.push_back(c);
        }
    }

    /// Forgets everything fed (the reader jumped to another position).
    pub fn reset(&mut self) {
        self.carry.clear();
        self.pending = None;
        self.ready.clear();
    }

    /// The next complete chunk.
    pub fn pop(&mut self) -> Option<Chunk> {
        self.ready.pop_front()
    }

    /// Whether a partial chunk is waiting for more input.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn record(&mut self, rec: &[u8]) {
        let Some((stream, data, complete)) = decode_record(rec) else {
            return;
        };
        self.push(stream, data);
        if complete {
            self.push(stream, b"\n");
        }
    }

    fn push(&mut self, stream: Stream, mut data: &[u8]) {
        while !data.is_empty() {
            if self
                .pending
                .as_ref()
                .is_some_and(|p| p.stream != stream || p.data.len() >= self.max_chunk)
            {
                self.flush();
            }
            let p = self.pending.get_or_insert_with(|| Chunk {
                stream,
                data: Vec::new(),
            });
            let room = self.max_chunk - p.data.len();
            let n = room.min(data.len());
            p.data.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub fn c(stream: Stream, s: &str) -> Chunk {
        Chunk {
            stream,
            data: s.as_bytes().to_vec(),
        }
    }
    use Stream::{Stderr as E, Stdout as O};

    fn encode(stream: Stream, data: &[u8], max_len: usize, out: &mut Vec<u8>) {
        encode_records(stream, data, max_len, |r| out.extend_from_slice(r));
    }

    #[test]
    fn records_round_trip_with_partial_lines() {
        let mut rec = Vec::new();
        encode(O, b"one\ntwo\nthr", 100, &mut rec);
        encode(O, b"ee\n", 100, &mut rec);
        encode(E, b"oops\n", 100, &mut rec);
        assert_eq!(rec, b"o one\no two\no+thr\no ee\ne oops\n".to_vec());
        assert_eq!(
            decode_records(&rec),
            vec![c(O, "one\ntwo\nthree\n"), c(E, "oops\n")]
        );
        // Long lines become bounded fragments and decode back whole.
        let mut rec = Vec::new();
        encode(O, b"abcdefgh\nxy\n", 3, &mut rec);
        assert_eq!(rec, b"o+abc\no+def\no gh\no xy\n".to_vec());
        assert_eq!(decode_records(&rec), vec![c(O, "abcdefgh\nxy\n")]);
        let mut rec = Vec::new();
        encode(O, b"abc\n", 3, &mut rec);
        assert_eq!(rec, b"o abc\n".to_vec());
        // A record cut in half and junk are skipped, not fatal.
        assert_eq!(decode_records(b"o hi\nx junk\no"), vec![c(O, "hi\n")]);
        assert_eq!(decode_records(b"\n\no\n+\ne \n"), vec![c(E, "\n")]);
    }

    #[test]
    fn decoder_bounds_chunks_and_accepts_any_split() {
        let mut rec = Vec::new();
        let big = "x".repeat(10_000);
        encode(O, format!("{big}\n").as_bytes(), 700, &mut rec);
        encode(E, b"e1\ne2\n", 700, &mut rec);
        encode(O, b"tail", 700, &mut rec);
        for split in [1, 2, 3, 7, 64, 4096, rec.len()] {
            let mut d = RecordDecoder::new(1000);
            for piece in rec.chunks(split) {
                d.feed(piece);
            }
            d.finish();
            let chunks: Vec<Chunk> = std::iter::from_fn(|| d.pop()).collect();
            assert!(
                chunks
                    .iter()
                    .all(|c| !c.data.is_empty() && c.data.len() <= 1000)
            );
            // Merged back, the output is the same as decoded whole.
            let mut merged: Vec<Chunk> = Vec::new();
            for ch in chunks {
                match merged.last_mut() {
                    Some(l) if l.stream == ch.stream => l.data.extend(ch.data),
                    _ => merged.push(ch),
                }
            }
            assert_eq!(
                merged,
                vec![c(O, &format!("{big}\n")), c(E, "e1\ne2\n"), c(O, "tail")],
                "split {split}"
            );
        }
    }
}
