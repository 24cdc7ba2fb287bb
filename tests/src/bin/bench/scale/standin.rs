//! Stand-in processes: `bench sim-hosts` runs several simulated pod-hosts
//! (`ipa_tests::simhost`) in one process, so a rack of them can be lost
//! together with one SIGKILL, and the bench talks to it over stdin/stdout.
//!
//! Protocol, one line each way:
//! - at start the process prints `host ID URL` per host, then `ready`;
//! - `crash K` → K live pods of every host exit with code 1 at once;
//!   answer `crashed FIRST_US LAST_US TASK_ID…` (unix µs of the first and
//!   last crash, then the tasks whose pods crashed);
//! - `stats` → `stats LIVE STARTED CRASHED KILLED_BY_CENTRAL SELF_FENCED`
//!   summed over its hosts;
//! - end of stdin → the process exits.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ipa_tests::simhost::{SimConfig, SimHost, SimStats};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A stand-in process announces its hosts within this long.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// A command is answered within this long.
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);

/// How a stand-in process is started.
#[derive(Debug, Clone)]
pub struct StandInSpec {
    /// Host ids are `PREFIX-0`, `PREFIX-1`, …
    pub prefix: String,
    pub hosts: usize,
    pub capacity: u32,
    pub fence_timeout: Duration,
}

/// `bench sim-hosts --prefix P --hosts N --capacity C --fence-timeout-ms F`.
pub fn main(args: &[String]) -> std::process::ExitCode {
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let spec = (|| {
        Some(StandInSpec {
            prefix: get("--prefix")?,
            hosts: get("--hosts")?.parse().ok()?,
            capacity: get("--capacity")?.parse().ok()?,
            fence_timeout: Duration::from_millis(get("--fence-timeout-ms")?.parse().ok()?),
        })
    })();
    let Some(spec) = spec else {
        eprintln!("usage: bench sim-hosts --prefix P --hosts N --capacity C --fence-timeout-ms F");
        return std::process::ExitCode::from(2);
    };
    // One thread: the hosts only answer central; a stand-in must cost the
    // machine as little as possible next to the central it measures.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(serve(spec));
    std::process::ExitCode::SUCCESS
}

/// Writes one line to stdout at once (the bench waits for it).
fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

async fn serve(spec: StandInSpec) {
    let mut hosts = Vec::new();
    for i in 0..spec.hosts {
        let cfg = SimConfig {
            host_id: format!("{}-{i}", spec.prefix),
            capacity: spec.capacity,
            templates: vec!["sleeper".into()],
            fence_timeout: spec.fence_timeout,
        };
        let h = SimHost::start(cfg).await.expect("simulated pod-host");
        say(&format!("host {} {}\n", h.host_id, h.url()));
        hosts.push(h);
    }
    say("ready\n");
    // Commands arrive on a thread of their own (blocking reads of stdin).
    let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(l) = line else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    while let Some(line) = commands.recv().await {
        let mut words = line.split_whitespace();
        let answer = match (words.next(), words.next().and_then(|k| k.parse().ok())) {
            (Some("crash"), Some(k)) => {
                let first = ipa_proto::time::now_micros();
                let mut tasks = Vec::new();
                for h in &hosts {
                    tasks.extend(h.crash(k));
                }
                let last = ipa_proto::time::now_micros();
                format!("crashed {first} {last} {}\n", tasks.join(" "))
            }
            (Some("stats"), _) => {
                let mut s = SimStats::default();
                for h in &hosts {
                    let x = h.stats();
                    s.live += x.live;
                    s.started += x.started;
                    s.crashed += x.crashed;
                    s.killed_by_central += x.killed_by_central;
                    s.self_fenced += x.self_fenced;
                }
                format!(
                    "stats {} {} {} {} {}\n",
                    s.live, s.started, s.crashed, s.killed_by_central, s.self_fenced
                )
            }
            _ => format!("error unknown command {line:?}\n"),
        };
        say(&answer);
    }
    for h in hosts {
        h.stop().await;
    }
}

/// The bench's handle on a stand-in process. SIGKILLed and reaped on drop.
pub struct StandIn {
    pub pid: u32,
    /// (host id, URL) of its hosts.
    pub hosts: Vec<(String, String)>,
    child: Option<Child>,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

/// What one `crash` did.
#[derive(Debug, Clone, Default)]
pub struct Crashed {
    pub first_us: i64,
    pub last_us: i64,
    pub tasks: Vec<String>,
}

impl StandIn {
    /// Starts `bench sim-hosts` (this very executable) with `spec`, its
    /// stderr to `dir/standin-PREFIX.log`.
    pub async fn start(spec: &StandInSpec, dir: &Path) -> Self {
        let log = std::fs::File::create(dir.join(format!("standin-{}.log", spec.prefix)))
            .expect("stand-in log");
        let args: Vec<OsString> = vec![
            "sim-hosts".into(),
            "--prefix".into(),
            spec.prefix.clone().into(),
            "--hosts".into(),
            spec.hosts.to_string().into(),
            "--capacity".into(),
            spec.capacity.to_string().into(),
            "--fence-timeout-ms".into(),
            spec.fence_timeout.as_millis().to_string().into(),
        ];
        let mut child = Command::new(std::env::current_exe().expect("current_exe"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn stand-in");
        let pid = child.id().expect("pid");
        let stdin = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut hosts = Vec::new();
        let started = tokio::time::timeout(START_DEADLINE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let w: Vec<&str> = line.split_whitespace().collect();
                match w.as_slice() {
                    ["host", id, url] => hosts.push((id.to_string(), url.to_string())),
                    ["ready"] => return true,
                    _ => {}
                }
            }
            false
        })
        .await;
        assert!(
            started == Ok(true),
            "stand-in {} did not start (see {})",
            spec.prefix,
            dir.display()
        );
        Self {
            pid,
            hosts,
            child: Some(child),
            stdin,
            lines,
        }
    }

    async fn ask(&mut self, command: &str) -> String {
        let sent = self
            .stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .and(self.stdin.flush().await);
        assert!(sent.is_ok(), "stand-in {} gone", self.pid);
        match tokio::time::timeout(ANSWER_DEADLINE, self.lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            other => panic!(
                "stand-in {} did not answer {command:?}: {other:?}",
                self.pid
            ),
        }
    }

    /// Sends `crash K` without waiting for the answer (so every stand-in
    /// gets it at nearly the same instant); [`StandIn::crashed`] reads it.
    pub async fn send_crash(&mut self, per_host: usize) {
        let sent = self
            .stdin
            .write_all(format!("crash {per_host}\n").as_bytes())
            .await
            .and(self.stdin.flush().await);
        assert!(sent.is_ok(), "stand-in {} gone", self.pid);
    }

    /// The answer to the last `crash`.
    pub async fn crashed(&mut self) -> Crashed {
        let line = match tokio::time::timeout(ANSWER_DEADLINE, self.lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            other => panic!("stand-in {} did not answer crash: {other:?}", self.pid),
        };
        let mut w = line.split_whitespace();
        assert_eq!(w.next(), Some("crashed"), "{line}");
        let mut num = || w.next().and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let (first_us, last_us) = (num(), num());
        Crashed {
            first_us,
            last_us,
            tasks: line.split_whitespace().skip(3).map(str::to_owned).collect(),
        }
    }

    pub async fn stats(&mut self) -> SimStats {
        let line = self.ask("stats").await;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        assert_eq!(v.len(), 5, "stats answer {line:?}");
        SimStats {
            live: v[0] as usize,
            started: v[1],
            crashed: v[2],
            killed_by_central: v[3],
            self_fenced: v[4],
        }
    }

    /// Whether the process was not killed.
    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: every host of this process dies at once with its pods.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid as i32), None);
        }
    }
}
