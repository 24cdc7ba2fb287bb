//! StartPod is race-safe: of 10 concurrent calls for one task exactly one
//! wins and 9 get ALREADY_STARTED, round after round on the same task, and
//! the ledger shows exactly one pod per round, never two at once.

use futures::future::join_all;
use ipa_proto::ErrorReason;
use ipa_tests::pb;

use super::support::{Spec, System, wait_all_dead};

const ROUNDS: u64 = 20;
const RACERS: usize = 10;

#[tokio::test]
async fn ten_concurrent_start_pods_one_wins_nine_already_started_20_rounds() {
    let sys = System::start(Spec::relaxed()).await;
    let task = sys.ledger_task(&[("ledger.alive_ms", "20")]).await;
    // Each racer on its own connection, so the calls really overlap.
    let clients: Vec<_> = (0..RACERS).map(|_| sys.client()).collect();
    let mut winners = Vec::new();
    for round in 1..=ROUNDS {
        let calls = clients.iter().map(|c| {
            let mut c = c.clone();
            let id = task.task_id.clone();
            async move {
                c.start_pod(pb::StartPodRequest {
                    task_id: id,
                    actor_id: "racer".into(),
                    correlation_id: String::new(),
                    queue: false,
                })
                .await
                .map(|r| r.into_inner().pod.expect("pod"))
            }
        });
        let results = join_all(calls).await;
        let (ok, err): (Vec<_>, Vec<_>) = results.into_iter().partition(|r| r.is_ok());
        let others: Vec<_> = err
            .iter()
            .map(|r| r.as_ref().unwrap_err())
            .filter(|s| ipa_proto::reason_of(s) != Some(ErrorReason::AlreadyStarted))
            .collect();
        assert!(
            others.is_empty(),
            "round {round}: unexpected errors {others:?}"
        );
        assert_eq!(
            (ok.len(), err.len()),
            (1, RACERS - 1),
            "round {round}: exactly one StartPod wins"
        );
        let pod = ok.into_iter().next().unwrap().unwrap();
        assert_eq!(pod.generation, round, "a new generation per start");
        sys.wait_run(&pod.pod_id).await;
        let events = sys.events(&task.task_id).await;
        let started = events.iter().filter(|e| e.r#type == "pod_started").count();
        assert_eq!(started as u64, round, "one pod_started per round");

        sys.stop_pod(&task.task_id).await.expect("StopPod");
        wait_all_dead("stopped pod", &[pod.pid], ipa_tests::DEADLINE).await;
        sys.wait_task(&task.task_id, "inactive after stop", |t| {
            t.status() == pb::TaskStatus::Inactive
        })
        .await;
        winners.push(pod);
    }
    let runs = sys.runs_of(&task.task_id);
    let mut gens: Vec<u64> = runs.iter().map(|r| r.generation).collect();
    gens.sort();
    assert_eq!(gens, (1..=ROUNDS).collect::<Vec<_>>(), "one pod per round");
    sys.assert_no_overlap();
}
