//! Reads the ledger written by the `ledger-pod` test binary and checks the
//! central invariant: at most one running pod per task at any instant.

use std::collections::BTreeMap;
use std::path::Path;

/// When one pod (task, generation) ran, as far as the ledger shows:
/// from its `start` line to its `stop` line or, when it was SIGKILLed, its
/// last `alive` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub task_id: String,
    pub generation: u64,
    pub pod_id: String,
    pub pid: u32,
    pub start_ns: u128,
    pub end_ns: u128,
    /// Whether it wrote a `stop` line.
    pub stopped_cleanly: bool,
}

/// Parses ledger text into runs, keyed by pod id, in order of start.
pub fn parse(text: &str) -> Vec<Run> {
    let mut runs: BTreeMap<String, Run> = BTreeMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let [kind, task, generation, pod, pid, t] = f[..] else {
            continue;
        };
        let (Ok(generation), Ok(pid), Ok(t)) = (generation.parse(), pid.parse(), t.parse::<u128>())
        else {
            continue;
        };
        let run = runs.entry(pod.to_owned()).or_insert_with(|| Run {
            task_id: task.to_owned(),
            generation,
            pod_id: pod.to_owned(),
            pid,
            start_ns: t,
            end_ns: t,
            stopped_cleanly: false,
        });
        run.start_ns = run.start_ns.min(t);
        run.end_ns = run.end_ns.max(t);
        if kind == "stop" {
            run.stopped_cleanly = true;
        }
    }
    let mut v: Vec<Run> = runs.into_values().collect();
    v.sort_by_key(|r| r.start_ns);
    v
}

/// Reads and parses a ledger file (empty if it does not exist yet).
pub fn read(path: &Path) -> Vec<Run> {
    parse(&std::fs::read_to_string(path).unwrap_or_default())
}

/// Pairs of runs of the same task whose intervals overlap.
pub fn overlaps(runs: &[Run]) -> Vec<(Run, Run)> {
    let mut by_task: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for r in runs {
        by_task.entry(&r.task_id).or_default().push(r);
    }
    let mut out = Vec::new();
    for rs in by_task.values() {
        for (i, a) in rs.iter().enumerate() {
            for b in &rs[i + 1..] {
                if a.start_ns <= b.end_ns && b.start_ns <= a.end_ns {
                    out.push(((*a).clone(), (*b).clone()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_overlaps() {
        let text = "\
start t1 1 p1 10 100
alive t1 1 p1 10 150
alive t1 1 p1 10 200
start t1 2 p2 11 250
alive t1 2 p2 11 300
stop t1 2 p2 11 320
start t2 1 p3 12 110
alive t2 1 p3 12 400
garbage line
";
        let runs = parse(text);
        assert_eq!(runs.len(), 3);
        let p1 = runs.iter().find(|r| r.pod_id == "p1").unwrap();
        assert_eq!(
            (p1.start_ns, p1.end_ns, p1.stopped_cleanly),
            (100, 200, false)
        );
        assert!(overlaps(&runs).is_empty());

        let bad = format!("{text}alive t1 1 p1 10 260\n");
        let o = overlaps(&parse(&bad));
        assert_eq!(o.len(), 1);
        assert_eq!(
            (o[0].0.pod_id.as_str(), o[0].1.pod_id.as_str()),
            ("p1", "p2")
        );
    }
}
