//! Pod directories made ahead of need.
//!
//! A pod needs its own dir (its default working directory) holding its
//! task file before it can start. Creating those two inodes is cheap on
//! most file systems but can take around a millisecond on a busy ext4
//! volume (the inode allocator skips recently deleted inodes one by one),
//! which would dominate a StartPod. So a few dirs, each with an empty task
//! file (mode 0600), are made in the background under `DATA_DIR/spare`, and
//! a start renames one into place as `DATA_DIR/pods/POD_ID` (same file
//! system, no inode allocated) and writes the task file into it. When none
//! is ready (a burst of starts) the start makes its dir itself, as before.
//! This moves the work off the start path; it does not remove it.
//!
//! Spare dirs are never handed to pods other than through a start, and
//! never reused after a pod had them. Leftovers of a previous run of the
//! host are removed before the first refill.
//!
//! When pods run as another user (`crate::isolation`), the pod's own files
//! live one level down, in `POD_ID/work` (its working dir, with the task
//! file), which is handed to the pod's user; `POD_ID` itself stays the
//! host's and holds the output log.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Dirs kept ready.
const SPARE_TARGET: usize = 16;

/// The name of the task file inside a pod's dir.
pub const TASK_FILE: &str = "task.json";

/// The pod's own dir inside its pod dir, when pods are isolated.
const WORK_DIR: &str = "work";

/// A pod's working dir and task file inside its pod dir `dir`.
pub fn pod_paths(dir: &Path, isolated: bool) -> (PathBuf, PathBuf) {
    let work = if isolated {
        dir.join(WORK_DIR)
    } else {
        dir.to_path_buf()
    };
    let task = work.join(TASK_FILE);
    (work, task)
}

pub struct PodDirs {
    pods_root: PathBuf,
    spare_root: PathBuf,
    /// Pods run as another user: the `work` layout.
    isolated: bool,
    state: Mutex<Spare>,
}

#[derive(Default)]
struct Spare {
    ready: Vec<PathBuf>,
    next: u64,
    refilling: bool,
    /// The spare root was cleared and created (first refill).
    set_up: bool,
}

impl PodDirs {
    pub fn new(data_dir: &Path, isolated: bool) -> Self {
        Self {
            pods_root: data_dir.join("pods"),
            spare_root: data_dir.join("spare"),
            isolated,
            state: Mutex::new(Spare::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spare> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `dir` (a pod's dir) with its task file holding `body`, mode
    /// 0600, and hands the pod's part to `creds` when given. Blocking.
    pub fn make(
        &self,
        dir: &Path,
        body: &[u8],
        creds: Option<&crate::isolation::Creds>,
    ) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let spare = self.lock().ready.pop();
        let placed = spare.is_some_and(|s| match std::fs::rename(&s, dir) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(spare = %s.display(), error = %e, "cannot use a spare pod dir");
                let _ = std::fs::remove_dir_all(&s);
                false
            }
        });
        let (work, task) = pod_paths(dir, self.isolated);
        if !placed {
            std::fs::create_dir_all(&work)?;
        }
        // A spare dir's task file exists already (0600, empty): no inode.
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&task)?
            .write_all(body)?;
        match creds {
            Some(c) => crate::isolation::hand_over(dir, &work, &task, c),
            None => Ok(()),
        }
    }

    /// Tops the spare dirs up in the background (one refill at a time).
    /// Must be called inside the tokio runtime.
    pub fn refill(self: &Arc<Self>) {
        {
            let mut s = self.lock();
            if s.refilling || s.ready.len() >= SPARE_TARGET {
                return;
            }
            s.refilling = true;
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = this.fill() {
                tracing::warn!(dir = %this.spare_root.display(), error = %e, "cannot make spare pod dirs");
            }
            this.lock().refilling = false;
        });
    }

    fn fill(&self) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        if !self.lock().set_up {
            match std::fs::remove_dir_all(&self.spare_root) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            std::fs::create_dir_all(&self.spare_root)?;
            // Where spares are renamed to.
            std::fs::create_dir_all(&self.pods_root)?;
            self.lock().set_up = true;
        }
        loop {
            let n = {
                let mut s = self.lock();
                if s.ready.len() >= SPARE_TARGET {
                    return Ok(());
                }
                s.next += 1;
                s.next
            };
            let dir = self.spare_root.join(n.to_string());
            std::fs::create_dir(&dir)?;
            let (work, task) = pod_paths(&dir, self.isolated);
            if self.isolated {
                std::fs::create_dir(&work)?;
            }
            std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(task)?;
            self.lock().ready.push(dir);
        }
    }

    #[cfg(test)]
    fn ready(&self) -> usize {
        self.lock().ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    async fn filled(dirs: &Arc<PodDirs>) {
        dirs.refill();
        for _ in 0..500 {
            if dirs.ready() == SPARE_TARGET && !dirs.lock().refilling {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("spare dirs not made");
    }

    #[tokio::test]
    async fn starts_take_spare_dirs_then_make_their_own() {
        let data = tempfile::tempdir().unwrap();
        // Leftovers of a previous run are cleared.
        std::fs::create_dir_all(data.path().join("spare/1")).unwrap();
        std::fs::write(data.path().join("spare/1/junk"), b"x").unwrap();
        let dirs = Arc::new(PodDirs::new(data.path(), false));
        filled(&dirs).await;
        assert!(!data.path().join("spare/1/junk").exists());
        let pods = data.path().join("pods");
        for i in 0..SPARE_TARGET + 2 {
            let dir = pods.join(format!("pod-{i}"));
            dirs.make(&dir, format!("{{\"n\":{i}}}\n").as_bytes(), None)
                .unwrap();
            let task = dir.join(TASK_FILE);
            assert_eq!(
                std::fs::read_to_string(&task).unwrap(),
                format!("{{\"n\":{i}}}\n")
            );
            let mode = std::fs::metadata(&task).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        }
        assert_eq!(dirs.ready(), 0);
        filled(&dirs).await;
        assert_eq!(
            std::fs::read_dir(data.path().join("spare"))
                .unwrap()
                .count(),
            SPARE_TARGET
        );
    }
}
