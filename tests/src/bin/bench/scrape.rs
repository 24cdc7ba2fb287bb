//! Where a write's time goes, from central-manager's own metrics
//! (`--metrics-listen`): the writer's histograms (a command's wait for the
//! writer, a batch's statements, its COMMIT with the fsync, by batch:
//! archive or commands) and the checkpointer's, scraped before and after a
//! phase and reported as the difference.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The histograms reported, with what each one is.
const HISTOGRAMS: [(&str, &str); 4] = [
    (
        "ipa_store_writer_wait_seconds",
        "wait for the writer (per command)",
    ),
    ("ipa_store_batch_statements_seconds", "a batch's statements"),
    (
        "ipa_store_batch_fsync_seconds",
        "a batch's COMMIT (WAL append + fsync)",
    ),
    (
        "ipa_store_checkpoint_seconds",
        "WAL checkpoint (checkpointer thread)",
    ),
];

/// A free port on 127.0.0.1 for `--metrics-listen` (the API itself binds
/// port 0; the metrics address is not announced).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One scrape: every histogram series (name and labels) → its cumulative
/// buckets (upper bound, count), sum and count.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    series: BTreeMap<String, Series>,
}

#[derive(Debug, Default, Clone)]
struct Series {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

/// GET /metrics; an empty snapshot if it cannot be read (the breakdown is
/// then missing, not wrong).
pub async fn scrape(addr: SocketAddr) -> Snapshot {
    match fetch(addr).await {
        Ok(text) => parse(&text),
        Err(e) => {
            eprintln!("  (metrics not scraped: {e})");
            Snapshot::default()
        }
    }
}

async fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

fn parse(text: &str) -> Snapshot {
    let mut snap = Snapshot::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = key.split_once('{').unwrap_or((key, ""));
        let labels = labels.trim_end_matches('}');
        let Some((base, part)) = HISTOGRAMS.iter().find_map(|(h, _)| {
            name.strip_prefix(h)
                .filter(|p| ["_bucket", "_sum", "_count"].contains(p))
                .map(|p| (*h, p))
        }) else {
            continue;
        };
        // The series' own labels, without `le`.
        let mut le = None;
        let own: Vec<&str> = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .filter(|l| match l.strip_prefix("le=") {
                Some(v) => {
                    le = Some(v.trim_matches('"'));
                    false
                }
                None => true,
            })
            .collect();
        let series = snap
            .series
            .entry(format!("{base}{{{}}}", own.join(",")))
            .or_default();
        match part {
            "_sum" => series.sum = value,
            "_count" => series.count = value,
            _ => {
                let bound = match le {
                    Some("+Inf") | None => f64::INFINITY,
                    Some(v) => v.parse().unwrap_or(f64::INFINITY),
                };
                series.buckets.push((bound, value));
            }
        }
    }
    snap
}

/// What happened between two scrapes, one line per series with samples:
/// count, mean, and the bucket bounds under which half and 99 % of the
/// samples fell (upper bounds: buckets double).
pub fn breakdown(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut lines = Vec::new();
    for (key, a) in &after.series {
        let empty = Series::default();
        let b = before.series.get(key).unwrap_or(&empty);
        let count = a.count - b.count;
        if count <= 0.0 {
            continue;
        }
        let mean_ms = (a.sum - b.sum) / count * 1e3;
        let buckets: Vec<(f64, f64)> = a
            .buckets
            .iter()
            .map(|&(le, n)| {
                let was = b
                    .buckets
                    .iter()
                    .find(|(l, _)| *l == le)
                    .map_or(0.0, |(_, n)| *n);
                (le, n - was)
            })
            .collect();
        let under = |q: f64| {
            buckets
                .iter()
                .find(|(_, n)| *n >= q * count)
                .map_or(f64::INFINITY, |(le, _)| *le)
        };
        let what = HISTOGRAMS
            .iter()
            .find(|(h, _)| key.starts_with(h))
            .map_or("", |(_, w)| w);
        let labels = key.split_once('{').map_or("", |(_, l)| l);
        lines.push(format!(
            "{what} {{{labels}: n {count:.0}, mean {mean_ms:.2} ms, p50 ≤ {} ms, p99 ≤ {} ms, total {:.2} s",
            bound_ms(under(0.5)),
            bound_ms(under(0.99)),
            a.sum - b.sum
        ));
    }
    lines
}

fn bound_ms(le: f64) -> String {
    if le.is_finite() {
        format!("{:.1}", le * 1e3)
    } else {
        "∞".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_difference_is_summarised() {
        let before = parse(
            "# HELP x\n\
             ipa_store_batch_fsync_seconds_sum{batch=\"archive\"} 1.0\n\
             ipa_store_batch_fsync_seconds_count{batch=\"archive\"} 10\n\
             ipa_store_batch_fsync_seconds_bucket{le=\"0.001\",batch=\"archive\"} 10\n\
             ipa_store_batch_fsync_seconds_bucket{le=\"0.002\",batch=\"archive\"} 10\n\
             ipa_store_batch_fsync_seconds_bucket{le=\"+Inf\",batch=\"archive\"} 10\n",
        );
        let after = parse(
            "ipa_store_batch_fsync_seconds_sum{batch=\"archive\"} 1.3\n\
             ipa_store_batch_fsync_seconds_count{batch=\"archive\"} 110\n\
             ipa_store_batch_fsync_seconds_bucket{le=\"0.001\",batch=\"archive\"} 60\n\
             ipa_store_batch_fsync_seconds_bucket{le=\"0.002\",batch=\"archive\"} 109\n\
             ipa_store_batch_fsync_seconds_bucket{le=\"+Inf\",batch=\"archive\"} 110\n\
             ipa_other_sum 5\n",
        );
        let lines = breakdown(&before, &after);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let l = &lines[0];
        assert!(l.contains("batch=\"archive\""), "{l}");
        assert!(l.contains("n 100,"), "{l}");
        assert!(l.contains("mean 3.00 ms"), "{l}");
        assert!(l.contains("p50 ≤ 1.0 ms"), "{l}");
        assert!(l.contains("p99 ≤ 2.0 ms"), "{l}");
    }
}
