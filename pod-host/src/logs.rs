//! Captured pod output: one size-capped log per pod, tail and follow.
//!
//! stdout and stderr are pipes read by the host ([`pump`]) and appended, in
//! the order read, to `output.log` in the pod's data dir, one record per
//! line: `o ` or `e ` (stdout/stderr) then the line; a line that was still
//! unterminated when read is written as `o+` / `e+` (no newline follows it
//! in the pod's output). The file stays readable with `cat`/`tail -f` while
//! keeping the interleaving of the two streams, which separate files lose.
//!
//! Size cap: when `output.log` would pass half of `--log-max-bytes` it is
//! renamed to `output.log.1` (replacing the previous one) and a new file is
//! started, so the newest output is always kept and the pair never exceeds
//! about the cap.
//!
//! Follow: every write also goes to a broadcast channel. A follower takes
//! the lock, reads the retained tail and subscribes in one critical section,
//! so it sees each chunk exactly once, then streams until the pod's output
//! is finished ([`LogSink::finish`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::io::AsyncReadExt;
use tokio::sync::{broadcast, watch};

/// Bytes per read from a pod's stdout/stderr pipe (and max record size).
const READ_CHUNK: usize = 16 * 1024;

/// Chunks a slow follower may lag behind before it skips some; bounds the
/// memory of a pod with active followers to about this × [`READ_CHUNK`].
const FOLLOW_BUFFER: usize = 128;

const FILE_NAME: &str = "output.log";
const OLD_FILE_NAME: &str = "output.log.1";

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

    fn tag(self) -> u8 {
        match self {
            Stream::Stdout => b'o',
            Stream::Stderr => b'e',
        }
    }

    fn from_tag(b: u8) -> Option<Self> {
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

/// Decodes log records back into chunks, merging neighbours of one stream.
/// Damaged records (e.g. a file cut mid-record) are skipped.
pub fn decode_records(bytes: &[u8]) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::new();
    for rec in bytes.split(|&b| b == b'\n') {
        let (Some(&tag), Some(&kind)) = (rec.first(), rec.get(1)) else {
            continue;
        };
        let Some(stream) = Stream::from_tag(tag) else {
            continue;
        };
        let mut data = rec[2..].to_vec();
        match kind {
            b' ' => data.push(b'\n'),
            b'+' => {}
            _ => continue,
        }
        match out.last_mut() {
            Some(last) if last.stream == stream => last.data.extend_from_slice(&data),
            _ => out.push(Chunk { stream, data }),
        }
    }
    out
}

/// The last `lines` lines of `chunks` (0 = all). A final unterminated line
/// counts as a line.
pub fn tail(chunks: Vec<Chunk>, lines: u32) -> Vec<Chunk> {
    if lines == 0 {
        return chunks;
    }
    let mut seen = 0u32;
    let mut first_byte = true;
    // Walk backwards to the newline that ends the line before the wanted ones.
    for ci in (0..chunks.len()).rev() {
        let data = &chunks[ci].data;
        for bi in (0..data.len()).rev() {
            if data[bi] == b'\n' && !first_byte {
                seen += 1;
                if seen == lines {
                    let mut out = Vec::with_capacity(chunks.len() - ci);
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

struct Inner {
    dir: PathBuf,
    file: Option<File>,
    size: u64,
    /// Rotation threshold: half the cap.
    half_cap: u64,
    tx: broadcast::Sender<Chunk>,
    failed: bool,
}

/// One pod's captured output.
pub struct LogSink {
    inner: Mutex<Inner>,
    finished: watch::Sender<bool>,
}

impl LogSink {
    /// The log of a pod whose files live in `dir`, capped at `cap` bytes.
    /// No file is touched until the first output arrives (creating an
    /// inode is a large part of a pod start on some file systems, and many
    /// pods print nothing for a while); then `dir/output.log` is created,
    /// truncating.
    pub fn new(dir: &Path, cap: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                dir: dir.to_path_buf(),
                file: None,
                size: 0,
                half_cap: (cap / 2).max(512),
                tx: broadcast::channel(FOLLOW_BUFFER).0,
                failed: false,
            }),
            finished: watch::channel(false).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends output read from `stream`. A write error is logged once and
    /// capture stops (the pod keeps running; followers still get chunks).
    pub fn write(&self, stream: Stream, data: &[u8]) {
        let mut inner = self.lock();
        // A quarter of a file's share keeps each file under its half.
        let max_len = (inner.half_cap / 4) as usize;
        let mut result = Ok(());
        encode_records(stream, data, max_len, |rec| {
            if result.is_ok() {
                result = inner.append(rec);
            }
        });
        match result {
            Err(e) if !inner.failed => {
                tracing::warn!(error = %e, dir = %inner.dir.display(), "pod log capture failed");
                inner.failed = true;
            }
            _ => {}
        }
        // No receivers is fine (nobody follows).
        let _ = inner.tx.send(Chunk {
            stream,
            data: data.to_vec(),
        });
    }

    /// The pod's output is over (it exited and its pipes closed, or the
    /// host gave up waiting for them): followers end.
    pub fn finish(&self) {
        self.finished.send_replace(true);
    }

    pub fn is_finished(&self) -> bool {
        *self.finished.borrow()
    }

    /// The retained output (last `tail_lines` lines, 0 = all) and, when
    /// `follow`, a subscription to everything written after it.
    pub fn open(&self, tail_lines: u32, follow: bool) -> io::Result<(Vec<Chunk>, Option<Follow>)> {
        let inner = self.lock();
        let mut bytes = Vec::new();
        for name in [OLD_FILE_NAME, FILE_NAME] {
            match File::open(inner.dir.join(name)) {
                Ok(mut f) => {
                    f.read_to_end(&mut bytes)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let follow = follow.then(|| Follow {
            rx: inner.tx.subscribe(),
            finished: self.finished.subscribe(),
        });
        drop(inner);
        Ok((tail(decode_records(&bytes), tail_lines), follow))
    }
}

impl Inner {
    fn append(&mut self, rec: &[u8]) -> io::Result<()> {
        if self.failed {
            return Ok(());
        }
        if self.size > 0 && self.size + rec.len() as u64 > self.half_cap {
            self.file = None;
            std::fs::rename(self.dir.join(FILE_NAME), self.dir.join(OLD_FILE_NAME))?;
            self.size = 0;
        }
        let f = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(
                OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(self.dir.join(FILE_NAME))?,
            ),
        };
        f.write_all(rec)?;
        self.size += rec.len() as u64;
        Ok(())
    }
}

/// A live subscription to a pod's output.
pub struct Follow {
    rx: broadcast::Receiver<Chunk>,
    finished: watch::Receiver<bool>,
}

impl Follow {
    /// The next chunk, or `None` once the output is finished and drained.
    /// A follower that lagged too far skips the chunks it missed (they are
    /// still in the file) rather than holding memory for it.
    pub async fn next(&mut self) -> Option<Chunk> {
        loop {
            if *self.finished.borrow() {
                return match self.rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                    Err(_) => None,
                };
            }
            tokio::select! {
                r = self.rx.recv() => match r {
                    Ok(c) => return Some(c),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "log follower lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                r = self.finished.changed() => {
                    if r.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}

/// Copies one output pipe of a pod into its log until EOF.
pub async fn pump<R: tokio::io::AsyncRead + Unpin>(mut pipe: R, stream: Stream, sink: &LogSink) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => sink.write(stream, &buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, stream = stream.as_str(), "reading pod output failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(stream: Stream, s: &str) -> Chunk {
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
    }

    #[test]
    fn tail_takes_the_last_lines_across_streams() {
        let chunks = vec![c(O, "a\nb\n"), c(E, "c\n"), c(O, "d\ne")];
        assert_eq!(tail(chunks.clone(), 0), chunks);
        assert_eq!(tail(chunks.clone(), 1), vec![c(O, "e")]);
        assert_eq!(tail(chunks.clone(), 2), vec![c(O, "d\ne")]);
        assert_eq!(tail(chunks.clone(), 3), vec![c(E, "c\n"), c(O, "d\ne")]);
        assert_eq!(
            tail(chunks.clone(), 4),
            vec![c(O, "b\n"), c(E, "c\n"), c(O, "d\ne")]
        );
        assert_eq!(tail(chunks.clone(), 99), chunks);
        let terminated = vec![c(O, "a\nb\n")];
        assert_eq!(tail(terminated.clone(), 1), vec![c(O, "b\n")]);
        assert_eq!(tail(vec![], 3), vec![]);
    }

    #[test]
    fn cap_keeps_the_newest_output() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::new(dir.path(), 4096);
        for i in 0..2000 {
            sink.write(O, format!("line {i}\n").as_bytes());
        }
        let total: u64 = [FILE_NAME, OLD_FILE_NAME]
            .iter()
            .map(|n| std::fs::metadata(dir.path().join(n)).map_or(0, |m| m.len()))
            .sum();
        assert!(total <= 4096, "retained {total} bytes");
        let (chunks, _) = sink.open(2, false).unwrap();
        assert_eq!(chunks, vec![c(O, "line 1998\nline 1999\n")]);
        let (all, _) = sink.open(0, false).unwrap();
        let text = String::from_utf8(all.into_iter().flat_map(|c| c.data).collect()).unwrap();
        assert!(!text.contains("line 0\n"));
        assert!(text.lines().count() > 100, "about half the cap is retained");
    }

    #[test]
    fn no_file_until_the_first_output() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::new(dir.path(), 4096);
        assert!(!dir.path().join(FILE_NAME).exists());
        assert_eq!(sink.open(0, false).unwrap().0, vec![]);
        sink.write(E, b"hello\n");
        assert!(dir.path().join(FILE_NAME).exists());
        assert_eq!(sink.open(0, false).unwrap().0, vec![c(E, "hello\n")]);
    }

    #[tokio::test]
    async fn follow_sees_each_chunk_once_and_ends_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::new(dir.path(), 1 << 20);
        sink.write(O, b"before\n");
        let (tail, follow) = sink.open(0, true).unwrap();
        assert_eq!(tail, vec![c(O, "before\n")]);
        let mut follow = follow.unwrap();
        sink.write(E, b"after\n");
        assert_eq!(follow.next().await, Some(c(E, "after\n")));
        sink.write(O, b"last\n");
        sink.finish();
        assert_eq!(follow.next().await, Some(c(O, "last\n")));
        assert_eq!(follow.next().await, None);
        // Opening a finished log with follow ends at once after the tail.
        let (_, f) = sink.open(1, true).unwrap();
        assert_eq!(f.unwrap().next().await, None);
    }
}
