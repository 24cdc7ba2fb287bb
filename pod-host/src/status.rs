//! The status channel of the pod contract: one JSON object per line on the
//! pod's fd 3, e.g. `{"phase":"PHASE_PLANNING","message":"reading spec"}`.
//!
//! This module owns the pure parts: splitting a byte stream into lines with a
//! hard bound on memory ([`LineSplitter`]), parsing one line into a
//! [`StatusUpdate`], and the [`Phase`] names. The reading task that feeds
//! them lives with the pod supervision code.

use std::fmt;

/// Longest status line accepted, newline excluded. Real reports are a few
/// hundred bytes; the bound keeps a pod that writes garbage without newlines
/// from growing the host's memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Longest message kept from a status line (bytes, cut at a char boundary):
/// the message travels in every state event and snapshot.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;

/// The work phase a pod reports (`ipa.v1.Phase` without UNSPECIFIED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    SpecClarification,
    Planning,
    Development,
    Review,
    Completed,
    Cancelled,
}

impl Phase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Phase; 6] = [
        Phase::SpecClarification,
        Phase::Planning,
        Phase::Development,
        Phase::Review,
        Phase::Completed,
        Phase::Cancelled,
    ];

    /// The short name, e.g. `planning`.
    pub const fn short_name(self) -> &'static str {
        match self {
            Phase::SpecClarification => "spec_clarification",
            Phase::Planning => "planning",
            Phase::Development => "development",
            Phase::Review => "review",
            Phase::Completed => "completed",
            Phase::Cancelled => "cancelled",
        }
    }

    /// Parses `PHASE_PLANNING` or `planning`, case-insensitively.
    pub fn parse(s: &str) -> Option<Phase> {
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        let short = lower.strip_prefix("phase_").unwrap_or(&lower);
        Phase::ALL.into_iter().find(|p| p.short_name() == short)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PHASE_{}", self.short_name().to_ascii_uppercase())
    }
}

/// One accepted status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    /// The new phase; `None` keeps the current one (a message-only line).
    pub phase: Option<Phase>,
    /// The message (empty when the line had none).
    pub message: String,
}

/// Why a status line was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusLineError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("field `{0}` is not a string")]
    NotAString(&'static str),
    #[error("unknown phase {0:?}")]
    UnknownPhase(String),
    #[error("neither `phase` nor `message` given")]
    Empty,
    #[error("line longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
}

/// Parses one line (without its newline). Unknown extra fields are ignored
/// so pods can add their own.
pub fn parse_status_line(line: &[u8]) -> Result<StatusUpdate, StatusLineError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(StatusLineError::TooLong);
    }
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| StatusLineError::Json(e.to_string()))?;
    let obj = value.as_object().ok_or(StatusLineError::NotAnObject)?;
    let phase = match obj.get("phase") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => {
            Some(Phase::parse(s).ok_or_else(|| StatusLineError::UnknownPhase(truncate(s, 64))))
        }
        Some(_) => return Err(StatusLineError::NotAString("phase")),
    }
    .transpose()?;
    let message = match obj.get("message") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(truncate(s, MAX_MESSAGE_BYTES)),
        Some(_) => return Err(StatusLineError::NotAString("message")),
    };
    if phase.is_none() && message.is_none() {
        return Err(StatusLineError::Empty);
    }
    Ok(StatusUpdate {
        phase,
        message: message.unwrap_or_default(),
    })
}

/// `s` cut to at most `max` bytes at a char boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// What [`LineSplitter::push`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line, newline (and a trailing `\r`) removed.
    Complete(Vec<u8>),
    /// A line longer than the limit ended; its bytes were discarded.
    Oversized,
}

/// Splits a byte stream into lines while holding at most `max` bytes of an
/// unfinished line: once a line passes the limit its bytes are dropped until
/// the next newline, so memory stays bounded whatever a pod writes.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    pending: Vec<u8>,
    skipping: bool,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            pending: Vec::new(),
            skipping: false,
        }
    }

    /// Feeds bytes; returns the lines they completed, in order.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.take(&data[..i]);
                    out.push(self.finish_line());
                    data = &data[i + 1..];
                }
                None => {
                    self.take(data);
                    data = &[];
                }
            }
        }
        out
    }

    /// The stream ended: an unterminated last line still counts.
    pub fn finish(&mut self) -> Option<Line> {
        if self.pending.is_empty() && !self.skipping {
            return None;
        }
        Some(self.finish_line())
    }

    fn take(&mut self, bytes: &[u8]) {
        if self.skipping {
            return;
        }
        if self.pending.len() + bytes.len() > self.max {
            self.skipping = true;
            self.pending = Vec::new();
        } else {
            self.pending.extend_from_slice(bytes);
        }
    }

    fn finish_line(&mut self) -> Line {
        if std::mem::take(&mut self.skipping) {
            return Line::Oversized;
        }
        let mut line = std::mem::take(&mut self.pending);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Line::Complete(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_long_short_any_case() {
        assert_eq!(Phase::parse("PHASE_PLANNING"), Some(Phase::Planning));
        assert_eq!(Phase::parse("planning"), Some(Phase::Planning));
        assert_eq!(Phase::parse("Phase_Review"), Some(Phase::Review));
        assert_eq!(
            Phase::parse("SPEC_CLARIFICATION"),
            Some(Phase::SpecClarification)
        );
        assert_eq!(Phase::parse("PHASE_UNSPECIFIED"), None);
        assert_eq!(Phase::parse("plan"), None);
        assert_eq!(Phase::Planning.to_string(), "PHASE_PLANNING");
        for p in Phase::ALL {
            assert_eq!(Phase::parse(&p.to_string()), Some(p));
        }
    }

    #[test]
    fn parses_phase_and_message() {
        let u =
            parse_status_line(br#"{"phase":"PHASE_PLANNING","message":"reading spec"}"#).unwrap();
        assert_eq!(u.phase, Some(Phase::Planning));
        assert_eq!(u.message, "reading spec");
        let u = parse_status_line(br#"{"phase":"review"}"#).unwrap();
        assert_eq!(u.phase, Some(Phase::Review));
        assert_eq!(u.message, "");
    }

    #[test]
    fn message_only_keeps_phase_and_extra_fields_are_ignored() {
        let u = parse_status_line(br#"{"message":"50%","progress":0.5}"#).unwrap();
        assert_eq!(u.phase, None);
        assert_eq!(u.message, "50%");
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        use StatusLineError::*;
        assert!(matches!(parse_status_line(b"not json"), Err(Json(_))));
        assert!(matches!(parse_status_line(b""), Err(Json(_))));
        assert_eq!(parse_status_line(b"[1,2]"), Err(NotAnObject));
        assert_eq!(parse_status_line(b"{}"), Err(Empty));
        assert_eq!(
            parse_status_line(br#"{"phase":3}"#),
            Err(NotAString("phase"))
        );
        assert_eq!(
            parse_status_line(br#"{"phase":"nope"}"#),
            Err(UnknownPhase("nope".into()))
        );
        assert!(matches!(
            parse_status_line(&[0xff, 0xfe, b'{']),
            Err(Json(_))
        ));
        let long = vec![b' '; MAX_LINE_BYTES + 1];
        assert_eq!(parse_status_line(&long), Err(TooLong));
    }

    #[test]
    fn long_messages_are_truncated_at_a_char_boundary() {
        let msg = "é".repeat(MAX_MESSAGE_BYTES); // 2 bytes each
        let line = serde_json::json!({ "message": msg }).to_string();
        let u = parse_status_line(line.as_bytes()).unwrap();
        assert!(u.message.len() <= MAX_MESSAGE_BYTES);
        assert!(u.message.chars().all(|c| c == 'é'));
    }

    #[test]
    fn splitter_handles_lines_across_chunks() {
        let mut s = LineSplitter::new(16);
        assert_eq!(s.push(b"ab"), vec![]);
        assert_eq!(
            s.push(b"c\r\nde\n\nf"),
            vec![
                Line::Complete(b"abc".to_vec()),
                Line::Complete(b"de".to_vec()),
                Line::Complete(b"".to_vec())
            ]
        );
        assert_eq!(s.finish(), Some(Line::Complete(b"f".to_vec())));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn splitter_drops_oversized_lines_with_bounded_memory() {
        let mut s = LineSplitter::new(8);
        // Garbage without newlines, fed in many chunks: nothing retained.
        for _ in 0..1000 {
            assert_eq!(s.push(&[b'x'; 100]), vec![]);
            assert!(s.pending.capacity() <= 8 + 100);
        }
        assert_eq!(
            s.push(b"\nok\n"),
            vec![Line::Oversized, Line::Complete(b"ok".to_vec())]
        );
        // Exactly at the limit is fine.
        assert_eq!(
            s.push(b"12345678\n"),
            vec![Line::Complete(b"12345678".to_vec())]
        );
        assert_eq!(s.push(b"123456789\n"), vec![Line::Oversized]);
    }
}
