//! GetPodLogs of any size through central-manager: chunks of at most
//! 64 KiB (a stock client's 4 MiB limit is never reached), the whole log,
//! tails, follows, the `tail_lines` limit, and follows that end when
//! central-manager shuts down.

use std::time::Duration;

use ipa_tests::{DEADLINE, pb, wait_for_async};
use nix::sys::signal::Signal;
use tonic::Code;

use super::support::Cluster;

const MAX_CHUNK: usize = 64 * 1024;
const LINES: u32 = 200_000;
/// How soon a follow must end once central-manager begins shutting down.
const STREAM_END: Duration = Duration::from_secs(5);

/// The pod's stdout: 200,000 numbered lines, 8.2 MB.
fn line(i: u32) -> String {
    format!("{i:08} padding-padding-padding-padding\n")
}

fn big_template() -> String {
    let script = format!(
        "seq -f '%08.0f padding-padding-padding-padding' 1 {LINES}; echo '{{\"message\":\"written\"}}' >&3; exec sleep 1000"
    );
    format!("command = \"/bin/sh\"\nargs = [\"-c\", {script:?}]")
}

fn joined(chunks: &[pb::PodLogChunk]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.data.iter().copied()).collect()
}

#[tokio::test]
async fn eight_megabytes_of_output_come_through_central_in_bounded_chunks() {
    // Large enough a cap that all 8.2 MB are retained.
    let c = Cluster::start(
        &[("big", &big_template())],
        &["--log-max-bytes", "33554432"],
    )
    .await;
    let t = c.task("big").await;
    c.start_pod(&t.task_id).await.expect("StartPod");
    c.wait_version(&t.task_id, 1).await;
    // The status line may overtake the last stdout bytes: wait for them.
    let last = line(LINES);
    wait_for_async("the last line captured", DEADLINE, || async {
        let tail = c.logs(&t.task_id, 1).await.ok()?;
        (joined(&tail) == last.as_bytes()).then_some(())
    })
    .await;

    let t0 = std::time::Instant::now();
    let all = c.logs(&t.task_id, 0).await.expect("the whole log");
    let whole = t0.elapsed();
    let expected: Vec<u8> = (1..=LINES).flat_map(|i| line(i).into_bytes()).collect();
    assert!(
        all.iter()
            .all(|ch| ch.data.len() <= MAX_CHUNK && ch.stream == "stdout"),
        "chunk sizes {:?}",
        all.iter().map(|ch| ch.data.len()).max()
    );
    assert!(all.len() >= expected.len() / MAX_CHUNK);
    let got = joined(&all);
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the whole output, unchanged and in order");

    let t0 = std::time::Instant::now();
    let tail = c.logs(&t.task_id, 10_000).await.expect("tail");
    eprintln!(
        "GetPodLogs through central: {} bytes in {} chunks in {whole:?}; tail of 10,000 lines in {:?}",
        got.len(),
        all.len(),
        t0.elapsed()
    );
    let want: Vec<u8> = (LINES - 9_999..=LINES)
        .flat_map(|i| line(i).into_bytes())
        .collect();
    assert!(joined(&tail) == want, "the last 10,000 lines");

    let err = c.logs(&t.task_id, 10_001).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("tail_lines"), "{err:?}");

    // Follow: the tail, then the stream ends when the pod's output does.
    let mut follow = c
        .client
        .clone()
        .get_pod_logs(pb::GetPodLogsRequest {
            task_id: t.task_id.clone(),
            follow: true,
            tail_lines: 2,
        })
        .await
        .expect("follow")
        .into_inner();
    let first = tokio::time::timeout(DEADLINE, follow.message())
        .await
        .expect("tail in time")
        .expect("chunk")
        .expect("not ended");
    assert_eq!(
        String::from_utf8_lossy(&first.data),
        format!("{}{}", line(LINES - 1), line(LINES))
    );
    c.client
        .clone()
        .stop_pod(pb::StopPodRequest {
            task_id: t.task_id.clone(),
            actor_id: "tester".into(),
            ..Default::default()
        })
        .await
        .expect("StopPod");
    let end = tokio::time::timeout(DEADLINE, follow.message())
        .await
        .expect("the follow ends with the pod's output");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

/// central-manager's graceful shutdown does not wait for a follow of a pod
/// that runs on: the stream ends and the process exits.
#[tokio::test]
async fn a_follow_stream_ends_when_central_shuts_down() {
    let mut c = Cluster::start(
        &[(
            "talker",
            "command = \"/bin/sh\"\nargs = [\"-c\", \"echo hello; exec sleep 1000\"]",
        )],
        &[],
    )
    .await;
    let t = c.task("talker").await;
    c.start_pod(&t.task_id).await.expect("StartPod");
    let mut follow = wait_for_async("the first line", DEADLINE, || async {
        let mut s = c
            .client
            .clone()
            .get_pod_logs(pb::GetPodLogsRequest {
                task_id: t.task_id.clone(),
                follow: true,
                tail_lines: 0,
            })
            .await
            .ok()?
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(1), s.message())
            .await
            .ok()?
            .ok()??;
        (first.data == b"hello\n").then_some(s)
    })
    .await;
    c.central.signal(Signal::SIGTERM);
    // Ended by the shutdown itself, not by some later timeout of the
    // server's drain (which takes about 10 s): a bound well below that.
    let end = tokio::time::timeout(STREAM_END, follow.message())
        .await
        .expect("the follow ends when the shutdown begins");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
    let status = c
        .central
        .wait_exit(DEADLINE)
        .await
        .expect("central exits although a follow was open");
    assert!(status.success(), "{status:?}");
}
