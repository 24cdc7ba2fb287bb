//! Identifiers: task ids (UUID v7, lowercase), actor ids, correlation ids
//! and idempotency keys.

use std::fmt;

use uuid::Uuid;

use crate::error::{Error, Result};

/// Longest accepted actor id, correlation id or request id. They are stored
/// on every event, so a bound keeps a client from bloating the audit trail.
pub const MAX_ID_CHARS: usize = 255;

/// A task id: a UUID, shown lowercase and hyphenated. New ids are v7, so
/// they sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(Uuid);

impl TaskId {
    /// A fresh time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id of a UUID minted elsewhere (the core's entropy port).
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    /// Parses a client-supplied id; `field` names it in the error.
    pub fn parse(s: &str, field: &'static str) -> Result<Self> {
        if s.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        // Only the canonical hyphenated form (any case): the braced, urn and
        // simple forms would be accepted by Uuid::parse_str but are not ids
        // this API ever hands out.
        if s.len() != 36 {
            return Err(Error::invalid(field, "is not a UUID"));
        }
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| Error::invalid(field, "is not a UUID"))
    }

    /// Parses an id read back from our own database.
    pub fn from_db(s: &str) -> Result<Self> {
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| Error::Internal(format!("bad task id in database: {s:?}")))
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Lowercase hyphenated.
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

fn bounded(field: &'static str, s: &str) -> Result<()> {
    let n = s.chars().count();
    if n > MAX_ID_CHARS {
        return Err(Error::invalid(
            field,
            format!("is {n} characters long; the limit is {MAX_ID_CHARS}"),
        ));
    }
    Ok(())
}

/// Who made a change: the caller's `actor_id`, or `system` for automatic
/// actions. Trimmed; never empty. When an admin acts as someone else, the
/// admin's own principal rides along (events record it as
/// `authenticated_as`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActorId {
    id: String,
    authenticated_as: Option<String>,
}

impl ActorId {
    /// The actor of automatic actions (docs/api.md).
    pub const SYSTEM: &'static str = "system";

    /// Parses the `actor_id` of a mutating call: required.
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.is_empty() {
            return Err(Error::MissingActorId);
        }
        bounded("actor_id", t)?;
        Ok(Self {
            id: t.to_owned(),
            authenticated_as: None,
        })
    }

    /// The `system` actor.
    pub fn system() -> Self {
        Self {
            id: Self::SYSTEM.to_owned(),
            authenticated_as: None,
        }
    }

    /// This actor, as `principal` acting for it (an admin).
    pub fn authenticated_as(self, principal: &str) -> Self {
        Self {
            authenticated_as: (principal != self.id).then(|| principal.to_owned()),
            ..self
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The authenticated caller when it is not the actor itself.
    pub fn authenticated_as_principal(&self) -> Option<&str> {
        self.authenticated_as.as_deref()
    }
}

/// Ties the events caused by one request together. The caller's value is
/// kept as given; an empty one is replaced by a fresh UUID so that every
/// event has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(String);

impl CorrelationId {
    /// The caller's id, or a new one when empty.
    pub fn parse_or_new(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Ok(Self(Uuid::new_v4().to_string()));
        }
        bounded("correlation_id", s)?;
        Ok(Self(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// CreateTask's idempotency key (with the actor id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// `None` when the caller gave none.
    pub fn parse(s: &str) -> Result<Option<Self>> {
        if s.is_empty() {
            return Ok(None);
        }
        bounded("request_id", s)?;
        Ok(Some(Self(s.to_owned())))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_v7_lowercase_and_sortable() {
        let a = TaskId::new();
        let b = TaskId::new();
        let s = a.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(a.0.get_version_num(), 7);
        assert!(a < b);
        assert_eq!(TaskId::parse(&s, "task_id").unwrap(), a);
    }

    #[test]
    fn task_id_parse_accepts_uppercase_and_normalises() {
        let a = TaskId::new();
        let up = a.to_string().to_uppercase();
        assert_eq!(
            TaskId::parse(&up, "task_id").unwrap().to_string(),
            a.to_string()
        );
    }

    #[test]
    fn malformed_task_ids_name_the_field() {
        for bad in [
            "",
            "nope",
            "0b6f",
            "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
            "67e5504410b1426f9247bb680e5fe0c8",
            "67e55044-10b1-426f-9247-bb680e5fe0cZ",
            "😀😀😀😀😀😀😀😀😀",
        ] {
            match TaskId::parse(bad, "task_id") {
                Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "task_id"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn actor_id_is_required_trimmed_and_bounded() {
        assert!(matches!(ActorId::parse(""), Err(Error::MissingActorId)));
        assert!(matches!(ActorId::parse("  \t"), Err(Error::MissingActorId)));
        assert_eq!(ActorId::parse(" alice ").unwrap().as_str(), "alice");
        assert!(ActorId::parse(&"a".repeat(MAX_ID_CHARS)).is_ok());
        assert!(matches!(
            ActorId::parse(&"a".repeat(MAX_ID_CHARS + 1)),
            Err(Error::InvalidArgument {
                field: "actor_id",
                ..
            })
        ));
    }

    #[test]
    fn correlation_id_kept_or_generated() {
        assert_eq!(
            CorrelationId::parse_or_new("req-1").unwrap().as_str(),
            "req-1"
        );
        let generated = CorrelationId::parse_or_new("").unwrap();
        assert!(Uuid::try_parse(generated.as_str()).is_ok());
        assert!(CorrelationId::parse_or_new(&"c".repeat(MAX_ID_CHARS + 1)).is_err());
    }

    #[test]
    fn request_id_optional_and_bounded() {
        assert_eq!(RequestId::parse("").unwrap(), None);
        assert_eq!(RequestId::parse("r1").unwrap().unwrap().as_str(), "r1");
        assert!(RequestId::parse(&"r".repeat(MAX_ID_CHARS + 1)).is_err());
    }
}
