//! The system as processes: `minos discovery`, `minos gateway` and ecommerce services on PostgreSQL
//! (a schema each) and Kafka, each on a free port, all with one `auth:` secret.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use minos_support::http::Client;
use minos_support::postgres::fresh_schema_url;
use minos_support::process::{eventually, minos_binary, start_process, Process};
use serde_json::{json, Value};

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

/// The eight services' binaries.
pub const SHOP: [&str; 8] = [
    env!("CARGO_BIN_EXE_authentication"),
    env!("CARGO_BIN_EXE_customer"),
    env!("CARGO_BIN_EXE_product"),
    env!("CARGO_BIN_EXE_cart"),
    env!("CARGO_BIN_EXE_ticket"),
    env!("CARGO_BIN_EXE_payment"),
    env!("CARGO_BIN_EXE_order"),
    env!("CARGO_BIN_EXE_review"),
];

/// The whole shop: the registry, the eight services and the gateway, once the gateway routes to each.
pub fn shop() -> (Vec<Process>, Client, tempfile::TempDir) {
    system(
        &SHOP,
        &[
            ("GET", "/login"),
            ("POST", "/customers"),
            ("GET", "/products"),
            ("POST", "/carts"),
            ("POST", "/tickets"),
            ("POST", "/payments"),
            ("POST", "/orders"),
            ("GET", "/reviews/last"),
        ],
    )
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

pub fn basic(username: &str, password: &str) -> String {
    // RFC 4648 base64 of `username:password`, written out to keep the test free of a dependency.
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{username}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

pub fn login(api: &Client, username: &str, password: &str) -> (u16, Value) {
    let answer = api
        .clone()
        .with_header("authorization", &basic(username, password))
        .get("/login")
        .unwrap();
    (answer.status, answer.json())
}

pub fn register(api: &Client, username: &str, name: &str) -> (u16, Value) {
    let body = json!({
        "username": username, "password": "correct horse",
        "name": name, "surname": "Liddell", "address": {"street": "Rabbit Hole", "street_no": 1},
    });
    let answer = api.post("/login", &body.to_string()).unwrap();
    (answer.status, answer.json())
}
