//! Finding where the last N lines of a log begin, reading the files from
//! the end in fixed-size blocks: the cost is the size of those lines, not
//! of the log, and memory is one block whatever the log holds.
//!
//! Lines are counted the way a reader of the decoded output would: every
//! newline ends a line, a final line without one still counts, and a
//! trailing newline does not start another. In record terms (see
//! `records`): the tail begins right after the N-th complete record counted
//! from the end, not counting the very last record if it is complete.

use std::io;

use super::records::is_complete_kind;

/// Bytes read per step when scanning backwards.
const BLOCK: usize = 64 * 1024;

/// A byte source of a known length read at offsets (a log file, or a
/// slice in tests).
pub trait ReadAt {
    /// Bytes in the source.
    fn size(&self) -> u64;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for &[u8] {
    fn size(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(<[u8]>::len(self));
        let n = buf.len().min(<[u8]>::len(self) - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// Fills `buf` from `offset` (short only at the end of the source).
fn read_full(src: &impl ReadAt, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match src.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The offset, counted from the start of `segments[0]` across all of them
/// (each segment holds whole records and follows the previous one), where
/// the last `lines` lines begin; 0 means everything, as does a log with
/// fewer lines.
pub fn tail_offset<S: ReadAt>(segments: &[S], lines: u32) -> io::Result<u64> {
    if lines == 0 {
        return Ok(0);
    }
    let starts: Vec<u64> = segments
        .iter()
        .scan(0u64, |acc, s| {
            let start = *acc;
            *acc = acc.saturating_add(s.size());
            Some(start)
        })
        .collect();
    let mut scan = Scan {
        wanted: lines,
        counted: 0,
        seen_last: false,
    };
    let mut buf = vec![0u8; BLOCK + 2];
    for (seg, &seg_start) in segments.iter().zip(&starts).rev() {
        let len = seg.size();
        // End of the record being looked at (records end with their '\n').
        let mut rec_end = len;
        let mut b = len;
        while b > 0 {
            let a = b.saturating_sub(BLOCK as u64);
            // Two bytes past the block: a record starting right after a
            // newline at its last byte has its tag and kind there.
            let want = (b.saturating_add(2).min(len) - a) as usize;
            let got = read_full(seg, &mut buf[..want], a)?;
            let block = &buf[..got];
            let byte = |i: u64| block.get((i - a) as usize).copied();
            for q in (a..b).rev() {
                if byte(q) != Some(b'\n') || q + 1 >= len {
                    continue;
                }
                let s = q + 1;
                if scan.record(byte(s), byte(s + 1), s + 1 < rec_end) {
                    return Ok(seg_start + rec_end);
                }
                rec_end = s;
            }
            if a == 0 && len > 0 && scan.record(byte(0), byte(1), 1 < rec_end) {
                return Ok(seg_start + rec_end);
            }
            b = a;
        }
    }
    Ok(0)
}

struct Scan {
    wanted: u32,
    counted: u32,
    /// The last record of the log was seen (its newline ends the output).
    seen_last: bool,
}

impl Scan {
    /// One record, latest first; true when the tail starts right after it.
    fn record(&mut self, tag: Option<u8>, kind: Option<u8>, kind_inside: bool) -> bool {
        let complete = match (tag, kind) {
            (Some(t), Some(k)) if kind_inside => is_complete_kind(t, k),
            _ => false,
        };
        if !std::mem::replace(&mut self.seen_last, true) {
            return false;
        }
        if complete {
            self.counted += 1;
        }
        self.counted == self.wanted && complete
    }
}

#[cfg(test)]
mod tests {
    use super::super::records::{Chunk, Stream, decode_records, encode_records, tests::c};
    use super::*;
    use Stream::{Stderr as E, Stdout as O};

    /// The reference: decode everything, then walk back over the newlines.
    fn tail_of_chunks(chunks: Vec<Chunk>, lines: u32) -> Vec<Chunk> {
        if lines == 0 {
            return chunks;
        }
        let mut seen = 0u32;
        let mut first_byte = true;
        for ci in (0..chunks.len()).rev() {
            let data = &chunks[ci].data;
            for bi in (0..data.len()).rev() {
                if data[bi] == b'\n' && !first_byte {
                    seen += 1;
                    if seen == lines {
                        let mut out = Vec::new();
                        let mut it = chunks.into_iter().skip(ci);
                        if let Some(mut c) = it.next() {
                            c.data.drain(..=bi);
                            if !c.data.is_empty() {
                                out.push(c);
                            }
                        }
                        out.extend(it);
                        return out;
                    }
                }
                first_byte = false;
            }
        }
        chunks
    }

    fn records(writes: &[(Stream, &str)], max_len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (s, d) in writes {
            encode_records(*s, d.as_bytes(), max_len, |r| out.extend_from_slice(r));
        }
        out
    }

    /// Tail through `tail_offset` over `bytes` split into segments at
    /// record boundaries `cuts`.
    fn tail_via_offset(bytes: &[u8], cuts: &[usize], lines: u32) -> Vec<Chunk> {
        let mut segs: Vec<&[u8]> = Vec::new();
        let mut prev = 0;
        for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
            segs.push(&bytes[prev..c]);
            prev = c;
        }
        let off = tail_offset(&segs, lines).unwrap() as usize;
        decode_records(&bytes[off..])
    }

    #[test]
    fn tail_takes_the_last_lines_across_streams() {
        let bytes = records(&[(O, "a\nb\n"), (E, "c\n"), (O, "d\ne")], 100);
        let t = |n| tail_via_offset(&bytes, &[], n);
        let all = vec![c(O, "a\nb\n"), c(E, "c\n"), c(O, "d\ne")];
        assert_eq!(t(0), all);
        assert_eq!(t(1), vec![c(O, "e")]);
        assert_eq!(t(2), vec![c(O, "d\ne")]);
        assert_eq!(t(3), vec![c(E, "c\n"), c(O, "d\ne")]);
        assert_eq!(t(4), vec![c(O, "b\n"), c(E, "c\n"), c(O, "d\ne")]);
        assert_eq!(t(99), all);
        let terminated = records(&[(O, "a\nb\n")], 100);
        assert_eq!(tail_via_offset(&terminated, &[], 1), vec![c(O, "b\n")]);
        assert_eq!(tail_via_offset(&[], &[], 3), vec![]);
    }

    #[test]
    fn tail_matches_the_reference_on_generated_logs() {
        // A small deterministic generator (no extra dependency): lines of
        // varied length, fragments, both streams, long lines, empty lines.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for round in 0..300 {
            let mut bytes = Vec::new();
            let mut boundaries = vec![0usize];
            let max_len = 1 + next(40) as usize;
            for _ in 0..next(60) {
                let stream = if next(3) == 0 { E } else { O };
                let mut data = Vec::new();
                for _ in 0..next(5) {
                    let long = next(10) == 0;
                    let n = next(if long { 200 } else { 12 }) as usize;
                    data.extend(std::iter::repeat_n(b'a' + (next(26) as u8), n));
                    if next(4) != 0 {
                        data.push(b'\n');
                    }
                }
                encode_records(stream, &data, max_len, |r| {
                    bytes.extend_from_slice(r);
                    boundaries.push(bytes.len());
                });
            }
            let all = decode_records(&bytes);
            let cut = boundaries[next(boundaries.len() as u64) as usize];
            for lines in [0, 1, 2, 3, 5, 8, 13, 40, 1000] {
                let want = merge(tail_of_chunks(all.clone(), lines));
                for cuts in [vec![], vec![cut]] {
                    let got = merge(tail_via_offset(&bytes, &cuts, lines));
                    assert_eq!(got, want, "round {round}, {lines} lines, cuts {cuts:?}");
                }
            }
        }
    }

    /// Large logs are scanned block by block from the end.
    #[test]
    fn tail_of_a_log_larger_than_a_block() {
        let line = "y".repeat(99);
        let mut writes = Vec::new();
        for i in 0..5000 {
            writes.push(format!("{i:05} {line}\n"));
        }
        let bytes = records(
            &writes.iter().map(|w| (O, w.as_str())).collect::<Vec<_>>(),
            1 << 20,
        );
        assert!(bytes.len() > 4 * BLOCK);
        let got = tail_via_offset(&bytes, &[bytes.len() / 2 / 108 * 108], 1500);
        let text = String::from_utf8(got.into_iter().flat_map(|c| c.data).collect()).unwrap();
        assert_eq!(text.lines().count(), 1500);
        assert!(text.starts_with("03500 "), "{}", &text[..20]);
    }

    fn merge(chunks: Vec<Chunk>) -> Vec<Chunk> {
        let mut out: Vec<Chunk> = Vec::new();
        for ch in chunks {
            match out.last_mut() {
                Some(l) if l.stream == ch.stream => l.data.extend(ch.data),
                _ => out.push(ch),
            }
        }
        out
    }
}
