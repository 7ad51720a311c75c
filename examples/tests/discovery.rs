//! `minos discovery` with real processes: two quickstart instances register with it, requests are
//! resolved over both, SIGTERM unregisters one at once, SIGKILL makes the other unresolvable within the
//! probe interval and gone after its lease, and a restarted registry keeps its registrations.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use minos_support::http::Client;
use minos_support::process::{eventually, spawn_listening};
use serde_json::Value;

fn minos_binary() -> PathBuf {
    minos_support::process::minos_binary(env!("CARGO_BIN_EXE_quickstart"))
}

struct Process {
    child: Child,
    client: Client,
    port: u16,
}

/// Starts `command`, waiting for the line saying where it listens.
fn spawn(mut command: Command, label: &str) -> Process {
    command.env("RUST_LOG", "info").stderr(Stdio::inherit());
    let started = spawn_listening(&mut command, label, Duration::from_secs(30));
    let port = started.addr.rsplit(':').next().unwrap().parse().unwrap();
    // Keep reading the output, so the process never blocks on a full pipe.
    let lines = started.lines;
    std::thread::spawn(move || while lines.recv().is_ok() {});
    Process {
        child: started.child,
        client: Client::new(format!("http://{}", started.addr)),
        port,
    }
}

fn registry(db: &Path) -> Process {
    registry_on(&format!("sqlite://{}", db.display()))
}

fn registry_on(storage: &str) -> Process {
    let mut command = Command::new(minos_binary());
    command
        .args(["discovery", "--port", "0", "--storage", storage])
        .env("MINOS_HTTP_HOST", "127.0.0.1")
        .env("MINOS_REGISTRY_PROBE_INTERVAL_MS", "300")
        .env("MINOS_REGISTRY_LEASE_TTL_MS", "2000")
        .env("MINOS_REGISTRY_REFRESH_MS", "50");
    spawn(command, "discovery")
}

fn quickstart(registry_port: u16) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quickstart"));
    command
        .env("MINOS_HTTP_PORT", "0")
        .env("MINOS_HTTP_HOST", "127.0.0.1")
        .env("MINOS_STORAGE", "memory")
        .env(
            "MINOS_DISCOVERY_URL",
            format!("http://127.0.0.1:{registry_port}"),
        )
        .env("MINOS_DISCOVERY_HEARTBEAT_MS", "200");
    spawn(command, "quickstart")
}

fn signal(process: &mut Process, signal: &str) {
    minos_support::process::signal(&process.child, signal);
    process.child.wait().expect("wait for the process");
}

fn get(client: &Client, path: &str) -> (u16, Value) {
    let answer = client
        .request("GET", path, None)
        .expect("the registry answers");
    let json = answer.json();
    (answer.status, json)
}

fn instances(registry: &Client) -> Vec<u64> {
    let (_, listing) = get(registry, "/microservices");
    let mut ports: Vec<u64> = listing["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == "foo")
        .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
        .map(|i| i["port"].as_u64().unwrap())
        .collect();
    ports.sort_unstable();
    ports
}

#[test]
fn instances_register_spread_leave_and_survive_a_registry_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("discovery.db");
    let mut registry_process = registry(&db);
    let registry_client = registry_process.client.clone();
    let mut first = quickstart(registry_process.port);
    let mut second = quickstart(registry_process.port);
    let both = vec![u64::from(first.port), u64::from(second.port)];
    let mut sorted = both.clone();
    sorted.sort_unstable();
    eventually("both instances registered", Duration::from_secs(10), || {
        instances(&registry_client) == sorted
    });
    // Resolution spreads over both; each resolved instance really serves the route.
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let (status, found) = get(
            &registry_client,
            "/microservices?verb=GET&path=/foos/example",
        );
        assert_eq!(status, 200, "{found}");
        let port = found["port"].as_u64().unwrap();
        seen.insert(port);
        let service = Client::new(format!("http://127.0.0.1:{port}"));
        assert_eq!(
            service
                .request("GET", "/foos/example", None)
                .unwrap()
                .status,
            200
        );
    }
    assert_eq!(seen.len(), 2, "resolved to {seen:?}");

    // SIGINT (Ctrl-C): out of the registry at once.
    signal(&mut first, "-INT");
    assert_eq!(instances(&registry_client), [u64::from(second.port)]);

    // SIGKILL: unresolvable within the probe interval, gone after the lease.
    signal(&mut second, "-KILL");
    eventually(
        "the killed instance is not resolved",
        Duration::from_secs(3),
        || {
            get(
                &registry_client,
                "/microservices?verb=GET&path=/foos/example",
            )
            .0 == 404
        },
    );
    eventually(
        "the killed instance's lease ran out",
        Duration::from_secs(6),
        || instances(&registry_client).is_empty(),
    );

    // A restarted registry keeps what was registered.
    let third = quickstart(registry_process.port);
    eventually(
        "the third instance registered",
        Duration::from_secs(10),
        || instances(&registry_client) == [u64::from(third.port)],
    );
    signal(&mut registry_process, "-TERM");
    let mut restarted = registry(&db);
    let restarted_client = restarted.client.clone();
    assert!(
        instances(&restarted_client).contains(&u64::from(third.port)),
        "registrations survive a restart"
    );
    let mut third = third;
    signal(&mut third, "-TERM");
    signal(&mut restarted, "-TERM");
}

#[test]
fn two_registry_processes_on_one_postgresql_agree() {
    let storage = minos_support::postgres::fresh_schema_url();
    let mut a = registry_on(&storage);
    let mut b = registry_on(&storage);
    let mut service = quickstart(a.port);
    let port = u64::from(service.port);
    // Registered through one, resolved through the other.
    eventually(
        "the other registry resolves it",
        Duration::from_secs(10),
        || {
            let (status, found) = get(&b.client, "/microservices?verb=GET&path=/foos/example");
            status == 200 && found["port"].as_u64() == Some(port)
        },
    );
    signal(&mut service, "-TERM");
    eventually("both forget it", Duration::from_secs(5), || {
        instances(&a.client).is_empty() && instances(&b.client).is_empty()
    });
    signal(&mut a, "-TERM");
    signal(&mut b, "-TERM");
}
