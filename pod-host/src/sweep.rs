//! What a previous run of the pod-host left behind, and the record that
//! makes it findable.
//!
//! Normally nothing survives a pod-host: PDEATHSIG kills each pod's main
//! process and the reaper kills the rest of its group (see `reaper`). But
//! when the reaper dies with the host (both SIGKILLed, an OOM kill of the
//! pair), processes a pod started live on, and every pod dir stays on
//! disk. So the host keeps a small journal, `DATA_DIR/pod-groups`: one
//! line `+POD_ID PGID` when a pod is spawned and `-POD_ID` when its group
//! is dead. At start, before serving, it replays the journal and kills each
//! recorded group that still exists **and is still that pod's**: at least
//! one member carries `IPA_POD_ID=POD_ID` in its environment. A group id
//! can be reused once the group is gone, but not while any member lives,
//! so a group with such a member is the pod's group; a process that merely
//! reused the number has no such variable and is never touched. Then the
//! previous run's pod dirs are moved aside and removed in the background
//! (central treats every pod of a previous boot as lost, so nothing can
//! ask for them).
//!
//! Limits: a process that left its pod's group (setsid) is not a pod any
//! more and is not swept; one whose whole group cleared `IPA_POD_ID` from
//! its environment is not recognised (safe side: left alive, and logged as
//! unverified). The journal is written without fsync: it must survive the
//! process, not the machine, whose reboot ends every pod anyway.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The journal's file name in the data dir.
pub const JOURNAL: &str = "pod-groups";

/// The pods' dirs, relative to the data dir.
const PODS: &str = "pods";
/// Prefix of a previous run's pods dir, moved aside to be removed.
const TRASH_PREFIX: &str = "pods.old-";

/// Journal lines kept before it is rewritten with only the live pods.
const COMPACT_AT: usize = 4096;

/// How long the sweep waits for a killed group to disappear.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A pod was spawned as the leader of group `pgid`.
    Started { pod_id: String, pgid: i32 },
    /// The pod's group is dead.
    Ended { pod_id: String },
}

impl Entry {
    /// Parses one line (without its newline); `None` for anything else (a
    /// line cut by a crash, junk).
    pub fn parse(line: &str) -> Option<Entry> {
        let (op, rest) = line.split_at_checked(1)?;
        match op {
            "+" => {
                let (pod_id, pgid) = rest.split_once(' ')?;
                let pgid: i32 = pgid.parse().ok().filter(|p| *p > 1)?;
                valid_pod_id(pod_id).then(|| Entry::Started {
                    pod_id: pod_id.to_owned(),
                    pgid,
                })
            }
            "-" => valid_pod_id(rest).then(|| Entry::Ended {
                pod_id: rest.to_owned(),
            }),
            _ => None,
        }
    }

    fn line(&self) -> String {
        match self {
            Entry::Started { pod_id, pgid } => format!("+{pod_id} {pgid}\n"),
            Entry::Ended { pod_id } => format!("-{pod_id}\n"),
        }
    }
}

/// Pod ids are lowercase UUIDs (the api checks them): nothing else is
/// trusted from the file, since it becomes an environment match.
fn valid_pod_id(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok_and(|u| u.hyphenated().to_string() == s)
}

/// The pods whose groups were never recorded dead, after `text`.
pub fn replay(text: &str) -> BTreeMap<String, i32> {
    let mut live = BTreeMap::new();
    for line in text.lines() {
        match Entry::parse(line) {
            Some(Entry::Started { pod_id, pgid }) => {
                live.insert(pod_id, pgid);
            }
            Some(Entry::Ended { pod_id }) => {
                live.remove(&pod_id);
            }
            None => {}
        }
    }
    live
}

/// The journal of this run (see the module docs).
pub struct GroupJournal {
    inner: Mutex<Journal>,
}

struct Journal {
    path: PathBuf,
    /// `None` after a write error (logged once): pods still run, only the
    /// sweep after a crash loses its record.
    file: Option<File>,
    live: HashMap<String, i32>,
    lines: usize,
}

impl GroupJournal {
    /// Starts an empty journal in `data_dir` (after [`sweep`] read the
    /// previous one).
    pub fn create(data_dir: &Path) -> io::Result<Self> {
        let path = data_dir.join(JOURNAL);
        let file = open_journal(&path)?;
        Ok(Self {
            inner: Mutex::new(Journal {
                path,
                file: Some(file),
                live: HashMap::new(),
                lines: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pod was spawned leading group `pgid`.
    pub fn started(&self, pod_id: &str, pgid: u32) {
        let Ok(pgid) = i32::try_from(pgid) else {
            return;
        };
        let mut j = self.lock();
        j.live.insert(pod_id.to_owned(), pgid);
        j.append(&Entry::Started {
            pod_id: pod_id.to_owned(),
            pgid,
        });
    }

    /// The pod's group is dead.
    pub fn ended(&self, pod_id: &str) {
        let mut j = self.lock();
        if j.live.remove(pod_id).is_none() {
            return;
        }
        j.append(&Entry::Ended {
            pod_id: pod_id.to_owned(),
        });
    }
}

impl Journal {
    /// One `write` of a few dozen bytes to the page cache.
    fn append(&mut self, entry: &Entry) {
        if self.lines >= COMPACT_AT.max(self.live.len() * 2) {
            self.compact();
        }
        let Some(f) = self.file.as_mut() else { return };
        if let Err(e) = f.write_all(entry.line().as_bytes()) {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot write the pod group journal; a crash would leave pods unswept");
            self.file = None;
            return;
        }
        self.lines += 1;
    }

    /// Rewrites the journal with only the live pods (a new file renamed
    /// over the old one, so a crash leaves one or the other).
    fn compact(&mut self) {
        let tmp = self.path.with_extension("tmp");
        let result = (|| {
            let mut f = open_journal(&tmp)?;
            let mut text = String::new();
            for (pod_id, pgid) in &self.live {
                text.push_str(
                    &Entry::Started {
                        pod_id: pod_id.clone(),
                        pgid: *pgid,
                    }
                    .line(),
                );
            }
            f.write_all(text.as_bytes())?;
            std::fs::rename(&tmp, &self.path)?;
            Ok::<_, io::Error>(f)
        })();
        match result {
            Ok(f) => {
                self.file = Some(f);
                self.lines = self.live.len();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot compact the pod group journal");
                self.lines = 0;
            }
        }
    }
}

/// A new, empty journal file (mode 0600).
fn open_journal(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// What [`sweep`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Recorded groups found alive and killed.
    pub killed: Vec<(String, i32)>,
    /// Recorded groups whose members could not be verified as the pod's
    /// (left alone).
    pub unverified: Vec<(String, i32)>,
    /// The previous run's pod dirs were moved aside for removal.
    pub moved_dirs: bool,
}

/// Kills what the previous run left (see the module docs) and moves its
/// pod dirs aside. Blocking (reads /proc); run before serving.
pub fn sweep(data_dir: &Path) -> Swept {
    let mut out = Swept::default();
    let journal = data_dir.join(JOURNAL);
    let text = match std::fs::read(&journal) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            tracing::warn!(error = %e, path = %journal.display(), "cannot read the pod group journal");
            String::new()
        }
    };
    let live = replay(&text);
    if !live.is_empty() {
        let groups = process_groups();
        let own = nix::unistd::getpgrp().as_raw();
        for (pod_id, pgid) in live {
            let Some(members) = groups.get(&pgid) else {
                continue; // gone: nothing to do
            };
            let marker = format!("IPA_POD_ID={pod_id}");
            let ours = pgid != own && members.iter().any(|&pid| has_env(pid, &marker));
            if !ours {
                out.unverified.push((pod_id, pgid));
                continue;
            }
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
            out.killed.push((pod_id, pgid));
        }
        wait_gone(out.killed.iter().map(|(_, g)| *g).collect());
    }
    let pods = data_dir.join(PODS);
    if pods.exists() {
        let aside = data_dir.join(format!("{TRASH_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        match std::fs::rename(&pods, &aside) {
            Ok(()) => out.moved_dirs = true,
            Err(e) => tracing::warn!(error = %e, "cannot move the previous pod dirs aside"),
        }
    }
    out
}

/// Removes pod dirs moved aside by [`sweep`] (this run's and any a
/// previous run did not finish). Blocking.
pub fn remove_old_dirs(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TRASH_PREFIX)
            && let Err(err) = std::fs::remove_dir_all(e.path())
        {
            tracing::warn!(error = %err, dir = %e.path().display(), "cannot remove old pod dirs");
        }
    }
}

/// Every process group on the machine: pgid → live member pids.
fn process_groups() -> HashMap<i32, Vec<i32>> {
    let mut groups: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return groups;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some((state, pgrp)) = stat(pid)
            && state != 'Z'
        {
            groups.entry(pgrp).or_default().push(pid);
        }
    }
    groups
}

/// `(state, pgrp)` from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the
    // last ')'.
    let rest = s.get(s.rfind(')')? + 2..)?;
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Whether `pid`'s environment holds exactly `var` (`NAME=value`).
fn has_env(pid: i32, var: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == var.as_bytes()))
}

/// Waits (bounded) until none of `pgids` has a live member.
fn wait_gone(mut pgids: Vec<i32>) {
    let start = Instant::now();
    while !pgids.is_empty() && start.elapsed() < KILL_WAIT {
        let groups = process_groups();
        pgids.retain(|g| groups.contains_key(g));
        if !pgids.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if !pgids.is_empty() {
        tracing::warn!(groups = ?pgids, "leftover pod groups did not die in time");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    const A: &str = "0b6f8b3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    const B: &str = "1b6f8b3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";

    #[test]
    fn journal_lines_round_trip_and_junk_is_ignored() {
        for e in [
            Entry::Started {
                pod_id: A.into(),
                pgid: 4242,
            },
            Entry::Ended { pod_id: A.into() },
        ] {
            assert_eq!(Entry::parse(e.line().trim_end()), Some(e));
        }
        for junk in [
            "",
            "+",
            "-",
            "x",
            &format!("+{A}"),
            &format!("+{A} 1"),
            &format!("+{A} 0"),
            &format!("+{A} -5"),
            &format!("+{A} 99999999999"),
            &format!("+{} 12", A.to_uppercase()),
            "+not-a-uuid 12",
            &format!("-{A} extra"),
        ] {
            assert_eq!(Entry::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn replay_keeps_pods_not_recorded_dead() {
        let text = format!("+{A} 100\n+{B} 200\n-{A}\ngarbage\n+{A} 300\n-{B}\n+{B} 40");
        // The last line was cut by a crash but is whole enough to parse.
        assert_eq!(
            replay(&text),
            BTreeMap::from([(A.to_owned(), 300), (B.to_owned(), 40)])
        );
    }

    #[test]
    fn the_journal_records_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let j = GroupJournal::create(dir.path()).unwrap();
        j.started(A, 100);
        j.started(B, 200);
        j.ended(A);
        j.ended(A); // once only
        let text = std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
        assert_eq!(text, format!("+{A} 100\n+{B} 200\n-{A}\n"));
        assert_eq!(replay(&text), BTreeMap::from([(B.to_owned(), 200)]));
        // Many short-lived pods: the file stays small.
        for i in 0..20_000u32 {
            let id = uuid::Uuid::new_v4().to_string();
            j.started(&id, 1000 + i);
            j.ended(&id);
        }
        let text = std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
        assert!(
            text.lines().count() <= COMPACT_AT + 2,
            "{}",
            text.lines().count()
        );
        assert_eq!(replay(&text), BTreeMap::from([(B.to_owned(), 200)]));
    }

    /// Waits until `pid` runs `sleep` (exec done) as its own group leader:
    /// between fork and exec it still has the test's environment.
    fn wait_started(pid: i32) {
        for _ in 0..1000 {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmd.starts_with(b"sleep\0") && stat(pid).is_some_and(|(_, g)| g == pid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("process {pid} did not start");
    }

    /// A recorded group that is not the pod's (the number was reused by an
    /// unrelated process) is left alone; the pod dirs are moved aside.
    #[test]
    fn sweep_never_touches_a_group_without_the_pod_marker() {
        let dir = tempfile::tempdir().unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("100")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = other.id() as i32;
        wait_started(pgid);
        std::fs::write(dir.path().join(JOURNAL), format!("+{A} {pgid}\n")).unwrap();
        std::fs::create_dir_all(dir.path().join("pods").join(A)).unwrap();
        let swept = sweep(dir.path());
        assert_eq!(swept.killed, vec![]);
        assert_eq!(swept.unverified, vec![(A.to_owned(), pgid)]);
        assert!(swept.moved_dirs);
        assert!(
            other.try_wait().unwrap().is_none(),
            "the unrelated process lives"
        );
        assert!(!dir.path().join("pods").exists());
        remove_old_dirs(dir.path());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        other.kill().unwrap();
        other.wait().unwrap();
    }

    /// A recorded group whose member carries the pod's id is killed.
    #[test]
    fn sweep_kills_a_leftover_group_of_the_pod() {
        let dir = tempfile::tempdir().unwrap();
        let mut leftover = std::process::Command::new("sleep")
            .arg("100")
            .env("IPA_POD_ID", A)
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = leftover.id() as i32;
        wait_started(pgid);
        std::fs::write(dir.path().join(JOURNAL), format!("+{A} {pgid}\n")).unwrap();
        let swept = sweep(dir.path());
        assert_eq!(swept.killed, vec![(A.to_owned(), pgid)]);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(leftover.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
}
