//! Helpers of the schedule tests: creating schedules, reading the tasks a
//! schedule made (ListTasks with `metadata_equals`), and waiting on them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipa_tests::{DEADLINE, pb, wait_for_async};

use crate::system::support::Client;

/// A ScheduleTask for the `ledger` template with `metadata`.
pub fn ledger_task(metadata: &[(&str, &str)]) -> pb::ScheduleTask {
    pb::ScheduleTask {
        title: "scheduled".into(),
        template: "ledger".into(),
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// Creates an interval schedule.
pub async fn every(
    c: &mut Client,
    name: &str,
    seconds: u64,
    overlap: pb::Overlap,
    task: pb::ScheduleTask,
) -> pb::Schedule {
    create(
        c,
        pb::CreateScheduleRequest {
            name: name.into(),
            interval_seconds: seconds,
            overlap: overlap as i32,
            task: Some(task),
            ..Default::default()
        },
    )
    .await
}

/// CreateSchedule (actor `tester` filled in).
pub async fn create(c: &mut Client, mut req: pb::CreateScheduleRequest) -> pb::Schedule {
    if req.actor_id.is_empty() {
        req.actor_id = "tester".into();
    }
    c.create_schedule(req)
        .await
        .expect("CreateSchedule")
        .into_inner()
        .schedule
        .expect("schedule")
}

pub async fn get(c: &mut Client, id: &str) -> pb::Schedule {
    c.get_schedule(pb::GetScheduleRequest {
        schedule_id: id.into(),
        ..Default::default()
    })
    .await
    .expect("GetSchedule")
    .into_inner()
}

/// Every task schedule `id` made (archived ones too), oldest first.
pub async fn tasks_of(c: &mut Client, id: &str) -> Vec<pb::Task> {
    let mut out = Vec::new();
    loop {
        let page = c
            .list_tasks(pb::ListTasksRequest {
                metadata_equals: [("ipa.schedule_id".to_owned(), id.to_owned())].into(),
                include_archived: true,
                order_by: pb::OrderBy::CreatedAt as i32,
                order: pb::Order::Asc as i32,
                limit: 1000,
                offset: out.len() as u32,
                ..Default::default()
            })
            .await
            .expect("ListTasks")
            .into_inner();
        let n = page.tasks.len();
        out.extend(page.tasks);
        if n < 1000 && !page.truncated {
            return out;
        }
    }
}

/// Waits until schedule `id` made at least `n` tasks; returns them.
pub async fn wait_tasks(c: &Client, id: &str, n: usize) -> Vec<pb::Task> {
    wait_for_async(&format!("{n} tasks of schedule {id}"), DEADLINE, || {
        let mut c = c.clone();
        let id = id.to_owned();
        async move {
            let t = tasks_of(&mut c, &id).await;
            (t.len() >= n).then_some(t)
        }
    })
    .await
}

/// Waits until GetSchedule satisfies `pred`.
pub async fn wait_schedule(
    c: &Client,
    id: &str,
    what: &str,
    pred: impl Fn(&pb::Schedule) -> bool,
) -> pb::Schedule {
    let pred = &pred;
    wait_for_async(&format!("schedule {id}: {what}"), DEADLINE, || {
        let mut c = c.clone();
        let id = id.to_owned();
        async move {
            let s = get(&mut c, &id).await;
            pred(&s).then_some(s)
        }
    })
    .await
}

/// The API reason of an error status.
pub fn reason(s: &tonic::Status) -> Option<&'static str> {
    ipa_proto::reason_of(s).map(|r| r.as_str())
}

/// The fire time a task was made for (its `ipa.scheduled_for`), unix
/// micros.
pub fn scheduled_for(t: &pb::Task) -> i64 {
    let s = &t.metadata["ipa.scheduled_for"];
    parse_rfc3339(s).unwrap_or_else(|| panic!("bad ipa.scheduled_for {s:?}"))
}

/// Unix micros of an RFC 3339 UTC time as central writes it
/// (`2026-03-29T01:00:00Z`, optionally with a fraction).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let micros = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}")[..6].parse::<i64>().ok()?
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + micros)
}

/// Unix micros of a Timestamp.
pub fn micros(ts: &Option<prost_types::Timestamp>) -> i64 {
    let ts = ts.as_ref().expect("timestamp");
    ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1000
}

/// Now, unix micros.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Waits until the wall clock passes `at` (unix micros): for tests that
/// need time to pass with central-manager down, where there is no
/// condition to wait on.
pub async fn until(at: i64) {
    let ahead = at - now_micros();
    if ahead > 0 {
        tokio::time::sleep(Duration::from_micros(ahead as u64)).await;
    }
}

/// No two tasks for one fire time.
pub fn assert_one_task_per_fire_time(tasks: &[pb::Task]) {
    let mut times: Vec<i64> = tasks.iter().map(scheduled_for).collect();
    times.sort_unstable();
    let n = times.len();
    times.dedup();
    assert_eq!(times.len(), n, "two tasks for one fire time");
}

#[test]
fn rfc3339_parses_as_central_writes_it() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        parse_rfc3339("2026-03-29T01:00:00Z"),
        Some(1_774_746_000_000_000)
    );
    assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1_500_000));
    assert_eq!(parse_rfc3339("nope"), None);
}
