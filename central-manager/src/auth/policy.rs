//! Which role each RPC needs: the one table of the API's permissions
//! (API.md, Security). Health and reflection are open, so probes and
//! `grpcurl list` work without credentials.

use super::Role;

/// What a call to `path` (`/package.Service/Method`) requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No authentication at all.
    Open,
    /// An authenticated caller with at least this role.
    Role(Role),
}

/// The services anyone may call.
const OPEN_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The task API.
const SERVICE: &str = "ipa.v1.CentralManager";

/// Reads (every method not listed needs admin: a method added without an
/// entry here fails closed).
const READER: &[&str] = &[
    "GetTask",
    "ListTasks",
    "CountTasks",
    "GetTaskEvents",
    "WatchEvents",
    "ListActivePods",
    "ListPodHosts",
    "GetPodLogs",
    "GetStats",
    "GetSchedule",
    "ListSchedules",
    "GetClusterInfo",
];

/// Task, pod and schedule mutations.
const OPERATOR: &[&str] = &[
    "CreateTask",
    "StartPod",
    "StopPod",
    "RestartPod",
    "CompleteTask",
    "CancelTask",
    "CreateSchedule",
    "PauseSchedule",
    "ResumeSchedule",
    "TriggerSchedule",
    "DeleteSchedule",
];

/// The access rule of a request path.
pub fn access(path: &str) -> Access {
    let p = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = p.split_once('/').unwrap_or((p, ""));
    if OPEN_SERVICES.contains(&service) {
        return Access::Open;
    }
    if service == SERVICE {
        if READER.contains(&method) {
            return Access::Role(Role::Reader);
        }
        if OPERATOR.contains(&method) {
            return Access::Role(Role::Operator);
        }
    }
    // DeleteTask, ArchiveTasks, CancelTasks, and anything unknown.
    Access::Role(Role::Admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(m: &str) -> Access {
        access(&format!("/ipa.v1.CentralManager/{m}"))
    }

    #[test]
    fn the_table_of_api_md() {
        for m in [
            "GetTask",
            "ListTasks",
            "WatchEvents",
            "GetPodLogs",
            "GetStats",
        ] {
            assert_eq!(role(m), Access::Role(Role::Reader), "{m}");
        }
        for m in [
            "CreateTask",
            "StartPod",
            "StopPod",
            "RestartPod",
            "CompleteTask",
            "CancelTask",
            "TriggerSchedule",
        ] {
            assert_eq!(role(m), Access::Role(Role::Operator), "{m}");
        }
        for m in ["DeleteTask", "ArchiveTasks", "CancelTasks", "SomethingNew"] {
            assert_eq!(role(m), Access::Role(Role::Admin), "{m}");
        }
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(access("/grpc.health.v1.Health/Watch"), Access::Open);
        assert_eq!(
            access("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Access::Open
        );
        assert_eq!(
            access("/ipa.v1.PodHost/StartPod"),
            Access::Role(Role::Admin)
        );
        assert_eq!(access("garbage"), Access::Role(Role::Admin));
    }
}
