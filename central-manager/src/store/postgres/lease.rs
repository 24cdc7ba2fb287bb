//! The PostgreSQL adapter of the lease port ([`LeaseStore`]): the
//! `leader_lease` row and the `replicas` table, every time taken from the
//! server's `clock_timestamp()` so the replicas' clocks never matter. A
//! pool of one lazy connection of its own, with short statement and lock
//! timeouts: a renewal that cannot finish quickly is a failed renewal (the
//! elector steps down before the lease ends), never a hung one.

use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::core::ports::LeaseStore;
use crate::core::ports::lease::{ClusterRows, LeaseRow, ReplicaRow};
use crate::error::Result;

/// The server's clock in unix micros.
const NOW: &str = "(extract(epoch from clock_timestamp()) * 1000000)::bigint";

/// Bound on one lease statement (and on waiting for its row lock); the
/// elector bounds each try by a quarter of the lease as well.
const STATEMENT_TIMEOUT: Duration = Duration::from_millis(1000);

/// The lease operations on one database.
#[derive(Clone)]
pub struct PgLease {
    pool: PgPool,
}

impl PgLease {
    pub fn new(options: &PgConnectOptions) -> Self {
        let ms = format!("{}ms", STATEMENT_TIMEOUT.as_millis());
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(STATEMENT_TIMEOUT)
            .connect_lazy_with(
                options
                    .clone()
                    .options([("statement_timeout", ms.clone()), ("lock_timeout", ms)]),
            );
        Self { pool }
    }
}

impl LeaseStore for PgLease {
    fn acquire<'a>(&'a self, me: &'a str, lease_ms: u64) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            let epoch: Option<i64> = sqlx::query_scalar(&format!(
                "WITH l AS (UPDATE leader_lease SET replica_id = $1, epoch = epoch + 1, \
                 expires_at = {NOW} + $2 * 1000, acquired_at = {NOW} \
                 WHERE id = 1 AND (expires_at <= {NOW} OR replica_id = $1) RETURNING epoch) \
                 UPDATE leader_epoch SET epoch = l.epoch FROM l WHERE leader_epoch.id = 1 \
                 RETURNING leader_epoch.epoch"
            ))
            .bind(me)
            .bind(lease_ms as i64)
            .fetch_optional(&self.pool)
            .await?;
            Ok(epoch.map(|e| e as u64))
        })
    }

    fn take_over<'a>(&'a self, me: &'a str, lease_ms: u64) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let epoch: i64 = sqlx::query_scalar(&format!(
                "WITH l AS (UPDATE leader_lease SET replica_id = $1, epoch = epoch + 1, \
                 expires_at = {NOW} + $2 * 1000, acquired_at = {NOW} WHERE id = 1 \
                 RETURNING epoch) \
                 UPDATE leader_epoch SET epoch = l.epoch FROM l WHERE leader_epoch.id = 1 \
                 RETURNING leader_epoch.epoch"
            ))
            .bind(me)
            .bind(lease_ms as i64)
            .fetch_one(&self.pool)
            .await?;
            Ok(epoch as u64)
        })
    }

    fn renew<'a>(&'a self, me: &'a str, epoch: u64, lease_ms: u64) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let done = sqlx::query(&format!(
                "UPDATE leader_lease SET expires_at = {NOW} + $3 * 1000 \
                 WHERE id = 1 AND replica_id = $1 AND epoch = $2"
            ))
            .bind(me)
            .bind(epoch as i64)
            .bind(lease_ms as i64)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn release<'a>(&'a self, me: &'a str, epoch: u64) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query(&format!(
                "UPDATE leader_lease SET expires_at = {NOW} \
                 WHERE id = 1 AND replica_id = $1 AND epoch = $2"
            ))
            .bind(me)
            .bind(epoch as i64)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn heartbeat<'a>(
        &'a self,
        me: &'a str,
        address: &'a str,
        forget_after_ms: u64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query(&format!(
                "INSERT INTO replicas (replica_id, address, last_seen_at) VALUES ($1, $2, {NOW}) \
                 ON CONFLICT (replica_id) DO UPDATE SET address = excluded.address, \
                 last_seen_at = excluded.last_seen_at"
            ))
            .bind(me)
            .bind(address)
            .execute(&self.pool)
            .await?;
            sqlx::query(&format!(
                "DELETE FROM replicas WHERE last_seen_at < {NOW} - $1 * 1000"
            ))
            .bind(forget_after_ms as i64)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn cluster(&self, seen_within_ms: u64) -> BoxFuture<'_, Result<ClusterRows>> {
        Box::pin(async move {
            let row = sqlx::query(&format!(
                "SELECT replica_id, epoch, expires_at, {NOW} AS now FROM leader_lease WHERE id = 1"
            ))
            .fetch_one(&self.pool)
            .await?;
            let lease = LeaseRow {
                replica_id: row.try_get("replica_id")?,
                epoch: row.try_get::<i64, _>("epoch")? as u64,
                expires_at: row.try_get("expires_at")?,
                now: row.try_get("now")?,
            };
            let replicas = sqlx::query(&format!(
                "SELECT replica_id, address, last_seen_at FROM replicas \
                 WHERE last_seen_at >= {NOW} - $1 * 1000 ORDER BY replica_id"
            ))
            .bind(seen_within_ms as i64)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| {
                Ok(ReplicaRow {
                    replica_id: r.try_get("replica_id")?,
                    address: r.try_get("address")?,
                    last_seen_at: r.try_get("last_seen_at")?,
                })
            })
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?;
            Ok(ClusterRows { lease, replicas })
        })
    }
}
