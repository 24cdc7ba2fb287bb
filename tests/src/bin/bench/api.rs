//! The task API against one central-manager (no pod-hosts needed):
//! CreateTask from 1 and 64 clients (the 64-client run also fills the
//! table that ListTasks is then measured over), GetTask from 1 and 16
//! clients, ListTasks with limit 100 and 1000 and a status filter.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipa_tests::pb;

use crate::Scale;
use crate::proc::{self, CentralClient};
use crate::stats::{self, Load, Samples};

pub struct ApiResults {
    pub create_1: Samples,
    pub create_64: Load,
    /// Tasks in the table when ListTasks was measured.
    pub table_size: usize,
    pub get_1: Samples,
    pub get_16: Load,
    pub list100: Samples,
    pub list1000: Samples,
    /// Central's SQLite file (empty on another database) and some task
    /// ids, for the in-process read floor.
    pub db: PathBuf,
    pub ids: Vec<String>,
    /// Writer batches observed: commits per CreateTask in the 64-client run
    /// (from the number of distinct commit times in the events).
    pub create_64_batches: Option<u64>,
    /// CPU per call (central-manager, benchmark client) at 64 / 16 clients.
    pub create_64_cpu: (Duration, Duration),
    pub get_16_cpu: (Duration, Duration),
}

fn create_req(i: usize) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        title: format!("bench task {i}"),
        description: "created by the benchmark".into(),
        actor_id: "bench".into(),
        ..Default::default()
    }
}

/// The task API against a central-manager on SQLite in `dir`.
pub async fn run(dir: &Path, scale: &Scale) -> ApiResults {
    let central = proc::central(dir, &[], &[]).await;
    measure(central, scale, Some(&dir.join("central.db"))).await
}

/// Measures the task API against `central` (on whichever database) and
/// stops it. `sqlite` is its SQLite file, for the commit count of the
/// 64-client creates (none for another database).
pub async fn measure(central: proc::Server, scale: &Scale, sqlite: Option<&Path>) -> ApiResults {
    let mut client = CentralClient::new(central.channel().await);

    // Warm-up: connection, prepared statements, page cache.
    for i in 0..50 {
        client.create_task(create_req(i)).await.expect("CreateTask");
    }

    eprintln!("  CreateTask, 1 client × {}", scale.create_1);
    let mut create_1 = Samples::new();
    let mut ids = Vec::new();
    for i in 0..scale.create_1 {
        let t0 = std::time::Instant::now();
        let r = client.create_task(create_req(i)).await.expect("CreateTask");
        create_1.push(t0.elapsed());
        ids.push(r.into_inner().task_id);
    }

    let already = 50 + scale.create_1;
    let remaining = scale.table.saturating_sub(already).max(scale.create_64_min);
    eprintln!("  CreateTask, 64 clients × {remaining} total");
    let first_position = match sqlite {
        Some(db) => last_position(db).await,
        None => 0,
    };
    let cpu0 = (
        proc::cpu_time(central.pid),
        proc::cpu_time(std::process::id()),
    );
    let create_64 = stats::drive(
        64,
        Some(remaining),
        None,
        |_| central.channel(),
        |ch, i| async move {
            let mut c = CentralClient::new(ch.clone());
            let r = c.create_task(create_req(i)).await.map(|_| ());
            (ch, r)
        },
    )
    .await;
    let create_64_cpu = per_call_cpu(cpu0, central.pid, create_64.ok + create_64.errors);
    let create_64_batches = match sqlite {
        Some(db) => count_commits(db, first_position).await,
        None => None,
    };
    let table_size = already + create_64.ok;

    crate::baseline::settle().await;
    eprintln!("  GetTask, 1 client × {}", scale.get_1);
    let mut get_1 = Samples::new();
    for i in 0..scale.get_1 {
        let id = ids[i % ids.len()].clone();
        let t0 = std::time::Instant::now();
        client
            .get_task(pb::GetTaskRequest {
                task_id: id,
                ..Default::default()
            })
            .await
            .expect("GetTask");
        get_1.push(t0.elapsed());
    }

    eprintln!("  GetTask, 16 clients for {:?}", scale.get_16_for);
    let ids_arc = std::sync::Arc::new(ids.clone());
    let cpu0 = (
        proc::cpu_time(central.pid),
        proc::cpu_time(std::process::id()),
    );
    let get_16 = stats::drive(
        16,
        None,
        Some(scale.get_16_for),
        |_| central.channel(),
        move |ch, i| {
            let ids = ids_arc.clone();
            async move {
                let mut c = CentralClient::new(ch.clone());
                let id = ids[i % ids.len()].clone();
                let r = c
                    .get_task(pb::GetTaskRequest {
                        task_id: id,
                        ..Default::default()
                    })
                    .await
                    .map(|_| ());
                (ch, r)
            }
        },
    )
    .await;

    let get_16_cpu = per_call_cpu(cpu0, central.pid, get_16.ok + get_16.errors);
    eprintln!("  ListTasks over {table_size} tasks");
    let list100 = list(&mut client, 100, scale.list100).await;
    let list1000 = list(&mut client, 1000, scale.list1000).await;

    drop(client);
    let mut central = central;
    central.stop(Duration::from_secs(10)).await;
    ApiResults {
        create_1,
        create_64,
        table_size,
        get_1,
        get_16,
        list100,
        list1000,
        db: sqlite.map(Path::to_path_buf).unwrap_or_default(),
        ids,
        create_64_batches,
        create_64_cpu,
        get_16_cpu,
    }
}

/// CPU per call since `before` of (server, this benchmark process).
pub fn per_call_cpu(
    before: (Duration, Duration),
    server: u32,
    calls: usize,
) -> (Duration, Duration) {
    let n = calls.max(1) as u32;
    let server_cpu = proc::cpu_time(server).saturating_sub(before.0);
    let client_cpu = proc::cpu_time(std::process::id()).saturating_sub(before.1);
    (server_cpu / n, client_cpu / n)
}

async fn list(client: &mut CentralClient, limit: u32, n: usize) -> Samples {
    let req = pb::ListTasksRequest {
        status: pb::TaskStatus::Inactive as i32,
        limit,
        order_by: pb::OrderBy::CreatedAt as i32,
        order: pb::Order::Desc as i32,
        ..Default::default()
    };
    // Warm-up.
    client.list_tasks(req.clone()).await.expect("ListTasks");
    let mut s = Samples::new();
    for _ in 0..n {
        let t0 = std::time::Instant::now();
        let r = client.list_tasks(req.clone()).await.expect("ListTasks");
        s.push(t0.elapsed());
        assert_eq!(r.into_inner().tasks.len(), limit as usize);
    }
    s
}

/// The newest committed event position (0 when none).
async fn last_position(db: &Path) -> i64 {
    use sqlx::ConnectOptions;
    let Ok(mut conn) = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
    else {
        return 0;
    };
    sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
        .fetch_one(&mut conn)
        .await
        .unwrap_or(0)
}

/// Distinct commit times of the `task_created` events after `after`: the
/// writer stamps every event of a batch with the batch's time, so this is
/// the number of transactions (fsyncs) those creates took.
async fn count_commits(db: &Path, after: i64) -> Option<u64> {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .ok()?;
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT occurred_at) FROM events WHERE position > ? AND type = 'task_created'",
    )
    .bind(after)
    .fetch_one(&mut conn)
    .await
    .ok()?;
    Some(n as u64)
}
