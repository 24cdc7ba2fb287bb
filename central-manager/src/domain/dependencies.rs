//! Task dependencies (`depends_on`): the request's validation and the
//! stored form. The rules that need the database (each dependency exists,
//! which ones are COMPLETED) live in `store::dependencies`.

use super::TaskId;
use crate::error::{Error, Result};

/// At most this many dependencies per task (docs/api.md).
pub const MAX_DEPENDENCIES: usize = 32;

/// `Task.waiting_for` of a task whose start waits for a dependency.
pub const WAITING_FOR_DEPENDENCIES: &str = "dependencies";

/// The `pod_queued` key naming the dependency whose completion put the
/// task in the capacity queue (the dispatcher wakes on it: no caller
/// signals it).
pub const RELEASED_BY: &str = "dependency_completed";

/// `task_failed.data.reason` of a task failed by a dependency.
pub const DEPENDENCY_FAILED: &str = "dependency_failed";

/// CreateTaskRequest.depends_on: at most [`MAX_DEPENDENCIES`] well-formed
/// task ids, none repeated (a repeat is almost surely a client's bug, and
/// refusing it keeps the stored list equal to what was asked).
pub fn parse(ids: &[String]) -> Result<Vec<TaskId>> {
    if ids.len() > MAX_DEPENDENCIES {
        return Err(Error::invalid(
            "depends_on",
            format!("at most {MAX_DEPENDENCIES} dependencies, got {}", ids.len()),
        ));
    }
    let mut out: Vec<TaskId> = Vec::with_capacity(ids.len());
    for s in ids {
        let id = TaskId::parse(s, "depends_on")?;
        if out.contains(&id) {
            return Err(Error::invalid(
                "depends_on",
                format!("{id} is listed twice"),
            ));
        }
        out.push(id);
    }
    Ok(out)
}

/// The stored `depends_on_json`.
pub fn to_json(ids: &[TaskId]) -> String {
    let v: Vec<String> = ids.iter().map(ToString::to_string).collect();
    serde_json::Value::from(v).to_string()
}

/// Reads `depends_on_json` back.
pub fn from_json(s: &str) -> Result<Vec<TaskId>> {
    let v: Vec<String> = serde_json::from_str(s)
        .map_err(|e| Error::Internal(format!("bad depends_on_json: {e}")))?;
    v.iter().map(|s| TaskId::from_db(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|_| TaskId::new().to_string()).collect()
    }

    #[test]
    fn up_to_32_well_formed_distinct_ids_are_accepted_in_order() {
        let given = ids(MAX_DEPENDENCIES);
        let parsed = parse(&given).unwrap();
        let back: Vec<String> = parsed.iter().map(ToString::to_string).collect();
        assert_eq!(back, given);
        assert_eq!(from_json(&to_json(&parsed)).unwrap(), parsed);
        assert!(parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn too_many_malformed_or_repeated_ids_name_the_field() {
        for bad in [ids(MAX_DEPENDENCIES + 1), vec!["not-a-uuid".to_owned()], {
            let mut v = ids(2);
            v.push(v[0].clone());
            v
        }] {
            match parse(&bad) {
                Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "depends_on"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
