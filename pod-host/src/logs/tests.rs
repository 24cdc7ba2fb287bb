use std::sync::Arc;

use super::records::tests::c;
use super::*;
use Stream::{Stderr as E, Stdout as O};

/// Everything a reader yields, and checks that no chunk is empty or over
/// the limit.
async fn read_all(r: &mut LogReader) -> Vec<Chunk> {
    let mut out = Vec::new();
    while let Some(ch) = r.next().await.unwrap() {
        assert!(!ch.data.is_empty() && ch.data.len() <= MAX_CHUNK_BYTES);
        out.push(ch);
    }
    out
}

fn merged(chunks: Vec<Chunk>) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::new();
    for ch in chunks {
        match out.last_mut() {
            Some(l) if l.stream == ch.stream => l.data.extend(ch.data),
            _ => out.push(ch),
        }
    }
    out
}

async fn tail(sink: &Arc<LogSink>, lines: u32) -> Vec<Chunk> {
    let mut r = LogReader::open(sink.clone(), lines, false).await.unwrap();
    merged(read_all(&mut r).await)
}

fn text(chunks: &[Chunk]) -> String {
    String::from_utf8(chunks.iter().flat_map(|c| c.data.clone()).collect()).unwrap()
}

#[tokio::test]
async fn cap_keeps_the_newest_output() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(LogSink::new(dir.path(), 4096));
    for i in 0..2000 {
        sink.write(O, format!("line {i}\n").as_bytes());
    }
    let total: u64 = [FILE_NAME, OLD_FILE_NAME]
        .iter()
        .map(|n| std::fs::metadata(dir.path().join(n)).map_or(0, |m| m.len()))
        .sum();
    assert!(total <= 4096, "retained {total} bytes");
    assert_eq!(tail(&sink, 2).await, vec![c(O, "line 1998\nline 1999\n")]);
    let all = text(&tail(&sink, 0).await);
    assert!(!all.contains("line 0\n"));
    assert!(all.lines().count() > 100, "about half the cap is retained");
    assert!(all.ends_with("line 1999\n"));
}

#[tokio::test]
async fn no_file_until_the_first_output() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(LogSink::new(dir.path(), 4096));
    assert!(!dir.path().join(FILE_NAME).exists());
    assert_eq!(tail(&sink, 0).await, vec![]);
    assert_eq!(tail(&sink, 5).await, vec![]);
    sink.write(E, b"hello\n");
    assert!(dir.path().join(FILE_NAME).exists());
    assert_eq!(tail(&sink, 0).await, vec![c(E, "hello\n")]);
}

/// 8 MB of output, read whole and as a tail: every chunk ≤ 64 KiB, nothing
/// lost, and the tail is the last lines.
#[tokio::test]
async fn a_large_log_is_read_in_bounded_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(LogSink::new(dir.path(), 64 << 20));
    let mut expected = Vec::new();
    let mut i = 0u64;
    while expected.len() < 8_000_000 {
        let line = format!("{i:08} {}\n", "z".repeat((i % 300) as usize));
        expected.extend_from_slice(line.as_bytes());
        i += 1;
    }
    for piece in expected.chunks(16 * 1024) {
        sink.write(O, piece);
    }
    sink.finish();
    let mut r = LogReader::open(sink.clone(), 0, false).await.unwrap();
    let chunks = read_all(&mut r).await;
    assert!(chunks.len() >= 8_000_000 / MAX_CHUNK_BYTES);
    let got: Vec<u8> = chunks.into_iter().flat_map(|c| c.data).collect();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the whole output comes back unchanged");
    let last = text(&tail(&sink, 10_000).await);
    assert_eq!(last.lines().count(), 10_000);
    assert!(
        last.starts_with(&format!("{:08} ", i - 10_000)),
        "{}",
        &last[..20]
    );
}

#[tokio::test]
async fn follow_sees_each_byte_once_and_ends_when_finished() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(LogSink::new(dir.path(), 1 << 20));
    sink.write(O, b"before\n");
    let mut f = LogReader::open(sink.clone(), 0, true).await.unwrap();
    assert_eq!(f.next().await.unwrap(), Some(c(O, "before\n")));
    sink.write(E, b"after\n");
    assert_eq!(f.next().await.unwrap(), Some(c(E, "after\n")));
    sink.write(O, b"last\n");
    sink.finish();
    assert_eq!(f.next().await.unwrap(), Some(c(O, "last\n")));
    assert_eq!(f.next().await.unwrap(), None);
    // Opening a finished log with follow ends at once after the tail.
    let mut f = LogReader::open(sink.clone(), 1, true).await.unwrap();
    assert_eq!(f.next().await.unwrap(), Some(c(O, "last\n")));
    assert_eq!(f.next().await.unwrap(), None);
}

/// A follower waits for output and wakes for each write.
#[tokio::test]
async fn follow_waits_for_new_output() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(LogSink::new(dir.path(), 1 << 20));
    let mut f = LogReader::open(sink.clone(), 10, true).await.unwrap();
    let writer = {
        let sink = sink.clone();
        tokio::spawn(async move {
            for i in 0..50 {
                sink.write(O, format!("n{i}\n").as_bytes());
                tokio::task::yield_now().await;
            }
            sink.finish();
        })
    };
    let got = text(&read_all(&mut f).await);
    writer.await.unwrap();
    let want: String = (0..50).map(|i| format!("n{i}\n")).collect();
    assert_eq!(got, want);
}

/// A follower far behind a fast writer skips to what is retained instead
/// of holding the output in memory; it still ends with the newest output.
#[tokio::test]
async fn a_slow_follower_skips_what_was_rotated_away() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(LogSink::new(dir.path(), 4096));
    sink.write(O, b"first\n");
    let mut f = LogReader::open(sink.clone(), 0, true).await.unwrap();
    for i in 0..5000 {
        sink.write(O, format!("line {i}\n").as_bytes());
    }
    sink.finish();
    let all = text(&read_all(&mut f).await);
    assert!(!all.contains("first"), "rotated away long ago");
    assert!(all.ends_with("line 4999\n"));
    assert!(all.len() <= 4096);
}

/// Exited pods keep no descriptor: finish closes the files, and readers
/// after that open them by name.
#[tokio::test]
async fn finish_closes_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(LogSink::new(dir.path(), 2048));
    for i in 0..200 {
        sink.write(O, format!("line {i}\n").as_bytes());
    }
    assert!(sink.holds_open_files());
    sink.finish();
    assert!(!sink.holds_open_files());
    sink.write(O, b"after finish\n");
    let t = text(&tail(&sink, 3).await);
    assert_eq!(t, "line 197\nline 198\nline 199\n");
}
