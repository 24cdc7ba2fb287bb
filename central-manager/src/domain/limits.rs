//! The limits of API.md's "Limits" table that central-manager enforces,
//! each next to its reason, in one place (the field limits of CreateTask
//! are in [`super::fields`]).

use super::{EventRecord, PodInfo, TaskId, TaskRecord};

/// Largest gRPC message central-manager decodes or sends (4 MiB, the
/// default limit of every gRPC client): a bigger request is
/// RESOURCE_EXHAUSTED, and no response is ever bigger.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Budget of one ListTasks / GetTaskEvents / ListActivePods page: the
/// message limit less room for the response's own framing. A page that
/// would pass it ends early with `truncated: true`.
pub const MAX_PAGE_BYTES: usize = MAX_MESSAGE_BYTES - 64 * 1024;

/// All metadata keys and values of one task together, in bytes (UTF-8):
/// bounds what one task adds to every page and event that carries it.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// `restart_policy.max_restarts` at most: a crash decision reads at most
/// this many crash times.
pub const MAX_RESTARTS: u32 = 1000;
/// `restart_policy.window_seconds` at most (a week).
pub const MAX_WINDOW_SECONDS: u32 = 604_800;
/// `restart_policy.max_backoff_ms` (and `initial_backoff_ms`) at most (an
/// hour): longer delays look like a task that never restarts.
pub const MAX_BACKOFF_MS: u32 = 3_600_000;

/// A schedule's name, in characters: it is typed on command lines and
/// shown in tables.
pub const MAX_SCHEDULE_NAME_CHARS: usize = 128;
/// A cron expression, in characters: five or six fields need far less; the
/// bound keeps a parser from being fed megabytes.
pub const MAX_CRON_CHARS: usize = 128;
/// A time zone name, in characters (the longest IANA name is ~30).
pub const MAX_TIMEZONE_CHARS: usize = 64;
/// `interval_seconds` at most: a year (longer periods read better as cron).
pub const MAX_INTERVAL_SECONDS: u64 = 366 * 24 * 3600;
/// `catchup_window_seconds` at most: a year of missed fire times.
pub const MAX_CATCHUP_WINDOW_SECONDS: u32 = 366 * 24 * 3600;
/// Tasks one CancelTasks call cancels (API.md): bounds one call's writes and
/// its response; the caller calls again for the rest.
pub const MAX_CANCEL_TASKS: usize = 10_000;
/// Bytes of metadata a schedule's task may have: room is left under
/// [`MAX_METADATA_BYTES`] for the two keys each fire adds.
pub const MAX_SCHEDULE_METADATA_BYTES: usize = MAX_METADATA_BYTES - 256;

/// Overhead allowed per record on top of its variable-length fields: tags,
/// length prefixes, varints, timestamps, enums and the fixed-size ids
/// (generous: a test checks the hints never undercount).
const RECORD_OVERHEAD: usize = 512;
/// Per map entry / string field: tag and length prefixes.
const FIELD_OVERHEAD: usize = 16;

/// An upper bound of a record's size in a response, so a page can be cut
/// before it is built.
pub trait WireSize {
    fn wire_size_hint(&self) -> usize;
}

impl WireSize for TaskRecord {
    fn wire_size_hint(&self) -> usize {
        let meta: usize = self
            .metadata
            .entries()
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2 * FIELD_OVERHEAD)
            .sum();
        RECORD_OVERHEAD
            + self.title.as_str().len()
            + self.description.as_str().len()
            + self.created_by.len()
            + self.template.as_str().len()
            + self.pod_message.len()
            + self.pod.as_ref().map_or(0, WireSize::wire_size_hint)
            + meta
            // Each id: 36 characters, a tag and a length.
            + self.depends_on.len() * (36 + FIELD_OVERHEAD)
    }
}

impl WireSize for EventRecord {
    fn wire_size_hint(&self) -> usize {
        RECORD_OVERHEAD
            + self.event_type.len()
            + self.data_json.len()
            + self.actor_id.len()
            + self.correlation_id.len()
    }
}

impl WireSize for PodInfo {
    fn wire_size_hint(&self) -> usize {
        RECORD_OVERHEAD + self.pod_id.len() + self.pod_host.len()
    }
}

impl WireSize for (TaskId, PodInfo) {
    fn wire_size_hint(&self) -> usize {
        FIELD_OVERHEAD + 36 + self.1.wire_size_hint()
    }
}

/// One page of a listing cut to a byte budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// More rows matched than fit: continue after the last item.
    pub truncated: bool,
}

/// A page reads as its items.
impl<T> std::ops::Deref for Page<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<T> IntoIterator for Page<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

/// Collects rows into a page of at most `budget` bytes (by their hints),
/// stopping early, without reading further rows, once the next would not
/// fit. The first row is always taken (every record fits a page: field
/// limits keep the largest far below it).
pub fn fill_page<T: WireSize, E>(
    rows: impl Iterator<Item = Result<T, E>>,
    budget: usize,
) -> Result<Page<T>, E> {
    let mut items = Vec::new();
    let mut used = 0usize;
    for row in rows {
        let row = row?;
        let size = row.wire_size_hint();
        if !items.is_empty() && used.saturating_add(size) > budget {
            return Ok(Page {
                items,
                truncated: true,
            });
        }
        used = used.saturating_add(size);
        items.push(row);
    }
    Ok(Page {
        items,
        truncated: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S(usize);
    impl WireSize for S {
        fn wire_size_hint(&self) -> usize {
            self.0
        }
    }

    fn page(sizes: &[usize], budget: usize) -> (usize, bool) {
        let p = fill_page::<_, ()>(sizes.iter().map(|s| Ok(S(*s))), budget).unwrap();
        (p.items.len(), p.truncated)
    }

    #[test]
    fn pages_stop_before_the_budget_and_say_so() {
        assert_eq!(page(&[10, 10, 10], 30), (3, false));
        assert_eq!(page(&[10, 10, 10], 29), (2, true));
        assert_eq!(page(&[], 1), (0, false));
        // A record bigger than the budget still makes progress.
        assert_eq!(page(&[100, 1], 10), (1, true));
    }

    #[test]
    fn rows_after_the_cut_are_not_read() {
        let mut read = 0;
        let rows = (0..1000).map(|_| {
            read += 1;
            Ok::<_, ()>(S(100))
        });
        let p = fill_page(rows, 1000).unwrap();
        assert_eq!(p.items.len(), 10);
        assert!(p.truncated);
        assert_eq!(read, 11);
    }
}
