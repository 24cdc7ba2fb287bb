//! Captured pod output: one size-capped log per pod, read as a tail and
//! followed, in chunks of at most 64 KiB, whatever its size.
//!
//! stdout and stderr are pipes read by the host ([`pump`]) and appended, in
//! the order read, to `output.log` in the pod's data dir as records (see
//! [`records`]): the file stays readable with `cat`/`tail -f` and keeps the
//! interleaving of the two streams, which separate files lose.
//!
//! Size cap: when `output.log` would pass half of `--log-max-bytes` it is
//! renamed to `output.log.1` (replacing the previous one) and a new file is
//! started, so the newest output is always kept and the pair never exceeds
//! about the cap.
//!
//! Reading ([`LogReader`]): every byte ever appended has a *position* (the
//! count of bytes appended before it, rotations included), and the two
//! files are segments of that sequence. A reader keeps a position and reads
//! forward from it in blocks, off the async workers and outside the lock
//! (the lock only hands out the segments: cheap clones of open files).
//! A tail is a starting position found by scanning from the end
//! ([`tail`]); a follow is a read that waits for the end to move instead of
//! stopping there. So a follower sees each byte once, never holds more
//! than a block and a chunk, and a slow one that falls behind what is
//! retained skips to the oldest retained byte instead of pinning memory.
//!
//! Descriptors: a live pod's log keeps its files open; [`LogSink::finish`]
//! (the pod's output is over) closes them, and later readers open the files
//! by name, so exited pods hold no descriptor.

mod reader;
pub mod records;
pub mod tail;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::sync::watch;

pub use reader::LogReader;
pub use records::{Chunk, MAX_CHUNK_BYTES, Stream, encode_records};

/// Bytes per read from a pod's stdout/stderr pipe.
const READ_CHUNK: usize = 16 * 1024;

/// Most lines a tail may ask for (API.md Limits: GetPodLogs `tail_lines`).
pub const MAX_TAIL_LINES: u32 = 10_000;

const FILE_NAME: &str = "output.log";
const OLD_FILE_NAME: &str = "output.log.1";

/// How a segment's file is reached.
#[derive(Clone)]
enum SegmentFile {
    /// Open (the pod may still write): shared with readers.
    Open(Arc<File>),
    /// Closed once the output was over; readers open it by name.
    Closed(PathBuf),
}

/// One of the (at most two) files holding the retained output.
#[derive(Clone)]
struct Segment {
    /// Position of its first byte.
    start: u64,
    len: u64,
    file: SegmentFile,
}

impl Segment {
    fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// Where the output is: the end position and whether more can come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub end: u64,
    pub finished: bool,
}

struct Inner {
    dir: PathBuf,
    /// `output.log.1`, older output.
    old: Option<Segment>,
    /// `output.log`, where records are appended.
    cur: Option<Segment>,
    /// Rotation threshold: half the cap.
    half_cap: u64,
    failed: bool,
    closed: bool,
}

/// One pod's captured output.
pub struct LogSink {
    inner: Mutex<Inner>,
    progress: watch::Sender<Progress>,
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
                old: None,
                cur: None,
                half_cap: (cap / 2).max(512),
                failed: false,
                closed: false,
            }),
            progress: watch::channel(Progress::default()).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends output read from `stream`. A write error is logged once and
    /// capture stops (the pod keeps running). Output after [`finish`]
    /// is dropped.
    ///
    /// [`finish`]: LogSink::finish
    pub fn write(&self, stream: Stream, data: &[u8]) {
        let mut inner = self.lock();
        if inner.closed || inner.failed {
            return;
        }
        // A quarter of a file's share keeps each file under its half; no
        // record is longer than one pipe read.
        let max_len = ((inner.half_cap / 4) as usize).min(READ_CHUNK);
        let mut result = Ok(());
        encode_records(stream, data, max_len, |rec| {
            if result.is_ok() {
                result = inner.append(rec);
            }
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, dir = %inner.dir.display(), "pod log capture failed; later output is not kept");
            inner.failed = true;
        }
        let end = inner.end();
        drop(inner);
        self.progress.send_if_modified(|p| {
            let changed = p.end != end;
            p.end = end;
            changed
        });
    }

    /// The pod's output is over (it exited and its pipes are closed): the
    /// files are closed and followers end once they have read everything.
    pub fn finish(&self) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.closed = true;
        for (seg, name) in [(&mut inner.old, OLD_FILE_NAME), (&mut inner.cur, FILE_NAME)] {
            if let Some(s) = seg {
                s.file = SegmentFile::Closed(inner.dir.join(name));
            }
        }
        drop(guard);
        self.progress.send_modify(|p| p.finished = true);
    }

    pub fn is_finished(&self) -> bool {
        self.progress.borrow().finished
    }

    /// The retained segments, oldest first, and the progress they reflect.
    fn segments(&self) -> (Vec<Segment>, Progress) {
        let inner = self.lock();
        let segs = inner.old.iter().chain(inner.cur.iter()).cloned().collect();
        (segs, *self.progress.borrow())
    }

    fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Whether the log holds an open descriptor (for tests of the
    /// descriptor rule).
    pub fn holds_open_files(&self) -> bool {
        let inner = self.lock();
        inner
            .old
            .iter()
            .chain(inner.cur.iter())
            .any(|s| matches!(s.file, SegmentFile::Open(_)))
    }
}

impl Inner {
    fn end(&self) -> u64 {
        self.cur
            .as_ref()
            .or(self.old.as_ref())
            .map_or(0, Segment::end)
    }

    fn append(&mut self, rec: &[u8]) -> io::Result<()> {
        let rec_len = rec.len() as u64;
        let rotate = self
            .cur
            .as_ref()
            .is_some_and(|c| c.len > 0 && c.len + rec_len > self.half_cap);
        if rotate {
            std::fs::rename(self.dir.join(FILE_NAME), self.dir.join(OLD_FILE_NAME))?;
            // Readers holding the old `output.log.1` keep reading it.
            self.old = self.cur.take();
        }
        if self.cur.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .truncate(true)
                .open(self.dir.join(FILE_NAME))?;
            self.cur = Some(Segment {
                start: self.end(),
                len: 0,
                file: SegmentFile::Open(Arc::new(file)),
            });
        }
        let Some(cur) = self.cur.as_mut() else {
            return Ok(());
        };
        if let SegmentFile::Open(f) = &cur.file {
            (&**f).write_all(rec)?;
        }
        cur.len += rec_len;
        Ok(())
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
mod tests;
