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
//! commits a passive checkpoint may never catch up, so once the WAL holds
//! more than [`WAL_LIMIT`] frames after a passive pass, the checkpointer
//! runs a RESTART checkpoint: it waits for the writer's current commit,
//! copies the few frames the passive pass left and makes the next write
//! start the file over. That blocks the writer for one short checkpoint,
//! rarely, and keeps the WAL (and the readers' index of it) bounded.

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

/// Frames left in the WAL after a passive checkpoint beyond which the next
/// checkpoint is a RESTART one (16 MiB of 4 KiB pages).
pub const WAL_LIMIT: i64 = 4 * 1024;

/// Least time between two checkpoints: commits in between share one (and
/// one fsync of the database file).
pub const CHECKPOINT_GAP: Duration = Duration::from_millis(50);

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

/// The mode of one checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Copies what it can, never waits for the writer.
    Passive,
    /// Waits for the writer's commit, copies everything, and makes the next
    /// write start the WAL over.
    Restart,
}

/// Runs one checkpoint on `conn`.
pub fn checkpoint(conn: &Connection, mode: Mode) -> Result<CheckpointResult> {
    let sql = match mode {
        Mode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
        Mode::Restart => "PRAGMA wal_checkpoint(RESTART)",
    };
    let (busy, wal_frames, copied): (i64, i64, i64) =
        conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(CheckpointResult {
        busy: busy != 0,
        wal_frames,
        copied,
    })
}

/// The writer's side: wakes the checkpointer after a commit. Never blocks.
pub struct CheckpointWaker {
    tx: SyncSender<()>,
}

impl CheckpointWaker {
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
    let span = tracing::info_span!("checkpointer");
    tracker.spawn_blocking(move || span.in_scope(|| run(&db, &rx)));
    CheckpointWaker { tx }
}

fn run(db: &DbConfig, rx: &Receiver<()>) {
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
            Ok(()) => {
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

/// One passive checkpoint, then a RESTART one if the WAL is still long.
fn pass(db: &DbConfig, conn: &mut Option<Connection>) -> Result<()> {
    if conn.is_none() {
        *conn = Some(db.open_checkpointer()?);
    }
    let Some(c) = conn.as_ref() else {
        return Ok(());
    };
    let started = Instant::now();
    let r = checkpoint(c, Mode::Passive)?;
    crate::metrics::record_checkpoint("passive", started.elapsed(), r);
    if needs_restart(r) {
        let started = Instant::now();
        let r = checkpoint(c, Mode::Restart)?;
        crate::metrics::record_checkpoint("restart", started.elapsed(), r);
    }
    Ok(())
}

/// Whether a passive pass that reported `r` should be followed by a
/// RESTART one: the WAL is long and the pass could not copy all of it (a
/// fully copied WAL starts over at the next write anyway).
pub fn needs_restart(r: CheckpointResult) -> bool {
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
        let r = checkpoint(&cp, Mode::Passive).unwrap();
        assert!(!r.busy);
        assert!(r.wal_frames >= 1200, "{r:?}");
        assert_eq!(r.copied, r.wal_frames, "{r:?}");
        // Everything was copied: the next write starts the WAL over.
        write_pages(&w, 1);
        let r = checkpoint(&cp, Mode::Passive).unwrap();
        assert!(r.wal_frames < 10, "{r:?}");
        let rows: i64 = cp
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 601);
    }

    /// A RESTART checkpoint copies a WAL a passive one could not finish
    /// (here: a reader held an old snapshot) once the reader is gone, and
    /// the next write starts the WAL over.
    #[tokio::test]
    async fn a_restart_checkpoint_finishes_what_a_passive_one_left() {
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
        write_pages(&w, (WAL_LIMIT / 2) as usize + 10);
        let cp = cfg.open_checkpointer().unwrap();
        let r = checkpoint(&cp, Mode::Passive).unwrap();
        assert!(r.copied < r.wal_frames, "{r:?}");
        assert!(needs_restart(r), "{r:?}");
        drop(snapshot);
        let r = checkpoint(&cp, Mode::Restart).unwrap();
        assert!(!r.busy, "{r:?}");
        assert_eq!(r.copied, r.wal_frames, "{r:?}");
        write_pages(&w, 1);
        let r = checkpoint(&cp, Mode::Passive).unwrap();
        assert!(r.wal_frames < 10, "{r:?}");
    }

    #[test]
    fn only_a_long_wal_left_uncopied_is_restarted() {
        let r = |wal_frames, copied| CheckpointResult {
            busy: false,
            wal_frames,
            copied,
        };
        assert!(!needs_restart(r(WAL_LIMIT, 0)));
        assert!(needs_restart(r(WAL_LIMIT + 1, WAL_LIMIT)));
        assert!(!needs_restart(r(WAL_LIMIT + 1, WAL_LIMIT + 1)));
        assert!(!needs_restart(r(10, 0)));
    }
}
