//! `bench`: the IPA task manager benchmark. It starts the real
//! central-manager and pod-host binaries on 127.0.0.1, drives them with
//! concurrent gRPC clients, measures the floors (process spawn/reap, one
//! SQLite commit per write) and a peer (supervisord) in the same run, then
//! prints a Markdown table and writes it with the machine, the date and
//! the exact command to `BENCHMARKS.md`.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/bench                 # full run, a few minutes
//! target/release/bench --quick         # smaller counts, same table
//! ```
//! Flags: `--quick`, `--scale F` (multiply every count, e.g. 0.2 for a
//! smoke test in a debug build), `--out PATH` (default `BENCHMARKS.md` in
//! the current directory), `--no-peer` (skip supervisord), `--only
//! retention`, `--only queue`, `--only postgres` or `--only failover` (run
//! only that phase and replace its rows in an existing `--out` file,
//! keeping the others; `--only failover` also measures a 1000 ms lease),
//! `--scale-only` (only the scale phase, printed, nothing written),
//! `--scale-configs sim:100x10000,real:10x1000` (the scale phase's
//! configurations). With `BENCH_SCALE_PAUSE=SECONDS` each scale
//! configuration pauses at rest, before it is measured, with central's pid
//! printed (for a profiler); `BENCH_KEEP=1` keeps the work dir (logs,
//! databases).
//!
//! The binary is also the crashing program of the crash-loop comparison:
//! `bench crash-pod LEDGER DELAY_MS` (see `peer`), and the stand-in
//! process of simulated pod-hosts: `bench sim-hosts …` (see `scale`).

mod api;
mod baseline;
mod failover;
mod fleet;
mod peer;
mod pods;
mod postgres;
mod proc;
mod queue;
mod report;
mod retention;
mod rows;
mod scale;
mod scrape;
mod secure;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How many of everything one run does.
#[derive(Debug, Clone)]
pub struct Scale {
    pub quick: bool,
    pub create_1: usize,
    /// Tasks in the table when ListTasks is measured (64-client creates
    /// fill it up).
    pub table: usize,
    /// Least number of 64-client creates, whatever the table size.
    pub create_64_min: usize,
    pub get_1: usize,
    pub get_16_for: Duration,
    pub list100: usize,
    pub list1000: usize,
    pub start_1: usize,
    pub start_32: usize,
    pub crashes: usize,
    pub frozen: usize,
    pub fleet: usize,
    pub peer: usize,
    pub peer_limit: Duration,
    pub floor_spawn: usize,
    pub floor_sql: usize,
    /// Fires of the every-second schedule whose lateness is measured.
    pub fires: usize,
    /// Terminal tasks GetStats reads and ArchiveTasks then moves.
    pub archive_table: usize,
    /// GetStats calls per grouping.
    pub stats: usize,
    /// Queued tasks whose ends and next starts give the dispatch latency.
    pub queue_hops: usize,
    /// Queued tasks drained through 2 pod-hosts of capacity 50.
    pub queue_drain: usize,
    /// Tasks in the queue whose cost on CreateTask/GetTask is measured.
    pub queue_deep: usize,
    /// How long pgbench inserts on the PostgreSQL server.
    pub pgbench_for: Duration,
    /// Leader SIGKILLs of the failover phase.
    pub failover_kills: usize,
    /// The scale phase (100 pod-hosts, 10,000 pods in the full run).
    pub scale: scale::ScaleSpec,
}

impl Scale {
    fn full() -> Self {
        Self {
            quick: false,
            create_1: 1000,
            table: 100_000,
            create_64_min: 2000,
            get_1: 2000,
            get_16_for: Duration::from_secs(5),
            list100: 300,
            list1000: 100,
            start_1: 300,
            start_32: 1000,
            crashes: 200,
            frozen: 10,
            fleet: 2000,
            peer: 50,
            peer_limit: Duration::from_secs(40),
            floor_spawn: 500,
            floor_sql: 500,
            fires: 60,
            archive_table: 100_000,
            stats: 100,
            queue_hops: 300,
            queue_drain: 10_000,
            queue_deep: 100_000,
            pgbench_for: Duration::from_secs(10),
            failover_kills: 10,
            scale: scale::ScaleSpec {
                configs: scale_configs(
                    &[(10, 1000), (100, 1000), (10, 10_000), (100, 10_000)],
                    (10, 1000),
                ),
                rest: Duration::from_secs(20),
                list_active: 50,
                list_hosts: 200,
                watchers: 100,
                timings: scale::Timings::defaults(),
            },
        }
    }

    fn quick() -> Self {
        Self {
            quick: true,
            create_1: 300,
            table: 10_000,
            create_64_min: 2000,
            get_1: 1000,
            get_16_for: Duration::from_secs(2),
            list100: 100,
            list1000: 30,
            start_1: 100,
            start_32: 300,
            crashes: 50,
            frozen: 3,
            fleet: 400,
            peer: 15,
            peer_limit: Duration::from_secs(15),
            floor_spawn: 200,
            floor_sql: 200,
            fires: 10,
            archive_table: 10_000,
            stats: 30,
            queue_hops: 100,
            queue_drain: 2_000,
            queue_deep: 10_000,
            pgbench_for: Duration::from_secs(3),
            failover_kills: 5,
            scale: scale::ScaleSpec {
                configs: scale_configs(&[(5, 250), (20, 1000)], (5, 250)),
                rest: Duration::from_secs(3),
                list_active: 20,
                list_hosts: 50,
                watchers: 100,
                timings: scale::Timings::short(),
            },
        }
    }

    /// Multiplies every count by `f` (never below a few samples).
    fn scaled(mut self, f: f64) -> Self {
        let s = |n: usize, min: usize| ((n as f64 * f).round() as usize).max(min);
        self.create_1 = s(self.create_1, 20);
        self.table = s(self.table, 1000);
        self.create_64_min = s(self.create_64_min, 200);
        self.get_1 = s(self.get_1, 20);
        self.get_16_for = self.get_16_for.mul_f64(f.clamp(0.25, 1.0));
        self.list100 = s(self.list100, 5);
        self.list1000 = s(self.list1000, 3);
        self.start_1 = s(self.start_1, 10);
        self.start_32 = s(self.start_32, 32);
        self.crashes = s(self.crashes, 5);
        self.frozen = s(self.frozen, 1);
        self.fleet = s(self.fleet, 40);
        self.peer = s(self.peer, 5);
        self.peer_limit = self.peer_limit.mul_f64(f.clamp(0.5, 1.0));
        self.floor_spawn = s(self.floor_spawn, 20);
        self.floor_sql = s(self.floor_sql, 20);
        self.fires = s(self.fires, 3);
        self.archive_table = s(self.archive_table, 1000);
        self.stats = s(self.stats, 5);
        self.queue_hops = s(self.queue_hops, 10);
        self.queue_drain = s(self.queue_drain, 200);
        self.queue_deep = s(self.queue_deep, 500);
        self.pgbench_for = self.pgbench_for.mul_f64(f.clamp(0.34, 1.0));
        self.failover_kills = s(self.failover_kills, 2);
        for c in &mut self.scale.configs {
            c.hosts = s(c.hosts, 2);
            c.pods = s(c.pods, 20);
        }
        self.scale.rest = self.scale.rest.mul_f64(f.clamp(0.3, 1.0));
        self.scale.list_active = s(self.scale.list_active, 5);
        self.scale.list_hosts = s(self.scale.list_hosts, 5);
        self.scale.watchers = s(self.scale.watchers, 5);
        self
    }
}

/// Simulated pod-hosts at every `(hosts, pods)`, then real ones at `real`.
fn scale_configs(sim: &[(usize, usize)], real: (usize, usize)) -> Vec<scale::Config> {
    use scale::fleet::Kind;
    sim.iter()
        .map(|&(hosts, pods)| (Kind::Simulated, hosts, pods))
        .chain(std::iter::once((Kind::Real, real.0, real.1)))
        .map(|(kind, hosts, pods)| scale::Config { kind, hosts, pods })
        .collect()
}

struct Options {
    scale: Scale,
    out: PathBuf,
    peer: bool,
    /// `--only PHASE`: that phase alone.
    only: Option<Only>,
    scale_only: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut quick = false;
    let mut factor = 1.0;
    let mut out = PathBuf::from("BENCHMARKS.md");
    let mut peer = true;
    let mut only = None;
    let mut scale_only = false;
    let mut configs: Option<Vec<scale::Config>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--scale" => {
                factor = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|f: &f64| *f > 0.0)
                    .ok_or("--scale needs a positive number")?;
            }
            "--out" => out = args.next().ok_or("--out needs a path")?.into(),
            "--no-peer" => peer = false,
            "--only" => match args.next().as_deref() {
                Some("retention") => only = Some(Only::Retention),
                Some("queue") => only = Some(Only::Queue),
                Some("postgres") => only = Some(Only::Postgres),
                Some("failover") => only = Some(Only::Failover),
                _ => return Err("--only takes: retention, queue, postgres, failover".into()),
            },
            "--scale-only" => scale_only = true,
            "--scale-configs" => {
                let v = args.next().ok_or("--scale-configs needs a list")?;
                configs = Some(scale::parse_configs(&v).ok_or(
                    "--scale-configs takes KIND:HOSTSxPODS,… with KIND sim or real, e.g. sim:100x10000",
                )?);
            }
            "-h" | "--help" => {
                println!(
                    "bench [--quick] [--scale F] [--out PATH] [--no-peer] [--only retention|queue|postgres|failover] [--scale-only] [--scale-configs LIST]\n\
                     Runs the IPA task manager benchmark (see BENCHMARKS.md)."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    let mut base = if quick { Scale::quick() } else { Scale::full() };
    if let Some(c) = configs {
        base.scale.configs = c;
    }
    let scale = if factor == 1.0 {
        base
    } else {
        base.scaled(factor)
    };
    Ok(Options {
        scale,
        out,
        peer,
        only,
        scale_only,
    })
}

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("crash-pod") {
        peer::crash_pod_main(
            argv.get(2).map(String::as_str).unwrap_or("crash-ledger"),
            argv.get(3).map(String::as_str).unwrap_or("100"),
        );
    }
    if argv.get(1).map(String::as_str) == Some("sim-hosts") {
        return scale::standin::main(&argv[2..]);
    }
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(opts, argv));
    std::process::ExitCode::SUCCESS
}

/// The command line as typed, for the report.
fn command_line(argv: &[String]) -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| {
            let cwd = std::env::current_dir().ok()?;
            p.strip_prefix(&cwd).ok().map(|r| r.display().to_string())
        })
        .unwrap_or_else(|| argv.first().cloned().unwrap_or_default());
    std::iter::once(exe)
        .chain(argv.iter().skip(1).cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run(opts: Options, argv: Vec<String>) {
    let t_all = Instant::now();
    let scale = opts.scale.clone();
    // BENCH_KEEP=1 keeps the work dir (logs, databases) for a look after.
    let root = tempfile::Builder::new()
        .prefix("ipa-bench-")
        .disable_cleanup(std::env::var_os("BENCH_KEEP").is_some())
        .tempdir()
        .expect("temp dir");
    let sub = |name: &str| {
        let p = root.path().join(name);
        std::fs::create_dir_all(&p).expect("phase dir");
        p
    };
    eprintln!(
        "bench: {} mode, work dir {}",
        if scale.quick { "quick" } else { "full" },
        root.path().display()
    );

    if let Some(only) = opts.only {
        run_only(only, &opts, &scale, &sub(only.name()), &argv, t_all).await;
        return;
    }

    if opts.scale_only {
        eprintln!("[scale] 100 pod-hosts, 10,000 pods (this mode: see the table)");
        let results = scale::run(&sub("scale"), &scale.scale).await;
        let rows = scale::report::rows(&results);
        println!(
            "{}\n{}",
            report::table(&rows),
            scale::report::tables(&results, &scale.scale)
        );
        return;
    }

    eprintln!("[1/13] baselines: process spawn/reap, SQLite commit per write");
    let pf = tokio::task::spawn_blocking({
        let n = scale.floor_spawn;
        move || baseline::process_floor(n)
    })
    .await
    .expect("process floor");
    let sf = baseline::sql_floor(&sub("baseline"), scale.floor_sql).await;

    eprintln!("[2/13] task API");
    let api = api::run(&sub("api"), &scale).await;
    let rf = baseline::read_floor(&api.db, &api.ids, scale.get_1, scale.list100).await;

    eprintln!("[3/13] pods: StartPod, crash detection, automatic restart");
    let pods = pods::run(&sub("pods"), &scale).await;

    eprintln!("[4/13] frozen pod-host (SIGSTOP) → UNREACHABLE, default timings");
    let frozen = pods::frozen_host(&sub("frozen"), scale.frozen).await;

    eprintln!(
        "[5/13] {} concurrent pods over 4 pod-hosts, graceful stop",
        scale.fleet
    );
    let fleet = fleet::run(&sub("fleet"), &scale).await;

    eprintln!("[6/13] crash-loop restart: ours vs supervisord");
    let ours = peer::ours(&sub("peer-ours"), scale.peer, scale.peer_limit).await;
    let sup = match (opts.peer, peer::supervisord()) {
        (false, _) => rows::Peer::Skipped,
        (true, None) => rows::Peer::NotInstalled,
        (true, Some(bin)) => {
            let version = peer::supervisord_version(&bin);
            let s =
                peer::supervisord_run(&bin, &sub("peer-supervisord"), scale.peer, scale.peer_limit)
                    .await;
            rows::Peer::Measured {
                version,
                samples: s,
            }
        }
    };

    eprintln!("[7/13] the cost of security: TLS + token against plaintext");
    let secure = secure::run(&sub("secure"), &scale).await;

    eprintln!("[8/13] schedules, archiving, statistics");
    let retention = retention::run(&sub("retention"), &scale).await;

    eprintln!("[9/13] the queue: dispatch latency, draining, a deep queue");
    let queue = queue::run(&sub("queue"), &scale).await;

    eprintln!("[10/13] PostgreSQL beside SQLite: task API, StartPod, pgbench");
    let postgres = postgres::run(&sub("postgres"), &scale).await;

    eprintln!("[11/13] failover: leader SIGKILL on 3 replicas over PostgreSQL");
    let failover = failover::run(
        &sub("failover"),
        scale.failover_kills,
        &[failover::DEFAULT_LEASE_MS],
    )
    .await;

    eprintln!("[12/13] scale: simulated pod-hosts (and a real cross-check)");
    let scale_results = scale::run(&sub("scale"), &scale.scale).await;

    eprintln!("[13/13] report");
    let elapsed = t_all.elapsed();
    let all = rows::All {
        scale: &scale,
        secure: &secure,
        pf: &pf,
        sf: &sf,
        rf: &rf,
        api: &api,
        pods: &pods,
        frozen: &frozen,
        fleet: &fleet,
        ours: &ours,
        sup: &sup,
        retention: &retention,
        queue: &queue,
        postgres: &postgres,
        failover: &failover,
        scale_results: &scale_results,
    };
    let table_rows = rows::build(&all);
    let table = report::table(&table_rows);
    let details = rows::details(&all);
    // The file first: a closed stdout must not lose the results.
    let md = rows::markdown(&command_line(&argv), elapsed, &table, &details);
    match std::fs::write(&opts.out, md) {
        Ok(()) => eprintln!(
            "bench: wrote {} ({:.0} s in all)",
            opts.out.display(),
            elapsed.as_secs_f64()
        ),
        Err(e) => eprintln!("bench: cannot write {}: {e}", opts.out.display()),
    }
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{table}\n{details}");
}

/// A phase `--only` runs by itself.
#[derive(Debug, Clone, Copy)]
enum Only {
    Retention,
    Queue,
    Postgres,
    Failover,
}

impl Only {
    fn name(self) -> &'static str {
        match self {
            Only::Retention => "retention",
            Only::Queue => "queue",
            Only::Postgres => "postgres",
            Only::Failover => "failover",
        }
    }
}

/// `--only PHASE`: that phase, its rows printed and put in place in the
/// `--out` file (created when missing), the other rows kept.
async fn run_only(
    only: Only,
    opts: &Options,
    scale: &Scale,
    dir: &std::path::Path,
    argv: &[String],
    t_all: Instant,
) {
    let (rows, label) = match only {
        Only::Retention => {
            eprintln!("[1/1] schedules, archiving, statistics");
            let r = retention::run(dir, scale).await;
            (
                retention::rows(&r),
                "Schedules, archiving and statistics rows:",
            )
        }
        Only::Queue => {
            eprintln!("[1/1] the queue: dispatch, drain, a deep queue");
            let r = queue::run(dir, scale).await;
            (queue::rows(&r), "Queue rows:")
        }
        Only::Postgres => {
            eprintln!("[1/1] PostgreSQL beside SQLite: task API, StartPod, pgbench");
            let r = postgres::run(dir, scale).await;
            (postgres::rows(&r), "PostgreSQL rows:")
        }
        Only::Failover => {
            eprintln!("[1/1] failover: leader SIGKILL on 3 replicas over PostgreSQL");
            let leases = [failover::DEFAULT_LEASE_MS, 1000];
            let r = failover::run(dir, scale.failover_kills, &leases).await;
            (failover::rows(&r), "Failover rows:")
        }
    };
    let table = report::table(&rows);
    let note = format!(
        "- {label} measured in a separate run, `{}` ({:.0} s), {}, {}.",
        command_line(argv),
        t_all.elapsed().as_secs_f64(),
        report::date(),
        report::machine()
    );
    let existing = std::fs::read_to_string(&opts.out).unwrap_or_default();
    match std::fs::write(&opts.out, report::splice(&existing, &rows, label, &note)) {
        Ok(()) => eprintln!("bench: updated {}", opts.out.display()),
        Err(e) => eprintln!("bench: cannot write {}: {e}", opts.out.display()),
    }
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{table}\n{note}");
}
