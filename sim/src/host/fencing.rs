//! Self-fencing and the lease, with the real host's rules
//! (`pod_host::fence`), and the reaper's copy of that lease: its fence
//! backstop (`pod_host::reaper`), which kills the pods of a host process
//! that is frozen.

use std::time::Duration;

use central_manager::domain::host::{ExitCause, StartRequest};
use pod_host::fence::Proof;
use tokio::time::Instant;

use super::SimHost;

impl SimHost {
    /// Milliseconds on this boot's clock (the real host's `host_clock_ms`).
    pub(super) fn host_clock_ms(&self) -> u64 {
        u64::try_from(self.clock0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The proof a message echoing `echo_ms` carries (0: none), as the
    /// real host's `Supervisor::proof`.
    pub(super) fn proof(&self, echo_ms: u64) -> Proof {
        if echo_ms == 0 {
            return Proof::Arrival;
        }
        Proof::Echo(self.clock0 + Duration::from_millis(echo_ms))
    }

    /// The real host's `start_lease_valid`: a StartPod must come from this
    /// boot's session and have been issued less than a fence timeout ago
    /// by this host's clock; a start held up in the network past central's
    /// fence deadline is refused (LEASE_EXPIRED).
    pub(super) fn start_lease(&self, req: &StartRequest) -> Result<(), String> {
        if self.bugs.host_ignores_lease {
            return Ok(());
        }
        if !req.host_boot_id.is_empty() && req.host_boot_id != self.boot_id {
            return Err(format!("issued for boot {}", req.host_boot_id));
        }
        if req.echo_host_clock_ms == 0 {
            return Ok(());
        }
        let at = self.clock0 + Duration::from_millis(req.echo_host_clock_ms);
        if self.contact.lease_valid(at, Instant::now()) {
            Ok(())
        } else {
            Err(format!(
                "issued under a lease from {} ms ago",
                Instant::now().saturating_duration_since(at).as_millis()
            ))
        }
    }

    /// A message or command from central: contact, with what it proves.
    /// If the gap since the previous contact already reached the fence
    /// timeout (the host was frozen and this message may be stale), fence
    /// first.
    pub(super) fn touch(&mut self, proof: Proof) {
        let now = Instant::now();
        // The pre-lease host: a message's arrival is fresh contact.
        let proof = if self.bugs.host_ignores_lease {
            Proof::Echo(now)
        } else {
            proof
        };
        let missed = self
            .contact
            .last()
            .is_some_and(|t| now.saturating_duration_since(t) >= self.contact.timeout());
        if missed && self.bugs.stale_ping_cancels_fence {
            // The stale message read on waking counts as fresh contact and
            // the missed deadline goes unnoticed.
            self.contact.touch(Proof::Echo(now), now);
            self.send_lease();
            return;
        }
        let missed = self.contact.touch(proof, now);
        self.send_lease();
        if missed {
            self.self_fence("contact noticed late");
        }
    }

    /// The reaper mirrors the lease, as the real host's `contact` has it
    /// (`pod_host::reaper`): the fence deadline plus the backstop delay,
    /// sent only once it moved by `LEASE_STEP` since the last one sent.
    pub(super) fn send_lease(&mut self) {
        let Some(deadline) = self.contact.deadline() else {
            return;
        };
        let end = deadline + pod_host::reaper::backstop_delay(self.spec.fence);
        if self
            .reaper_sent
            .is_none_or(|sent| end >= sent + pod_host::reaper::LEASE_STEP)
        {
            self.reaper_sent = Some(end);
            self.reaper_end = Some(end);
        }
    }

    pub(super) fn fence_deadline(&self) -> Option<Instant> {
        let any = self
            .pods
            .values()
            .any(|p| p.is_live() && p.kill_cause.is_none());
        if any { self.contact.deadline() } else { None }
    }

    pub(super) fn fence_if_due(&mut self) {
        let unfenced = self
            .pods
            .values()
            .filter(|p| p.is_live() && p.kill_cause.is_none())
            .count();
        if pod_host::fence::should_fence(
            self.contact.last(),
            Instant::now(),
            self.contact.timeout(),
            unfenced,
        ) {
            self.self_fence("nothing heard from central");
        }
    }

    /// The reaper's lease ran out with no newer one (the host process is
    /// frozen): it SIGKILLs every pod process, whether or not the host
    /// runs. The host reports them as self-fenced (the real host: SIGKILLed
    /// by no one there while its lease was over), at once or on waking.
    pub(super) fn backstop(&mut self) {
        self.reaper_end = None;
        let frozen = self.frozen();
        let victims: Vec<String> = self
            .pods
            .values_mut()
            .filter(|p| p.process_alive)
            .map(|p| {
                p.kill_cause.get_or_insert(ExitCause::SelfFenced);
                p.pod_id.clone()
            })
            .collect();
        if victims.is_empty() {
            return;
        }
        self.self_fenced = true;
        self.trace.note(format!(
            "host-{} reaper backstop kills {} pod(s): the lease ended",
            self.idx,
            victims.len()
        ));
        let mut l = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        for v in &victims {
            if let Some(p) = self.pods.get_mut(v) {
                p.process_alive = false;
                p.death = Some((None, Some(9)));
                l.died(v);
            }
        }
        drop(l);
        if !frozen {
            for v in victims {
                self.notice_exit(&v);
            }
        }
    }
}
