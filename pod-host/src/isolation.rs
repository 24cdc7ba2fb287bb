//! Pods apart from their host (`--pod-user`, `--pod-uid-range`).
//!
//! By default a pod runs as the pod-host's own user. With `--pod-user
//! USER|UID[:GID]` every pod runs as that user instead; with
//! `--pod-uid-range FIRST-LAST` every live pod gets a uid of its own from
//! the range (its gid the same number), so pods cannot read each other's
//! files or `/proc/PID/environ` either. Either way, a pod:
//!
//! - runs without supplementary groups, its uid and gid set (raw
//!   `setgroups`/`setresgid`/`setresuid` in the spawned child, before its
//!   parent-death signal is armed, since a credential change clears it);
//! - has its own working dir `DATA_DIR/pods/POD_ID/work` (mode 0700, owned
//!   by the pod) holding its task file (0600, owned by the pod);
//! - cannot list the data dir or `pods/` (0711: traverse only), cannot read
//!   the host's files in it (its output log is written by the host into
//!   `pods/POD_ID`, root-owned), its keys or other pods' dirs, and cannot
//!   signal the host or its reaper (another uid).
//!
//! With a uid per pod, a uid goes back to the pool only after every
//! process still running under it is killed (`kill(-1, SIGKILL)` as that
//! uid), so a process that left the pod's group cannot linger into the
//! next pod that gets the uid.
//!
//! What this does not give a pod (docs/security.md): its own network
//! namespace (it can reach every port the host can, 127.0.0.1 included,
//! which is why a pod-host should require client certificates), its own
//! mount namespace or file system view (world-readable files stay
//! readable), or resource limits of its own.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;

/// Who pods run as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PodIdentity {
    /// The pod-host's own user (the default).
    #[default]
    Host,
    /// `--pod-user`: every pod as this user.
    Shared(Creds),
    /// `--pod-uid-range`: each live pod its own uid (and the same gid).
    PerPod { first: u32, last: u32 },
}

/// A pod's user and group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    /// The user's name, when it has one (`USER`/`LOGNAME` of the pod).
    pub name: Option<String>,
}

fn not_root(uid: u32, flag: &str) -> Result<u32, String> {
    if uid == 0 {
        Err(format!("{flag}: pods must not run as root (uid 0)"))
    } else {
        Ok(uid)
    }
}

/// Parses `--pod-user USER|UID[:GID]` (GID may be a group name). A user
/// name is looked up in the passwd database; its primary group is the
/// default GID. A bare UID without a passwd entry gets GID = UID.
pub fn parse_pod_user(s: &str) -> Result<Creds, String> {
    let (user, group) = match s.split_once(':') {
        Some((u, g)) => (u.trim(), Some(g.trim())),
        None => (s.trim(), None),
    };
    if user.is_empty() {
        return Err("--pod-user: empty user".into());
    }
    let (uid, default_gid, name) = if let Ok(uid) = user.parse::<u32>() {
        let entry = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten();
        (
            uid,
            entry.as_ref().map_or(uid, |u| u.gid.as_raw()),
            entry.map(|u| u.name),
        )
    } else {
        let entry = nix::unistd::User::from_name(user)
            .map_err(|e| format!("--pod-user: looking up {user:?}: {e}"))?
            .ok_or_else(|| format!("--pod-user: no user named {user:?}"))?;
        (entry.uid.as_raw(), entry.gid.as_raw(), Some(entry.name))
    };
    let gid = match group.map(|g| (g, g.parse::<u32>())) {
        None => default_gid,
        Some((_, Ok(gid))) => gid,
        Some((g, Err(_))) => nix::unistd::Group::from_name(g)
            .map_err(|e| format!("--pod-user: looking up group {g:?}: {e}"))?
            .ok_or_else(|| format!("--pod-user: no group named {g:?}"))?
            .gid
            .as_raw(),
    };
    Ok(Creds {
        uid: not_root(uid, "--pod-user")?,
        gid: if gid == 0 {
            return Err("--pod-user: pods must not run in group root (gid 0)".into());
        } else {
            gid
        },
        name,
    })
}

/// Parses `--pod-uid-range FIRST-LAST` (inclusive); it must hold at least
/// `capacity` uids.
pub fn parse_uid_range(s: &str, capacity: u32) -> Result<(u32, u32), String> {
    let bad = || format!("--pod-uid-range: {s:?} is not FIRST-LAST (two uids, FIRST ≤ LAST)");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let first: u32 = a.trim().parse().map_err(|_| bad())?;
    let last: u32 = b.trim().parse().map_err(|_| bad())?;
    if first > last {
        return Err(bad());
    }
    not_root(first, "--pod-uid-range")?;
    let size = u64::from(last) - u64::from(first) + 1;
    if size < u64::from(capacity) {
        return Err(format!(
            "--pod-uid-range: {size} uids for --capacity {capacity}: every live pod needs its own"
        ));
    }
    Ok((first, last))
}

/// The identity policy in force, with the per-pod uid pool.
pub struct Isolation {
    identity: PodIdentity,
    in_use: Mutex<BTreeSet<u32>>,
}

impl Isolation {
    pub fn new(identity: PodIdentity) -> Self {
        Self {
            identity,
            in_use: Mutex::new(BTreeSet::new()),
        }
    }

    /// Whether pods run as someone other than the host.
    pub fn is_isolated(&self) -> bool {
        self.identity != PodIdentity::Host
    }

    /// Whether pods have uids of their own (and so are swept on exit).
    pub fn per_pod(&self) -> bool {
        matches!(self.identity, PodIdentity::PerPod { .. })
    }

    /// The identity for a new pod: `None` runs it as the host. With a uid
    /// range, the lowest free uid (an error when every one is in use).
    pub fn acquire(&self) -> Result<Option<Creds>, String> {
        match &self.identity {
            PodIdentity::Host => Ok(None),
            PodIdentity::Shared(c) => Ok(Some(c.clone())),
            PodIdentity::PerPod { first, last } => {
                let mut used = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
                let uid = (*first..=*last)
                    .find(|u| !used.contains(u))
                    .ok_or_else(|| "every uid of --pod-uid-range is in use".to_owned())?;
                used.insert(uid);
                Ok(Some(Creds {
                    uid,
                    gid: uid,
                    name: None,
                }))
            }
        }
    }

    /// Returns a per-pod uid to the pool (after its processes are gone).
    pub fn release(&self, creds: &Creds) {
        if self.per_pod() {
            self.in_use
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&creds.uid);
        }
    }

    /// Locks the data dir down for isolated pods: the data dir and `pods/`
    /// traverse-only for others (a pod reaches its own work dir and nothing
    /// else), `spare/` private. Warns when an ancestor would stop pods from
    /// reaching their dirs at all.
    pub fn secure_data_dir(&self, data_dir: &Path) -> io::Result<()> {
        if !self.is_isolated() {
            return Ok(());
        }
        for (p, mode) in [
            (data_dir.to_path_buf(), 0o711),
            (data_dir.join("pods"), 0o711),
            (data_dir.join("spare"), 0o700),
        ] {
            std::fs::create_dir_all(&p)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        }
        for a in data_dir.ancestors().skip(1) {
            if let Ok(m) = std::fs::metadata(a)
                && m.permissions().mode() & 0o001 == 0
            {
                tracing::warn!(
                    dir = %a.display(),
                    "pods run as another user but cannot traverse this ancestor of the data dir; \
                     their working dirs will be unreachable (chmod o+x it)"
                );
            }
        }
        Ok(())
    }
}

/// Gives a freshly made pod dir to its pod: `dir` stays the host's (0711:
/// its output log lives there), `dir/work` and the task file in it become
/// the pod's. The task file is written before this, so there is no moment
/// in which the pod could swap it for a link.
pub fn hand_over(dir: &Path, work: &Path, task_file: &Path, creds: &Creds) -> io::Result<()> {
    use std::os::unix::fs::chown;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
    std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o700))?;
    chown(task_file, Some(creds.uid), Some(creds.gid))?;
    chown(work, Some(creds.uid), Some(creds.gid))
}

/// The environment of a pod that runs as `creds`: its home and temp dir
/// are its work dir (a shared /tmp without the sticky bit, as a Kubernetes
/// emptyDir is, would let pods delete each other's files), its user name
/// its own (or none), not the host's.
pub fn adjust_env(
    env: &mut Vec<(std::ffi::OsString, std::ffi::OsString)>,
    creds: &Creds,
    work: &Path,
) {
    env.retain(|(k, _)| k != "HOME" && k != "USER" && k != "LOGNAME" && k != "TMPDIR");
    env.push(("HOME".into(), work.as_os_str().to_owned()));
    env.push(("TMPDIR".into(), work.as_os_str().to_owned()));
    if let Some(name) = &creds.name {
        env.push(("USER".into(), name.into()));
        env.push(("LOGNAME".into(), name.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_user_forms() {
        let c = parse_pod_user("4242").unwrap();
        assert_eq!((c.uid, c.gid), (4242, 4242));
        let c = parse_pod_user("4242:77").unwrap();
        assert_eq!((c.uid, c.gid), (4242, 77));
        // `nobody` exists on every Linux.
        let c = parse_pod_user("nobody").unwrap();
        assert_eq!(c.name.as_deref(), Some("nobody"));
        assert!(c.uid > 0);
        assert!(parse_pod_user("0").unwrap_err().contains("root"));
        assert!(parse_pod_user("root").unwrap_err().contains("root"));
        assert!(parse_pod_user("4242:0").unwrap_err().contains("root"));
        assert!(
            parse_pod_user("no-such-user-here")
                .unwrap_err()
                .contains("no user")
        );
        assert!(parse_pod_user("4242:no-such-group-here").is_err());
        assert!(parse_pod_user("").is_err());
    }

    #[test]
    fn uid_ranges() {
        assert_eq!(parse_uid_range("100000-100099", 100), Ok((100000, 100099)));
        assert!(
            parse_uid_range("100000-100009", 100)
                .unwrap_err()
                .contains("--capacity")
        );
        assert!(parse_uid_range("0-10", 1).unwrap_err().contains("root"));
        assert!(parse_uid_range("10-5", 1).is_err());
        assert!(parse_uid_range("x", 1).is_err());
    }

    #[test]
    fn per_pod_uids_are_distinct_until_released() {
        let iso = Isolation::new(PodIdentity::PerPod {
            first: 5000,
            last: 5002,
        });
        let a = iso.acquire().unwrap().unwrap();
        let b = iso.acquire().unwrap().unwrap();
        let c = iso.acquire().unwrap().unwrap();
        assert_eq!((a.uid, b.uid, c.uid), (5000, 5001, 5002));
        assert_eq!(a.gid, 5000);
        assert!(iso.acquire().is_err(), "pool exhausted");
        iso.release(&b);
        assert_eq!(iso.acquire().unwrap().unwrap().uid, 5001);
        let host = Isolation::new(PodIdentity::Host);
        assert!(!host.is_isolated());
        assert_eq!(host.acquire().unwrap(), None);
    }
}
