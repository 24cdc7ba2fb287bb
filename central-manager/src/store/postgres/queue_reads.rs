//! The queue's reads on PostgreSQL (the SQLite store's `queue` reads):
//! heads and fronts through the `tasks_queue` index, depths from the
//! `queue_buckets` counts, and a queued task's place (see
//! [`queue_ahead!`], computed in the same statement that reads the row).

use sqlx::PgPool;

use crate::core::ports::store::QueueStats;
use crate::domain::{Priority, QueueHead, TaskId, TaskRecord};
use crate::error::Result;

/// The SQL expression of how many entries of its template's queue sort
/// before a `tasks` row (NULL when it is not queued): the buckets of
/// higher priorities, the earlier buckets of its own priority, and a range
/// count inside its own bucket (at most 1,024 index entries), so the cost
/// does not grow with the queue (migration
/// `20261202000001_queue_dependencies`). The row is named `tasks`.
macro_rules! queue_ahead {
    () => {
        "CASE WHEN tasks.queued_seq IS NULL THEN NULL ELSE \
           (SELECT COALESCE(SUM(b.n), 0)::BIGINT FROM queue_buckets b \
             WHERE b.template = tasks.template AND b.priority > tasks.priority) \
         + (SELECT COALESCE(SUM(b.n), 0)::BIGINT FROM queue_buckets b \
             WHERE b.template = tasks.template AND b.priority = tasks.priority \
               AND b.bucket < tasks.queued_seq >> 10) \
         + (SELECT COUNT(*) FROM tasks q \
             WHERE q.template = tasks.template AND q.queued_seq IS NOT NULL \
               AND q.priority = tasks.priority \
               AND q.queued_seq >= (tasks.queued_seq >> 10) << 10 \
               AND q.queued_seq < tasks.queued_seq) END"
    };
}
pub(super) use queue_ahead;

/// Sets a queued record's 1-based place from its [`queue_ahead!`] count.
pub(super) fn set_position(t: &mut TaskRecord, ahead: Option<i64>) {
    if let (Some(entry), Some(ahead)) = (t.queue.as_mut(), ahead) {
        entry.position = u32::try_from(ahead.saturating_add(1)).unwrap_or(u32::MAX);
    }
}

fn to_head((task, priority, seq): (String, i64, i64)) -> Result<QueueHead> {
    Ok(QueueHead {
        task_id: TaskId::from_db(&task)?,
        priority: Priority::from_db(priority)?,
        seq,
    })
}

/// The first `limit` entries of `template`'s queue, in dispatch order.
pub async fn queue_front(c: &PgPool, template: &str, limit: u32) -> Result<Vec<QueueHead>> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT task_id, priority, queued_seq FROM tasks \
         WHERE template = $1 AND queued_seq IS NOT NULL \
         ORDER BY priority DESC, queued_seq LIMIT $2",
    )
    .bind(template)
    .bind(i64::from(limit))
    .fetch_all(c)
    .await?;
    rows.into_iter().map(to_head).collect()
}

/// The head of `template`'s queue.
pub async fn queue_head(c: &PgPool, template: &str) -> Result<Option<QueueHead>> {
    Ok(queue_front(c, template, 1).await?.into_iter().next())
}

/// The head of every template's queue: one index seek per template (a
/// skip over `tasks_queue`'s leading column), as SQLite.
pub async fn queue_heads(c: &PgPool) -> Result<Vec<(String, QueueHead)>> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let next: Option<String> = sqlx::query_scalar(
            "SELECT MIN(template) FROM tasks WHERE queued_seq IS NOT NULL AND template > $1",
        )
        .bind(&after)
        .fetch_one(c)
        .await?;
        let Some(template) = next else {
            return Ok(out);
        };
        if let Some(head) = queue_head(c, &template).await? {
            out.push((template.clone(), head));
        }
        after = template;
    }
}

/// Queued tasks per priority and the oldest enqueue time.
pub async fn queue_stats(c: &PgPool) -> Result<QueueStats> {
    let mut depth = Vec::with_capacity(Priority::ALL.len());
    let mut oldest: Option<i64> = None;
    for p in Priority::ALL {
        let (n, min): (i64, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT COALESCE(SUM(n), 0)::BIGINT FROM queue_buckets WHERE priority = $1), \
             (SELECT MIN(queued_at) FROM tasks WHERE queued_seq IS NOT NULL AND priority = $1)",
        )
        .bind(p.as_db())
        .fetch_one(c)
        .await?;
        depth.push((p, u64::try_from(n).unwrap_or(0)));
        oldest = [oldest, min].into_iter().flatten().min();
    }
    Ok(QueueStats {
        depth,
        oldest_queued_at: oldest,
    })
}
