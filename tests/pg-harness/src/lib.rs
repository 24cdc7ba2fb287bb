//! A private PostgreSQL server for tests, started from the server binaries
//! of the machine (Debian's `postgresql` package: `pg_config --bindir`, else
//! `/usr/lib/postgresql/*/bin`): `initdb` into a temp dir (trust auth, the
//! superuser [`SUPERUSER`]), `pg_ctl start` on a free 127.0.0.1 port with
//! its unix socket inside the temp dir, one database per
//! [`PgServer::database`] call, and `pg_ctl stop` (fast, then immediate)
//! plus removal of the directory on drop. No docker, no shared system
//! cluster: a laptop and CI behave the same.
//!
//! `initdb` is the slow part (seconds on a loaded machine), so its result
//! is kept once per PostgreSQL version as a template under the cargo target
//! directory and copied for every server.
//!
//! PostgreSQL refuses to run as root; when the tests run as root the
//! server runs as the `postgres` user the package creates.

use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The superuser of every test server (trust authentication).
pub const SUPERUSER: &str = "ipa";

/// The tests' settings: durability off (a test's data dies with it), so
/// the suites spend their time in our code, not in fsync.
pub const FAST: &[(&str, &str)] = &[
    ("max_connections", "200"),
    ("shared_buffers", "32MB"),
    ("fsync", "off"),
    ("full_page_writes", "off"),
];

/// A reasonable production configuration for durability, for the
/// benchmark: every commit is flushed to the WAL on disk before it is
/// acknowledged (`fsync`, `synchronous_commit`), torn pages are protected
/// (`full_page_writes`), no commit delay; memory sized for a small server.
pub const DURABLE: &[(&str, &str)] = &[
    ("max_connections", "200"),
    ("shared_buffers", "256MB"),
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("full_page_writes", "on"),
    ("wal_level", "replica"),
    ("wal_sync_method", "fdatasync"),
    ("wal_buffers", "16MB"),
    ("max_wal_size", "2GB"),
    ("checkpoint_timeout", "15min"),
    ("commit_delay", "0"),
];

/// How long a start or a stop may take on a loaded CI machine.
const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

/// The server the tests of this process share while any holds it.
static SHARED: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());

/// The server shared by the tests of this process that run at the same
/// time (a fresh database each, see [`PgServer::database`]): started by
/// the first, stopped when the last lets go of it, so no server outlives
/// its tests (a server kept in a static would never be stopped).
pub fn shared() -> io::Result<Arc<PgServer>> {
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(server) = slot.upgrade() {
        return Ok(server);
    }
    let server = Arc::new(PgServer::start()?);
    *slot = Arc::downgrade(&server);
    Ok(server)
}

/// A running private PostgreSQL server; stopped and removed on drop.
pub struct PgServer {
    bindir: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    owner: Option<(u32, u32)>,
    databases: AtomicU32,
    /// `-c name=value` settings the server starts with.
    settings: Vec<(String, String)>,
}

impl PgServer {
    /// Starts a fresh server with the tests' settings ([`FAST`]). Fails
    /// with a message that says what to install when the server binaries
    /// are missing.
    pub fn start() -> io::Result<Self> {
        Self::start_with(FAST)
    }

    /// Starts a fresh server with `settings` (e.g. [`DURABLE`]) besides
    /// the address, port and socket directory.
    pub fn start_with(settings: &[(&str, &str)]) -> io::Result<Self> {
        Self::start_with_files(settings, &[])
    }

    /// [`PgServer::start_with`], with `files` (name, content) written into
    /// the data directory first, mode 0600 and owned by the server's user:
    /// e.g. `server.crt` and `server.key`, where a server started with
    /// `ssl=on` looks for its certificate and key.
    pub fn start_with_files(settings: &[(&str, &str)], files: &[(&str, &str)]) -> io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let bindir = bindir()?;
        let owner = server_owner()?;
        let dir = tempfile::Builder::new().prefix("ipa-pg-").tempdir()?;
        let data = dir.path().join("data");
        let template = template(&bindir, owner)?;
        copy_dir(&template, &data)?;
        for (name, text) in files {
            let path = data.join(name);
            std::fs::write(&path, text)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        if let Some((uid, gid)) = owner {
            chown_tree(dir.path(), uid, gid)?;
        }
        let mut server = Self {
            bindir,
            dir,
            port: 0,
            owner,
            databases: AtomicU32::new(0),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let mut last = None;
        // A port found free can be taken before the server binds it: a few
        // tries with a new port each (a failed start leaves no server).
        for _ in 0..5 {
            server.port = free_port()?;
            match server.pg_ctl_start() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("PostgreSQL did not start")))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn pg_ctl_start(&self) -> io::Result<()> {
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={}",
            self.port,
            self.socket_dir().display()
        );
        for (k, v) in &self.settings {
            options.push_str(&format!(" -c {k}={v}"));
        }
        let log = self.dir.path().join("server.log");
        let out = self
            .command("pg_ctl")
            .arg("start")
            .arg("-w")
            .arg("-t")
            .arg(SERVER_TIMEOUT.as_secs().to_string())
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(options)
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            Err(failed("pg_ctl start", &out, &log))
        }
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a new, empty database and returns its `postgres://` URL.
    pub fn database(&self) -> io::Result<String> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("ipa_test_{n}");
        self.create_database(&name)?;
        Ok(self.url(&name))
    }

    /// Creates the database `name`.
    pub fn create_database(&self, name: &str) -> io::Result<()> {
        let out = self.client("createdb").arg(name).output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(failed("createdb", &out, ""))
        }
    }

    /// A client tool of the server's (`createdb`, `pgbench`, …) pointed at
    /// it: its socket directory, port and superuser.
    fn client(&self, tool: &str) -> Command {
        let mut c = self.command(tool);
        c.arg("-h")
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(SUPERUSER);
        c
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs the server's `pgbench` against database `name` with `script`
    /// (a custom script file, written into the server's directory so the
    /// server's user can read it) and `args`; returns its stdout.
    pub fn pgbench(&self, name: &str, script: &str, args: &[&str]) -> io::Result<String> {
        let path = self.dir.path().join("bench.sql");
        std::fs::write(&path, script)?;
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        }
        let out = self
            .client("pgbench")
            .arg("-f")
            .arg(&path)
            .args(args)
            .arg(name)
            .output()?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(failed("pgbench", &out, ""))
        }
    }

    /// Runs one SQL command in database `name` with `psql`.
    pub fn psql(&self, name: &str, sql: &str) -> io::Result<()> {
        let out = self
            .client("psql")
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .arg(name)
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(failed("psql", &out, ""))
        }
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bindir.join(tool));
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        // The tools must not pick up a developer's PG* environment.
        for var in ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD"] {
            c.env_remove(var);
        }
        c
    }

    /// Stops the server (fast shutdown: connections are cut), keeping its
    /// data, so a test can see the database go away; [`PgServer::restart`]
    /// brings it back on the same port.
    pub fn stop_server(&self) -> io::Result<()> {
        let out = self
            .command("pg_ctl")
            .args(["stop", "-w", "-t", "60", "-m", "fast", "-D"])
            .arg(self.data())
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(failed("pg_ctl stop", &out, ""))
        }
    }

    /// Starts a stopped server again on the same port.
    pub fn restart(&self) -> io::Result<()> {
        self.pg_ctl_start()
    }

    fn stop(&self) {
        if !self.data().join("postmaster.pid").exists() {
            return;
        }
        for mode in ["fast", "immediate"] {
            let ok = self
                .command("pg_ctl")
                .args(["stop", "-w", "-t", "20", "-m", mode, "-D"])
                .arg(self.data())
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn failed(what: &str, out: &Output, log: &str) -> io::Error {
    io::Error::other(format!(
        "{what} failed ({}): {}{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log
    ))
}

/// The directory of the PostgreSQL server binaries.
pub fn bindir() -> io::Result<PathBuf> {
    let has_initdb = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_initdb(&dir) {
            return Ok(dir);
        }
    }
    // Debian installs the server outside PATH, one directory per version;
    // the newest wins.
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|d| has_initdb(d));
    found.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no PostgreSQL server binaries (initdb, pg_ctl): install the `postgresql` package \
             (scripts/test does)",
        )
    })
}

/// Whether PostgreSQL's server binaries are installed.
pub fn available() -> bool {
    bindir().is_ok()
}

/// The user the server runs as, when the tests run as root.
fn server_owner() -> io::Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .map_err(io::Error::other)?
        .ok_or_else(|| {
            io::Error::other(
                "running as root, and PostgreSQL refuses root: no `postgres` user to run it as",
            )
        })?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

/// An initialised data directory for this PostgreSQL version, made once
/// and kept under the target directory (written to a temp name, then
/// renamed, so concurrent test processes never see half of one).
fn template(bindir: &Path, owner: Option<(u32, u32)>) -> io::Result<PathBuf> {
    let version = bindir
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("pg")
        .to_owned();
    let root = cache_root()?;
    let done = root.join(format!("pg-template-{version}"));
    if done.join("PG_VERSION").is_file() {
        return Ok(done);
    }
    std::fs::create_dir_all(&root)?;
    let work = tempfile::Builder::new()
        .prefix("pg-template-")
        .tempdir_in(&root)?;
    let data = work.path().join("data");
    if let Some((uid, gid)) = owner {
        chown_tree(work.path(), uid, gid)?;
    }
    let mut c = Command::new(bindir.join("initdb"));
    if let Some((uid, gid)) = owner {
        c.uid(uid).gid(gid);
    }
    let out = c
        .arg("-D")
        .arg(&data)
        .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync"])
        .arg("--locale=C")
        .output()?;
    if !out.status.success() {
        return Err(failed("initdb", &out, ""));
    }
    match std::fs::rename(&data, &done) {
        Ok(()) => Ok(done),
        // Another test process finished first: use its template.
        Err(_) if done.join("PG_VERSION").is_file() => Ok(done),
        Err(e) => Err(e),
    }
}

/// Where templates are kept: `target/` of the test executable (so `cargo
/// clean` removes them), else the temp dir.
fn cache_root() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf);
    Ok(target.unwrap_or_else(std::env::temp_dir).join("pg-harness"))
}

fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    // PostgreSQL insists on a private data directory.
    std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o700))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_creates_databases_and_cleans_up() {
        let server = PgServer::start().unwrap();
        let a = server.database().unwrap();
        let b = server.database().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("postgres://ipa@127.0.0.1:"));
        // Reachable over TCP.
        assert!(std::net::TcpStream::connect(("127.0.0.1", server.port())).is_ok());
        let dir = server.dir.path().to_path_buf();
        drop(server);
        assert!(!dir.exists(), "the temp dir is removed");
    }

    #[test]
    fn the_shared_server_lives_while_held() {
        let a = shared().unwrap();
        let b = shared().unwrap();
        assert_eq!(a.port(), b.port());
        let dir = a.dir.path().to_path_buf();
        drop(a);
        assert!(dir.exists(), "still held");
        drop(b);
        assert!(!dir.exists(), "stopped with its last holder");
    }
}
