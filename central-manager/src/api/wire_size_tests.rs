//! The page budget's premise, as a property: a record's size hint is never
//! less than its protobuf encoding in a repeated field.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use prost::Message;

use super::convert::*;
use crate::domain::*;

fn text(max: usize) -> impl Strategy<Value = String> {
    vec(prop_oneof![Just('a'), Just('😀'), any::<char>()], 0..=max)
        .prop_map(|v| v.into_iter().collect())
}

prop_compose! {
    fn task()(
        title in text(300),
        description in text(2000),
        created_by in text(300),
        metadata in btree_map(text(130), text(300), 0..20),
        pod_message in text(1200),
        pod in proptest::option::of((text(60), text(300), any::<u32>(), any::<u64>(), any::<i64>())),
        times in (any::<i64>(), any::<i64>(), proptest::option::of(any::<i64>())),
        counters in (any::<u64>(), any::<u32>()),
        policy in proptest::option::of((any::<bool>(), any::<u32>())),
        deps in 0..=crate::domain::dependencies::MAX_DEPENDENCIES,
    ) -> TaskRecord {
        TaskRecord {
            task_id: TaskId::new(),
            title: Title::from_db(title),
            description: Description::from_db(description),
            phase: Phase::Development,
            status: TaskStatus::Active,
            created_at: times.0,
            updated_at: times.1,
            created_by,
            metadata: Metadata::from_map(metadata),
            template: TemplateName::from_db("a-template.name".into()),
            restart_policy: RestartPolicySpec {
                auto_restart: policy.map(|p| p.0),
                max_restarts: policy.map(|p| p.1),
                window_seconds: policy.map(|p| p.1),
                initial_backoff_ms: policy.map(|p| p.1),
                max_backoff_ms: policy.map(|p| p.1),
            },
            pod_status: if pod.is_some() { PodStatus::Running } else { PodStatus::Stopped },
            pod: pod.map(|(pod_id, pod_host, pid, generation, started_at)| PodInfo {
                pod_id, pod_host, pid, generation, started_at,
            }),
            live_version: counters.0,
            restart_count: counters.1,
            pod_message,
            next_restart_at: times.2,
            archived: false,
            timeout_seconds: policy.map(|p| p.1),
            deadline: times.2,
            priority: crate::domain::Priority::Critical,
            queue_timeout_seconds: policy.map(|p| p.1),
            queue: times.2.map(|t| crate::domain::QueueEntry { seq: t, queued_at: t, position: u32::MAX }),
            depends_on: (0..deps).map(|_| TaskId::new()).collect(),
            waiting_dependencies: deps > 0,
        }
    }
}

const D: RestartDefaults = RestartDefaults {
    auto_restart: true,
    max_restarts: u32::MAX,
    window_seconds: u32::MAX,
    initial_backoff_ms: u32::MAX,
    max_backoff_ms: u32::MAX,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The page budget relies on it: a record's hint is never less
    /// than its encoding in a repeated field (tag + length + body).
    #[test]
    fn task_hints_never_undercount(t in task()) {
        let encoded = task_to_pb(&t, &D).encoded_len() + 6;
        prop_assert!(encoded <= t.wire_size_hint(), "{} > {}", encoded, t.wire_size_hint());
    }

    #[test]
    fn event_hints_never_undercount(
        data in text(3000), kind in text(40), actor in text(300), corr in text(300),
        position in any::<u64>(), version in any::<u64>(), at in any::<i64>(),
    ) {
        let e = EventRecord {
            position,
            task_id: TaskId::new(),
            version,
            event_type: kind,
            data_json: data,
            actor_id: actor,
            correlation_id: corr,
            occurred_at: at,
        };
        let hint = e.wire_size_hint();
        prop_assert!(event_to_pb(e).encoded_len() + 6 <= hint);
    }
}
