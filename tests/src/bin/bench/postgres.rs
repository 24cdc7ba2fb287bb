//! PostgreSQL beside SQLite (issue 15), in the same run: the task API
//! (CreateTask from 1 and 64 clients, GetTask, ListTasks) and StartPod
//! measured by the api and pods phases' own code, once with central-manager
//! on SQLite and once on a private PostgreSQL server that the phase starts
//! with a durable configuration ([`DURABLE`]) and stops at its end; plus
//! PostgreSQL's own `pgbench` inserting one row per transaction from 64
//! clients on that server, the floor our CreateTask is compared with.

use std::path::Path;
use std::time::Duration;

use ipa_tests::postgres::{DURABLE, PgServer};

use crate::Scale;
use crate::api::{self, ApiResults};
use crate::pods::StartRig;
use crate::report::{Row, ratio};
use crate::stats::{Load, ms, p50_p99};

/// pgbench's clients, as many as the 64-client CreateTask run.
const PGBENCH_CLIENTS: usize = 64;

/// The pgbench script: one single-row INSERT per transaction (pgbench runs
/// each script execution as its own transaction), a row about the size of
/// a task's title and description.
const PGBENCH_SCRIPT: &str = "INSERT INTO bench_rows (title, description, created_at) \
     VALUES ('bench task', 'created by the benchmark', now());\n";

const PGBENCH_TABLE: &str = "CREATE TABLE bench_rows (\
     id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
     title text NOT NULL, description text NOT NULL, created_at timestamptz NOT NULL)";

/// One backend's figures.
pub struct Side {
    pub api: ApiResults,
    pub start_1: Load,
    pub start_32: Load,
}

/// pgbench's result.
pub struct Pgbench {
    pub tps: f64,
    pub transactions: u64,
    pub latency_ms: Option<f64>,
    pub seconds: u64,
}

pub struct PgResults {
    pub sqlite: Side,
    /// `None` when PostgreSQL could not be started (see `note`).
    pub postgres: Option<Side>,
    pub pgbench: Option<Pgbench>,
    /// The server's version, or why a part was not measured.
    pub note: String,
}

/// The task API and StartPod against a central-manager on `db` (`None`:
/// SQLite), each in a fresh database (`db` gives one URL per part).
async fn side(dir: &Path, scale: &Scale, db: Option<[String; 2]>) -> Side {
    let sub = |name: &str| {
        let p = dir.join(name);
        std::fs::create_dir_all(&p).expect("phase dir");
        p
    };
    let (api_dir, pods_dir) = (sub("api"), sub("pods"));
    let api = match &db {
        Some([url, _]) => {
            let central = crate::proc::central_db(&api_dir, url, &[], &[]).await;
            api::measure(central, scale, None).await
        }
        None => api::run(&api_dir, scale).await,
    };
    let rig = StartRig::start(&pods_dir, scale, db.as_ref().map(|[_, u]| u.as_str())).await;
    let start_1 = rig.start_1().await;
    let (start_32, _) = rig.start_32().await;
    rig.stop().await;
    Side {
        api,
        start_1,
        start_32,
    }
}

pub async fn run(dir: &Path, scale: &Scale) -> PgResults {
    eprintln!("  on SQLite");
    let sqlite = side(&dir.join("sqlite"), scale, None).await;
    eprintln!("  starting PostgreSQL (fsync on, synchronous_commit on)");
    let server = match tokio::task::block_in_place(|| PgServer::start_with(DURABLE)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("  PostgreSQL not measured: {e}");
            return PgResults {
                sqlite,
                postgres: None,
                pgbench: None,
                note: format!("PostgreSQL not measured: {e}"),
            };
        }
    };
    let version = tokio::task::block_in_place(version);
    let seconds = scale.pgbench_for.as_secs().max(1);
    eprintln!("  pgbench: 1-row INSERT per transaction, {PGBENCH_CLIENTS} clients × {seconds} s");
    let pgbench = tokio::task::block_in_place(|| pgbench(&server, seconds));
    let (pgbench, mut note) = match pgbench {
        Ok(p) => (Some(p), version),
        Err(e) => (None, format!("{version}; pgbench failed: {e}")),
    };
    let urls = tokio::task::block_in_place(|| {
        Ok::<_, std::io::Error>([server.database()?, server.database()?])
    });
    let postgres = match urls {
        Ok(urls) => {
            eprintln!("  on PostgreSQL");
            Some(side(&dir.join("postgres"), scale, Some(urls)).await)
        }
        Err(e) => {
            note.push_str(&format!("; no database: {e}"));
            None
        }
    };
    // Stops the server and removes its directory: nothing is left running.
    tokio::task::block_in_place(|| drop(server));
    PgResults {
        sqlite,
        postgres,
        pgbench,
        note,
    }
}

/// `PostgreSQL 15.x` from the server binaries.
fn version() -> String {
    ipa_tests::postgres::bindir()
        .ok()
        .and_then(|d| {
            std::process::Command::new(d.join("postgres"))
                .arg("--version")
                .output()
                .ok()
        })
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .replace("postgres (PostgreSQL)", "PostgreSQL")
        })
        .unwrap_or_else(|| "PostgreSQL (version unknown)".into())
}

/// pgbench in a database of its own on `server`, for `seconds`.
fn pgbench(server: &PgServer, seconds: u64) -> std::io::Result<Pgbench> {
    server.create_database("pgbench")?;
    server.psql("pgbench", PGBENCH_TABLE)?;
    let clients = PGBENCH_CLIENTS.to_string();
    let secs = seconds.to_string();
    let out = server.pgbench(
        "pgbench",
        PGBENCH_SCRIPT,
        // -n: no vacuum of the standard tables (there are none); -j 2: the
        // machine's cores; prepared statements, as sqlx uses.
        &[
            "-n", "-c", &clients, "-j", "2", "-T", &secs, "-M", "prepared",
        ],
    )?;
    parse_pgbench(&out, seconds)
        .ok_or_else(|| std::io::Error::other(format!("no tps in pgbench's output: {out}")))
}

/// The figures of pgbench's summary: `tps = 1234.5 (without initial
/// connection time)`, `number of transactions actually processed: N`,
/// `latency average = X ms`.
fn parse_pgbench(out: &str, seconds: u64) -> Option<Pgbench> {
    let after = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let first_number = |s: &str| s.split_whitespace().next()?.parse::<f64>().ok();
    let tps = after("tps =").and_then(first_number)?;
    let transactions = after("number of transactions actually processed:")
        .and_then(|s| s.split(['/', ' ']).next()?.parse().ok())
        .unwrap_or(0);
    let latency_ms = after("latency average =").and_then(first_number);
    Some(Pgbench {
        tps,
        transactions,
        latency_ms,
        seconds,
    })
}

fn metric(i: usize) -> &'static str {
    let first = crate::report::METRICS
        .iter()
        .position(|m| m.starts_with("PostgreSQL:"))
        .unwrap_or(0);
    crate::report::METRICS[first + i]
}

fn rate(r: f64) -> String {
    format!("{r:.0}/s")
}

/// `p50 … (SQLite)` for a baseline cell.
fn on_sqlite(s: &str) -> String {
    format!("SQLite, same run: {s}")
}

pub fn rows(r: &PgResults) -> Vec<Row> {
    let s = &r.sqlite;
    let f = |d: Duration| d.as_secs_f64();
    let floor = r.pgbench.as_ref().map(|p| p.tps);
    let Some(p) = &r.postgres else {
        return (0..6)
            .map(|i| Row::new(metric(i), "—", "—").measured(r.note.clone()))
            .collect();
    };
    let (sa, pa) = (&s.api, &p.api);
    let mut rows = vec![
        Row::new(metric(0), "< 50 ms", "shown beside SQLite")
            .measured(p50_p99(&pa.create_1))
            .baseline(on_sqlite(&p50_p99(&sa.create_1)))
            .ratio(ratio(f(pa.create_1.p50()), f(sa.create_1.p50()))),
    ];
    let c64 = &pa.create_64;
    rows.push(
        Row::new(metric(1), "—", "≥ 5,000/s")
            .measured(format!(
                "{}, {}, {} errors",
                rate(c64.rate()),
                p50_p99(&c64.samples),
                c64.errors
            ))
            .baseline(format!(
                "pgbench 1-row INSERT/txn, 64 clients: {}; SQLite, same run: {}",
                floor.map(rate).unwrap_or_else(|| "not measured".into()),
                rate(sa.create_64.rate())
            ))
            .ratio(
                floor
                    .map(|t| ratio(c64.rate(), t))
                    .unwrap_or_else(|| "—".into()),
            )
            .met(c64.rate() >= 5000.0 && c64.errors == 0),
    );
    rows.push(
        Row::new(metric(2), "< 10 ms", "shown beside SQLite")
            .measured(format!(
                "1 client {}; 16 clients {}, {} errors",
                p50_p99(&pa.get_1),
                rate(pa.get_16.rate()),
                pa.get_16.errors
            ))
            .baseline(on_sqlite(&format!(
                "1 client p50 {}; 16 clients {}",
                ms(sa.get_1.p50()),
                rate(sa.get_16.rate())
            )))
            .ratio(ratio(f(pa.get_1.p50()), f(sa.get_1.p50()))),
    );
    rows.push(
        Row::new(metric(3), "< 100 ms / < 500 ms", "shown beside SQLite")
            .measured(format!(
                "over {} tasks: limit 100 {}; limit 1000 {}",
                pa.table_size,
                p50_p99(&pa.list100),
                p50_p99(&pa.list1000)
            ))
            .baseline(on_sqlite(&format!(
                "over {} tasks: limit 100 p50 {}; limit 1000 p50 {}",
                sa.table_size,
                ms(sa.list100.p50()),
                ms(sa.list1000.p50())
            )))
            .ratio(ratio(f(pa.list100.p50()), f(sa.list100.p50()))),
    );
    rows.push(
        Row::new(metric(4), "< 500 ms", "shown beside SQLite")
            .measured(format!(
                "1 client {}; 32 clients {}, {} errors",
                p50_p99(&p.start_1.samples),
                rate(p.start_32.rate()),
                p.start_32.errors
            ))
            .baseline(on_sqlite(&format!(
                "1 client p50 {}; 32 clients {}",
                ms(s.start_1.samples.p50()),
                rate(s.start_32.rate())
            )))
            .ratio(ratio(
                f(p.start_1.samples.p50()),
                f(s.start_1.samples.p50()),
            )),
    );
    rows.push(match &r.pgbench {
        Some(b) => Row::new(metric(5), "—", "the server's floor, shown").measured(format!(
            "{} ({} transactions in {} s, latency avg {}; {}, fsync on, synchronous_commit on)",
            rate(b.tps),
            b.transactions,
            b.seconds,
            b.latency_ms
                .map(|l| format!("{l:.2} ms"))
                .unwrap_or_else(|| "—".into()),
            r.note
        )),
        None => Row::new(metric(5), "—", "the server's floor, shown").measured(r.note.clone()),
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_summary_is_parsed() {
        let out = "transaction type: bench.sql\nscaling factor: 1\nquery mode: prepared\n\
                   number of clients: 64\nnumber of threads: 2\nduration: 10 s\n\
                   number of transactions actually processed: 51234\n\
                   number of failed transactions: 0 (0.000%)\n\
                   latency average = 12.484 ms\ninitial connection time = 40.1 ms\n\
                   tps = 5126.812345 (without initial connection time)\n";
        let p = parse_pgbench(out, 10).unwrap();
        assert!((p.tps - 5126.812345).abs() < 1e-6);
        assert_eq!(p.transactions, 51234);
        assert_eq!(p.latency_ms, Some(12.484));
        assert!(parse_pgbench("nothing", 1).is_none());
    }
}
