//! What runs reached, so growth in coverage is visible: event types
//! recorded, task states (status/pod status) sampled, host states seen,
//! exit causes, fault kinds injected, error reasons returned to clients.

use std::collections::BTreeSet;
use std::fmt;

/// Distinct things reached (merged over runs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Coverage {
    pub runs: u64,
    pub events: BTreeSet<String>,
    pub states: BTreeSet<String>,
    pub host_states: BTreeSet<String>,
    pub exit_causes: BTreeSet<String>,
    pub faults: BTreeSet<String>,
    pub errors: BTreeSet<String>,
}

impl Coverage {
    pub fn merge(&mut self, o: &Coverage) {
        self.runs += o.runs;
        self.events.extend(o.events.iter().cloned());
        self.states.extend(o.states.iter().cloned());
        self.host_states.extend(o.host_states.iter().cloned());
        self.exit_causes.extend(o.exit_causes.iter().cloned());
        self.faults.extend(o.faults.iter().cloned());
        self.errors.extend(o.errors.iter().cloned());
    }

    /// Distinct items over every category.
    pub fn total(&self) -> usize {
        self.events.len()
            + self.states.len()
            + self.host_states.len()
            + self.exit_causes.len()
            + self.faults.len()
            + self.errors.len()
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, name: &str, s: &BTreeSet<String>| {
            let items: Vec<&str> = s.iter().map(String::as_str).collect();
            writeln!(f, "  {name:<12} {:>3}  {}", s.len(), items.join(" "))
        };
        writeln!(
            f,
            "coverage over {} run(s): {} distinct",
            self.runs,
            self.total()
        )?;
        line(f, "events", &self.events)?;
        line(f, "task states", &self.states)?;
        line(f, "host states", &self.host_states)?;
        line(f, "exit causes", &self.exit_causes)?;
        line(f, "faults", &self.faults)?;
        line(f, "errors", &self.errors)
    }
}
