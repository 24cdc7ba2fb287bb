//! The user-written fields of a task and their limits (docs/api.md, CreateTask).
//! Lengths are counted in characters (Unicode scalar values), not bytes.

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};

/// Longest title, after trimming.
pub const MAX_TITLE_CHARS: usize = 255;
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;
/// Most metadata entries.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata key.
pub const MAX_METADATA_KEY_CHARS: usize = 128;
/// Longest metadata value.
pub const MAX_METADATA_VALUE_CHARS: usize = 4_096;
/// Longest template name.
pub const MAX_TEMPLATE_CHARS: usize = 64;
/// The template used when a task names none (the demo pod).
pub const DEFAULT_TEMPLATE: &str = "default";

/// A task title: trimmed, non-empty, at most 255 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    /// Validates a client-supplied title (INVALID_TITLE otherwise).
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.is_empty() {
            return Err(Error::InvalidTitle(
                "title must not be empty or only whitespace".into(),
            ));
        }
        let n = t.chars().count();
        if n > MAX_TITLE_CHARS {
            return Err(Error::InvalidTitle(format!(
                "title is {n} characters long; the limit is {MAX_TITLE_CHARS}"
            )));
        }
        Ok(Self(t.to_owned()))
    }

    /// A title read back from our own database.
    pub fn from_db(s: String) -> Self {
        Self(s)
    }

    /// The title as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A free-text description, at most 10,000 characters, kept as given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description(String);

impl Description {
    /// Validates a client-supplied description.
    pub fn parse(s: &str) -> Result<Self> {
        let n = s.chars().count();
        if n > MAX_DESCRIPTION_CHARS {
            return Err(Error::invalid(
                "description",
                format!("is {n} characters long; the limit is {MAX_DESCRIPTION_CHARS}"),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// A description read back from our own database.
    pub fn from_db(s: String) -> Self {
        Self(s)
    }

    /// The description as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Task metadata: at most 64 entries, keys 1..=128 characters, values at
/// most 4,096 characters, and all keys and values together at most 64 KiB
/// (UTF-8 bytes). Ordered by key so its JSON form is stable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    /// Validates client-supplied metadata.
    pub fn parse(map: HashMap<String, String>) -> Result<Self> {
        if map.len() > MAX_METADATA_ENTRIES {
            return Err(Error::invalid(
                "metadata",
                format!(
                    "has {} entries; the limit is {MAX_METADATA_ENTRIES}",
                    map.len()
                ),
            ));
        }
        let bytes: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > super::limits::MAX_METADATA_BYTES {
            return Err(Error::invalid(
                "metadata",
                format!(
                    "keys and values total {bytes} bytes; the limit is {} (64 KiB)",
                    super::limits::MAX_METADATA_BYTES
                ),
            ));
        }
        // Sorted, so the first offending key reported is deterministic.
        let sorted: BTreeMap<String, String> = map.into_iter().collect();
        for (k, v) in &sorted {
            let kn = k.chars().count();
            if kn == 0 {
                return Err(Error::invalid("metadata", "keys must not be empty"));
            }
            if kn > MAX_METADATA_KEY_CHARS {
                return Err(Error::invalid(
                    "metadata",
                    format!(
                        "key {:?}… is {kn} characters long; the limit is {MAX_METADATA_KEY_CHARS}",
                        prefix(k)
                    ),
                ));
            }
            let vn = v.chars().count();
            if vn > MAX_METADATA_VALUE_CHARS {
                return Err(Error::invalid(
                    "metadata",
                    format!(
                        "value of key {:?} is {vn} characters long; the limit is {MAX_METADATA_VALUE_CHARS}",
                        prefix(k)
                    ),
                ));
            }
        }
        Ok(Self(sorted))
    }

    /// Metadata read back from our own database (already validated once).
    pub fn from_map(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }

    /// The entries, ordered by key.
    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

/// Up to 32 characters of `s`, to quote a key without echoing megabytes.
fn prefix(s: &str) -> String {
    s.chars().take(32).collect()
}

/// A pod template name: 1..=64 characters of `[A-Za-z0-9_.-]`; empty means
/// `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateName(String);

impl TemplateName {
    /// Validates a client-supplied template name.
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Ok(Self(DEFAULT_TEMPLATE.to_owned()));
        }
        let n = s.chars().count();
        if n > MAX_TEMPLATE_CHARS {
            return Err(Error::invalid(
                "template",
                format!("is {n} characters long; the limit is {MAX_TEMPLATE_CHARS}"),
            ));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(Error::invalid(
                "template",
                "may contain only letters, digits, '_', '.' and '-'",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// A name read back from our own database.
    pub fn from_db(s: String) -> Self {
        Self(s)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: Error) -> &'static str {
        match e {
            Error::InvalidArgument { field, .. } => field,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn title_is_trimmed_and_required() {
        assert_eq!(Title::parse("  Fix it \n").unwrap().as_str(), "Fix it");
        for bad in ["", " ", "\t\n "] {
            assert!(
                matches!(Title::parse(bad), Err(Error::InvalidTitle(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn title_limit_counts_characters_not_bytes() {
        let at = "é".repeat(MAX_TITLE_CHARS); // 510 bytes
        assert!(Title::parse(&at).is_ok());
        let over = "é".repeat(MAX_TITLE_CHARS + 1);
        assert!(matches!(Title::parse(&over), Err(Error::InvalidTitle(_))));
        // Surrounding whitespace does not count.
        assert!(Title::parse(&format!("  {}  ", "a".repeat(MAX_TITLE_CHARS))).is_ok());
    }

    #[test]
    fn description_limit_both_sides() {
        assert!(Description::parse("").is_ok());
        assert!(Description::parse(&"ü".repeat(MAX_DESCRIPTION_CHARS)).is_ok());
        let e = Description::parse(&"x".repeat(MAX_DESCRIPTION_CHARS + 1)).unwrap_err();
        assert_eq!(field_of(e), "description");
    }

    fn meta(entries: impl IntoIterator<Item = (String, String)>) -> HashMap<String, String> {
        entries.into_iter().collect()
    }

    #[test]
    fn metadata_entry_count_both_sides() {
        let ok = meta((0..MAX_METADATA_ENTRIES).map(|i| (format!("k{i}"), "v".into())));
        assert_eq!(
            Metadata::parse(ok).unwrap().entries().len(),
            MAX_METADATA_ENTRIES
        );
        let over = meta((0..=MAX_METADATA_ENTRIES).map(|i| (format!("k{i}"), "v".into())));
        assert_eq!(field_of(Metadata::parse(over).unwrap_err()), "metadata");
    }

    #[test]
    fn metadata_key_and_value_limits_both_sides() {
        let k_ok = meta([("ķ".repeat(MAX_METADATA_KEY_CHARS), "v".into())]);
        assert!(Metadata::parse(k_ok).is_ok());
        let k_over = meta([("k".repeat(MAX_METADATA_KEY_CHARS + 1), "v".into())]);
        assert_eq!(field_of(Metadata::parse(k_over).unwrap_err()), "metadata");
        let k_empty = meta([(String::new(), "v".into())]);
        assert_eq!(field_of(Metadata::parse(k_empty).unwrap_err()), "metadata");
        let v_ok = meta([("k".into(), "ν".repeat(MAX_METADATA_VALUE_CHARS))]);
        assert!(Metadata::parse(v_ok).is_ok());
        let v_over = meta([("k".into(), "v".repeat(MAX_METADATA_VALUE_CHARS + 1))]);
        assert_eq!(field_of(Metadata::parse(v_over).unwrap_err()), "metadata");
        // Empty values are fine.
        assert!(Metadata::parse(meta([("k".into(), String::new())])).is_ok());
    }

    #[test]
    fn metadata_total_bytes_both_sides() {
        use crate::domain::limits::MAX_METADATA_BYTES;
        // 16 entries of 4 + 4092 bytes = 65 536 bytes exactly: allowed.
        let at = meta((0..16).map(|i| (format!("k{i:03}"), "v".repeat(4092))));
        assert!(Metadata::parse(at).is_ok());
        let over = meta((0..16).map(|i| (format!("k{i:03}"), "v".repeat(4093))));
        let e = Metadata::parse(over).unwrap_err();
        assert!(
            e.to_string().contains(&MAX_METADATA_BYTES.to_string()),
            "{e}"
        );
        assert_eq!(field_of(e), "metadata");
        // Counted in bytes: 2-byte characters reach the limit sooner.
        let wide = meta((0..16).map(|i| (format!("k{i:03}"), "é".repeat(2100))));
        assert!(Metadata::parse(wide).is_err());
    }

    #[test]
    fn template_names() {
        assert_eq!(TemplateName::parse("").unwrap().as_str(), DEFAULT_TEMPLATE);
        for ok in [
            "default",
            "a",
            "py-3.12_fast",
            &"t".repeat(MAX_TEMPLATE_CHARS),
        ] {
            assert_eq!(TemplateName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "has space",
            "a/b",
            "../etc",
            "ü",
            &"t".repeat(MAX_TEMPLATE_CHARS + 1),
        ] {
            assert_eq!(
                field_of(TemplateName::parse(bad).unwrap_err()),
                "template",
                "{bad:?}"
            );
        }
    }
}
