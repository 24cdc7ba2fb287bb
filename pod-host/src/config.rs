//! Command-line flags (each also read from `IPA_<UPPER_SNAKE>`), their
//! ranges, and their resolution into the [`HostConfig`] the service runs
//! with: templates loaded and checked, data dir created and made absolute,
//! host id defaulted to the hostname.
//!
//! Every flag is validated before anything starts: a value outside its
//! range is a usage error (exit status 2) that names the flag, so a typo
//! cannot become a host that misbehaves at run time. The ranges and why
//! are next to each flag; `pod-host --help` shows them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use ipa_common::LogFormat;

use ipa_common::tls::ServerTlsFiles;

use crate::gate::ClientPolicy;
use crate::isolation::{PodIdentity, parse_pod_user, parse_uid_range};
use crate::templates::{TemplateError, Templates};

/// `--capacity` range. At least one pod, or the host is useless; at most
/// 10,000, which bounds the pod table, the hello snapshot and the
/// descriptors (about six per live pod) one host holds.
pub const CAPACITY_RANGE: std::ops::RangeInclusive<i64> = 1..=10_000;
/// `--stop-grace-ms` range: 0 (SIGKILL at once) to one hour.
pub const STOP_GRACE_MS_RANGE: std::ops::RangeInclusive<i64> = 0..=3_600_000;
/// `--fence-timeout-ms` range: below 100 ms a scheduling hiccup kills
/// every pod; above an hour central waits that long before it may start
/// lost pods elsewhere (it waits for the larger of both fence timeouts).
pub const FENCE_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<i64> = 100..=3_600_000;
/// `--log-max-bytes` range: 1 KiB to 16 GiB per pod.
pub const LOG_MAX_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=(16 << 30);
/// `--keepalive-interval-ms` / `--keepalive-timeout-ms` range: 100 ms to
/// one hour.
pub const KEEPALIVE_MS_RANGE: std::ops::RangeInclusive<i64> = 100..=3_600_000;
/// Longest `--host-id`: a DNS name.
pub const MAX_HOST_ID_CHARS: usize = 253;

/// The IPA pod-host: spawns pods from named templates, supervises them and
/// streams their state to central-manager (service `ipa.v1.PodHost`).
#[derive(Debug, Clone, Parser)]
#[command(name = "pod-host", version)]
pub struct Args {
    /// Address to serve gRPC on. Port 0 picks a free port; the bound address
    /// is printed to stdout as `listening on ADDR`.
    #[arg(long, env = "IPA_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,

    /// This host's id as reported to central-manager: 1-253 characters of
    /// letters, digits, '.', '_' and '-' [default: the hostname].
    #[arg(long, env = "IPA_HOST_ID", value_parser = parse_host_id)]
    pub host_id: Option<String>,

    /// Maximum number of live (starting or running) pods, 1-10000.
    #[arg(long, env = "IPA_CAPACITY", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(CAPACITY_RANGE))]
    pub capacity: u32,

    /// TOML file of pod templates (`[templates.NAME] command, args, env,
    /// cwd`). Without it the host serves one template, `default`, running the
    /// `demo-pod` binary installed next to this executable.
    #[arg(long, env = "IPA_CONFIG")]
    pub config: Option<PathBuf>,

    /// Directory for per-pod task files and logs (created if missing).
    #[arg(long, env = "IPA_DATA_DIR", default_value = "./ipa-data/pod-host")]
    pub data_dir: PathBuf,

    /// Grace between SIGTERM and SIGKILL when stopping a pod (StopPod without
    /// its own grace, and on pod-host shutdown), 0-3600000.
    #[arg(long, env = "IPA_STOP_GRACE_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u32).range(STOP_GRACE_MS_RANGE))]
    pub stop_grace_ms: u32,

    /// Kill all pods when nothing has been heard from a central-manager for
    /// this long (self-fencing), 100-3600000. Reported to central in the
    /// hello.
    #[arg(long, env = "IPA_FENCE_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u32).range(FENCE_TIMEOUT_MS_RANGE))]
    pub fence_timeout_ms: u32,

    /// Cap of the retained output of one pod (stdout and stderr together),
    /// 1024 bytes to 16 GiB. The newest output is kept: the log file
    /// rotates at half the cap.
    #[arg(long, env = "IPA_LOG_MAX_BYTES", default_value_t = 8 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(LOG_MAX_BYTES_RANGE))]
    pub log_max_bytes: u64,

    /// HTTP/2 ping interval on every connection, 100-3600000: a peer that
    /// vanished (partition, crashed VM) is noticed and its streams (a
    /// Connect, log follows) are closed instead of held for ever.
    #[arg(long, env = "IPA_KEEPALIVE_INTERVAL_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(KEEPALIVE_MS_RANGE))]
    pub keepalive_interval_ms: u32,

    /// How long a ping may go unanswered before the connection is closed,
    /// 100-3600000.
    #[arg(long, env = "IPA_KEEPALIVE_TIMEOUT_MS", default_value_t = 20_000,
          value_parser = clap::value_parser!(u32).range(KEEPALIVE_MS_RANGE))]
    pub keepalive_timeout_ms: u32,

    /// Log output format (logs go to stderr).
    #[arg(long, env = "IPA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Serve metrics in the Prometheus text format at
    /// `http://ADDR/metrics` (see the README "Observability"). Off unless
    /// set; port 0 picks a free port, which is logged at start.
    #[arg(long, env = "IPA_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Serve TLS with this PEM certificate chain (with --tls-key). Re-read
    /// when it changes on disk; no restart, no pod or stream dropped.
    #[arg(long, env = "IPA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "IPA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Refuse every call without a client certificate signed by a CA in
    /// this PEM file (needs --tls-cert). Set it whenever anything but
    /// central-manager can reach this port: pods can reach 127.0.0.1.
    #[arg(long, env = "IPA_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,

    /// A client certificate name (DNS or URI SAN, else CN) allowed to call
    /// this pod-host. Repeatable (the env var takes a comma-separated
    /// list); unset: any certificate from --client-ca.
    #[arg(
        long = "allowed-client",
        env = "IPA_ALLOWED_CLIENT",
        value_delimiter = ',',
        requires = "client_ca"
    )]
    pub allowed_client: Vec<String>,

    /// Also serve `grpc.health.v1.Health` alone, in plaintext, on this
    /// address: for Kubernetes probes, which cannot present certificates.
    #[arg(long, env = "IPA_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Run every pod as this user instead of the pod-host's: USER or UID,
    /// optionally :GID (a number or group name). Needs the privilege to
    /// change uid (root, or CAP_SETUID, CAP_SETGID, CAP_CHOWN, CAP_KILL,
    /// CAP_DAC_OVERRIDE).
    #[arg(long, env = "IPA_POD_USER", conflicts_with = "pod_uid_range")]
    pub pod_user: Option<String>,

    /// Run each live pod as a uid of its own from FIRST-LAST (gid the same
    /// number), so pods cannot read each other's files or environment
    /// either. The range must hold at least --capacity uids.
    #[arg(long, env = "IPA_POD_UID_RANGE")]
    pub pod_uid_range: Option<String>,
}

/// A host id central accepts and that reads well in logs and metrics.
pub fn parse_host_id(s: &str) -> Result<String, String> {
    let n = s.chars().count();
    if n == 0 || n > MAX_HOST_ID_CHARS {
        return Err(format!(
            "is {n} characters long; it must be 1-{MAX_HOST_ID_CHARS}"
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "contains {c:?}; only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(s.to_owned())
}

/// Everything the service needs, resolved and validated.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub host_id: String,
    pub capacity: u32,
    pub templates: Templates,
    /// Absolute.
    pub data_dir: PathBuf,
    pub stop_grace: Duration,
    pub fence_timeout: Duration,
    pub log_max_bytes: u64,
    /// HTTP/2 keepalive: ping interval and ack timeout.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// The executable to re-run as the orphan reaper (see `reaper`); `None`
    /// runs without one (unit tests).
    pub reaper_exe: Option<PathBuf>,
    /// Who pods run as (`--pod-user`, `--pod-uid-range`).
    pub pod_identity: PodIdentity,
    /// `--tls-cert`/`--tls-key`/`--client-ca`.
    pub tls: Option<ServerTlsFiles>,
    /// `--client-ca` + `--allowed-client`: who may call.
    pub client_policy: Option<ClientPolicy>,
    /// `--health-listen`.
    pub health_listen: Option<SocketAddr>,
}

/// A start-up error: a flag's value that cannot be used. Each names its
/// flag; `main` exits with status 2, as for a value out of range.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value for --config: {0}")]
    Templates(#[from] TemplateError),
    #[error("invalid value for --data-dir: {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid value for --host-id: the hostname {hostname:?} {problem}; set --host-id")]
    Hostname { hostname: String, problem: String },
    #[error("cannot find the pod-host executable: {0}")]
    CurrentExe(std::io::Error),
    #[error("{0}")]
    PodIdentity(String),
}

impl ConfigError {
    /// The exit status: 2 for a bad flag value (like clap's own usage
    /// errors), 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::CurrentExe(_) => 1,
            _ => 2,
        }
    }
}

impl HostConfig {
    /// Resolves `args`: loads the templates (or the default `demo-pod` one),
    /// creates the data dir.
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        let exe = std::env::current_exe().map_err(ConfigError::CurrentExe)?;
        let templates = match &args.config {
            Some(path) => Templates::load(path)?,
            None => Templates::demo_default(exe.parent().unwrap_or(Path::new("."))),
        };
        for warning in templates.check_paths() {
            tracing::warn!("{warning}");
        }
        let host_id = match &args.host_id {
            Some(id) => id.clone(),
            None => {
                let h = hostname();
                parse_host_id(&h).map_err(|problem| ConfigError::Hostname {
                    hostname: h.clone(),
                    problem,
                })?
            }
        };
        let data_dir = make_data_dir(&args.data_dir)?;
        let pod_identity = match (&args.pod_user, &args.pod_uid_range) {
            (Some(u), _) => {
                PodIdentity::Shared(parse_pod_user(u).map_err(ConfigError::PodIdentity)?)
            }
            (None, Some(r)) => {
                let (first, last) =
                    parse_uid_range(r, args.capacity).map_err(ConfigError::PodIdentity)?;
                PodIdentity::PerPod { first, last }
            }
            (None, None) => PodIdentity::Host,
        };
        let tls = args
            .tls_cert
            .clone()
            .zip(args.tls_key.clone())
            .map(|(cert, key)| ServerTlsFiles {
                cert,
                key,
                client_ca: args.client_ca.clone(),
            });
        let client_policy = args.client_ca.as_ref().map(|_| ClientPolicy {
            allowed: args
                .allowed_client
                .iter()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
        });
        Ok(Self {
            host_id,
            capacity: args.capacity,
            templates,
            data_dir,
            stop_grace: Duration::from_millis(args.stop_grace_ms.into()),
            fence_timeout: Duration::from_millis(args.fence_timeout_ms.into()),
            log_max_bytes: args.log_max_bytes,
            keepalive_interval: Duration::from_millis(args.keepalive_interval_ms.into()),
            keepalive_timeout: Duration::from_millis(args.keepalive_timeout_ms.into()),
            reaper_exe: Some(exe),
            pod_identity,
            tls,
            client_policy,
            health_listen: args.health_listen,
        })
    }
}

/// Creates `dir` and returns its absolute form (pods get absolute
/// `IPA_TASK_FILE` paths whatever their cwd).
pub fn make_data_dir(dir: &Path) -> Result<PathBuf, ConfigError> {
    let err = |source| ConfigError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    dir.canonicalize().map_err(err)
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("pod-host").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_api_md() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.listen.to_string(), "127.0.0.1:50052");
        assert_eq!(a.stop_grace_ms, 5000);
        assert_eq!(a.fence_timeout_ms, 5000);
        assert_eq!(a.capacity, 100);
        assert_eq!(a.log_max_bytes, 8 << 20);
        assert_eq!(
            (a.keepalive_interval_ms, a.keepalive_timeout_ms),
            (10_000, 20_000)
        );
        assert!(a.config.is_none());
    }

    /// Both ends of every range: the bound is accepted, one past it is a
    /// usage error (exit 2) naming the flag.
    #[test]
    fn every_numeric_flag_has_a_range() {
        let cases: &[(&str, &str, &str, &str, &str)] = &[
            ("--capacity", "1", "10000", "0", "10001"),
            ("--stop-grace-ms", "0", "3600000", "-1", "3600001"),
            ("--fence-timeout-ms", "100", "3600000", "99", "3600001"),
            (
                "--log-max-bytes",
                "1024",
                "17179869184",
                "1023",
                "17179869185",
            ),
            ("--keepalive-interval-ms", "100", "3600000", "99", "3600001"),
            ("--keepalive-timeout-ms", "100", "3600000", "0", "3600001"),
        ];
        for (flag, lo, hi, below, above) in cases {
            for ok in [lo, hi] {
                assert!(parse(&[&format!("{flag}={ok}")]).is_ok(), "{flag} {ok}");
            }
            for bad in [below, above, &"x"] {
                let e = parse(&[&format!("{flag}={bad}")]).unwrap_err();
                assert_eq!(e.exit_code(), 2, "{flag} {bad}");
                assert!(
                    matches!(
                        e.kind(),
                        ErrorKind::ValueValidation | ErrorKind::InvalidValue
                    ),
                    "{flag} {bad}: {:?}",
                    e.kind()
                );
                assert!(e.to_string().contains(flag), "{flag} {bad}: {e}");
            }
        }
    }

    #[test]
    fn host_ids_are_checked() {
        assert_eq!(
            parse(&["--host-id", "ipa-pod-host-0.example_1"])
                .unwrap()
                .host_id
                .as_deref(),
            Some("ipa-pod-host-0.example_1")
        );
        let long = "h".repeat(MAX_HOST_ID_CHARS + 1);
        for bad in ["", "has space", "a/b", "ü", long.as_str()] {
            let e = parse(&["--host-id", bad]).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
            assert!(e.to_string().contains("--host-id"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn config_errors_name_their_flag_and_exit_2() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[templates.\"has space\"]\ncommand = \"/bin/true\"\n").unwrap();
        let args = parse(&[
            "--config",
            bad.to_str().unwrap(),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ])
        .unwrap();
        let e = HostConfig::from_args(&args).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(msg.starts_with("invalid value for --config: "), "{msg}");
        assert!(msg.contains("\"has space\""), "{msg}");
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let args = parse(&["--data-dir", file.join("sub").to_str().unwrap()]).unwrap();
        let e = HostConfig::from_args(&args).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().starts_with("invalid value for --data-dir: "),
            "{e}"
        );
    }

    #[test]
    fn security_flags() {
        let parse = |args: &[&str]| {
            Args::try_parse_from(std::iter::once("pod-host").chain(args.iter().copied()))
        };
        assert!(parse(&["--tls-cert", "c"]).is_err());
        assert!(parse(&["--client-ca", "ca"]).is_err(), "needs TLS");
        assert!(
            parse(&["--allowed-client", "x"]).is_err(),
            "needs --client-ca"
        );
        assert!(parse(&["--pod-user", "1", "--pod-uid-range", "1-2"]).is_err());
        let a = parse(&[
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--client-ca",
            "ca",
            "--allowed-client",
            "central.ipa",
            "--allowed-client",
            "spiffe://ipa/central",
        ])
        .unwrap();
        assert_eq!(
            a.allowed_client,
            vec!["central.ipa", "spiffe://ipa/central"]
        );
        let d = parse(&[]).unwrap();
        assert!(d.tls_cert.is_none() && d.client_ca.is_none() && d.pod_user.is_none());
    }

    #[test]
    fn every_flag_has_an_env_var() {
        use clap::CommandFactory;
        for arg in Args::command().get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let long = arg.get_long().unwrap_or_default();
            let want = format!("IPA_{}", long.replace('-', "_").to_uppercase());
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            assert_eq!(env.as_deref(), Some(want.as_str()), "flag --{long}");
        }
    }

    #[test]
    fn zero_fence_timeout_is_refused() {
        assert!(Args::try_parse_from(["pod-host", "--fence-timeout-ms", "0"]).is_err());
    }
}
