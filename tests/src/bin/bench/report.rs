//! The result table and `BENCHMARKS.md`: machine, date, exact command,
//! the table, then the prose sections (method, baselines, peer, anchors,
//! limits) with the figures of this run filled in.

use std::fmt::Write as _;

/// One table row.
#[derive(Debug, Clone)]
pub struct Row {
    pub metric: String,
    pub spec: String,
    pub goal: String,
    pub measured: String,
    pub baseline: String,
    pub ratio: String,
    /// `None` when not measured (e.g. supervisord not installed).
    pub met: Option<bool>,
}

impl Row {
    pub fn new(metric: &str, spec: &str, goal: &str) -> Self {
        Self {
            metric: metric.into(),
            spec: spec.into(),
            goal: goal.into(),
            measured: "not measured".into(),
            baseline: "—".into(),
            ratio: "—".into(),
            met: None,
        }
    }

    pub fn measured(mut self, m: impl Into<String>) -> Self {
        self.measured = m.into();
        self
    }

    pub fn baseline(mut self, b: impl Into<String>) -> Self {
        self.baseline = b.into();
        self
    }

    pub fn ratio(mut self, r: impl Into<String>) -> Self {
        self.ratio = r.into();
        self
    }

    pub fn met(mut self, m: bool) -> Self {
        self.met = Some(m);
        self
    }
}

pub use ipa_tests::BENCH_METRICS as METRICS;

/// `x.xx×`.
pub fn ratio(measured: f64, baseline: f64) -> String {
    if baseline <= 0.0 || !measured.is_finite() {
        return "—".into();
    }
    format!("{:.2}×", measured / baseline)
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    t.push_str("| metric | spec target | our goal | measured (p50 / p99 / rate) | baseline (same run) | ratio | met? |\n");
    t.push_str("|---|---|---|---|---|---|---|\n");
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "n/a",
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} |",
            cell(&r.metric),
            cell(&r.spec),
            cell(&r.goal),
            cell(&r.measured),
            cell(&r.baseline),
            cell(&r.ratio),
            met
        );
    }
    t
}

/// What the machine is.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} CPUs ({model}), {:.1} GiB RAM, Linux {}",
        mem_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

/// Today's date and time in UTC, from the `date` command (no extra crate).
pub fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown date".into())
}

/// `md` (a `BENCHMARKS.md`) with `rows` put in place: a row whose metric
/// is already in the table replaces it, a new one goes after the table's
/// last row. `note` (one line, starting with `- ` and `label`) replaces the
/// run-details line with the same label or is added after "Run details:".
/// For a partial run (`--only`), which must not lose the other figures.
pub fn splice(md: &str, rows: &[Row], label: &str, note: &str) -> String {
    let rendered = table(rows);
    let new_rows: Vec<&str> = rendered.lines().skip(2).collect();
    let mut lines: Vec<String> = md.lines().map(str::to_owned).collect();
    for (row, line) in rows.iter().zip(&new_rows) {
        let key = format!("| {} |", cell(&row.metric));
        if let Some(i) = lines.iter().position(|l| l.starts_with(&key)) {
            lines[i] = (*line).to_owned();
        } else {
            // After the last row of the first table (a line starting `| `
            // after its `|---` separator).
            let sep = lines.iter().position(|l| l.starts_with("|---"));
            let at = match sep {
                Some(s) => {
                    s + 1
                        + lines[s + 1..]
                            .iter()
                            .take_while(|l| l.starts_with("| "))
                            .count()
                }
                None => lines.len(),
            };
            lines.insert(at, (*line).to_owned());
        }
    }
    let prefix = format!("- {label}");
    if let Some(i) = lines.iter().position(|l| l.starts_with(&prefix)) {
        lines[i] = note.to_owned();
    } else if let Some(i) = lines.iter().position(|l| l == "Run details:") {
        lines.insert(i + 1, note.to_owned());
    } else {
        lines.push(note.to_owned());
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_known_rows_adds_new_ones_and_keeps_the_rest() {
        let md = "# B\n\n| metric | a |\n|---|---|\n| one | old |\n| two | kept |\n\nRun details:\n- x.\n\n## Notes\n";
        let rows = [
            Row::new("one", "s", "g").measured("new"),
            Row::new("three", "s", "g").measured("added"),
        ];
        let out = splice(md, &rows, "Partial:", "- Partial: ran alone.");
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[4].starts_with("| one | s | g | new |"), "{out}");
        assert_eq!(lines[5], "| two | kept |");
        assert!(lines[6].starts_with("| three | s | g | added |"), "{out}");
        assert_eq!(lines[8], "Run details:");
        assert_eq!(lines[9], "- Partial: ran alone.");
        assert_eq!(lines[10], "- x.");
        assert!(out.ends_with("## Notes\n"));
        // Again: the note and the rows are replaced, not repeated.
        let again = splice(&out, &rows, "Partial:", "- Partial: again.");
        assert_eq!(again.matches("| three |").count(), 1);
        assert_eq!(again.matches("- Partial:").count(), 1);
        assert!(again.contains("- Partial: again."));
    }
}
