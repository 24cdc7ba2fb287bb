//! The floors, measured in the same run as the system:
//! - spawning and reaping a process from Rust (`/bin/true`, std `Command`),
//!   and noticing a SIGKILLed child (kill → `wait` returns);
//! - one SQLite commit per write (WAL, `synchronous=FULL`, the real schema,
//!   the same three rows a CreateTask writes), in this process, without
//!   gRPC and without group commit; plus the same writes batched 256 per
//!   transaction, the in-process floor of group commit.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use crate::stats::Samples;

/// The schema central-manager runs on.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Process baselines.
pub struct ProcessFloor {
    /// fork/exec `/bin/true` + waitpid.
    pub spawn_reap: Samples,
    /// SIGKILL of a sleeping child → `wait` returns.
    pub kill_reap: Samples,
}

pub fn process_floor(n: usize) -> ProcessFloor {
    let mut spawn_reap = Samples::new();
    for _ in 0..n {
        let t0 = Instant::now();
        let st = Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn /bin/true");
        spawn_reap.push(t0.elapsed());
        assert!(st.success());
    }
    let mut kill_reap = Samples::new();
    for _ in 0..n / 2 {
        let mut c = Command::new("/bin/sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        let t0 = Instant::now();
        c.kill().expect("kill");
        let _ = c.wait();
        kill_reap.push(t0.elapsed());
    }
    ProcessFloor {
        spawn_reap,
        kill_reap,
    }
}

/// SQLite baselines.
pub struct SqlFloor {
    /// One transaction (and fsync) per write, latency per write.
    pub per_commit: Samples,
    /// Writes per second at one commit per write.
    pub per_commit_rate: f64,
    /// Writes per second batched 256 per transaction.
    pub batched_rate: f64,
}

async fn open(path: &Path) -> SqliteConnection {
    let mut c = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .connect()
        .await
        .expect("open baseline database");
    MIGRATOR.run(&mut c).await.expect("migrate baseline db");
    c
}

/// The rows of one CreateTask: stream, `task_created` event, tasks row.
async fn insert_task(conn: &mut SqliteConnection, now: i64) -> sqlx::Result<()> {
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query("INSERT INTO streams (stream_id, version, created_at) VALUES (?, 1, ?)")
        .bind(&id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO events (stream_id, version, type, data_json, actor_id, correlation_id, occurred_at) \
         VALUES (?, 1, 'task_created', ?, 'bench', ?, ?)",
    )
    .bind(&id)
    .bind(r#"{"title":"bench task","description":"","metadata":{},"template":"default"}"#)
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO tasks (task_id, title, description, status, phase, created_at, updated_at, created_by, template) \
         VALUES (?, 'bench task', '', 'inactive', 'spec_clarification', ?, ?, 'bench', 'default')",
    )
    .bind(&id)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn sql_floor(dir: &Path, n: usize) -> SqlFloor {
    let mut conn = open(&dir.join("baseline.db")).await;
    let now = ipa_proto::time::now_micros();
    let mut per_commit = Samples::new();
    let t_all = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.expect("begin");
        insert_task(&mut tx, now).await.expect("insert");
        tx.commit().await.expect("commit");
        per_commit.push(t0.elapsed());
    }
    let per_commit_rate = n as f64 / t_all.elapsed().as_secs_f64();

    let batches = (n * 4).div_ceil(256).max(2);
    let t_all = Instant::now();
    for _ in 0..batches {
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.expect("begin");
        for _ in 0..256 {
            insert_task(&mut tx, now).await.expect("insert");
        }
        tx.commit().await.expect("commit");
    }
    let batched_rate = (batches * 256) as f64 / t_all.elapsed().as_secs_f64();
    let _ = conn.close().await;
    SqlFloor {
        per_commit,
        per_commit_rate,
        batched_rate,
    }
}

/// The same SQL central-manager runs for GetTask and ListTasks, in this
/// process on central's own database file (a second reader; WAL lets it
/// read beside the server): the floor of a read without gRPC.
pub struct ReadFloor {
    pub get: Samples,
    pub list100: Samples,
    pub list1000: Samples,
}

pub async fn read_floor(db: &Path, ids: &[String], n_get: usize, n_list: usize) -> ReadFloor {
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .expect("open central db read-only");
    let mut get = Samples::new();
    for i in 0..n_get {
        let id = &ids[i % ids.len()];
        let t0 = Instant::now();
        let row = sqlx::query("SELECT * FROM tasks WHERE task_id = ?")
            .bind(id)
            .fetch_optional(&mut conn)
            .await
            .expect("get");
        get.push(t0.elapsed());
        assert!(row.is_some());
    }
    let q = "SELECT * FROM tasks WHERE status = 'inactive' \
             ORDER BY created_at DESC, task_id DESC LIMIT ?";
    let mut list100 = Samples::new();
    let mut list1000 = Samples::new();
    for (limit, out, reps) in [
        (100i64, &mut list100, n_list),
        (1000, &mut list1000, n_list.div_ceil(4)),
    ] {
        for _ in 0..reps {
            let t0 = Instant::now();
            let rows = sqlx::query(q)
                .bind(limit)
                .fetch_all(&mut conn)
                .await
                .expect("list");
            out.push(t0.elapsed());
            assert!(!rows.is_empty());
        }
    }
    let _ = conn.close().await;
    ReadFloor {
        get,
        list100,
        list1000,
    }
}

/// Sleeps a little between phases so one phase's background work (WAL
/// checkpoints, reaping) does not land in the next one's samples.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}
