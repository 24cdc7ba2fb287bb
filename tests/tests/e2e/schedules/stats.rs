//! GetStats against tasks whose timings the test controls: demo pods that
//! walk the phases at a known pace, one task cancelled; the expected
//! figures are computed from the tasks' own audit trails (the times the
//! commits recorded), so they must match exactly.

use ipa_tests::pb;

use super::support::{micros, now_micros};
use crate::system::support::{Spec, System};

const TIMED: [&str; 4] = ["spec_clarification", "planning", "development", "review"];

/// Time spent in each timed phase, micros, from a task's trail.
fn phase_times(events: &[pb::Event]) -> [i64; 4] {
    let mut points: Vec<(i64, String)> = Vec::new();
    for e in events {
        let at = micros(&e.occurred_at);
        match e.r#type.as_str() {
            "task_created" => points.push((at, "spec_clarification".into())),
            "phase_changed" => {
                let d: serde_json::Value = serde_json::from_str(&e.data_json).unwrap();
                points.push((at, d["to"].as_str().unwrap().to_owned()));
            }
            "task_completed" => points.push((at, "completed".into())),
            _ => {}
        }
    }
    points.dedup_by(|b, a| a.1 == b.1);
    let mut out = [0; 4];
    for w in points.windows(2) {
        if let Some(i) = TIMED.iter().position(|p| *p == w[0].1) {
            out[i] += w[1].0 - w[0].0;
        }
    }
    out
}

fn secs(us: i64) -> f64 {
    us as f64 / 1e6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_match_the_timings_of_the_tasks() {
    let sys = System::start(Spec::relaxed()).await;
    let mut c = sys.client();
    let since = now_micros();
    let actor = "stats-e2e";
    let mut done = Vec::new();
    for step in ["150", "300"] {
        let t = sys
            .create(pb::CreateTaskRequest {
                title: format!("demo {step}"),
                actor_id: actor.into(),
                metadata: [("demo.step_ms".to_owned(), step.to_owned())].into(),
                auto_start: true,
                ..Default::default()
            })
            .await;
        done.push(t.task_id);
    }
    let cancelled = sys
        .create(pb::CreateTaskRequest {
            title: "cancelled".into(),
            actor_id: actor.into(),
            ..Default::default()
        })
        .await;
    c.cancel_task(pb::CancelTaskRequest {
        task_id: cancelled.task_id.clone(),
        reason: "not needed".into(),
        actor_id: actor.into(),
        correlation_id: String::new(),
    })
    .await
    .expect("CancelTask");
    let mut ttc = Vec::new();
    let mut phases = Vec::new();
    for id in &done {
        let t = sys
            .wait_task(id, "completed", |t| t.status() == pb::TaskStatus::Completed)
            .await;
        let events = sys.events(id).await;
        let completed = events
            .iter()
            .find(|e| e.r#type == "task_completed")
            .expect("task_completed");
        ttc.push(micros(&completed.occurred_at) - micros(&t.created_at));
        phases.push(phase_times(&events));
    }
    ttc.sort_unstable();
    let stats = c
        .get_stats(pb::GetStatsRequest {
            created_after: Some(prost_types::Timestamp {
                seconds: since / 1_000_000,
                nanos: 0,
            }),
            group_by: pb::GroupBy::CreatedBy as i32,
            ..Default::default()
        })
        .await
        .expect("GetStats")
        .into_inner();
    let g = stats
        .groups
        .iter()
        .find(|g| g.key == actor)
        .expect("the test's group");
    assert_eq!(g.total, 3);
    let count = |s: pb::TaskStatus| {
        g.status_counts
            .iter()
            .find(|c| c.status == s as i32)
            .map_or(0, |c| c.count)
    };
    assert_eq!(count(pb::TaskStatus::Completed), 2);
    assert_eq!(count(pb::TaskStatus::Cancelled), 1);
    assert!((g.completion_rate - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(g.failure_rate, 0.0);
    // Nearest rank of two values: p50 is the smaller, p95 the larger.
    let d = g.time_to_complete.as_ref().expect("time_to_complete");
    assert_eq!((d.p50_seconds, d.p95_seconds), (secs(ttc[0]), secs(ttc[1])));
    for (i, name) in TIMED.iter().enumerate() {
        let mut want: Vec<i64> = phases.iter().map(|p| p[i]).filter(|v| *v > 0).collect();
        want.sort_unstable();
        let got = g
            .phase_durations
            .iter()
            .find(|p| p.phase == phase_pb(name) as i32)
            .and_then(|p| p.duration)
            .expect("phase duration");
        if want.is_empty() {
            assert_eq!((got.p50_seconds, got.p95_seconds), (0.0, 0.0), "{name}");
        } else {
            assert_eq!(got.p50_seconds, secs(want[0]), "{name}");
            assert_eq!(got.p95_seconds, secs(*want.last().unwrap()), "{name}");
        }
    }
    // The demo pod's pace shows: 300 ms per phase takes longer than 150.
    let planning = |p: &[i64; 4]| p[1];
    assert!(planning(&phases[1]) > planning(&phases[0]));
    assert_eq!((g.restarts_mean, g.restarts_max), (0.0, 0));
    assert!(stats.running_pods <= 1);
}

fn phase_pb(name: &str) -> pb::Phase {
    match name {
        "spec_clarification" => pb::Phase::SpecClarification,
        "planning" => pb::Phase::Planning,
        "development" => pb::Phase::Development,
        "review" => pb::Phase::Review,
        other => panic!("{other}"),
    }
}
