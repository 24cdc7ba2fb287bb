//! Files that are re-read while the process runs: TLS certificates, keys
//! and CAs (cert-manager rewrites them in place), and central-manager's
//! token file.
//!
//! A [`Watched`] value is parsed from the contents of one or more files and
//! replaced when any of them changes. [`Reloader`] checks every watched
//! value once per interval and at once on SIGHUP. The contents themselves
//! are compared, not modification times: a Kubernetes Secret volume swaps a
//! symlink, which keeps the old mtime visible on some paths, and the files
//! are a few kilobytes, so reading them once a second costs nothing
//! measurable.
//!
//! A change that does not parse (a certificate written before its key, a
//! typo in the token file) is logged once and ignored: the previous value
//! stays in force and the files are read again at the next tick, so a
//! rotation that lands file by file is picked up once it is complete.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// How often watched files are read again. Certificate rotation is not
/// urgent (cert-manager renews well before expiry, and the kubelet takes up
/// to a minute to update a Secret volume); a second keeps tests quick.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Something that can re-read its sources.
pub trait Reload: Send + Sync + 'static {
    /// What it is, for logs (`"TLS certificate"`, `"token file"`).
    fn name(&self) -> String;
    /// Reads the sources again; `Ok(true)` when they changed and the new
    /// value is in force, `Ok(false)` when nothing changed, `Err` when they
    /// changed but do not parse (the old value stays).
    fn reload(&self) -> Result<bool, String>;
}

type Parser<T> = Box<dyn Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync>;

/// A value parsed from files, replaced when they change.
pub struct Watched<T> {
    name: String,
    paths: Vec<PathBuf>,
    parse: Parser<T>,
    state: Mutex<Seen>,
    current: RwLock<Arc<T>>,
}

#[derive(Default)]
struct Seen {
    /// The contents the current value was parsed from.
    applied: Vec<Vec<u8>>,
    /// Contents that failed to parse (logged once, not again).
    rejected: Option<Vec<Vec<u8>>>,
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display())))
        .collect()
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Reads and parses `paths` now. `parse` gets their contents in the
    /// same order. Fails when a file cannot be read or does not parse: a
    /// server must not start with a configuration it cannot use.
    pub fn load(
        name: impl Into<String>,
        paths: Vec<PathBuf>,
        parse: impl Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Arc<Self>, String> {
        let name = name.into();
        let contents = read_all(&paths)?;
        let value = parse(&contents).map_err(|e| format!("{name}: {e}"))?;
        Ok(Arc::new(Self {
            name,
            paths,
            parse: Box::new(parse),
            state: Mutex::new(Seen {
                applied: contents,
                rejected: None,
            }),
            current: RwLock::new(Arc::new(value)),
        }))
    }

    /// The value in force.
    pub fn current(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl<T: Send + Sync + 'static> Reload for Watched<T> {
    fn name(&self) -> String {
        let files: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        format!("{} ({})", self.name, files.join(", "))
    }

    fn reload(&self) -> Result<bool, String> {
        let contents = read_all(&self.paths)?;
        let mut seen = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if contents == seen.applied {
            seen.rejected = None;
            return Ok(false);
        }
        if seen.rejected.as_ref() == Some(&contents) {
            // Already reported; wait for the next change.
            return Ok(false);
        }
        match (self.parse)(&contents) {
            Ok(value) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
                seen.applied = contents;
                seen.rejected = None;
                Ok(true)
            }
            Err(e) => {
                seen.rejected = Some(contents);
                Err(e)
            }
        }
    }
}

/// The background loop that re-reads every watched value.
pub struct Reloader {
    items: Vec<Arc<dyn Reload>>,
    interval: Duration,
}

impl Reloader {
    pub fn new(items: Vec<Arc<dyn Reload>>, interval: Duration) -> Self {
        Self { items, interval }
    }

    /// Checks every item once (one tick's work); failures are logged.
    pub fn tick(&self) {
        for item in &self.items {
            match item.reload() {
                Ok(true) => tracing::info!(what = %item.name(), "reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    what = %item.name(),
                    error = %e,
                    "changed on disk but cannot be used; keeping the previous one"
                ),
            }
        }
    }

    /// Runs until `cancel`: a tick every interval and on every SIGHUP. Does
    /// nothing when there is nothing to watch.
    pub fn start(self, tracker: &TaskTracker, cancel: CancellationToken) {
        if self.items.is_empty() {
            return;
        }
        // Installed before the task runs, so a SIGHUP sent right after
        // start-up is a reload, not the default "terminate".
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; files are re-read every interval only");
                None
            }
        };
        tracker.spawn(
            async move {
                let mut ticker = tokio::time::interval(self.interval);
                // A stalled process re-reads once, not in a burst.
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    let hup = async {
                        match hangup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = ticker.tick() => {}
                        _ = hup => tracing::info!("SIGHUP: re-reading files"),
                    }
                    // Blocking file reads off the async workers.
                    let items = self.items.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        Reloader::new(items, Duration::ZERO).tick()
                    })
                    .await;
                }
            }
            .instrument(tracing::info_span!("reloader")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number_file(dir: &std::path::Path) -> (PathBuf, Arc<Watched<u32>>) {
        let path = dir.join("n");
        std::fs::write(&path, "1").unwrap();
        let w = Watched::load("number", vec![path.clone()], |c: &[Vec<u8>]| {
            std::str::from_utf8(&c[0])
                .map_err(|e| e.to_string())?
                .trim()
                .parse::<u32>()
                .map_err(|e| e.to_string())
        })
        .unwrap();
        (path, w)
    }

    #[test]
    fn a_change_is_applied_and_a_bad_one_keeps_the_old_value() {
        let dir = tempfile::tempdir().unwrap();
        let (path, w) = number_file(dir.path());
        assert_eq!(*w.current(), 1);
        assert_eq!(w.reload(), Ok(false));
        std::fs::write(&path, "2").unwrap();
        assert_eq!(w.reload(), Ok(true));
        assert_eq!(*w.current(), 2);
        std::fs::write(&path, "not a number").unwrap();
        assert!(w.reload().is_err());
        assert_eq!(*w.current(), 2, "the old value stays");
        // Reported once, not at every tick.
        assert_eq!(w.reload(), Ok(false));
        std::fs::write(&path, "3").unwrap();
        assert_eq!(w.reload(), Ok(true));
        assert_eq!(*w.current(), 3);
        std::fs::remove_file(&path).unwrap();
        assert!(w.reload().is_err(), "a missing file is an error");
        assert_eq!(*w.current(), 3);
    }

    #[test]
    fn load_fails_on_a_bad_or_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let parse = |_: &[Vec<u8>]| -> Result<(), String> { Err("bad".into()) };
        let path = dir.path().join("x");
        assert!(Watched::load("x", vec![path.clone()], parse).is_err());
        std::fs::write(&path, "x").unwrap();
        let err = Watched::load("x", vec![path], parse).err().unwrap();
        assert!(err.contains("bad"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_loop_picks_up_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (path, w) = number_file(dir.path());
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        Reloader::new(vec![w.clone()], Duration::from_millis(20)).start(&tracker, cancel.clone());
        std::fs::write(&path, "7").unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while *w.current() != 7 {
            assert!(tokio::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
