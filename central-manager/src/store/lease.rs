//! The SQLite adapter of the lease port ([`LeaseStore`]): the
//! `leader_lease` row and the `replicas` table, on a connection of its own
//! (the writer's is busy with task commands; readers are `query_only`).
//! Each call runs on tokio's blocking pool; SQLite's write lock orders it
//! against the writer's transactions, whose fence check reads the same row
//! (`store::fence`).

use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;
use rusqlite::{Connection, OptionalExtension, params};

use super::DbConfig;
use crate::core::ports::LeaseStore;
use crate::core::ports::lease::{ClusterRows, LeaseRow, ReplicaRow};
use crate::error::{Error, Result};

/// The database's clock in unix micros (millisecond resolution).
const NOW: &str = "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)";

/// The lease operations on one SQLite file.
#[derive(Clone)]
pub struct SqliteLease {
    db: DbConfig,
    conn: Arc<Mutex<Option<Connection>>>,
}

impl SqliteLease {
    pub fn new(db: DbConfig) -> Self {
        Self {
            db,
            conn: Arc::new(Mutex::new(None)),
        }
    }

    /// Runs `op` on the lease connection (opened on first use, dropped
    /// after a database error so the next call opens a fresh one).
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut slot = this.conn.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(this.db.open_writer()?);
            }
            let conn = slot.as_ref().expect("opened above");
            let result = op(conn).map_err(Error::from);
            if matches!(result, Err(Error::StoreUnavailable(_))) {
                *slot = None;
            }
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("lease task failed: {e}")))?
    }
}

/// Runs `change` (an update of the lease row returning its new epoch, if
/// it changed) and copies that epoch to `leader_epoch`, in one
/// transaction.
fn with_epoch(
    c: &Connection,
    change: impl FnOnce(&Connection) -> rusqlite::Result<Option<i64>>,
) -> rusqlite::Result<Option<u64>> {
    c.execute_batch("BEGIN IMMEDIATE")?;
    let result = change(c).and_then(|epoch| {
        if let Some(e) = epoch {
            c.prepare_cached("UPDATE leader_epoch SET epoch = ?1 WHERE id = 1")?
                .execute(params![e])?;
        }
        Ok(epoch.map(|e| e as u64))
    });
    match &result {
        Ok(_) => c.execute_batch("COMMIT")?,
        Err(_) => {
            let _ = c.execute_batch("ROLLBACK");
        }
    }
    result
}

impl LeaseStore for SqliteLease {
    fn acquire<'a>(&'a self, me: &'a str, lease_ms: u64) -> BoxFuture<'a, Result<Option<u64>>> {
        let me = me.to_owned();
        Box::pin(self.run(move |c| {
            with_epoch(c, |c| {
                c.prepare_cached(&format!(
                    "UPDATE leader_lease SET replica_id = ?1, epoch = epoch + 1, \
                     expires_at = {NOW} + ?2 * 1000, acquired_at = {NOW} \
                     WHERE id = 1 AND (expires_at <= {NOW} OR replica_id = ?1) RETURNING epoch"
                ))?
                .query_row(params![me, lease_ms as i64], |r| r.get::<_, i64>(0))
                .optional()
            })
        }))
    }

    fn take_over<'a>(&'a self, me: &'a str, lease_ms: u64) -> BoxFuture<'a, Result<u64>> {
        let me = me.to_owned();
        Box::pin(self.run(move |c| {
            with_epoch(c, |c| {
                c.prepare_cached(&format!(
                    "UPDATE leader_lease SET replica_id = ?1, epoch = epoch + 1, \
                     expires_at = {NOW} + ?2 * 1000, acquired_at = {NOW} WHERE id = 1 \
                     RETURNING epoch"
                ))?
                .query_row(params![me, lease_ms as i64], |r| r.get::<_, i64>(0))
                .map(Some)
            })?
            .ok_or(rusqlite::Error::QueryReturnedNoRows)
        }))
    }

    fn renew<'a>(&'a self, me: &'a str, epoch: u64, lease_ms: u64) -> BoxFuture<'a, Result<bool>> {
        let me = me.to_owned();
        Box::pin(self.run(move |c| {
            let n = c
                .prepare_cached(&format!(
                    "UPDATE leader_lease SET expires_at = {NOW} + ?3 * 1000 \
                     WHERE id = 1 AND replica_id = ?1 AND epoch = ?2"
                ))?
                .execute(params![me, epoch as i64, lease_ms as i64])?;
            Ok(n == 1)
        }))
    }

    fn release<'a>(&'a self, me: &'a str, epoch: u64) -> BoxFuture<'a, Result<()>> {
        let me = me.to_owned();
        Box::pin(self.run(move |c| {
            c.prepare_cached(&format!(
                "UPDATE leader_lease SET expires_at = {NOW} \
                 WHERE id = 1 AND replica_id = ?1 AND epoch = ?2"
            ))?
            .execute(params![me, epoch as i64])?;
            Ok(())
        }))
    }

    fn heartbeat<'a>(
        &'a self,
        me: &'a str,
        address: &'a str,
        forget_after_ms: u64,
    ) -> BoxFuture<'a, Result<()>> {
        let (me, address) = (me.to_owned(), address.to_owned());
        Box::pin(self.run(move |c| {
            c.prepare_cached(&format!(
                "INSERT INTO replicas (replica_id, address, last_seen_at) VALUES (?1, ?2, {NOW}) \
                 ON CONFLICT (replica_id) DO UPDATE SET address = excluded.address, \
                 last_seen_at = excluded.last_seen_at"
            ))?
            .execute(params![me, address])?;
            c.prepare_cached(&format!(
                "DELETE FROM replicas WHERE last_seen_at < {NOW} - ?1 * 1000"
            ))?
            .execute(params![forget_after_ms as i64])?;
            Ok(())
        }))
    }

    fn cluster(&self, seen_within_ms: u64) -> BoxFuture<'_, Result<ClusterRows>> {
        Box::pin(self.run(move |c| {
            let lease = c
                .prepare_cached(&format!(
                    "SELECT replica_id, epoch, expires_at, {NOW} FROM leader_lease WHERE id = 1"
                ))?
                .query_row([], |r| {
                    Ok(LeaseRow {
                        replica_id: r.get(0)?,
                        epoch: r.get::<_, i64>(1)? as u64,
                        expires_at: r.get(2)?,
                        now: r.get(3)?,
                    })
                })?;
            let replicas = c
                .prepare_cached(&format!(
                    "SELECT replica_id, address, last_seen_at FROM replicas \
                     WHERE last_seen_at >= {NOW} - ?1 * 1000 ORDER BY replica_id"
                ))?
                .query_map(params![seen_within_ms as i64], |r| {
                    Ok(ReplicaRow {
                        replica_id: r.get(0)?,
                        address: r.get(1)?,
                        last_seen_at: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ClusterRows { lease, replicas })
        }))
    }
}
