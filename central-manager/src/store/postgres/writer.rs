//! The PostgreSQL writer: one task owns the write connection; every
//! command arrives over a channel. As the SQLite writer, it drains what is
//! queued (up to [`MAX_BATCH`]), runs the batch in ONE transaction,
//! commits once, and only then hands the committed events (in position
//! order) and the answers to the [`super::tailer`], which publishes them
//! and then answers the callers: group commit, nothing acknowledged before
//! it is durable.
//!
//! Unlike SQLite's, this writer is async (the driver is): it waits on the
//! network, not on a disk, and needs no thread of its own.
//!
//! A command's business error undoes only that command (the batch is run
//! again with a savepoint per command, see [`transact`]); a database
//! failure fails the whole batch with EVENT_STORE_UNAVAILABLE, and the
//! pool opens a fresh connection for the next one. Every batch's fate is
//! reported to the [`Breaker`], as in SQLite.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::tailer::{Committed, TailerHandle};
use super::{commands, create_run};
use crate::core::ports::store::{Command, Outcome};
use crate::domain::EventRecord;
use crate::error::{Error, Result};
use crate::store::breaker::Breaker;
use crate::store::fence::Fence;
use crate::store::writer::{MAX_BATCH, REPLY_TIMEOUT};

/// Queued commands before callers wait (backpressure).
const QUEUE: usize = 4096;

struct Job {
    command: Command,
    reply: oneshot::Sender<Result<Outcome>>,
    span: tracing::Span,
}

/// Counters of committed work, to observe group commit.
#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    commands: AtomicU64,
    in_runs: AtomicU64,
}

/// A snapshot of the writer's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgWriterStats {
    /// Transactions committed.
    pub batches: u64,
    /// Commands in them (including ones refused by a business rule).
    pub commands: u64,
    /// CreateTasks among them written as runs of several (`create_run`).
    pub in_runs: u64,
}

/// Sends commands to the writer. Cheap to clone.
#[derive(Clone)]
pub struct PgWriterHandle {
    tx: mpsc::Sender<Job>,
    counters: Arc<Counters>,
    breaker: Breaker,
}

impl PgWriterHandle {
    /// Runs `command` in the next batch and returns its outcome once the
    /// batch is committed.
    pub async fn submit(&self, command: Command) -> Result<Outcome> {
        if self.breaker.is_open() && !command.is_probe() {
            return Err(Error::StoreUnavailable(
                "circuit breaker open: the database could not be written".into(),
            ));
        }
        let (reply, rx) = oneshot::channel();
        let job = Job {
            command,
            reply,
            span: tracing::Span::current(),
        };
        self.tx.send(job).await.map_err(|_| Error::ShuttingDown)?;
        match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => {
                self.breaker.record_failure();
                Err(Error::StoreUnavailable(format!(
                    "no answer from the writer within {REPLY_TIMEOUT:?}"
                )))
            }
        }
    }

    /// Writes the probe row (even while the breaker is open).
    pub async fn probe(&self) -> Result<()> {
        self.submit(Command::Probe).await.map(|_| ())
    }

    /// The breaker this writer reports to.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Committed batches and commands so far.
    pub fn stats(&self) -> PgWriterStats {
        PgWriterStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            commands: self.counters.commands.load(Ordering::Relaxed),
            in_runs: self.counters.in_runs.load(Ordering::Relaxed),
        }
    }
}

/// The writer task's state.
pub struct PgWriter {
    rx: mpsc::Receiver<Job>,
    pool: PgPool,
    tail: TailerHandle,
    counters: Arc<Counters>,
    breaker: Breaker,
    /// Last commit clock, so times never go backwards within a run.
    last_now: i64,
    /// The leadership fence (`store::fence`).
    fence: Fence,
}

impl PgWriter {
    /// Starts the writer on `pool` (one connection, of a migrated
    /// database). It runs until `stop` is cancelled, then finishes every
    /// queued command and closes the pool.
    pub fn start(
        pool: PgPool,
        tail: TailerHandle,
        breaker: Breaker,
        fence: Fence,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> PgWriterHandle {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let writer = Self {
            rx,
            pool,
            tail,
            counters: counters.clone(),
            breaker: breaker.clone(),
            last_now: 0,
            fence,
        };
        tracker.spawn(
            writer
                .run(stop)
                .instrument(tracing::info_span!("pg_writer")),
        );
        PgWriterHandle {
            tx,
            counters,
            breaker,
        }
    }

    async fn run(mut self, stop: CancellationToken) {
        let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = tokio::select! {
                job = self.rx.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
                // No new commands; the queued ones are still drained below.
                () = stop.cancelled(), if !self.rx.is_closed() => {
                    self.rx.close();
                    continue;
                }
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.run_batch(&mut batch).await;
        }
        self.pool.close().await;
        tracing::debug!("writer stopped");
    }

    async fn run_batch(&mut self, batch: &mut Vec<Job>) {
        if self.breaker.is_open() {
            // Queued before the breaker opened: only probes run.
            batch.retain_mut(|job| {
                if job.command.is_probe() {
                    return true;
                }
                let (reply, _) = oneshot::channel();
                let reply = std::mem::replace(&mut job.reply, reply);
                let _ = reply.send(Err(Error::StoreUnavailable(
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
        let started = std::time::Instant::now();
        self.tail.begin();
        let outcome = match self.pool.acquire().await {
            Ok(mut conn) => transact(&mut conn, batch, now, &self.fence).await,
            Err(e) => Err(Error::from(e)),
        };
        match outcome {
            Ok((results, in_runs)) => {
                self.counters.in_runs.fetch_add(in_runs, Ordering::Relaxed);
                self.breaker.record_success();
                crate::metrics::record_commit(
                    size,
                    started.elapsed(),
                    results.iter().flat_map(|(_, events)| events.iter()),
                );
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .commands
                    .fetch_add(size as u64, Ordering::Relaxed);
                // The tailer publishes first, in position order, then
                // answers, so a caller that got its answer and then watches
                // live cannot miss its own event.
                let mut events = Vec::new();
                let mut replies = Vec::with_capacity(size);
                for (job, (result, committed)) in batch.drain(..).zip(results) {
                    events.extend(committed);
                    replies.push((job.reply, result));
                }
                let then = Box::new(move || {
                    for (reply, result) in replies {
                        let _ = reply.send(result);
                    }
                });
                self.tail.committed(Committed { events, then }).await;
            }
            Err(e) => {
                self.tail.abandoned();
                if self.breaker.is_open() {
                    tracing::debug!(error = %e, "store probe failed");
                } else {
                    tracing::error!(error = %e, batch = size, "batch failed; nothing in it was committed");
                }
                self.breaker.record_failure();
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

/// The batch's results, and how many of its commands were in runs.
type Attempt = (Vec<JobResult>, u64);

/// One transaction for the whole batch: first without savepoints (the
/// common case, fewer round trips); if a command fails, that attempt is
/// rolled back and the batch runs again with a savepoint per command, so
/// only the failing command is undone. Commands decide on the rows as they
/// are when they run, so the second run's answers are the ones committed.
async fn transact(
    conn: &mut PgConnection,
    batch: &[Job],
    now: i64,
    fence: &Fence,
) -> Result<Attempt> {
    match attempt(conn, batch, now, false, fence).await? {
        Some(results) => Ok(results),
        None => attempt(conn, batch, now, true, fence)
            .await?
            .ok_or_else(|| Error::Internal("a batch failed with savepoints".into())),
    }
}

/// Runs the batch in one transaction and commits it. Without `savepoints`,
/// returns `None` (nothing committed) at the first command that fails.
async fn attempt(
    conn: &mut PgConnection,
    batch: &[Job],
    now: i64,
    savepoints: bool,
    fence: &Fence,
) -> Result<Option<Attempt>> {
    let mut tx = conn.begin().await?;
    // The event_log_head lock first, before any task row: every writer
    // transaction (of every replica) takes its locks in the same order, so
    // two writers whose commands lock task rows in crossing orders queue
    // here instead of deadlocking (each holding a row the other needs,
    // one waiting for the head the other holds). Appenders are serialized
    // on this row until commit anyway (see `commands::insert_event`).
    //
    // A leader commits only while `leader_epoch` still holds its epoch; FOR
    // SHARE makes a takeover (which updates that row) wait for this
    // transaction, and this one see the takeover if it came first
    // (store::fence). Renewals update only `leader_lease`, never queueing
    // here. One statement takes both locks: no extra round trip per batch.
    if fence.epoch() != 0 {
        let epoch: i64 = sqlx::query_scalar(
            "SELECT e.epoch FROM event_log_head h, leader_epoch e \
             WHERE h.id = 1 AND e.id = 1 FOR UPDATE OF h FOR SHARE OF e",
        )
        .fetch_one(&mut *tx)
        .await?;
        fence.check(epoch as u64)?;
    } else {
        sqlx::query("SELECT position FROM event_log_head WHERE id = 1 FOR UPDATE")
            .execute(&mut *tx)
            .await?;
    }
    let mut results = Vec::with_capacity(batch.len());
    let mut in_runs = 0u64;
    let mut next = 0;
    while next < batch.len() {
        // Consecutive CreateTasks in a few multi-row statements (not when
        // a failing command is being singled out with savepoints).
        let run = if savepoints {
            0
        } else {
            create_run::run_len(batch[next..].iter().map(|j| &j.command))
        };
        if run > 1 {
            let commands: Vec<&Command> =
                batch[next..next + run].iter().map(|j| &j.command).collect();
            next += run;
            match create_run::apply(&mut tx, &commands, now).await {
                Ok((done, multi_row)) => {
                    in_runs += multi_row;
                    results.extend(done);
                }
                Err(e @ Error::StoreUnavailable(_)) => return Err(e),
                Err(_) => {
                    tx.rollback().await?;
                    return Ok(None);
                }
            }
            continue;
        }
        let job = &batch[next];
        next += 1;
        if savepoints {
            sqlx::query("SAVEPOINT command").execute(&mut *tx).await?;
        }
        let mut events = Vec::new();
        let result = commands::apply(&mut tx, &job.command, now, &mut events)
            .instrument(job.span.clone())
            .await;
        match result {
            Ok(outcome) => {
                if savepoints {
                    sqlx::query("RELEASE SAVEPOINT command")
                        .execute(&mut *tx)
                        .await?;
                }
                results.push((Ok(outcome), events));
            }
            // The database itself failed: the whole batch fails (dropping
            // `tx` rolls it back).
            Err(e @ Error::StoreUnavailable(_)) => return Err(e),
            Err(_) if !savepoints => {
                tx.rollback().await?;
                return Ok(None);
            }
            Err(e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT command")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("RELEASE SAVEPOINT command")
                    .execute(&mut *tx)
                    .await?;
                results.push((Err(e), Vec::new()));
            }
        }
    }
    tx.commit().await?;
    Ok(Some((results, in_runs)))
}
