//! The pod-hosts of one scale run: simulated ones in stand-in processes,
//! or real `pod-host` processes running real (cheap) pods, behind one
//! interface so every measurement runs the same way on both. Hosts are
//! grouped in racks (at most 10): a host storm loses one rack at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipa_tests::pb;
use ipa_tests::simhost::SimStats;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::standin::{Crashed, StandIn, StandInSpec};
use crate::proc::{self, Server};

/// Which kind of pod-hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Simulated,
    Real,
}

/// How many racks `hosts` are split into.
pub fn racks(hosts: usize) -> usize {
    hosts.clamp(1, 10)
}

/// A real pod-host's pods: report one status line on fd 3 (as the
/// simulated ones do when they start), then sleep.
fn write_real_config(dir: &Path) -> PathBuf {
    let toml = "[templates.sleeper]\ncommand = \"/bin/sh\"\nargs = [\"-c\", \
                \"echo '{\\\"phase\\\":\\\"planning\\\",\\\"message\\\":\\\"sleeping\\\"}' >&3; exec /bin/sleep 3600\"]\n";
    let path = dir.join("pod-host.toml");
    std::fs::write(&path, toml).expect("write pod-host config");
    path
}

enum Racks {
    Simulated(Vec<StandIn>),
    /// One entry per rack: its pod-host processes.
    Real(Vec<Vec<Server>>),
}

pub struct Fleet {
    pub kind: Kind,
    racks: Racks,
    /// (host id, URL, rack) of every host.
    hosts: Vec<(String, String, usize)>,
}

impl Fleet {
    /// Starts `hosts` pod-hosts of `kind`, each with `capacity` slots and
    /// `fence` as its own fence timeout.
    pub async fn start(
        kind: Kind,
        dir: &Path,
        hosts: usize,
        capacity: u32,
        fence: Duration,
    ) -> Self {
        let n = racks(hosts);
        let mut all = Vec::new();
        let racks = match kind {
            Kind::Simulated => {
                let mut v = Vec::new();
                for r in 0..n {
                    let spec = StandInSpec {
                        prefix: format!("sim{r}"),
                        hosts: hosts / n + usize::from(r < hosts % n),
                        capacity,
                        fence_timeout: fence,
                    };
                    let s = StandIn::start(&spec, dir).await;
                    all.extend(s.hosts.iter().map(|(id, url)| (id.clone(), url.clone(), r)));
                    v.push(s);
                }
                Racks::Simulated(v)
            }
            Kind::Real => {
                let config = write_real_config(dir);
                let cap = capacity.to_string();
                let fence_ms = fence.as_millis().to_string();
                let flags = ["--capacity", &cap, "--fence-timeout-ms", &fence_ms];
                let mut v: Vec<Vec<Server>> = (0..n).map(|_| Vec::new()).collect();
                for i in 0..hosts {
                    let id = format!("real{i}");
                    let h = proc::pod_host(dir, &id, &config, &flags).await;
                    all.push((id, h.url(), i % n));
                    v[i % n].push(h);
                }
                Racks::Real(v)
            }
        };
        Self {
            kind,
            racks,
            hosts: all,
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.hosts.iter().map(|(_, u, _)| u.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// The processes that run the hosts (for their CPU).
    pub fn pids(&self) -> Vec<u32> {
        match &self.racks {
            Racks::Simulated(s) => s.iter().map(|s| s.pid).collect(),
            Racks::Real(r) => r.iter().flatten().map(|h| h.pid).collect(),
        }
    }

    /// Host ids of rack `r`.
    pub fn rack(&self, r: usize) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|(_, _, x)| *x == r)
            .map(|(id, _, _)| id.clone())
            .collect()
    }

    /// `per_host` pods of every host crash at (nearly) the same instant:
    /// simulated ones exit 1, real ones are SIGKILLed. `active` is central's
    /// list of pods (real pods are found there by pid).
    pub async fn crash(&mut self, per_host: usize, active: &[pb::ActivePod]) -> Crashed {
        match &mut self.racks {
            Racks::Simulated(standins) => {
                for s in standins.iter_mut() {
                    s.send_crash(per_host).await;
                }
                let mut all = Crashed {
                    first_us: i64::MAX,
                    ..Default::default()
                };
                for s in standins.iter_mut() {
                    let c = s.crashed().await;
                    all.first_us = all.first_us.min(c.first_us);
                    all.last_us = all.last_us.max(c.last_us);
                    all.tasks.extend(c.tasks);
                }
                all
            }
            Racks::Real(_) => {
                let mut victims: Vec<(String, u32)> = Vec::new();
                let mut per: std::collections::HashMap<&str, usize> = Default::default();
                for p in active {
                    let Some(pod) = &p.pod else { continue };
                    let n = per.entry(pod.pod_host.as_str()).or_default();
                    if *n < per_host && pod.pid > 0 {
                        *n += 1;
                        victims.push((p.task_id.clone(), pod.pid));
                    }
                }
                let first_us = ipa_proto::time::now_micros();
                for (_, pid) in &victims {
                    let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
                }
                Crashed {
                    first_us,
                    last_us: ipa_proto::time::now_micros(),
                    tasks: victims.into_iter().map(|(t, _)| t).collect(),
                }
            }
        }
    }

    /// SIGKILL of every process of rack `r`: its hosts are gone at once
    /// (real pods die with their pod-host, PDEATHSIG).
    pub async fn kill_rack(&mut self, r: usize) {
        match &mut self.racks {
            Racks::Simulated(s) => s[r].kill().await,
            Racks::Real(racks) => {
                for h in &racks[r] {
                    h.signal(Signal::SIGKILL);
                }
                for h in racks[r].iter_mut() {
                    h.reap().await;
                }
            }
        }
    }

    /// What the simulated hosts counted (live rack only); `None` for real
    /// hosts, whose pods are checked through their pids instead.
    pub async fn stats(&mut self) -> Option<SimStats> {
        let Racks::Simulated(standins) = &mut self.racks else {
            return None;
        };
        let mut s = SimStats::default();
        for x in standins.iter_mut().filter(|s| s.alive()) {
            let v = x.stats().await;
            s.live += v.live;
            s.started += v.started;
            s.crashed += v.crashed;
            s.killed_by_central += v.killed_by_central;
            s.self_fenced += v.self_fenced;
        }
        Some(s)
    }

    /// Stops every host (real ones gracefully, their pods with them).
    pub async fn stop(self) {
        match self.racks {
            Racks::Simulated(s) => drop(s),
            Racks::Real(racks) => {
                let mut hosts: Vec<Server> = racks.into_iter().flatten().collect();
                let stops = hosts
                    .iter_mut()
                    .map(|h| h.stop(Duration::from_secs(30)))
                    .collect::<Vec<_>>();
                futures::future::join_all(stops).await;
            }
        }
    }
}
