//! The one error type of ipactl and how it is shown: `Error: REASON:
//! sentence`, exit code 1. Server errors keep the server's reason (the
//! `REASON: sentence` message of docs/api.md); errors of ipactl itself get a
//! reason of the same shape (TIMEOUT, UNAVAILABLE, INVALID_ARGUMENT, …).

use tonic::{Code, Status};

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an error status.
    #[error("{}", status_line(.rpc, .server, .status))]
    Status {
        rpc: &'static str,
        server: String,
        status: Status,
    },
    /// Bad input caught before anything was sent (a file that cannot be
    /// read, a malformed server address).
    #[error("INVALID_ARGUMENT: {0}")]
    Invalid(String),
    /// `tasks wait` ran out of time.
    #[error("TIMEOUT: {0}")]
    Timeout(String),
    /// `tasks wait`: the task reached a state from which the condition can
    /// no longer hold.
    #[error("CONDITION_UNREACHABLE: {0}")]
    Unreachable(String),
    /// Writing the output failed (other than a closed pipe).
    #[error("OUTPUT: {0}")]
    Output(String),
    /// Whoever read our stdout closed it (`| head`); ends quietly.
    #[error("OUTPUT: the reader closed the output")]
    BrokenPipe,
}

impl CliError {
    /// A server error of `rpc`.
    pub fn status(rpc: &'static str, server: &str, status: Status) -> Self {
        Self::Status {
            rpc,
            server: server.to_owned(),
            status,
        }
    }

    /// The gRPC code of a server error.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Status { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Self::BrokenPipe
        } else {
            Self::Output(e.to_string())
        }
    }
}

/// `REASON: sentence` for a status. The server's own errors already read
/// that way; statuses without a reason (UNIMPLEMENTED from a server that
/// predates an RPC, a refused connection) get one from their code.
fn status_line(rpc: &str, server: &str, s: &Status) -> String {
    if has_reason_prefix(s.message()) {
        return s.message().to_owned();
    }
    match s.code() {
        Code::Unimplemented => {
            format!("UNIMPLEMENTED: {rpc} is not supported by this server ({server})")
        }
        Code::Unavailable => format!(
            "UNAVAILABLE: cannot reach central-manager at {server}: {}",
            describe(s)
        ),
        Code::DeadlineExceeded => format!(
            "DEADLINE_EXCEEDED: {rpc} got no answer from {server} in time (--request-timeout)"
        ),
        code => format!("{}: {}", code_name(code), describe(s)),
    }
}

/// The status message, or the code's description when it has none; the
/// transport's underlying cause is appended when tonic kept it.
fn describe(s: &Status) -> String {
    let mut text = if s.message().is_empty() {
        s.code().description().to_owned()
    } else {
        s.message().to_owned()
    };
    let mut cause = std::error::Error::source(s);
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

/// Whether `msg` starts with `UPPER_SNAKE: `.
fn has_reason_prefix(msg: &str) -> bool {
    msg.split_once(": ").is_some_and(|(head, _)| {
        !head.is_empty()
            && head
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && head.starts_with(|c: char| c.is_ascii_uppercase())
    })
}

/// The canonical upper-snake name of a gRPC code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: Status) -> String {
        CliError::status("GetStats", "http://127.0.0.1:1", s).to_string()
    }

    #[test]
    fn server_reasons_are_printed_as_they_are() {
        let s = ipa_proto::status(ipa_proto::ErrorReason::TaskNotFound, "no task with id x");
        assert_eq!(line(s), "TASK_NOT_FOUND: no task with id x");
    }

    #[test]
    fn unimplemented_says_not_supported() {
        let l = line(Status::unimplemented("Not yet implemented"));
        assert_eq!(
            l,
            "UNIMPLEMENTED: GetStats is not supported by this server (http://127.0.0.1:1)"
        );
        // tonic's answer for an unknown method has an empty message.
        assert!(line(Status::unimplemented("")).starts_with("UNIMPLEMENTED: GetStats is not"));
    }

    #[test]
    fn statuses_without_a_reason_get_their_code_name() {
        assert_eq!(line(Status::internal("boom")), "INTERNAL: boom".to_owned());
        assert!(line(Status::unavailable("tcp connect error")).starts_with(
            "UNAVAILABLE: cannot reach central-manager at http://127.0.0.1:1: tcp connect error"
        ));
        assert_eq!(
            line(Status::permission_denied("")),
            "PERMISSION_DENIED: The caller does not have permission to execute the specified operation"
        );
    }

    #[test]
    fn reason_prefix_detection() {
        assert!(has_reason_prefix("NO_POD_HOST: none"));
        assert!(!has_reason_prefix("tcp connect error: refused"));
        assert!(!has_reason_prefix("Not yet implemented"));
        assert!(!has_reason_prefix(": x"));
        assert!(!has_reason_prefix("_X: x"));
    }

    #[test]
    fn own_errors_have_the_same_shape() {
        assert_eq!(
            CliError::Timeout("task t not completed after 1s".into()).to_string(),
            "TIMEOUT: task t not completed after 1s"
        );
    }
}
