//! Reading a pod's status lines from its fd 3: one JSON object per line,
//! memory bounded by the line limit whatever the pod writes, bad lines
//! logged (rate-limited) and ignored, never fatal.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use tokio::io::AsyncReadExt;

use super::Supervisor;
use crate::status::{Line, LineSplitter, MAX_LINE_BYTES, parse_status_line};

/// At most one "bad status line" warning per pod per this interval.
const BAD_LINE_LOG_INTERVAL: Duration = Duration::from_secs(1);

impl Supervisor {
    /// Reads status lines from the pod's fd 3 until EOF. Memory is bounded
    /// by the line limit whatever the pod writes; bad lines are logged
    /// (rate-limited) and ignored.
    pub(super) async fn read_status(self: Arc<Self>, pod_id: String, fd: OwnedFd) {
        let mut pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the status pipe");
                return;
            }
        };
        let mut splitter = LineSplitter::new(MAX_LINE_BYTES);
        let mut bad = BadLineLog::default();
        let mut buf = vec![0u8; 8192];
        loop {
            let (lines, eof) = match pipe.read(&mut buf).await {
                Ok(0) => (splitter.finish().into_iter().collect(), true),
                Ok(n) => (splitter.push(&buf[..n]), false),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the status pipe failed");
                    return;
                }
            };
            for line in lines {
                match line {
                    Line::Complete(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {}
                    Line::Complete(bytes) => match parse_status_line(&bytes) {
                        Ok(update) => self.apply_status(&pod_id, update),
                        Err(e) => bad.record(&e.to_string()),
                    },
                    Line::Oversized => {
                        bad.record(&format!("line longer than {MAX_LINE_BYTES} bytes"))
                    }
                }
            }
            if eof {
                bad.flush();
                return;
            }
        }
    }
}

/// Rate-limited logging of ignored status lines: a pod spewing garbage
/// costs one log line per interval, with a count of the rest.
#[derive(Default)]
struct BadLineLog {
    last: Option<StdInstant>,
    suppressed: u64,
}

impl BadLineLog {
    fn record(&mut self, why: &str) {
        let now = StdInstant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < BAD_LINE_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            reason = why,
            suppressed = self.suppressed,
            "ignored a status line on fd 3"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }

    fn flush(&mut self) {
        if self.suppressed > 0 {
            tracing::warn!(count = self.suppressed, "more status lines were ignored");
            self.suppressed = 0;
        }
    }
}
