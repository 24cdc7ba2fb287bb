//! Shrinking a failing plan to the shortest trace that still fails:
//! delta debugging over the plan's steps. Chunks of steps are removed,
//! from halves down to single steps; a removal is kept when the run
//! without them still violates an invariant. The result is 1-minimal (no
//! single step can be removed) within the run budget. Every candidate is a
//! full deterministic run of the smaller plan.

use crate::plan::Plan;

/// A plan that still fails, and how many runs shrinking took.
pub struct Shrunk {
    pub plan: Plan,
    /// Indices of the kept steps in the original plan.
    pub kept: Vec<usize>,
    pub runs: usize,
}

/// Shrinks `plan` with `fails` (true when a plan still fails), running it
/// at most `budget` times.
pub fn shrink(plan: &Plan, budget: usize, mut fails: impl FnMut(&Plan) -> bool) -> Shrunk {
    let mut kept: Vec<usize> = (0..plan.steps.len()).collect();
    let mut runs = 0;
    let mut chunk = kept.len().div_ceil(2).max(1);
    while runs < budget && !kept.is_empty() {
        let mut removed_any = false;
        let mut start = 0;
        while start < kept.len() && runs < budget {
            let end = (start + chunk).min(kept.len());
            let candidate: Vec<usize> = kept[..start].iter().chain(&kept[end..]).copied().collect();
            runs += 1;
            if fails(&plan.subset(&candidate)) {
                kept = candidate;
                removed_any = true;
            } else {
                start = end;
            }
        }
        if chunk == 1 && !removed_any {
            break;
        }
        if !removed_any {
            chunk = chunk.div_ceil(2).max(1);
        }
    }
    Shrunk {
        plan: plan.subset(&kept),
        kept,
        runs,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plan::{Action, HostSpec, Step};

    #[test]
    fn keeps_exactly_the_steps_the_failure_needs() {
        let steps = (0..20)
            .map(|i| Step {
                at: Duration::from_millis(i),
                action: Action::Start {
                    task: i as usize,
                    queue: false,
                },
            })
            .collect();
        let plan = Plan {
            seed: 1,
            hosts: vec![HostSpec {
                capacity: 1,
                fence: Duration::from_secs(1),
            }],
            steps,
        };
        // "Fails" when steps 3 and 17 are both there.
        let needs = |p: &Plan| {
            let has = |t| {
                p.steps
                    .iter()
                    .any(|s| matches!(s.action, Action::Start { task, .. } if task == t))
            };
            has(3) && has(17)
        };
        let s = shrink(&plan, 1000, needs);
        assert_eq!(s.kept, vec![3, 17]);
        assert!(s.runs < 100, "{}", s.runs);
    }
}
