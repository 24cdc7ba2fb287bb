//! Running the real `ipactl` binary against a server: to completion with a
//! deadline, as a long-running stream whose stdout lines are read as they
//! come, or inside a pseudo-terminal (util-linux `script`) to see what a
//! person at a terminal sees. The environment is cleaned of every `IPA_*`
//! variable and `NO_COLOR`, so only what a test sets applies.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::{DEADLINE, bin_path};

/// What one ipactl run produced.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics unless the run exited 0; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "ipactl failed: {self:#?}");
        &self.stdout
    }

    /// Panics unless the run exited 1 with `Error: REASON: ` and a
    /// sentence on stderr; returns stderr.
    #[track_caller]
    pub fn fails_with(&self, reason: &str) -> &str {
        assert_eq!(self.code, Some(1), "expected exit 1: {self:#?}");
        let prefix = format!("Error: {reason}: ");
        assert!(
            self.stderr.starts_with(&prefix) && self.stderr.trim_end().len() > prefix.len(),
            "stderr should start with {prefix:?} and a sentence: {self:#?}"
        );
        &self.stderr
    }
}

/// ipactl pointed at one server.
#[derive(Debug, Clone)]
pub struct Ipactl {
    /// `--server` (through `IPA_SERVER`).
    pub server: String,
    /// Extra environment for every run.
    pub env: Vec<(String, String)>,
}

impl Ipactl {
    /// ipactl for the server at `addr` (`HOST:PORT`).
    pub fn new(addr: impl ToString) -> Self {
        Self {
            server: addr.to_string(),
            env: Vec::new(),
        }
    }

    /// The command with a clean environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin_path("ipactl"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("IPA_") || k == "NO_COLOR" {
                cmd.env_remove(&k);
            }
        }
        cmd.env("IPA_SERVER", &self.server);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `ipactl ARGS` to the end (panics after [`DEADLINE`]).
    pub async fn run(&self, args: &[&str]) -> Run {
        let child = self
            .command(args)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn ipactl: {e}"));
        let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("ipactl {args:?} did not finish in {DEADLINE:?}"))
            .expect("wait for ipactl");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts a long-running `ipactl ARGS` (a watch, a follow); read its
    /// stdout line by line. Killed when dropped.
    pub fn spawn(&self, args: &[&str]) -> Streaming {
        let mut child = self
            .command(args)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn ipactl: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        Streaming {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// Runs `ipactl ARGS` inside a pseudo-terminal of `cols` columns with
    /// util-linux `script`; returns everything the terminal received
    /// (stdout and stderr together, escape codes included) and the exit
    /// code. `env` is added to the run's environment.
    pub async fn in_terminal(&self, args: &[&str], cols: u16, env: &[(&str, &str)]) -> Run {
        let ipactl = bin_path("ipactl");
        let mut line = format!(
            "stty cols {cols} rows 40; exec {}",
            shell_quote(&ipactl.to_string_lossy())
        );
        for a in args {
            line.push(' ');
            line.push_str(&shell_quote(a));
        }
        let mut cmd = Command::new("script");
        // -q: no banner; -e: the command's exit code; -c: the command.
        cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("IPA_") || k == "NO_COLOR" {
                cmd.env_remove(&k);
            }
        }
        cmd.env("IPA_SERVER", &self.server)
            .env("TERM", "xterm-256color");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("run `script` (util-linux) for a pseudo-terminal: {e}"));
        let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("ipactl {args:?} in a terminal did not finish"))
            .expect("wait for script");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A running ipactl whose stdout is read line by line.
pub struct Streaming {
    pub child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Streaming {
    /// The next stdout line, or `None` at its end; panics after `within`.
    pub async fn next_line(&mut self, within: Duration) -> Option<String> {
        tokio::time::timeout(within, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no output from ipactl within {within:?}"))
            .expect("read ipactl stdout")
    }

    /// Reads lines until one satisfies `pred` (returned); panics after
    /// [`DEADLINE`] or if the output ends first.
    pub async fn line_where(&mut self, what: &str, mut pred: impl FnMut(&str) -> bool) -> String {
        let start = tokio::time::Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match tokio::time::timeout(left, self.lines.next_line()).await {
                Ok(Ok(Some(l))) if pred(&l) => return l,
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) | Ok(Err(_)) => panic!("ipactl output ended before {what}"),
                Err(_) => panic!("timed out waiting for {what} from ipactl"),
            }
        }
    }

    /// Waits for the process to exit by itself; its exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("ipactl did not exit")
            .expect("wait ipactl")
            .code()
    }
}
