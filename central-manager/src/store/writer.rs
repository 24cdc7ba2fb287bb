//! The single writer: one thread owns the write connection; every command
//! arrives over a channel. It drains whatever is queued (up to
//! [`MAX_BATCH`]), runs the batch in ONE transaction, commits once, and only then publishes the committed events (in
//! position order) and answers the callers. This is group commit: under
//! load many commands share one fsync, and nothing is acknowledged before it
//! is durable.
//!
//! The thread is a blocking one (SQLite calls and the fsync block): a batch
//! runs start to end without a hop between threads, and the async runtime
//! never waits on the disk.
//!
//! A command's business error (TASK_NOT_FOUND, ALREADY_*, …) undoes only
//! that command (the batch is re-run with a savepoint per command, see
//! [`transact`]) and goes to that caller; the rest of the batch commits. A
//! database failure fails the whole batch with EVENT_STORE_UNAVAILABLE and
//! the connection is reopened for the next one.
//!
//! WAL checkpoints run on a thread of their own (`store::checkpoint`),
//! which the writer wakes after each commit, so a commit never waits for
//! one.
//!
//! Every batch's fate is reported to the [`Breaker`]: while it is open,
//! writes are refused before they are queued (and queued ones are failed
//! without touching the database); only the prober's probes run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::breaker::Breaker;
use super::checkpoint::{self, CheckpointWaker};
use super::commands::{self, Command, Outcome};
use super::fence::Fence;
use super::pool::DbConfig;
use crate::domain::EventRecord;
use crate::error::{Error, Result};
use crate::watch::EventHub;

/// Most commands in one transaction: bounds the latency of the batch's
/// first caller and the size of one WAL append.
pub const MAX_BATCH: usize = 256;

/// Queued commands before callers wait (backpressure).
const QUEUE: usize = 4096;

/// A caller gives up on the writer after this long (EVENT_STORE_UNAVAILABLE)
/// rather than hang; the busy timeout makes this rare.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

struct Job {
    command: Command,
    reply: oneshot::Sender<Result<Outcome>>,
    span: tracing::Span,
    /// When it was submitted (its wait for the writer is measured).
    queued: Instant,
}

/// What the writer thread receives. Nearly every message is a job, so a
/// boxed job would only add an allocation per command.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Job(Job),
    /// Stop taking commands; finish the queued ones.
    Stop,
}

/// Counters of committed work, to observe group commit.
#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    commands: AtomicU64,
}

/// A snapshot of the writer's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed.
    pub batches: u64,
    /// Commands in them (including ones refused by a business rule).
    pub commands: u64,
}

/// Sends commands to the writer. Cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Msg>,
    counters: Arc<Counters>,
    breaker: Breaker,
}

impl WriterHandle {
    /// Runs `command` in the next batch and returns its outcome once the
    /// batch is committed.
    pub async fn submit(&self, command: Command) -> Result<Outcome> {
        self.submit_ordered(command, || {}).await
    }

    /// [`Self::submit`], calling `queued` once the command has its place
    /// in the writer's queue (or failed before it got one): the writer
    /// commits in queue order, so a write submitted after `queued` ran
    /// commits after this one, without waiting for its commit.
    pub async fn submit_ordered(
        &self,
        command: Command,
        queued: impl FnOnce() + Send,
    ) -> Result<Outcome> {
        let rx = self.enqueue(command).await;
        queued();
        match tokio::time::timeout(REPLY_TIMEOUT, rx?).await {
            Ok(Ok(result)) => result,
            // The writer dropped the job: it is shutting down.
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => {
                // A writer stuck this long (a hung disk) is as good as a
                // failed one.
                self.breaker.record_failure();
                Err(Error::StoreUnavailable(format!(
                    "no answer from the writer within {REPLY_TIMEOUT:?}"
                )))
            }
        }
    }

    /// Puts `command` in the writer's queue; the receiver gets its result.
    async fn enqueue(&self, command: Command) -> Result<oneshot::Receiver<Result<Outcome>>> {
        if self.breaker.is_open() && !command.is_probe() {
            // Fail fast: the database is known to be unwritable, and a
            // queued write would only wait for the same failure.
            return Err(Error::StoreUnavailable(
                "circuit breaker open: the database could not be written".into(),
            ));
        }
        let (reply, rx) = oneshot::channel();
        let job = Job {
            command,
            reply,
            span: tracing::Span::current(),
            queued: Instant::now(),
        };
        self.tx
            .send(Msg::Job(job))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        Ok(rx)
    }

    /// Writes the probe row (even while the breaker is open); a success
    /// closes the breaker.
    pub async fn probe(&self) -> Result<()> {
        self.submit(Command::Probe).await.map(|_| ())
    }

    /// The breaker this writer reports to.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Committed batches and commands so far.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            commands: self.counters.commands.load(Ordering::Relaxed),
        }
    }
}

/// The writer thread's state.
pub struct Writer {
    rx: mpsc::Receiver<Msg>,
    conn: Option<Connection>,
    db: DbConfig,
    hub: EventHub,
    counters: Arc<Counters>,
    breaker: Breaker,
    /// Last commit clock, so times never go backwards within a run.
    last_now: i64,
    /// Wakes the checkpointer after each commit.
    checkpointer: CheckpointWaker,
}

impl Writer {
    /// Starts the writer on `conn` (of a migrated database; `None` opens one
    /// for the first batch). It runs until `stop` is cancelled, then
    /// finishes every queued command and closes the connection.
    pub fn start(
        conn: Option<Connection>,
        db: DbConfig,
        hub: EventHub,
        breaker: Breaker,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> WriterHandle {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let checkpointer = checkpoint::start(db.clone(), tracker);
        let writer = Self {
            rx,
            conn,
            db,
            hub,
            counters: counters.clone(),
            breaker: breaker.clone(),
            last_now: 0,
            checkpointer,
        };
        let span = tracing::info_span!("writer");
        tracker.spawn_blocking(move || span.in_scope(|| writer.run()));
        // The stop request travels behind the queued commands, so they are
        // all still run.
        let stopper = tx.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {
                    let _ = stopper.send(Msg::Stop).await;
                }
                () = stopper.closed() => {}
            }
        });
        WriterHandle {
            tx,
            counters,
            breaker,
        }
    }

    fn run(mut self) {
        let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
        // A bulk command met while draining: it starts the next batch.
        let mut held: Option<Job> = None;
        loop {
            // Blocks until something arrives; `None` once closed and drained.
            let first = match held.take() {
                Some(job) => Msg::Job(job),
                None => match self.rx.blocking_recv() {
                    Some(msg) => msg,
                    None => break,
                },
            };
            self.take(first, &mut batch);
            // A bulk command (an archive batch) runs alone: a CreateTask
            // queued behind it waits for at most that one batch, never for
            // its statements inside its own transaction (measured: CreateTask
            // p50 during an archive run 8 ms when they shared, 0.8 ms idle).
            let alone = batch.last().is_some_and(|j| j.command.is_bulk());
            while !alone && batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(Msg::Job(job)) if job.command.is_bulk() => {
                        held = Some(job);
                        break;
                    }
                    Ok(msg) => self.take(msg, &mut batch),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.run_batch(&mut batch);
            }
            // A long WAL the checkpointer could not finish: copy the rest
            // here, while no command waits (see `store::checkpoint`).
            if held.is_none()
                && self.rx.is_empty()
                && self.checkpointer.finish_wanted()
                && let Some(conn) = self.conn.as_ref()
            {
                self.checkpointer.finish(conn);
            }
        }
        if let Some(conn) = self.conn.take()
            && let Err((_, e)) = conn.close()
        {
            tracing::warn!(error = %e, "closing the write connection");
        }
        tracing::debug!("writer stopped");
    }

    fn take(&mut self, msg: Msg, batch: &mut Vec<Job>) {
        match msg {
            Msg::Job(job) => batch.push(job),
            // No new commands; the queued ones are still drained.
            Msg::Stop => self.rx.close(),
        }
    }

    fn connection(&mut self) -> Result<&mut Connection> {
        if self.conn.is_none() {
            let conn = self.db.open_writer()?;
            tracing::info!("write connection reopened");
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| Error::Internal("no write connection".into()))
    }

    fn run_batch(&mut self, batch: &mut Vec<Job>) {
        if self.breaker.is_open() {
            // Queued before the breaker opened: fail them without touching
            // the database; only probes run.
            batch.retain_mut(|job| {
                if job.command.is_probe() {
                    return true;
                }
                let (reply, _) = oneshot::channel();
                let job = std::mem::replace(&mut job.reply, reply);
                let _ = job.send(Err(Error::StoreUnavailable(
                    "circuit breaker open: the database could not be written".into(),
                )));
                false
            });
            if batch.is_empty() {
                return;
            }
        }
        let now = ipa_proto::time::now_micros().max(self.last_now);
        self.last_now = now;
        let size = batch.len();
        let started = Instant::now();
        let kind = batch_kind(batch);
        for job in batch.iter() {
            crate::metrics::record_writer_wait(kind, started.duration_since(job.queued));
        }
        let fence = self.db.fence.clone();
        let outcome = match self.connection() {
            Ok(conn) if kind == ARCHIVE => {
                without_fsync(conn, |conn| transact(conn, batch, now, &fence))
            }
            Ok(conn) => transact(conn, batch, now, &fence),
            Err(e) => Err(e),
        };
        match outcome {
            Ok((results, commit)) => {
                self.checkpointer.wake();
                tracing::debug!(batch = size, "batch committed");
                self.breaker.record_success();
                let elapsed = started.elapsed();
                crate::metrics::record_batch(kind, elapsed.saturating_sub(commit), commit);
                crate::metrics::record_commit(
                    size,
                    elapsed,
                    results.iter().flat_map(|(_, events)| events.iter()),
                );
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .commands
                    .fetch_add(size as u64, Ordering::Relaxed);
                // Publish first, in position order, so a caller that got its
                // answer and then watches live cannot miss its own event.
                let mut committed = Vec::new();
                let mut replies = Vec::with_capacity(size);
                for (job, (result, events)) in batch.drain(..).zip(results) {
                    committed.extend(events);
                    replies.push((job.reply, result));
                }
                self.hub.publish(committed);
                for (reply, result) in replies {
                    // A caller that went away does not care.
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                if self.breaker.is_open() {
                    // Only probes run while open: the breaker already said
                    // the store is down; one line per probe would flood.
                    tracing::debug!(error = %e, "store probe failed");
                } else {
                    tracing::error!(error = %e, batch = size, "batch failed; nothing in it was committed");
                }
                self.breaker.record_failure();
                // The connection may be broken (or left inside a transaction):
                // start the next batch on a fresh one.
                self.conn = None;
                let public = match e {
                    Error::StoreUnavailable(_) | Error::Deposed { .. } => e,
                    other => Error::StoreUnavailable(other.to_string()),
                };
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(public.clone()));
                }
            }
        }
    }
}

type JobResult = (Result<Outcome>, Vec<EventRecord>);

/// Runs `f` (an archive batch's transaction) with `synchronous=NORMAL`:
/// its commit appends to the WAL without an fsync of its own, so a
/// CreateTask queued behind it does not wait for the disk twice. Safe for a
/// move that can be done again: the WAL is written in order, so the next
/// command's durable commit (or the checkpointer's sync) makes the batch
/// durable too, and a power loss before that undoes whole batches only
/// (WAL frames are checksummed): their tasks are still live, and the next
/// archive run moves them. Nothing is lost or doubled. Measured (`bench
/// --only retention`, 100,000 tasks): 2,945 tasks/s against 1,580/s with
/// an fsync per batch, at the same CreateTask tail.
fn without_fsync<T>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Connection) -> Result<T>,
) -> Result<T> {
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let out = f(conn);
    // Every other command commits with FULL: if the setting cannot be put
    // back, the batch fails, and a failed batch drops the connection (a new
    // one opens with FULL). The batch may have committed: its caller, the
    // archiver, stops the run with the error; the moved tasks stay moved.
    conn.pragma_update(None, "synchronous", "FULL")?;
    out
}

/// The metrics' name of an archive batch.
const ARCHIVE: &str = "archive";

/// The metrics' name for a batch: an archive batch runs alone.
fn batch_kind(batch: &[Job]) -> &'static str {
    if batch.iter().any(|j| j.command.is_bulk()) {
        ARCHIVE
    } else {
        "commands"
    }
}

/// One transaction for the whole batch.
///
/// Commands almost always succeed, so the batch first runs without
/// savepoints (each one journals every page it changes). If a command
/// fails, that attempt is rolled back and the batch runs again with a
/// savepoint per command, so that only the failing command is undone.
/// Commands are deterministic given the database and `now`, so the second
/// run decides exactly what the first would have.
///
/// Also returns how long the COMMIT took (the WAL append and its fsync).
fn transact(
    conn: &mut Connection,
    batch: &[Job],
    now: i64,
    fence: &Fence,
) -> Result<(Vec<JobResult>, Duration)> {
    match attempt(conn, batch, now, false, fence)? {
        Some(done) => Ok(done),
        None => attempt(conn, batch, now, true, fence)?
            .ok_or_else(|| Error::Internal("a batch failed with savepoints".into())),
    }
}

/// Runs the batch in one transaction and commits it. Without `savepoints`,
/// returns `None` (nothing committed) at the first command that fails.
fn attempt(
    conn: &mut Connection,
    batch: &[Job],
    now: i64,
    savepoints: bool,
    fence: &Fence,
) -> Result<Option<(Vec<JobResult>, Duration)>> {
    // IMMEDIATE takes the write lock now, so a locked database fails here
    // (after the busy timeout) and not halfway through the batch.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // A leader commits only while the lease row still names its epoch
    // (store::fence); the write lock held from here keeps it so.
    if fence.epoch() != 0 {
        let epoch: i64 = tx
            .prepare_cached("SELECT epoch FROM leader_epoch WHERE id = 1")?
            .query_row([], |r| r.get(0))?;
        fence.check(epoch as u64)?;
    }
    // Prepared once (rusqlite's own savepoint type parses its SQL on every
    // use).
    let run = |sql: &str| -> Result<()> {
        if savepoints {
            tx.prepare_cached(sql)?.execute([])?;
        }
        Ok(())
    };
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        run("SAVEPOINT command")?;
        let mut events = Vec::new();
        let result = job
            .span
            .in_scope(|| commands::apply(&tx, &job.command, now, &mut events));
        match result {
            Ok(outcome) => {
                run("RELEASE command")?;
                results.push((Ok(outcome), events));
            }
            // The database itself failed: the whole batch fails (dropping
            // `tx` rolls it back).
            Err(e @ Error::StoreUnavailable(_)) => return Err(e),
            // Start again with savepoints (dropping `tx` rolls back).
            Err(_) if !savepoints => return Ok(None),
            Err(e) => {
                // Undo this command only.
                run("ROLLBACK TO command")?;
                run("RELEASE command")?;
                results.push((Err(e), Vec::new()));
            }
        }
    }
    let committing = Instant::now();
    tx.commit()?;
    Ok(Some((results, committing.elapsed())))
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
