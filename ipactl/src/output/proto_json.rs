//! Proto3 JSON (and the same tree as YAML) for the generated messages:
//! camelCase field names, enum values by name, Timestamps in RFC 3339,
//! 64-bit integers as strings, bytes in base64 — what grpcurl and every
//! gRPC JSON client print. The message is re-read as a `DynamicMessage`
//! against the descriptor set the servers serve for reflection, so the
//! generated types need no serde annotations. Fields at their default value
//! are printed too, so scripts can rely on every field being there.

use std::sync::OnceLock;

use ipa_proto::v1 as pb;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde::Serialize;

use crate::error::CliError;

/// A generated message with its full proto name.
pub trait Named: Message + Sized {
    /// e.g. `ipa.v1.Task`.
    const NAME: &'static str;
}

macro_rules! named {
    ($($t:ident),* $(,)?) => {
        $(impl Named for pb::$t {
            const NAME: &'static str = concat!("ipa.v1.", stringify!($t));
        })*
        /// Every message ipactl prints (for the descriptor test).
        #[cfg(test)]
        pub const ALL_NAMES: &[&str] = &[$(concat!("ipa.v1.", stringify!($t))),*];
    };
}

named!(
    Task,
    CreateTaskResponse,
    ListTasksResponse,
    CountTasksResponse,
    StartPodResponse,
    StopPodResponse,
    RestartPodResponse,
    CompleteTaskResponse,
    CancelTaskResponse,
    ListActivePodsResponse,
    GetTaskEventsResponse,
    Event,
    ListPodHostsResponse,
    PodLogChunk,
    Schedule,
    CreateScheduleResponse,
    ListSchedulesResponse,
    PauseScheduleResponse,
    ResumeScheduleResponse,
    TriggerScheduleResponse,
    DeleteScheduleResponse,
    DeleteTaskResponse,
    GetStatsResponse,
    GetClusterInfoResponse,
);

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The descriptor set is compiled into ipa-proto from the same .proto
        // files as the generated types; failing to decode it is a build bug.
        DescriptorPool::decode(ipa_proto::FILE_DESCRIPTOR_SET)
            .expect("ipa-proto's embedded descriptor set decodes")
    })
}

fn descriptor(name: &str) -> Result<MessageDescriptor, CliError> {
    pool()
        .get_message_by_name(name)
        .ok_or_else(|| CliError::Output(format!("no descriptor for {name}")))
}

/// The message as a dynamic message of its descriptor.
fn dynamic<M: Named>(msg: &M) -> Result<DynamicMessage, CliError> {
    let desc = descriptor(M::NAME)?;
    DynamicMessage::decode(desc, msg.encode_to_vec().as_slice())
        .map_err(|e| CliError::Output(format!("re-reading {}: {e}", M::NAME)))
}

/// Serializes with the proto3 JSON options used everywhere here.
struct Proto3(DynamicMessage);

impl Serialize for Proto3 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let options = SerializeOptions::new().skip_default_fields(false);
        self.0.serialize_with_options(s, &options)
    }
}

/// The message as proto3 JSON, indented or on one line.
pub fn to_json<M: Named>(msg: &M, pretty: bool) -> Result<String, CliError> {
    let value = Proto3(dynamic(msg)?);
    let text = if pretty {
        serde_json::to_string_pretty(&value)
    } else {
        serde_json::to_string(&value)
    };
    text.map_err(|e| CliError::Output(format!("JSON of {}: {e}", M::NAME)))
}

/// The same tree as YAML.
pub fn to_yaml<M: Named>(msg: &M) -> Result<String, CliError> {
    yaml_serde::to_string(&Proto3(dynamic(msg)?))
        .map_err(|e| CliError::Output(format!("YAML of {}: {e}", M::NAME)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    #[test]
    fn every_printed_message_has_a_descriptor() {
        for name in ALL_NAMES {
            assert!(descriptor(name).is_ok(), "{name}");
        }
    }

    fn task() -> pb::Task {
        pb::Task {
            task_id: "0b6f5a4e-8d7c-4b3a-9e21-5f0c7d8e9a10".into(),
            title: "t".into(),
            status: pb::TaskStatus::Active as i32,
            phase: pb::Phase::SpecClarification as i32,
            created_at: Some(Timestamp {
                seconds: 1_767_225_600,
                nanos: 500_000_000,
            }),
            metadata: [("team".to_owned(), "web".to_owned())].into(),
            version: 7,
            ..Default::default()
        }
    }

    #[test]
    fn json_uses_proto_names_enum_names_and_rfc3339() {
        let v: serde_json::Value = serde_json::from_str(&to_json(&task(), true).unwrap()).unwrap();
        assert_eq!(v["taskId"], "0b6f5a4e-8d7c-4b3a-9e21-5f0c7d8e9a10");
        assert_eq!(v["status"], "TASK_STATUS_ACTIVE");
        assert_eq!(v["phase"], "PHASE_SPEC_CLARIFICATION");
        assert_eq!(v["createdAt"], "2026-01-01T00:00:00.500Z");
        assert_eq!(v["metadata"]["team"], "web");
        // uint64 as a string, as proto3 JSON has it.
        assert_eq!(v["version"], "7");
        // Defaults are printed too.
        assert_eq!(v["podStatus"], "POD_STATUS_UNSPECIFIED");
        assert_eq!(v["restartCount"], 0);
        assert_eq!(v["description"], "");
    }

    #[test]
    fn one_line_json_for_streams() {
        let line = to_json(&task(), false).unwrap();
        assert!(!line.contains('\n'));
    }

    #[test]
    fn yaml_is_the_same_tree() {
        let y: serde_json::Value = yaml_serde::from_str(&to_yaml(&task()).unwrap()).unwrap();
        let j: serde_json::Value = serde_json::from_str(&to_json(&task(), false).unwrap()).unwrap();
        assert_eq!(y, j);
    }
}
