//! Command-line flags and their `IPA_*` environment variables (docs/api.md,
//! "Binaries, flags and env"). Everything the process can be told lives in
//! [`Config`]; the pod-host related values are kept here for pod supervision
//! even where this version does not use them yet.
//!
//! Every number has a documented range (in its `--help` and the README):
//! a value outside it, from the flag or its env var, stops the start with
//! exit code 2 and a message naming the flag (clap's range check), and so
//! do the rules between flags ([`Config::validate`]). So nothing at run
//! time has to cope with a zero interval or an inverted timeout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ipa_common::LogFormat;

use crate::domain::RestartDefaults;

/// central-manager: the IPA task manager's task API, event store and pod
/// supervisor.
#[derive(Debug, Clone, Parser)]
#[command(name = "central-manager", version, about, long_about = None)]
pub struct Config {
    /// Address of the gRPC listener (`ipa.v1.CentralManager`, health,
    /// reflection). Port 0 picks a free port; the bound address is printed
    /// on stdout as `listening on ADDR`.
    #[arg(long, env = "IPA_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Database URL: `sqlite://PATH` (the file and its parent directory are
    /// created if missing; only file databases are supported) or
    /// `postgres://USER@HOST:PORT/DB` (PostgreSQL, migrated at start).
    #[arg(
        long,
        env = "IPA_DATABASE_URL",
        default_value = "sqlite://./ipa-data/central.db"
    )]
    pub database_url: String,

    /// This replica's id among the central-managers on one database
    /// (unique per replica: a replica restarted under the same id takes
    /// its lease back at once) [default: the hostname].
    #[arg(long, env = "IPA_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// The leader's lease (milliseconds, 100 to 60000): renewed every quarter
    /// of it; followers take over once it has run out. Keep it well under
    /// the pod-hosts' --fence-timeout-ms so a failover never makes them
    /// kill pods.
    #[arg(long, env = "IPA_LEADER_LEASE_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..=60000))]
    pub leader_lease_ms: u64,

    /// The URL other replicas reach this one's API at (followers forward
    /// pod operations to the leader's) [default: http(s)://ADDR for the
    /// bound --listen address; with an unspecified address, the hostname].
    #[arg(long, env = "IPA_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// PEM CA the other replicas' API certificates chain to: needed to
    /// forward calls to an `https://` leader.
    #[arg(long, env = "IPA_REPLICA_CA")]
    pub replica_ca: Option<PathBuf>,

    /// The name other replicas' API certificates carry, checked when the
    /// leader is dialled by IP address (e.g. the Service name, when
    /// replicas advertise `https://POD_IP:PORT`).
    #[arg(long, env = "IPA_REPLICA_TLS_NAME", requires = "replica_ca")]
    pub replica_tls_name: Option<String>,

    /// PEM client certificate this replica presents to the leader when it
    /// forwards (when the API requires client certificates).
    #[arg(long, env = "IPA_REPLICA_CLIENT_CERT", requires_all = ["replica_ca", "replica_client_key"])]
    pub replica_client_cert: Option<PathBuf>,

    /// PEM key of --replica-client-cert.
    #[arg(long, env = "IPA_REPLICA_CLIENT_KEY", requires = "replica_client_cert")]
    pub replica_client_key: Option<PathBuf>,

    /// A pod-host to connect to, as a URL (`http://HOST:PORT`). Repeatable;
    /// the env var takes a comma-separated list.
    #[arg(long = "pod-host", env = "IPA_POD_HOST", value_delimiter = ',')]
    pub pod_hosts: Vec<String>,

    /// `NAME:PORT` of a headless service whose addresses are all pod-hosts;
    /// resolved periodically.
    #[arg(long, env = "IPA_POD_HOST_DNS")]
    pub pod_host_dns: Option<String>,

    /// How often `--pod-host-dns` is resolved again (milliseconds, 100 to
    /// 3600000), so pod-hosts that appear or vanish are picked up without a
    /// restart.
    #[arg(long, env = "IPA_POD_HOST_DNS_INTERVAL_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=3600000))]
    pub pod_host_dns_interval_ms: u64,

    /// How often central-manager pings each pod-host (milliseconds, 10 to
    /// 60000).
    #[arg(long, env = "IPA_HEARTBEAT_INTERVAL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=60000))]
    pub heartbeat_interval_ms: u64,

    /// A pod-host silent this long (milliseconds, 20 to 3600000, and at
    /// least twice --heartbeat-interval-ms) is UNREACHABLE and its pods'
    /// status UNKNOWN.
    #[arg(long, env = "IPA_HOST_UNREACHABLE_MS", default_value_t = 1500, value_parser = clap::value_parser!(u64).range(20..=3600000))]
    pub host_unreachable_ms: u64,

    /// After this long without contact (milliseconds, 100 to 3600000 and
    /// more than --host-unreachable-ms; plus a margin and at least the
    /// pod-host's own value) an unreachable host's pods are declared lost.
    #[arg(long, env = "IPA_FENCE_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=3600000))]
    pub fence_timeout_ms: u64,

    /// Default for tasks that do not set `restart_policy.auto_restart`:
    /// restart crashed pods automatically.
    #[arg(
        long,
        env = "IPA_AUTO_RESTART",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub auto_restart: bool,

    /// Default for `restart_policy.max_restarts` (0 to 1000): more crashes
    /// than this within the window fail the task.
    #[arg(long, env = "IPA_MAX_RESTARTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub max_restarts: u32,

    /// Default for `restart_policy.window_seconds` (0 to 604800, a week).
    #[arg(long, env = "IPA_RESTART_WINDOW_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(0..=604800))]
    pub restart_window_seconds: u32,

    /// Default for `restart_policy.initial_backoff_ms` (0 to 3600000):
    /// delay before the first automatic restart (doubles per crash).
    #[arg(long, env = "IPA_INITIAL_BACKOFF_MS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=3600000))]
    pub initial_backoff_ms: u32,

    /// Default for `restart_policy.max_backoff_ms` (0 to 3600000): cap of
    /// the restart delay.
    #[arg(long, env = "IPA_MAX_BACKOFF_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u32).range(0..=3600000))]
    pub max_backoff_ms: u32,

    /// Log format on stderr.
    #[arg(long, env = "IPA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Spawn one pod-host child process on a free loopback port running the
    /// demo pod template (the single-machine default); it stops with
    /// central-manager.
    #[arg(
        long,
        env = "IPA_LOCAL_POD_HOST",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub local_pod_host: bool,

    /// A LOST pod-host is dropped from ListPodHosts after this long
    /// (milliseconds, 1000 to 604800000) unless it says hello again.
    #[arg(long, env = "IPA_LOST_HOST_RETENTION_MS", default_value_t = 600_000,
          value_parser = clap::value_parser!(u64).range(1000..=604_800_000))]
    pub lost_host_retention_ms: u64,

    /// Most WatchEvents and GetPodLogs streams open at once (1 to 100000);
    /// one more is refused with RESOURCE_EXHAUSTED `TOO_MANY_STREAMS`.
    #[arg(long, env = "IPA_MAX_STREAMS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_streams: u32,

    /// A WatchEvents client that reads nothing for this long
    /// (milliseconds, 100 to 3600000) while events wait for it is dropped
    /// with RESOURCE_EXHAUSTED `WATCH_TOO_SLOW` and the position to resume
    /// after.
    #[arg(long, env = "IPA_WATCH_LAG_LIMIT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub watch_lag_limit_ms: u64,

    /// Archive terminal tasks (and their events) that finished more than
    /// this many days ago (0 to 36500; 0, the default, never archives).
    /// Checked hourly; archived tasks stay readable with include_archived.
    #[arg(long, env = "IPA_ARCHIVE_AFTER_DAYS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub archive_after_days: u32,

    /// Serve metrics in the Prometheus text format at
    /// `http://ADDR/metrics` (see README "Observability"). Off unless set;
    /// port 0 picks a free port, which is logged at start.
    #[arg(long, env = "IPA_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Serve TLS with this PEM certificate chain (with --tls-key). Re-read
    /// when it changes on disk; no restart needed.
    #[arg(long, env = "IPA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "IPA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require every API client to present a certificate signed by a CA in
    /// this PEM file (needs --tls-cert). The client's principal is the
    /// certificate's first DNS or URI SAN, else its CN.
    #[arg(long, env = "IPA_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,

    /// Token file (TOML `[[token]] principal, role, sha256`): clients send
    /// `authorization: Bearer <token>`. Re-read on SIGHUP and on change.
    #[arg(long, env = "IPA_AUTH_TOKENS")]
    pub auth_tokens: Option<PathBuf>,

    /// Dial pod-hosts over TLS and verify their certificates against the
    /// CAs in this PEM file. Pod-hosts found by --pod-host-dns must present
    /// a certificate for that DNS name.
    #[arg(long, env = "IPA_POD_HOST_CA")]
    pub pod_host_ca: Option<PathBuf>,

    /// Central's client certificate towards pod-hosts (PEM; with
    /// --pod-host-client-key and --pod-host-ca).
    #[arg(
        long,
        env = "IPA_POD_HOST_CLIENT_CERT",
        requires_all = ["pod_host_client_key", "pod_host_ca"]
    )]
    pub pod_host_client_cert: Option<PathBuf>,

    /// The PEM private key of --pod-host-client-cert.
    #[arg(
        long,
        env = "IPA_POD_HOST_CLIENT_KEY",
        requires = "pod_host_client_cert"
    )]
    pub pod_host_client_key: Option<PathBuf>,

    /// Also serve `grpc.health.v1.Health` alone, in plaintext, on this
    /// address: for Kubernetes probes, which cannot speak TLS. Off unless
    /// set.
    #[arg(long, env = "IPA_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
}

impl Config {
    /// Parses flags and env, then checks the rules between flags; any
    /// violation exits with code 2 and a message naming the flag.
    pub fn parse_and_validate() -> Self {
        let c = Self::parse();
        if let Err(e) = c.validate() {
            e.exit();
        }
        c
    }

    /// The rules a single flag's range cannot express. Each message names
    /// the flag to change.
    pub fn validate(&self) -> Result<(), clap::Error> {
        use clap::CommandFactory;
        use clap::error::ErrorKind;
        let fail = |msg: String| Err(Self::command().error(ErrorKind::ValueValidation, msg));
        if self.host_unreachable_ms < self.heartbeat_interval_ms.saturating_mul(2) {
            return fail(format!(
                "--host-unreachable-ms ({}) must be at least twice --heartbeat-interval-ms ({}): \
                 one late ping must not make a host UNREACHABLE",
                self.host_unreachable_ms, self.heartbeat_interval_ms
            ));
        }
        if self.fence_timeout_ms <= self.host_unreachable_ms {
            return fail(format!(
                "--fence-timeout-ms ({}) must be more than --host-unreachable-ms ({})",
                self.fence_timeout_ms, self.host_unreachable_ms
            ));
        }
        if let Err(e) = self.database() {
            return fail(format!("--database-url: {e}"));
        }
        if let Some(id) = &self.replica_id
            && (id.is_empty()
                || id.len() > 128
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return fail(format!(
                "--replica-id {id:?} must be 1 to 128 letters, digits, '.', '_' or '-'"
            ));
        }
        if let Some(url) = &self.advertise_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return fail(format!(
                "--advertise-url {url:?} must be an http:// or https:// URL"
            ));
        }
        for url in &self.pod_hosts {
            if let Err(e) = check_pod_host_url(url) {
                return fail(format!("--pod-host {url:?}: {e}"));
            }
        }
        if let Some(dns) = &self.pod_host_dns {
            let ok = dns.rsplit_once(':').is_some_and(|(name, port)| {
                !name.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return fail(format!("--pod-host-dns {dns:?} must be NAME:PORT"));
            }
        }
        Ok(())
    }

    /// A configuration with every default and the given database URL (for
    /// tests and embedding).
    pub fn with_database_url(url: impl Into<String>) -> Self {
        let mut c = Self::parse_from(["central-manager"]);
        c.database_url = url.into();
        c
    }

    /// The restart policy applied where a task leaves a field unset.
    pub fn restart_defaults(&self) -> RestartDefaults {
        RestartDefaults {
            auto_restart: self.auto_restart,
            max_restarts: self.max_restarts,
            window_seconds: self.restart_window_seconds,
            initial_backoff_ms: self.initial_backoff_ms,
            max_backoff_ms: self.max_backoff_ms,
        }
    }

    /// `--heartbeat-interval-ms` as a duration.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// The timing rules of pod-host states.
    pub fn host_timeouts(&self) -> crate::hosts::registry::HostTimeouts {
        let fence = Duration::from_millis(self.fence_timeout_ms);
        crate::hosts::registry::HostTimeouts {
            unreachable_after: Duration::from_millis(self.host_unreachable_ms),
            fence_timeout: fence,
            // The host's fence timer runs from the last ping *it* received,
            // which can be up to one heartbeat interval after the last
            // message central received from it: the margin covers that gap
            // on top of scheduling and check latency.
            fence_margin: crate::hosts::registry::HostTimeouts::default_margin(fence)
                + self.heartbeat_interval(),
            lost_retention: Duration::from_millis(self.lost_host_retention_ms),
        }
    }

    /// `--replica-id`, or the hostname.
    pub fn replica_id(&self) -> String {
        self.replica_id.clone().unwrap_or_else(hostname)
    }

    /// `--advertise-url`, or the URL of `bound` (the listener's address).
    pub fn advertise_url(&self, bound: SocketAddr) -> String {
        if let Some(url) = &self.advertise_url {
            return url.clone();
        }
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        if bound.ip().is_unspecified() {
            format!("{scheme}://{}:{}", hostname(), bound.port())
        } else {
            format!("{scheme}://{bound}")
        }
    }

    /// `--watch-lag-limit-ms` as a duration.
    pub fn watch_lag_limit(&self) -> Duration {
        Duration::from_millis(self.watch_lag_limit_ms)
    }

    /// The TLS files of the API listener, when TLS is on.
    pub fn server_tls(&self) -> Option<ipa_common::tls::ServerTlsFiles> {
        Some(ipa_common::tls::ServerTlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.client_ca.clone(),
        })
    }

    /// The TLS files for dialling pod-hosts, when that is TLS.
    pub fn pod_host_tls(&self) -> Option<ipa_common::tls::ClientTlsFiles> {
        Some(ipa_common::tls::ClientTlsFiles {
            ca: self.pod_host_ca.clone()?,
            identity: self
                .pod_host_client_cert
                .clone()
                .zip(self.pod_host_client_key.clone()),
        })
    }

    /// The TLS files for forwarding to `https://` leaders.
    pub fn replica_tls(&self) -> Option<ipa_common::tls::ClientTlsFiles> {
        Some(ipa_common::tls::ClientTlsFiles {
            ca: self.replica_ca.clone()?,
            identity: self
                .replica_client_cert
                .clone()
                .zip(self.replica_client_key.clone()),
        })
    }

    /// The database file named by `--database-url`.
    pub fn database_path(&self) -> Result<PathBuf, String> {
        database_path(&self.database_url)
    }

    /// The database named by `--database-url`.
    pub fn database(&self) -> Result<Database, String> {
        if crate::store::postgres::is_postgres_url(&self.database_url) {
            Ok(Database::Postgres(self.database_url.trim().to_owned()))
        } else {
            self.database_path().map(Database::Sqlite)
        }
    }
}

/// The database `--database-url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
}

/// A `--pod-host` URL: `http://` or `https://`, with a host and a port.
fn check_pod_host_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("must start with http:// or https://".into());
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("names no host".into());
    }
    Ok(())
}

/// The file path inside a `sqlite:` URL (`sqlite://./a/b.db`,
/// `sqlite:///abs/b.db`, `sqlite:b.db`, with or without `?options`).
/// In-memory databases are refused: the writer and the read pool use
/// separate connections, which would each see their own empty database.
pub fn database_path(url: &str) -> Result<PathBuf, String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| format!("database URL {url:?} must start with sqlite: or postgres:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return Err(format!(
            "database URL {url:?} must name a file (in-memory databases are not supported)"
        ));
    }
    Ok(PathBuf::from(path))
}

/// This machine's hostname ("localhost" when it has none).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_name_sqlite_files_or_postgres() {
        let db = |url: &str| Config::with_database_url(url).database();
        assert_eq!(
            db("sqlite://./a/b.db"),
            Ok(Database::Sqlite(PathBuf::from("./a/b.db")))
        );
        for url in ["postgres://ipa@db:5432/ipa", "postgresql://db/ipa"] {
            assert_eq!(db(url), Ok(Database::Postgres(url.to_owned())));
        }
        assert!(
            db("mysql://db/ipa")
                .unwrap_err()
                .contains("sqlite: or postgres:")
        );
    }

    #[test]
    fn defaults_match_api_md() {
        let c = Config::parse_from(["central-manager"]);
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.database_url, "sqlite://./ipa-data/central.db");
        assert!(c.pod_hosts.is_empty());
        assert_eq!(c.heartbeat_interval_ms, 500);
        assert_eq!(c.host_unreachable_ms, 1500);
        assert_eq!(c.fence_timeout_ms, 5000);
        assert!(!c.auto_restart);
        assert_eq!(c.max_restarts, 3);
        assert_eq!(c.restart_window_seconds, 60);
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(!c.local_pod_host);
        assert_eq!(c.metrics_listen, None);
        // Security is off by default (API.md: defaults keep plaintext).
        assert!(c.server_tls().is_none() && c.pod_host_tls().is_none());
        assert!(c.auth_tokens.is_none() && c.client_ca.is_none());
        assert!(c.health_listen.is_none());
    }

    #[test]
    fn tls_flags_come_in_pairs() {
        let parse = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("central-manager").chain(args.iter().copied()))
        };
        assert!(parse(&["--tls-cert", "c"]).is_err());
        assert!(parse(&["--tls-key", "k"]).is_err());
        assert!(parse(&["--client-ca", "ca"]).is_err());
        assert!(parse(&["--pod-host-client-cert", "c", "--pod-host-client-key", "k"]).is_err());
        let c = parse(&["--tls-cert", "c", "--tls-key", "k", "--client-ca", "ca"]).unwrap();
        let files = c.server_tls().unwrap();
        assert_eq!(files.client_ca, Some(PathBuf::from("ca")));
        let c = parse(&[
            "--pod-host-ca",
            "ca",
            "--pod-host-client-cert",
            "c",
            "--pod-host-client-key",
            "k",
        ])
        .unwrap();
        assert_eq!(
            c.pod_host_tls().unwrap().identity,
            Some((PathBuf::from("c"), PathBuf::from("k")))
        );
    }

    #[test]
    fn flags_parse() {
        let c = Config::parse_from([
            "central-manager",
            "--pod-host",
            "http://a:1",
            "--pod-host",
            "http://b:2",
            "--auto-restart",
            "--log-format",
            "json",
            "--local-pod-host",
            "--max-restarts",
            "7",
        ]);
        assert_eq!(c.pod_hosts, vec!["http://a:1", "http://b:2"]);
        assert!(c.auto_restart);
        assert!(c.local_pod_host);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.restart_defaults().max_restarts, 7);
    }

    #[test]
    fn database_paths() {
        assert_eq!(
            database_path("sqlite://./ipa-data/central.db").unwrap(),
            PathBuf::from("./ipa-data/central.db")
        );
        assert_eq!(
            database_path("sqlite:///tmp/x.db?mode=rwc").unwrap(),
            PathBuf::from("/tmp/x.db")
        );
        assert_eq!(database_path("sqlite:x.db").unwrap(), PathBuf::from("x.db"));
        assert!(database_path("sqlite::memory:").is_err());
        assert!(database_path("postgres://x").is_err());
        assert!(database_path("sqlite://").is_err());
    }

    #[test]
    fn every_flag_has_an_env_var() {
        use clap::CommandFactory;
        let cmd = Config::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            let long = arg.get_long().unwrap_or_default();
            let want = format!("IPA_{}", long.replace('-', "_").to_uppercase());
            assert_eq!(env.as_deref(), Some(want.as_str()), "flag --{long}");
            assert!(arg.get_help().is_some(), "flag --{long} has no help");
        }
    }
}
