//! The system as processes: `minos discovery`, `minos gateway` and ecommerce services on PostgreSQL
//! (a schema each) and Kafka, each on a free port, all with one `auth:` secret.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use minos_support::http::Client;
use minos_support::postgres::fresh_schema_url;
use minos_support::process::{eventually, minos_binary, start_process, Process};

/// The secret every process of a test system shares (`auth.secret`).
pub const SECRET: &str = "ecommerce-test-secret";

pub fn spawn(mut command: Command, label: &str) -> Process {
    command.env("MINOS_AUTH_SECRET", SECRET);
    start_process(command, label)
}

pub fn minos() -> Command {
    Command::new(minos_binary(env!("CARGO_BIN_EXE_product")))
}

pub fn service(binary: &str, registry: &Process) -> Process {
    let kafka = std::env::var("MINOS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let mut command = Command::new(binary);
    command
        .env("MINOS_STORAGE", fresh_schema_url())
        .env("MINOS_BROKER", format!("kafka://{kafka}"))
        .env("MINOS_DISCOVERY_URL", format!("http://{}", registry.addr))
        .env("MINOS_DISCOVERY_HEARTBEAT_MS", "300");
    spawn(command, binary.rsplit('/').next().unwrap_or(binary))
}

/// The registry, the given services (binary paths) and the gateway; waits until the gateway routes
/// each (method, path) of `ready` to a service.
pub fn system(
    binaries: &[&str],
    ready: &[(&str, &str)],
) -> (Vec<Process>, Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = minos();
    command.args([
        "discovery",
        "--port",
        "0",
        "--storage",
        &format!("sqlite://{}", dir.path().join("discovery.db").display()),
    ]);
    command
        .env("MINOS_REGISTRY_PROBE_INTERVAL_MS", "300")
        .env("MINOS_REGISTRY_REFRESH_MS", "50");
    let registry = spawn(command, "discovery");
    let mut processes = Vec::new();
    for binary in binaries {
        processes.push(service(binary, &registry));
    }
    let mut command = minos();
    command
        .args(["gateway", "--port", "0"])
        .env("MINOS_DISCOVERY_URL", format!("http://{}", registry.addr));
    let gateway = spawn(command, "gateway");
    let api = Client::new(format!("http://{}", gateway.addr));
    eventually(
        "the gateway routes to every service",
        Duration::from_secs(30),
        || {
            ready.iter().all(|(method, path)| {
                let answer = match *method {
                    "GET" => api.get(path),
                    method => api.request(method, path, Some("{}")),
                };
                answer.is_ok_and(|a| a.status != 502 && a.status != 503 && a.status != 404)
            })
        },
    );
    processes.push(registry);
    processes.push(gateway);
    (processes, api, dir)
}
