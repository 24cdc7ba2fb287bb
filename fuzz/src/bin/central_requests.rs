//! central-manager's request conversions and validation: the bytes of a
//! request message, decoded as the server decodes them, then converted to
//! a domain request (`api::convert`). A conversion must never panic, must
//! refuse only with an INVALID_ARGUMENT-coded reason whose message starts
//! with it, and what it accepts must be within the API's limits.

#![no_main]

use central_manager::domain::{
    CancelTask, EventsQuery, ListQuery, LogsQuery, NewTask, StopPod, TaskCommand, TaskFilter,
    TaskId, TemplateName, Title, WatchQuery,
};
use ipa_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// A refusal as the client sees it: INVALID_ARGUMENT, `REASON: sentence`.
fn check_refusal(e: central_manager::Error) {
    let reason = e.reason();
    let status = tonic::Status::from(e);
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{reason}: ")),
        "{status:?}"
    );
}

fn check<T>(r: Result<T, central_manager::Error>, ok: impl FnOnce(T)) {
    match r {
        Ok(v) => ok(v),
        Err(e) => check_refusal(e),
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn check_new_task(t: NewTask) {
    let title = t.title.as_str();
    assert!(!title.is_empty() && title == title.trim() && chars(title) <= 255);
    assert!(chars(t.description.as_str()) <= 10_000);
    assert!(!t.actor.as_str().is_empty() && chars(t.actor.as_str()) <= 255);
    assert!(!t.correlation.as_str().is_empty() && chars(t.correlation.as_str()) <= 255);
    let m = t.metadata.entries();
    assert!(m.len() <= 64);
    assert!(
        m.iter()
            .all(|(k, v)| !k.is_empty() && chars(k) <= 128 && chars(v) <= 4096)
    );
    let tpl = t.template.as_str();
    assert!(!tpl.is_empty() && tpl.len() <= 64);
    assert!(
        tpl.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    );
    if let Some(r) = &t.request_id {
        assert!(chars(r.as_str()) <= 255);
    }
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, rest)) = ipa_fuzz::split_selector(data) else {
        return;
    };
    match selector % 14 {
        0 => {
            if let Some(r) = decode::<pb::CreateTaskRequest>(rest) {
                check(NewTask::try_from(r), check_new_task);
            }
        }
        1 => {
            if let Some(r) = decode::<pb::ListTasksRequest>(rest) {
                check(ListQuery::try_from(r), |q| {
                    assert!((1..=1000).contains(&q.limit))
                });
            }
        }
        2 => {
            if let Some(r) = decode::<pb::CountTasksRequest>(rest) {
                check(TaskFilter::try_from(r), |_| {});
            }
        }
        3 => {
            if let Some(r) = decode::<pb::StartPodRequest>(rest) {
                check(TaskCommand::try_from(r), |c| {
                    assert!(!c.actor.as_str().is_empty())
                });
            }
        }
        4 => {
            if let Some(r) = decode::<pb::StopPodRequest>(rest) {
                check(StopPod::try_from(r), |c| assert!(chars(&c.reason) <= 1000));
            }
        }
        5 => {
            if let Some(r) = decode::<pb::RestartPodRequest>(rest) {
                check(TaskCommand::try_from(r), |_| {});
            }
        }
        6 => {
            if let Some(r) = decode::<pb::CompleteTaskRequest>(rest) {
                check(TaskCommand::try_from(r), |_| {});
            }
        }
        7 => {
            if let Some(r) = decode::<pb::CancelTaskRequest>(rest) {
                check(CancelTask::try_from(r), |c| {
                    assert!(!c.reason.trim().is_empty() && chars(&c.reason) <= 1000)
                });
            }
        }
        8 => {
            if let Some(r) = decode::<pb::GetTaskEventsRequest>(rest) {
                check(EventsQuery::try_from(r), |q| {
                    assert!((1..=1000).contains(&q.limit))
                });
            }
        }
        9 => {
            if let Some(r) = decode::<pb::WatchEventsRequest>(rest) {
                check(WatchQuery::try_from(r), |_| {});
            }
        }
        10 => {
            if let Some(r) = decode::<pb::GetPodLogsRequest>(rest) {
                check(LogsQuery::try_from(r), |q| assert!(q.tail_lines <= 10_000));
            }
        }
        // The domain parsers on raw text.
        11 => {
            let s = String::from_utf8_lossy(rest);
            check(TaskId::parse(&s, "task_id"), |id| {
                // Canonical form: parsing what it prints gives it back.
                let text = id.to_string();
                assert_eq!(text, text.to_lowercase());
                assert_eq!(TaskId::parse(&text, "task_id").ok(), Some(id));
            });
        }
        12 => {
            let s = String::from_utf8_lossy(rest);
            match Title::parse(&s) {
                Ok(t) => assert_eq!(Title::parse(t.as_str()).ok(), Some(t.clone())),
                Err(e) => assert_eq!(e.reason(), ipa_proto::ErrorReason::InvalidTitle),
            }
        }
        _ => {
            let s = String::from_utf8_lossy(rest);
            check(TemplateName::parse(&s), |t| {
                assert_eq!(TemplateName::parse(t.as_str()).ok(), Some(t.clone()))
            });
        }
    }
});
