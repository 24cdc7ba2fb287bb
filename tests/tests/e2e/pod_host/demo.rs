//! demo-pod under a pod-host: every phase in order, then exit 0; with
//! `demo.crash_at` exit 1 at that phase.

use ipa_tests::pb;
use pb::pod_event::Kind;

use super::support::{Central, Host, new_id};

async fn run_demo(
    host: &Host,
    central: &mut Central,
    template: &str,
    metadata: &[(&str, &str)],
) -> (Vec<i32>, pb::PodExit) {
    let pod = host
        .try_start_pod(&new_id(), &new_id(), 1, template, metadata)
        .await
        .expect("StartPod demo");
    let mut phases = Vec::new();
    loop {
        let e = central.event_of(&pod.pod_id, |_| true).await;
        match e.kind {
            Some(Kind::StateChanged(s)) => {
                assert_eq!(s.version as usize, phases.len() + 1);
                phases.push(s.phase);
            }
            Some(Kind::Exited(x)) => return (phases, x),
            _ => {}
        }
    }
}

#[tokio::test]
async fn demo_pod_reports_every_phase_in_order_then_exits_0() {
    use pb::Phase::*;
    let host = Host::start(&[]).await;
    let mut central = host.central("", 0).await;
    let (phases, exit) = run_demo(&host, &mut central, "demo", &[("demo.step_ms", "20")]).await;
    assert_eq!(
        phases,
        vec![
            SpecClarification as i32,
            Planning as i32,
            Development as i32,
            Review as i32,
            Completed as i32
        ]
    );
    assert_eq!(exit.exit_code, Some(0));
    assert!(exit.reported_completed);

    // crash_at: exit 1 on reaching the phase, before reporting it.
    for name in ["development", "PHASE_DEVELOPMENT"] {
        let (phases, exit) = run_demo(
            &host,
            &mut central,
            "demo",
            &[("demo.step_ms", "20"), ("demo.crash_at", name)],
        )
        .await;
        assert_eq!(
            phases,
            vec![SpecClarification as i32, Planning as i32],
            "{name}"
        );
        assert_eq!(exit.exit_code, Some(1));
        assert!(!exit.reported_completed);
    }
}

#[tokio::test]
async fn without_config_the_default_template_runs_demo_pod() {
    let host = Host::start_default(&[]).await;
    let mut central = host.central("", 0).await;
    assert_eq!(central.hello.templates, vec!["default".to_owned()]);
    // An empty template name means `default`.
    let (phases, exit) = run_demo(&host, &mut central, "", &[("demo.step_ms", "10")]).await;
    assert_eq!(phases.len(), 5);
    assert_eq!(exit.exit_code, Some(0));
    assert!(exit.reported_completed);
}
