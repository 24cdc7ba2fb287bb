//! WAL checkpoints off the writer's thread.
//!
//! Left to SQLite, the connection whose commit takes the WAL past 1,000
//! pages copies the WAL into the database file and fsyncs it inside that
//! commit: on the writer's thread, so every command queued behind that
//! commit waits for the checkpoint too. An archive run writes the WAL fast
//! (every batch moves rows between tables with many indexes), so during one
//! a CreateTask met such a checkpoint far more often than when idle; that
//! was the tail of its latency (tests/src/bin/bench/notes.md).
//!
//! So the writer's connection checkpoints only as a backstop
//! ([`WAL_BACKSTOP`] pages), and this thread, with a connection of its own,
//! runs `PRAGMA wal_checkpoint(PASSIVE)` after commits, at most every
//! [`CHECKPOINT_GAP`]. A passive checkpoint never blocks the writer (WAL
//! writers append while a checkpoint copies what was committed before it
//! started), so a user commit no longer pays for one.
//!
//! The WAL file starts over from its beginning only when a write begins
//! after a checkpoint that copied every frame. Under a steady stream of
//! commits a passive checkpoint from another connection may never catch
//! up (commits land while it copies), so once the WAL holds more than
//! [`WAL_LIMIT`] frames after a pass that could not copy all of them, the
//! checkpointer asks the writer to finish: the writer runs one passive
//! checkpoint itself the next time its queue is empty. Nothing appends
//! meanwhile, so it copies the few frames left since this thread's last
//! pass and the next write starts the WAL over; it keeps the WAL (and the
//! readers' index of it) bounded, and no command is queued behind it when
//! it starts. (A RESTART checkpoint from this thread did the same while
//! blocking the writer until every reader was done: measured during an
//! archive run on a loaded machine, 144 of them, mean 89 ms, the slowest
//! over a second, each a stall of every write.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio_util::task::TaskTracker;

use super::pool::DbConfig;
use crate::error::Result;

/// Pages in the WAL at which the writer's own commit checkpoints (SQLite's
/// `wal_autocheckpoint`): only reached if this thread cannot keep up or
/// cannot open its connection.
pub const WAL_BACKSTOP: u32 = 64 * 1024;

/// Frames in the WAL beyond which, if a pass could not copy them all, the
/// writer is asked to finish (64 MiB of 4 KiB pages). Each finish is a
/// short stall of the writer (the frames of one pass and an fsync): at
/// 4,096 frames an archive run asked for five a second.
pub const WAL_LIMIT: i64 = 16 * 1024;

/// Least time between two checkpoints: commits in between share one (one
/// fsync of the database file, and one copy of a page they all changed:
/// an archive run changes the same index pages batch after batch; at
/// 50 ms it ran 20 checkpoints a second).
pub const CHECKPOINT_GAP: Duration = Duration::from_millis(200);

/// What one `PRAGMA wal_checkpoint` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointResult {
    /// SQLite could not finish it (a RESTART that met the busy timeout).
    pub busy: bool,
    /// Frames in the WAL.
    pub wal_frames: i64,
    /// Frames of them now copied into the database file.
    pub copied: i64,
}

/// Runs one passive checkpoint on `conn`: copies what it can, never waits.
pub fn checkpoint(conn: &Connection) -> Result<CheckpointResult> {
    let (busy, wal_frames, copied): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(CheckpointResult {
        busy: busy != 0,
        wal_frames,
        copied,
    })
}

/// The writer's side: wakes the checkpointer after a commit. Never blocks.
pub struct CheckpointWaker {
    tx: SyncSender<()>,
    /// Set by the checkpointer: the writer should finish a long WAL.
    finish: Arc<AtomicBool>,
}

impl CheckpointWaker {
    /// Whether the checkpointer asked the writer to finish a long WAL
    /// (clears the request).
    pub fn finish_wanted(&self) -> bool {
        self.finish.swap(false, Ordering::Relaxed)
    }

    /// The writer's finishing checkpoint, on its own connection (nothing
    /// appends while it runs).
    pub fn finish(&self, conn: &Connection) {
        let started = Instant::now();
        match checkpoint(conn) {
            Ok(r) => crate::metrics::record_checkpoint("writer", started.elapsed(), r),
            // The next request retries; the backstop bounds the WAL.
            Err(e) => tracing::warn!(error = %e, "the writer's WAL checkpoint failed"),
        }
    }

    /// A commit happened.
    pub fn wake(&self) {
        match self.tx.try_send(()) {
            // Full: a wake-up is already pending, which covers this commit.
            // Disconnected: the checkpointer is gone (logged when it
            // stopped); the writer's backstop checkpoints.
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }
}

/// Starts the checkpointer on `tracker`'s blocking pool. It runs until the
/// returned waker is dropped (the writer stops).
pub fn start(db: DbConfig, tracker: &TaskTracker) -> CheckpointWaker {
    let (tx, rx) = sync_channel(1);
    let finish = Arc::new(AtomicBool::new(false));
    let span = tracing::info_span!("checkpointer");
    let wanted = finish.clone();
    tracker.spawn_blocking(move || span.in_scope(|| run(&db, &rx, &wanted)));
    CheckpointWaker { tx, finish }
}

fn run(db: &DbConfig, rx: &Receiver<()>, finish: &AtomicBool) {
    let mut conn: Option<Connection> = None;
    let mut last = Instant::now();
    // Logged once per run of failures, not once per pass.
    let mut failing = false;
    // Blocks until a commit wakes it; ends when the writer is gone.
    while rx.recv().is_ok() {
        // Let the commits of the next few milliseconds share this pass.
        let wait = CHECKPOINT_GAP.saturating_sub(last.elapsed());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        // A wake-up that came while sleeping is covered by this pass.
        let _ = rx.try_recv();
        last = Instant::now();
        match pass(db, &mut conn) {
            Ok(r) => {
                if needs_finishing(r) {
                    finish.store(true, Ordering::Relaxed);
                }
                if failing {
                    tracing::info!("WAL checkpoints work again");
                }
                failing = false;
            }
            Err(e) => {
                // Nothing is lost: the WAL keeps the commits and the next
                // pass (or the writer's backstop) copies them.
                if !failing {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
                failing = true;
                conn = None;
            }
        }
    }
    tracing::debug!("checkpointer stopped");
}

/// One passive checkpoint.
fn pass(db: &DbConfig, conn: &mut Option<Connection>) -> Result<CheckpointResult> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(db.open_checkpointer()?),
    };
    let started = Instant::now();
    let r = checkpoint(c)?;
    crate::metrics::record_checkpoint("passive", started.elapsed(), r);
    Ok(r)
}

/// Whether, after a pass that reported `r`, the writer should finish: the
/// WAL is long and the pass could not copy all of it (a fully copied WAL
/// starts over at the next write anyway).
pub fn needs_finishing(r: CheckpointResult) -> bool {
    r.wal_frames > WAL_LIMIT && r.copied < r.wal_frames
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn migrated() -> (tempfile::TempDir, DbConfig) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DbConfig::new(dir.path().join("central.db"));
        cfg.migrate().await.unwrap();
        (dir, cfg)
    }

    fn write_pages(w: &Connection, rows: usize) {
        for _ in 0..rows {
            w.execute("INSERT INTO t VALUES (randomblob(8000))", [])
                .unwrap();
        }
    }

    /// The writer's connection does not checkpoint below the backstop; a
    /// passive checkpoint from another connection copies its commits while
    /// it stays open, and the next write starts the WAL over.
    #[tokio::test]
    async fn a_passive_checkpoint_from_another_connection_copies_the_writers_commits() {
        let (_dir, cfg) = migrated().await;
        let w = cfg.open_writer().unwrap();
        let auto: i64 = w
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, i64::from(WAL_BACKSTOP));
        w.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        // Past SQLite's default of 1,000 pages: the writer did not copy them.
        write_pages(&w, 600);
        let cp = cfg.open_checkpointer().unwrap();
        let r = checkpoint(&cp).unwrap();
        assert!(!r.busy);
        assert!(r.wal_frames >= 1200, "{r:?}");
        assert_eq!(r.copied, r.wal_frames, "{r:?}");
        // Everything was copied: the next write starts the WAL over.
        write_pages(&w, 1);
        let r = checkpoint(&cp).unwrap();
        assert!(r.wal_frames < 10, "{r:?}");
        let rows: i64 = cp
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 601);
    }

    /// The writer's finishing checkpoint copies a long WAL that passes
    /// from another connection could not finish (here a reader held an old
    /// snapshot; in production, commits landing during the pass), and the
    /// next write starts the WAL over.
    #[tokio::test]
    async fn the_writers_finishing_checkpoint_copies_what_a_pass_left() {
        let (_dir, cfg) = migrated().await;
        let w = cfg.open_writer().unwrap();
        w.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        write_pages(&w, 10);
        let mut reader = cfg.open_checkpointer().unwrap();
        let snapshot = reader.transaction().unwrap();
        let n: i64 = snapshot
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 10);
        // One transaction: one fsync for the whole WAL_LIMIT.
        w.execute_batch("BEGIN").unwrap();
        write_pages(&w, (WAL_LIMIT / 2) as usize + 10);
        w.execute_batch("COMMIT").unwrap();
        let mut conn = None;
        let r = pass(&cfg, &mut conn).unwrap();
        assert!(r.copied < r.wal_frames, "{r:?}");
        assert!(needs_finishing(r), "{r:?}");
        drop(snapshot);
        let tracker = TaskTracker::new();
        let waker = start(cfg.clone(), &tracker);
        waker.finish(&w);
        let r = checkpoint(conn.as_ref().unwrap()).unwrap();
        assert_eq!(r.copied, r.wal_frames, "{r:?}");
        write_pages(&w, 1);
        let r = checkpoint(conn.as_ref().unwrap()).unwrap();
        assert!(r.wal_frames < 10, "{r:?}");
        drop(waker);
        tracker.close();
        tracker.wait().await;
    }

    #[test]
    fn only_a_long_wal_left_uncopied_is_finished_by_the_writer() {
        let r = |wal_frames, copied| CheckpointResult {
            busy: false,
            wal_frames,
            copied,
        };
        assert!(!needs_finishing(r(WAL_LIMIT, 0)));
        assert!(needs_finishing(r(WAL_LIMIT + 1, WAL_LIMIT)));
        assert!(!needs_finishing(r(WAL_LIMIT + 1, WAL_LIMIT + 1)));
        assert!(!needs_finishing(r(10, 0)));
    }
}
