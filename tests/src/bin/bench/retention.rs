//! Schedules, archiving and statistics against one central-manager (no
//! pod-hosts: a fire's pod start fails with NO_POD_HOST after the fire
//! committed, which is what is timed):
//!
//! - fire lateness of an interval schedule: from each fire time to the
//!   commit of its task (`schedule_fires.fired_at − scheduled_for`);
//! - GetStats over a table of `archive_table` terminal tasks;
//! - "the tasks of schedule X": ListTasks with `metadata_equals
//!   {ipa.schedule_id: X}` over that table, X on 1 task in 100;
//! - CreateTask from 1 client, idle and then while ArchiveTasks moves those
//!   tasks to the archive (its batches must not stall the writer).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use ipa_tests::pb;

use crate::Scale;
use crate::proc::{self, CentralClient};
use crate::scrape;
use crate::stats::{self, Samples};

pub struct RetentionResults {
    /// Fire time → task committed, per fire.
    pub lateness: Samples,
    /// Terminal tasks in the table (GetStats, then archived).
    pub table: usize,
    pub stats_none: Samples,
    pub stats_by_template: Samples,
    /// ListTasks limit 100 of the tasks of one schedule.
    pub list_schedule: Samples,
    /// Tasks of that schedule in the table.
    pub schedule_tasks: usize,
    /// CreateTask from 1 client with nothing else running.
    pub create_idle: Samples,
    /// CreateTask from 1 client while ArchiveTasks runs.
    pub create_during: Samples,
    /// Tasks ArchiveTasks moved, and how long it took.
    pub archived: u64,
    pub archive_took: Duration,
    /// Why the ArchiveTasks call failed (e.g. the server's call time
    /// limit); `archived` is then what its run had moved.
    pub archive_error: Option<String>,
}

/// The metadata a schedule puts on its tasks, and the schedule one fill
/// task in [`SCHEDULE_EVERY`] carries.
const SCHEDULE_KEY: &str = "ipa.schedule_id";
const SCHEDULE_ID: &str = "bench-schedule";
const SCHEDULE_EVERY: usize = 100;

fn create_req(i: usize, actor: &str) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        title: format!("bench task {i}"),
        description: "created by the benchmark".into(),
        actor_id: actor.into(),
        ..Default::default()
    }
}

/// A fill task; one in [`SCHEDULE_EVERY`] as if its schedule made it.
fn fill_req(i: usize) -> pb::CreateTaskRequest {
    let mut r = create_req(i, "bench-fill");
    if i.is_multiple_of(SCHEDULE_EVERY) {
        r.metadata.insert(SCHEDULE_KEY.into(), SCHEDULE_ID.into());
    }
    r
}

pub async fn run(dir: &Path, scale: &Scale) -> RetentionResults {
    let metrics: std::net::SocketAddr = ([127, 0, 0, 1], scrape::free_port()).into();
    let metrics_arg = metrics.to_string();
    let central = proc::central(dir, &[], &["--metrics-listen", &metrics_arg]).await;
    let mut client = CentralClient::new(central.channel().await);

    let lateness = fire_lateness(&mut client, &dir.join("central.db"), scale.fires).await;

    eprintln!(
        "  filling {} terminal tasks (CreateTask × 64 clients, CancelTasks)",
        scale.archive_table
    );
    let fill = stats::drive(
        64,
        Some(scale.archive_table),
        None,
        |_| central.channel(),
        |ch, i| async move {
            let mut c = CentralClient::new(ch.clone());
            let r = c.create_task(fill_req(i)).await.map(|_| ());
            (ch, r)
        },
    )
    .await;
    assert_eq!(fill.errors, 0, "filling the table failed");
    loop {
        let r = client
            .cancel_tasks(pb::CancelTasksRequest {
                created_by: "bench-fill".into(),
                reason: "benchmark".into(),
                actor_id: "bench".into(),
                ..Default::default()
            })
            .await
            .expect("CancelTasks")
            .into_inner();
        if r.count == 0 {
            break;
        }
    }
    crate::baseline::settle().await;

    let schedule_tasks = fill.ok.div_ceil(SCHEDULE_EVERY);
    eprintln!(
        "  ListTasks of one schedule ({schedule_tasks} of {} tasks)",
        fill.ok
    );
    let list_schedule = list_of_schedule(&mut client, scale.list100, schedule_tasks).await;

    eprintln!("  GetStats over {} tasks", fill.ok);
    let stats_none = get_stats(&mut client, pb::GroupBy::None, scale.stats).await;
    let stats_by_template = get_stats(&mut client, pb::GroupBy::Template, scale.stats).await;

    eprintln!("  CreateTask, 1 client, idle × {}", scale.create_1);
    let before_idle = scrape::scrape(metrics).await;
    let mut create_idle = Samples::new();
    for i in 0..scale.create_1 {
        let t0 = Instant::now();
        client
            .create_task(create_req(i, "bench-probe"))
            .await
            .expect("CreateTask");
        create_idle.push(t0.elapsed());
    }

    eprintln!(
        "  CreateTask, 1 client, during ArchiveTasks of {} tasks",
        fill.ok
    );
    let before_during = scrape::scrape(metrics).await;
    let breakdown_idle = scrape::breakdown(&before_idle, &before_during);
    let mut archiver = CentralClient::new(central.channel().await);
    let t_archive = Instant::now();
    let archive = tokio::spawn(async move {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock after 1970");
        let r = archiver
            .archive_tasks(pb::ArchiveTasksRequest {
                finished_before: Some(prost_types::Timestamp {
                    seconds: now.as_secs() as i64 + 1,
                    nanos: 0,
                }),
                actor_id: "bench".into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().count)
            .map_err(|e| format!("{:?}: {}", e.code(), e.message()));
        (r, t_archive.elapsed())
    });
    let mut create_during = Samples::new();
    let mut i = 0;
    while !archive.is_finished() {
        let t0 = Instant::now();
        client
            .create_task(create_req(i, "bench-probe"))
            .await
            .expect("CreateTask");
        create_during.push(t0.elapsed());
        i += 1;
    }
    let (archive_result, archive_took) = archive.await.expect("archive task");
    let breakdown_during = scrape::breakdown(&before_during, &scrape::scrape(metrics).await);
    // Where the writer's time went (central's own metrics): printed with
    // the run, for the notes.
    for (when, lines) in [
        ("idle", &breakdown_idle),
        ("during the archive run", &breakdown_during),
    ] {
        eprintln!("  writer, CreateTask {when}:");
        for l in lines {
            eprintln!("    {l}");
        }
    }
    let (archived, archive_error) = match archive_result {
        Ok(n) => (n, None),
        Err(e) => (archived_by_the_run(&dir.join("central.db")).await, Some(e)),
    };

    drop(client);
    let mut central = central;
    central.stop(Duration::from_secs(10)).await;
    RetentionResults {
        lateness,
        table: fill.ok,
        stats_none,
        stats_by_template,
        list_schedule,
        schedule_tasks,
        create_idle,
        create_during,
        archived,
        archive_took,
        archive_error,
    }
}

/// Tasks the latest archive run moved (from `archive_runs`).
async fn archived_by_the_run(db: &Path) -> u64 {
    use sqlx::ConnectOptions;
    let Ok(mut conn) = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
    else {
        return 0;
    };
    sqlx::query_scalar::<_, i64>("SELECT tasks FROM archive_runs ORDER BY id DESC LIMIT 1")
        .fetch_one(&mut conn)
        .await
        .map_or(0, |n| n.max(0) as u64)
}

/// An every-second schedule left to fire `n` times; the lateness of each
/// fire from the database.
async fn fire_lateness(client: &mut CentralClient, db: &Path, n: usize) -> Samples {
    eprintln!("  an interval schedule (1 s) firing {n} times");
    let s = client
        .create_schedule(pb::CreateScheduleRequest {
            name: "bench-every-second".into(),
            interval_seconds: 1,
            task: Some(pb::ScheduleTask {
                title: "fired by the benchmark".into(),
                ..Default::default()
            }),
            overlap: pb::Overlap::AllowAll as i32,
            actor_id: "bench".into(),
            ..Default::default()
        })
        .await
        .expect("CreateSchedule")
        .into_inner();
    // One fire a second; allow for a slow machine before giving up.
    let deadline = Instant::now() + Duration::from_secs(n as u64 * 3 + 30);
    loop {
        let got = client
            .get_schedule(pb::GetScheduleRequest {
                schedule_id: s.schedule_id.clone(),
                ..Default::default()
            })
            .await
            .expect("GetSchedule")
            .into_inner();
        if got.fired_count as usize >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the schedule fired {} of {n} times",
            got.fired_count
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    client
        .delete_schedule(pb::DeleteScheduleRequest {
            schedule_id: s.schedule_id,
            actor_id: "bench".into(),
            ..Default::default()
        })
        .await
        .expect("DeleteSchedule");
    let mut samples = Samples::new();
    for (fired_at, scheduled_for) in fires(db).await {
        samples.push(Duration::from_micros(
            fired_at.saturating_sub(scheduled_for).max(0) as u64,
        ));
    }
    samples
}

/// `(fired_at, scheduled_for)` of every fire, unix micros.
async fn fires(db: &Path) -> Vec<(i64, i64)> {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .expect("open central's database");
    sqlx::query_as("SELECT fired_at, scheduled_for FROM schedule_fires")
        .fetch_all(&mut conn)
        .await
        .expect("read schedule_fires")
}

/// ListTasks limit 100, newest first, of the tasks with
/// `ipa.schedule_id = X`: `n` calls.
async fn list_of_schedule(client: &mut CentralClient, n: usize, matching: usize) -> Samples {
    let req = pb::ListTasksRequest {
        limit: 100,
        order_by: pb::OrderBy::CreatedAt as i32,
        order: pb::Order::Desc as i32,
        metadata_equals: [(SCHEDULE_KEY.to_owned(), SCHEDULE_ID.to_owned())].into(),
        ..Default::default()
    };
    // Warm-up.
    client.list_tasks(req.clone()).await.expect("ListTasks");
    let mut s = Samples::new();
    for _ in 0..n {
        let t0 = Instant::now();
        let r = client.list_tasks(req.clone()).await.expect("ListTasks");
        s.push(t0.elapsed());
        let tasks = r.into_inner().tasks;
        assert_eq!(tasks.len(), matching.min(100), "ListTasks of one schedule");
        assert!(
            tasks
                .iter()
                .all(|t| t.metadata.get(SCHEDULE_KEY).map(String::as_str) == Some(SCHEDULE_ID)),
            "ListTasks of one schedule returned another task"
        );
    }
    s
}

async fn get_stats(client: &mut CentralClient, group_by: pb::GroupBy, n: usize) -> Samples {
    let req = pb::GetStatsRequest {
        group_by: group_by as i32,
        ..Default::default()
    };
    // Warm-up.
    client.get_stats(req).await.expect("GetStats");
    let mut s = Samples::new();
    for _ in 0..n {
        let t0 = Instant::now();
        let r = client.get_stats(req).await.expect("GetStats");
        s.push(t0.elapsed());
        assert!(!r.into_inner().groups.is_empty(), "GetStats found no tasks");
    }
    s
}

/// The table rows of this phase (metrics 19–22 of [`crate::report::METRICS`]).
pub fn rows(r: &RetentionResults) -> Vec<crate::report::Row> {
    use crate::report::{METRICS, Row, ratio};
    use crate::stats::{ms, p50_p99};
    let secs = |d: Duration| d.as_secs_f64();
    let ms50 = Duration::from_millis(50);
    let mut rows = Vec::new();
    rows.push(
        Row::new(METRICS[19], "—", "p99 ≤ 50 ms (idle machine)")
            .measured(format!(
                "{}, max {} (fire time → its task committed)",
                p50_p99(&r.lateness),
                ms(r.lateness.max())
            ))
            .met(r.lateness.len() > 0 && r.lateness.p99() <= ms50),
    );
    rows.push(
        Row::new(METRICS[20], "—", "p99 ≤ 50 ms over 100,000 tasks")
            .measured(format!(
                "no grouping {}; by template {}; over {} tasks",
                p50_p99(&r.stats_none),
                p50_p99(&r.stats_by_template),
                r.table
            ))
            .met(
                r.stats_none.p99() <= ms50
                    && r.stats_by_template.p99() <= ms50
                    && r.table >= 100_000,
            ),
    );
    let rate = r.archived as f64 / secs(r.archive_took).max(1e-9);
    rows.push(
        Row::new(
            METRICS[21],
            "—",
            "p99 ≤ 2× idle p99 (100,000 tasks archived)",
        )
        .measured(format!(
            "{} while ArchiveTasks moved {} tasks in {:.1} s ({rate:.0}/s){}",
            p50_p99(&r.create_during),
            r.archived,
            secs(r.archive_took),
            r.archive_error
                .as_ref()
                .map(|e| format!("; the call failed: {e}"))
                .unwrap_or_default()
        ))
        .baseline(format!("idle, same run: {}", p50_p99(&r.create_idle)))
        .ratio(ratio(
            secs(r.create_during.p99()),
            secs(r.create_idle.p99()),
        ))
        .met(
            r.create_during.p99() <= 2 * r.create_idle.p99()
                && r.archived >= 100_000
                && r.archive_error.is_none(),
        ),
    );
    rows.push(
        Row::new(
            METRICS[22],
            "< 100 ms",
            "p50 ≤ 3 ms (as ListTasks limit 100)",
        )
        .measured(format!(
            "{} listing 100 of the {} tasks of one schedule among {} tasks",
            p50_p99(&r.list_schedule),
            r.schedule_tasks,
            r.table
        ))
        .met(
            r.list_schedule.len() > 0
                && r.list_schedule.p50() <= Duration::from_millis(3)
                && r.table >= 100_000,
        ),
    );
    rows
}
