//! What users see, measured with a standard load generator: `POST /foos` on the release quickstart
//! binary driven by `wrk`, on PostgreSQL beside raw `pgbench` single-row INSERT transactions in the
//! same run, then on the embedded default (SQLite + in-process broker); and the binary's start-up time
//! and memory footprint, idle and after the load.
//!
//! ```sh
//! apt-get install wrk      # pgbench comes with PostgreSQL
//! cargo bench -p minos-examples --bench wrk                 # 8 s per round
//! MINOS_BENCH_SCALE=0.25 cargo bench -p minos-examples --bench wrk
//! ```
//!
//! After each PostgreSQL round it checks the store: one `FooCreated` event per answered create, no
//! fewer (nothing lost) and no more than the requests still in flight when wrk stopped.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use minos_support::bench::scale;
use minos_support::process::{signal, spawn_listening};

const LEVELS: [usize; 3] = [1, 8, 32];

/// One wrk round: requests/s, p50 and p99, answered requests, non-2xx answers.
struct Round {
    rate: f64,
    p50: Duration,
    p99: Duration,
    requests: u64,
    failed: u64,
}

fn main() {
    for tool in ["wrk", "pgbench", "psql"] {
        if Command::new(tool).arg("--version").output().is_err() {
            panic!("`{tool}` is needed: apt-get install wrk postgresql-client");
        }
    }
    let seconds = scale(8, 1).max(1) as u64;
    let dir = tempfile::tempdir().expect("temporary directory");
    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = '{\"bar\": \"wrk\"}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )
    .expect("write the wrk script");

    // Start-up and idle footprint, on the embedded default.
    let started = Instant::now();
    let (mut embedded, addr) = start(&[(
        "MINOS_STORAGE",
        format!("sqlite://{}", dir.path().join("embedded.db").display()),
    )]);
    wait_healthy(&addr);
    let startup = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let idle = (rss_kib(&embedded, "VmRSS:"), rss_kib(&embedded, "RssAnon:"));

    println!(
        "POST /foos through wrk on the release quickstart ({seconds} s per round, {} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!("embedded default (SQLite + in-process broker)");
    println!("connections  requests/s       p50       p99  RSS after  CPU per create");
    let mut created = 0u64;
    for connections in LEVELS {
        let cpu = cpu_time(&embedded);
        let round = wrk(&addr, &script, connections, seconds);
        assert_eq!(round.failed, 0, "{} answers were not 2xx", round.failed);
        let rss = rss_kib(&embedded, "VmRSS:");
        created += round.requests;
        // Nothing lost: every answered create reaches the FooTotals view; the CPU the process spent
        // meanwhile (the requests, the relay, the handlers and both views) is the cost of the creates.
        let seen = wait_seen(&addr, created);
        let spent = cpu_time(&embedded) - cpu;
        println!(
            "{connections:>11}  {:>10.0}  {:>8.2?}  {:>8.2?}  {:>6.1} MB  {:>11.0} µs",
            round.rate,
            round.p50,
            round.p99,
            rss as f64 / 1024.0,
            spent.as_secs_f64() * 1e6 / round.requests.max(1) as f64
        );
        created = seen;
    }
    // Idle after the load: the service gives back what the burst took once its handlers and views
    // have worked off the backlog the last round left (a few seconds at 32 connections) and it then
    // went a whole tick without work.
    std::thread::sleep(Duration::from_secs(20));
    let after = (rss_kib(&embedded, "VmRSS:"), rss_kib(&embedded, "RssAnon:"));
    stop(&mut embedded);

    // PostgreSQL, beside raw INSERTs on the same server in the same run.
    let url = minos_support::postgres::fresh_schema_url();
    let schema = url.rsplit("schema=").next().unwrap().to_owned();
    let (mut service, addr) = start(&[("MINOS_STORAGE", url.clone())]);
    wait_healthy(&addr);
    let database = minos_support::postgres::url();
    let database = database.split('?').next().unwrap().to_owned();
    psql(
        &database,
        "CREATE TABLE IF NOT EXISTS minos_bench_raw (id uuid PRIMARY KEY, data jsonb NOT NULL)",
    );
    let insert = dir.path().join("insert.sql");
    std::fs::File::create(&insert)
        .and_then(|mut f| {
            f.write_all(b"INSERT INTO minos_bench_raw (id, data) VALUES (gen_random_uuid(), '{\"bar\": \"raw\"}');\n")
        })
        .expect("write the pgbench script");
    println!();
    println!("PostgreSQL (the same server for both)");
    println!("connections  requests/s       p50       p99   raw INSERT/s  × raw");
    let mut answered = 0u64;
    for connections in LEVELS {
        let round = wrk(&addr, &script, connections, seconds);
        assert_eq!(round.failed, 0, "{} answers were not 2xx", round.failed);
        answered += round.requests;
        let raw = pgbench(&database, &insert, connections, seconds);
        println!(
            "{connections:>11}  {:>10.0}  {:>8.2?}  {:>8.2?}  {:>13.0}  {:>5.2}",
            round.rate,
            round.p50,
            round.p99,
            raw,
            round.rate / raw
        );
        // Nothing lost, nothing doubled: the creates answered are in the store, once.
        let stored: u64 = psql(
            &database,
            &format!(
                "SELECT count(*) FROM {schema}.events WHERE name = 'Foo' AND action = 'create'"
            ),
        )
        .trim()
        .parse()
        .expect("a count");
        let in_flight = LEVELS
            .iter()
            .take_while(|l| **l <= connections)
            .sum::<usize>() as u64;
        assert!(
            stored >= answered && stored <= answered + in_flight,
            "{stored} creates stored for {answered} answered"
        );
    }
    stop(&mut service);
    psql(&database, "DROP TABLE minos_bench_raw");
    psql(&database, &format!("DROP SCHEMA {schema} CASCADE"));

    println!();
    println!(
        "quickstart binary: health answers {:.1?} after exec; RSS idle {:.1} MB ({:.1} MB private), \
         after the load {:.1} MB ({:.1} MB private; idle 20 s later)",
        startup,
        idle.0 as f64 / 1024.0,
        idle.1 as f64 / 1024.0,
        after.0 as f64 / 1024.0,
        after.1 as f64 / 1024.0
    );
    println!(
        "(RSS counts the binary's code the kernel has mapped in, shared with the file cache; private is \
         the process's own memory: heap, stacks, SQLite's page caches)"
    );
}

/// Starts the release quickstart with `env` on a free port; its base URL.
fn start(env: &[(&str, String)]) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quickstart"));
    command
        .env("MINOS_HTTP_PORT", "0")
        .env("MINOS_HTTP_HOST", "127.0.0.1")
        .env("RUST_LOG", "warn,minos_runtime=info")
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let started = spawn_listening(&mut command, "quickstart", Duration::from_secs(30));
    let lines = started.lines;
    std::thread::spawn(move || while lines.recv().is_ok() {});
    (started.child, format!("http://{}", started.addr))
}

fn wait_healthy(addr: &str) {
    let client = minos_support::http::Client::new(addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client
        .get("/system/health")
        .is_ok_and(|answer| answer.status == 200)
    {
        assert!(
            Instant::now() < deadline,
            "the quickstart never got healthy"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn stop(child: &mut Child) {
    signal(child, "-TERM");
    let _ = child.wait();
}

/// Waits until the quickstart's FooTotals view has seen at least `created` creates (at most 120 s);
/// how many it has seen.
fn wait_seen(addr: &str, created: u64) -> u64 {
    let client = minos_support::http::Client::new(addr);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = client
            .get("/foos/example")
            .ok()
            .and_then(|answer| answer.json()["foos_created_seen"].as_u64())
            .unwrap_or(0);
        if seen >= created {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "the views saw {seen} of {created} creates after 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(child: &Child) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // The kernel's clock tick for these fields is 100 Hz on Linux.
    Duration::from_millis(ticks * 10)
}

/// A resident-memory line of a process's status (`VmRSS:` in all, `RssAnon:` its private memory), KiB.
fn rss_kib(child: &Child, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn wrk(addr: &str, script: &std::path::Path, connections: usize, seconds: u64) -> Round {
    let output = Command::new("wrk")
        .args([
            "--latency",
            "-t",
            &connections.min(2).to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "-s",
        ])
        .arg(script)
        .arg(format!("{addr}/foos"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {text}");
    let value = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .map(|l| l[prefix.len()..].trim())
    };
    let latency = |prefix: &str| -> Duration {
        let text = value(prefix).unwrap_or_else(|| panic!("no {prefix} in wrk's output: {text}"));
        duration(text)
    };
    Round {
        rate: value("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no rate in wrk's output: {text}")),
        p50: latency("50%"),
        p99: latency("99%"),
        requests: text
            .lines()
            .find(|l| l.contains(" requests in "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no request count in wrk's output: {text}")),
        failed: value("Non-2xx or 3xx responses:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    }
}

/// wrk's `1.23ms`, `456.00us`, `1.02s`.
fn duration(text: &str) -> Duration {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.trim().parse().unwrap_or(0.0);
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        _ => number,
    };
    Duration::from_secs_f64(seconds)
}

/// Raw single-row INSERT transactions per second with `connections` clients.
fn pgbench(database: &str, script: &std::path::Path, connections: usize, seconds: u64) -> f64 {
    let output = Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &connections.to_string(),
            "-j",
            &connections.min(2).to_string(),
            "-T",
            &seconds.to_string(),
            "-f",
        ])
        .arg(script)
        .arg(database)
        .output()
        .expect("run pgbench");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench's output: {text}"))
}

fn psql(database: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args(["-Atq", "-v", "ON_ERROR_STOP=1", database, "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql failed on `{sql}`: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
