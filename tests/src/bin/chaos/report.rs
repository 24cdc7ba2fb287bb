//! The table a chaos run prints (and writes with `--out`): faults injected,
//! operations, and every invariant with its verdict.

use std::fmt::Write;
use std::time::Duration;

use crate::checks::Verdict;
use crate::faults::Tally;
use crate::workload::Acks;

/// Everything a run produced.
pub struct Report<'a> {
    pub seed: u64,
    pub seconds: u64,
    pub tmpfs: bool,
    pub tally: &'a Tally,
    pub acks: &'a Acks,
    pub verdicts: &'a [Verdict],
    pub converged_in: Duration,
    pub events: usize,
}

impl Report<'_> {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.held)
    }

    /// The Markdown text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Chaos run: seed {}, {} s of faults{}; replay with `scripts/chaos --seconds {} --seed {}`\n",
            self.seed,
            self.seconds,
            if self.tmpfs {
                ""
            } else {
                " (not root: no disk-full faults)"
            },
            self.seconds,
            self.seed
        );
        let _ = writeln!(s, "| fault | injected | skipped (target busy or absent) |");
        let _ = writeln!(s, "|---|---:|---:|");
        for (name, (n, skipped)) in &self.tally.by_kind {
            let _ = writeln!(s, "| {name} | {n} | {skipped} |");
        }
        let _ = writeln!(s, "| **all** | **{}** | |\n", self.tally.injected());
        let _ = writeln!(s, "| operation | acknowledged | failed (by code) |");
        let _ = writeln!(s, "|---|---:|---|");
        for (op, (ok, failed)) in &self.acks.calls {
            let f: Vec<String> = failed.iter().map(|(c, n)| format!("{c} {n}")).collect();
            let _ = writeln!(s, "| {op} | {ok} | {} |", f.join(", "));
        }
        let _ = writeln!(
            s,
            "| **all** | **{}** | {} |\n",
            self.acks.ok_calls(),
            self.acks.failed_calls()
        );
        let _ = writeln!(s, "| invariant | held | detail |");
        let _ = writeln!(s, "|---|---|---|");
        for v in self.verdicts {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                v.name,
                if v.held { "yes" } else { "**NO**" },
                v.detail.replace('|', "/")
            );
        }
        let violations = self.verdicts.iter().filter(|v| !v.held).count();
        let _ = writeln!(
            s,
            "\n{} events committed; converged {:.1?} after the last fault; violations: {violations}",
            self.events, self.converged_in
        );
        s
    }
}
