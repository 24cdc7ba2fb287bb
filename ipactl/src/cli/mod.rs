//! The command line: global options (server, credentials, output format)
//! and every command, as clap derive types. Parsing only; what a command
//! does lives in `commands/`.

mod args;
mod schedules;
mod tasks;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

pub use args::{FilterArgs, GroupByArg, TimeArg};
pub use schedules::{CreateScheduleArgs, SchedulesCmd};
pub use tasks::{CreateArgs, ListArgs, TasksCmd, WaitFor};

/// ipactl: the command-line client of the IPA task manager.
///
/// Talks to central-manager over gRPC. Every option also reads the
/// environment variable shown in its help. Errors print `Error: REASON:
/// sentence` and exit 1; usage errors exit 2.
#[derive(Debug, Parser)]
#[command(
    name = "ipactl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// central-manager address: HOST:PORT, http://HOST:PORT or
    /// https://HOST:PORT. Without a scheme, TLS is used when --ca, --cert
    /// or --key is given.
    #[arg(
        long,
        global = true,
        env = "IPA_SERVER",
        default_value = "127.0.0.1:50051"
    )]
    pub server: String,

    /// Bearer token sent as `authorization: Bearer TOKEN`.
    #[arg(long, global = true, env = "IPA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// File holding the bearer token (surrounding whitespace ignored); used
    /// instead of --token when both are given.
    #[arg(long, global = true, env = "IPA_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM file of the CA that signed the server's certificate (turns TLS on).
    #[arg(long, global = true, env = "IPA_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// PEM client certificate for mutual TLS (with --key).
    #[arg(
        long,
        global = true,
        env = "IPA_CERT",
        value_name = "FILE",
        requires = "key"
    )]
    pub cert: Option<PathBuf>,

    /// PEM private key of --cert.
    #[arg(
        long,
        global = true,
        env = "IPA_KEY",
        value_name = "FILE",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,

    /// Name to verify the server's certificate against, when it differs
    /// from the host in --server (e.g. connecting by IP address).
    #[arg(long, global = true, env = "IPA_TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// Output format: `table` (aligned columns, relative times), `wide`
    /// (more columns, RFC 3339 times), `json` or `yaml` (the proto's JSON
    /// names, for scripts).
    #[arg(
        short = 'o',
        long,
        global = true,
        env = "IPA_OUTPUT",
        value_enum,
        default_value_t = Format::Table
    )]
    pub output: Format,

    /// Who performs mutating commands (`actor_id`). Default: empty when a
    /// token or client certificate is given (the server uses the
    /// authenticated principal), else the login name ($USER).
    #[arg(long, global = true, env = "IPA_ACTOR", value_name = "ID")]
    pub actor: Option<String>,

    /// `correlation_id` of mutating commands, to find their events later;
    /// default: the server generates one.
    #[arg(long, global = true, value_name = "ID")]
    pub correlation_id: Option<String>,

    /// Give up on a request (not a stream) after this long.
    #[arg(
        long,
        global = true,
        env = "IPA_REQUEST_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s",
        value_parser = parse_duration
    )]
    pub request_timeout: Duration,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, inspect, run and finish tasks.
    #[command(subcommand)]
    Tasks(TasksCmd),
    /// The live event feed.
    #[command(subcommand)]
    Events(EventsCmd),
    /// Running pods.
    #[command(subcommand)]
    Pods(PodsCmd),
    /// Pod-hosts and their state.
    #[command(subcommand)]
    Hosts(HostsCmd),
    /// Tasks created on a timetable.
    #[command(subcommand)]
    Schedules(SchedulesCmd),
    /// Task statistics: counts, rates, durations, queue depth.
    Stats(StatsArgs),
    /// central-manager replicas and the current leader.
    Cluster,
    /// Print a shell completion script, e.g.
    /// `ipactl completion bash > ~/.local/share/bash-completion/completions/ipactl`.
    Completion {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCmd {
    /// Stream events as they are committed (replays history first), until
    /// interrupted. Reconnects by itself from the last position printed.
    Watch {
        /// Start after this global position (0: from the first event).
        #[arg(long, value_name = "POSITION", default_value_t = 0)]
        after: u64,
        /// Only this task's events.
        #[arg(long, value_name = "TASK_ID")]
        task: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PodsCmd {
    /// Every running pod and its pod-host.
    List,
}

#[derive(Debug, Subcommand)]
pub enum HostsCmd {
    /// Every pod-host central-manager knows, with its state and load.
    List,
}

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Only tasks created after this time (RFC 3339, or a duration ago: `24h`).
    #[arg(long, value_name = "TIME")]
    pub created_after: Option<TimeArg>,
    /// Only tasks created before this time.
    #[arg(long, value_name = "TIME")]
    pub created_before: Option<TimeArg>,
    /// One row per template or per creator.
    #[arg(long, value_enum, default_value_t = GroupByArg::None)]
    pub group_by: GroupByArg,
}

/// The shells `completion` writes scripts for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl From<CompletionShell> for clap_complete::Shell {
    fn from(s: CompletionShell) -> Self {
        match s {
            CompletionShell::Bash => Self::Bash,
            CompletionShell::Zsh => Self::Zsh,
            CompletionShell::Fish => Self::Fish,
        }
    }
}

/// Parses `30s`, `5m`, `1h30m`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 5m, 1h30m)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_of_the_contract_parses() {
        let id = "0b6f5a4e-8d7c-4b3a-9e21-5f0c7d8e9a10";
        let lines: &[&[&str]] = &[
            &["tasks", "create", "title", "-q", "-m", "a=b", "--start"],
            &["tasks", "get", id],
            &["tasks", "list", "--status", "active", "--limit", "5"],
            &["tasks", "count", "--phase", "review"],
            &["tasks", "start", id],
            &["tasks", "stop", id, "--reason", "r"],
            &["tasks", "restart", id],
            &["tasks", "complete", id],
            &["tasks", "cancel", id, "--reason", "r"],
            &["tasks", "delete", id, "--reason", "r"],
            &["tasks", "events", id],
            &["tasks", "wait", id, "--for", "completed", "--timeout", "1m"],
            &["tasks", "logs", id, "-f"],
            &["events", "watch"],
            &["pods", "list"],
            &["hosts", "list"],
            &["schedules", "create", "n", "--every", "1h", "--title", "t"],
            &["schedules", "get", "n"],
            &["schedules", "list"],
            &["schedules", "pause", "n"],
            &["schedules", "resume", "n"],
            &["schedules", "trigger", "n"],
            &["schedules", "delete", "n"],
            &["stats", "--group-by", "template"],
            &["cluster"],
            &["completion", "bash"],
            &["-o", "json", "tasks", "list"],
            &["tasks", "list", "-o", "yaml"],
        ];
        for l in lines {
            let argv = std::iter::once("ipactl").chain(l.iter().copied());
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("{l:?}: {e}");
            }
        }
    }

    #[test]
    fn bad_usage_is_refused() {
        for l in [
            &["tasks", "wait", "x", "--for", "sleeping"][..],
            &["tasks", "cancel", "x"],
            &["-o", "xml", "tasks", "list"],
            &["completion", "powershell"],
            &["tasks", "wait", "x", "--timeout", "soon"],
            &["--cert", "c.pem", "tasks", "list"],
        ] {
            let argv = std::iter::once("ipactl").chain(l.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{l:?} parsed");
        }
    }
}
