//! [`LogReader`]: a position in a pod's log, read forward in blocks (see
//! the module docs of `logs`). File reads run on the blocking pool, never
//! under the log's lock, and never more than one block at a time.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use super::records::{Chunk, MAX_CHUNK_BYTES, RecordDecoder};
use super::tail::{ReadAt, tail_offset};
use super::{LogSink, Progress, Segment, SegmentFile};

/// Bytes read per step.
const BLOCK: usize = 64 * 1024;

/// A segment's file with the length the snapshot saw (the file may have
/// grown since; bytes past it are not read).
struct FileSeg {
    file: Arc<File>,
    len: u64,
}

impl ReadAt for FileSeg {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Some(left) = self.len.checked_sub(offset) else {
            return Ok(0);
        };
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        self.file.read_at(&mut buf[..n], offset)
    }
}

/// Reads a pod's log from a position: a tail, then (when following)
/// everything written after it until the output is finished.
pub struct LogReader {
    sink: Arc<LogSink>,
    pos: u64,
    /// Without follow: the end when the reader was opened; it stops there.
    stop_at: Option<u64>,
    progress: watch::Receiver<Progress>,
    decoder: RecordDecoder,
    /// Closed segments' files, opened by this reader (by name).
    opened: Vec<(PathBuf, Arc<File>)>,
}

impl LogReader {
    /// A reader of the last `tail_lines` lines (0 = everything retained);
    /// with `follow` it goes on with new output until the pod's output is
    /// finished.
    pub async fn open(sink: Arc<LogSink>, tail_lines: u32, follow: bool) -> io::Result<Self> {
        let mut progress = sink.subscribe();
        progress.borrow_and_update();
        let (segs, _) = sink.segments();
        let first = segs.first().map_or(0, |s| s.start);
        let end = segs.last().map_or(0, Segment::end);
        let mut reader = Self {
            sink,
            pos: first,
            stop_at: (!follow).then_some(end),
            progress,
            decoder: RecordDecoder::new(MAX_CHUNK_BYTES),
            opened: Vec::new(),
        };
        if tail_lines > 0 && !segs.is_empty() {
            let mut files = Vec::with_capacity(segs.len());
            for s in &segs {
                files.push(FileSeg {
                    file: reader.file_of(s).await?,
                    len: s.len,
                });
            }
            let offset = tokio::task::spawn_blocking(move || tail_offset(&files, tail_lines))
                .await
                .map_err(io::Error::other)??;
            reader.pos = first + offset;
        }
        Ok(reader)
    }

    /// The next chunk (at most [`MAX_CHUNK_BYTES`]), or `None` at the end:
    /// the end seen at open without follow, or with follow once the output
    /// is finished and read. Cancel-safe between chunks: dropping the
    /// future loses at most the block being read.
    pub async fn next(&mut self) -> io::Result<Option<Chunk>> {
        loop {
            if let Some(c) = self.decoder.pop() {
                return Ok(Some(c));
            }
            // Seen before the snapshot, so a write after it wakes us below.
            let progress = *self.progress.borrow_and_update();
            let (segs, _) = self.sink.segments();
            let end = segs.last().map_or(0, Segment::end);
            let limit = self.stop_at.map_or(end, |s| s.min(end));
            if self.pos < limit {
                self.read_block(&segs, limit).await?;
                if self.pos >= limit {
                    // Caught up: hand out what there is.
                    self.decoder.flush();
                }
                continue;
            }
            if self.decoder.has_pending() {
                self.decoder.flush();
                continue;
            }
            if self.stop_at.is_some() || (progress.finished && self.pos >= end) {
                return Ok(None);
            }
            if self.progress.changed().await.is_err() {
                return Ok(None);
            }
        }
    }

    /// Reads the block at `pos` (below `limit`) into the decoder.
    async fn read_block(&mut self, segs: &[Segment], limit: u64) -> io::Result<()> {
        if let Some(first) = segs.first()
            && self.pos < first.start
        {
            // Fell behind what is retained: those bytes are gone.
            tracing::debug!(
                skipped = first.start - self.pos,
                "log reader fell behind the retained output"
            );
            self.pos = first.start;
            self.decoder.reset();
        }
        let Some(seg) = segs
            .iter()
            .find(|s| s.start <= self.pos && self.pos < s.end())
        else {
            self.pos = limit;
            return Ok(());
        };
        let offset = self.pos - seg.start;
        let want = (seg.end().min(limit) - self.pos).min(BLOCK as u64);
        let file = FileSeg {
            file: self.file_of(seg).await?,
            len: seg.len,
        };
        let block = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; want as usize];
            let mut got = 0;
            while got < buf.len() {
                match file.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            buf.truncate(got);
            Ok(buf)
        })
        .await
        .map_err(io::Error::other)??;
        if block.is_empty() {
            // The file is shorter than recorded (cut by someone else):
            // nothing more to read in it.
            self.pos = seg.end();
            self.decoder.reset();
            return Ok(());
        }
        self.pos += block.len() as u64;
        self.decoder.feed(&block);
        Ok(())
    }

    /// The open file of a segment: shared while the pod writes, opened by
    /// name (once per reader) after its output was finished.
    async fn file_of(&mut self, seg: &Segment) -> io::Result<Arc<File>> {
        let path = match &seg.file {
            SegmentFile::Open(f) => return Ok(f.clone()),
            SegmentFile::Closed(p) => p.clone(),
        };
        if let Some((_, f)) = self.opened.iter().find(|(p, _)| *p == path) {
            return Ok(f.clone());
        }
        let p = path.clone();
        let file = tokio::task::spawn_blocking(move || File::open(p))
            .await
            .map_err(io::Error::other)??;
        let file = Arc::new(file);
        self.opened.push((path, file.clone()));
        Ok(file)
    }
}
