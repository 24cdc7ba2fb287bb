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
use sqlx::{ConnectOptions, Connection};

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

/// Creates and migrates the baseline database (sqlx's migrator, as
/// central-manager does), then opens it the way central-manager's writer
/// does: rusqlite, WAL, `synchronous=FULL`, statements cached.
async fn open(path: &Path) -> rusqlite::Connection {
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
    let _ = c.close().await;
    let conn = rusqlite::Connection::open(path).expect("open baseline database");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("WAL");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    conn.pragma_update(None, "foreign_keys", true)
        .expect("foreign keys");
    conn
}

/// The rows of one CreateTask: stream, `task_created` event, tasks row.
fn insert_task(conn: &rusqlite::Connection, now: i64) -> rusqlite::Result<()> {
    let id = uuid::Uuid::now_v7().to_string();
    conn.prepare_cached("INSERT INTO streams (stream_id, version, created_at) VALUES (?, 1, ?)")?
        .execute(rusqlite::params![&id, now])?;
    conn.prepare_cached(
        "INSERT INTO events (stream_id, version, type, data_json, actor_id, correlation_id, occurred_at) \
         VALUES (?, 1, 'task_created', ?, 'bench', ?, ?)",
    )?
    .execute(rusqlite::params![
        &id,
        r#"{"title":"bench task","description":"","metadata":{},"template":"default"}"#,
        uuid::Uuid::new_v4().to_string(),
        now
    ])?;
    conn.prepare_cached(
        "INSERT INTO tasks (task_id, title, description, status, phase, created_at, updated_at, created_by, template) \
         VALUES (?, 'bench task', '', 'inactive', 'spec_clarification', ?, ?, 'bench', 'default')",
    )?
    .execute(rusqlite::params![&id, now, now])?;
    Ok(())
}

pub async fn sql_floor(dir: &Path, n: usize) -> SqlFloor {
    let mut conn = open(&dir.join("baseline.db")).await;
    tokio::task::spawn_blocking(move || {
        let now = ipa_proto::time::now_micros();
        let mut per_commit = Samples::new();
        let t_all = Instant::now();
        for _ in 0..n {
            let t0 = Instant::now();
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .expect("begin");
            insert_task(&tx, now).expect("insert");
            tx.commit().expect("commit");
            per_commit.push(t0.elapsed());
        }
        let per_commit_rate = n as f64 / t_all.elapsed().as_secs_f64();

        let batches = (n * 4).div_ceil(256).max(2);
        let t_all = Instant::now();
        for _ in 0..batches {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .expect("begin");
            for _ in 0..256 {
                insert_task(&tx, now).expect("insert");
            }
            tx.commit().expect("commit");
        }
        let batched_rate = (batches * 256) as f64 / t_all.elapsed().as_secs_f64();
        SqlFloor {
            per_commit,
            per_commit_rate,
            batched_rate,
        }
    })
    .await
    .expect("SQL floor")
}

/// The same SQL central-manager runs for GetTask and ListTasks, in this
/// process on central's own database file (a second reader; WAL lets it
/// read beside the server), with the same library (rusqlite, cached
/// statements), every column read: the floor of a read without gRPC.
pub struct ReadFloor {
    pub get: Samples,
    pub list100: Samples,
    pub list1000: Samples,
}

/// Reads every column of every row (as central-manager decodes them).
fn read_rows(rows: &mut rusqlite::Rows<'_>) -> usize {
    let mut n = 0;
    while let Some(row) = rows.next().expect("row") {
        for i in 0..row.as_ref().column_count() {
            let v: rusqlite::types::Value = row.get(i).expect("column");
            std::hint::black_box(v);
        }
        n += 1;
    }
    n
}

pub async fn read_floor(db: &Path, ids: &[String], n_get: usize, n_list: usize) -> ReadFloor {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open central db read-only");
    let ids = ids.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut get = Samples::new();
        for i in 0..n_get {
            let id = &ids[i % ids.len()];
            let t0 = Instant::now();
            let mut st = conn
                .prepare_cached("SELECT * FROM tasks WHERE task_id = ?")
                .expect("prepare");
            let found = read_rows(&mut st.query([id]).expect("get"));
            get.push(t0.elapsed());
            assert_eq!(found, 1);
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
                let mut st = conn.prepare_cached(q).expect("prepare");
                let n = read_rows(&mut st.query([limit]).expect("list"));
                out.push(t0.elapsed());
                assert!(n > 0);
            }
        }
        ReadFloor {
            get,
            list100,
            list1000,
        }
    })
    .await
    .expect("read floor")
}

/// Sleeps a little between phases so one phase's background work (WAL
/// checkpoints, reaping) does not land in the next one's samples.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}
