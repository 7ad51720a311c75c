//! The gateway as a reverse proxy, against nginx: one tiny backend answering a small JSON, reached
//! directly, through `minos gateway` (with `minos discovery` as its registry) and through nginx
//! (keep-alive upstream, the same `X-Forwarded-*` headers), each loaded by keep-alive HTTP/1.1
//! connections for a fixed time at concurrency 1, 8 and 32. Prints requests/s, p50 and p99 for each,
//! and the gateway's ratios to nginx.
//!
//! `cargo bench -p minos --bench gateway` (`MINOS_BENCH_SCALE=0.1` for a quick run). nginx is
//! `/usr/sbin/nginx` (`apt-get install nginx`); without it the nginx rows are skipped.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use minos_support::bench::{percentile, scale};
use minos_support::process::spawn_listening;
use tokio::net::{TcpListener, TcpStream};

const NGINX: &str = "/usr/sbin/nginx";
const CONCURRENCY: [usize; 3] = [1, 8, 32];

/// A process stopped when dropped: with SIGTERM, so that nginx's master stops its workers too.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The backend: `{"id": "<last segment>", "ok": true}` for any request.
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|request: Request<hyper::body::Incoming>| {
                        let id = request
                            .uri()
                            .path()
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                        async move {
                            let body = format!("{{\"id\":\"{id}\",\"ok\":true}}");
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            response.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, Infallible>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn minos(args: &[&str], envs: &[(&str, String)], label: &str) -> (Process, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_minos"));
    command
        .args(args)
        .env("MINOS_HTTP_HOST", "127.0.0.1")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    for (key, value) in envs {
        command.env(key, value);
    }
    let started = spawn_listening(&mut command, label, Duration::from_secs(30));
    let lines = started.lines;
    std::thread::spawn(move || while lines.recv().is_ok() {});
    (Process(started.child), started.addr)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// nginx proxying to `backend` on a free port, configured in `dir`; `None` when it is not installed.
fn nginx(dir: &Path, backend: SocketAddr, workers: usize) -> Option<(Process, String)> {
    if !Path::new(NGINX).exists() {
        return None;
    }
    let port = free_port();
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let d = dir.display();
    let config = format!(
        r#"
{user}
worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream backend {{
        server {backend};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
}}
"#,
        user = if root { "user root;" } else { "" },
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, config).expect("write nginx.conf");
    let child = Command::new(NGINX)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&file)
        .stdout(Stdio::null())
        .spawn()
        .expect("start nginx");
    let process = Process(child);
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not listen on {addr}: see {d}/error.log"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((process, addr))
}

/// One keep-alive connection sending `GET path` in a loop until `end`; the latencies after `measure_from`.
async fn connection(
    addr: String,
    path: String,
    measure_from: Instant,
    end: Instant,
) -> Vec<Duration> {
    let stream = TcpStream::connect(&addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let (mut sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(driver);
    let mut latencies = Vec::with_capacity(100_000);
    loop {
        let begun = Instant::now();
        if begun >= end {
            break;
        }
        let request = Request::get(path.as_str())
            .header(hyper::header::HOST, addr.as_str())
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200, "GET {path} through {addr}");
        response.into_body().collect().await.expect("body");
        if begun >= measure_from {
            latencies.push(begun.elapsed());
        }
    }
    latencies
}

/// What one target did at one concurrency, over all rounds.
#[derive(Default)]
struct Measure {
    /// Requests/s of each round.
    rounds: Vec<f64>,
    /// Every latency measured.
    latencies: Vec<Duration>,
    requests: f64,
    /// CPU time the proxy used (user, kernel), when known.
    cpu: Option<(Duration, Duration)>,
}

impl Measure {
    /// The median round's requests/s.
    fn rps(&self) -> f64 {
        let mut rounds = self.rounds.clone();
        rounds.sort_by(f64::total_cmp);
        rounds.get(rounds.len() / 2).copied().unwrap_or_default()
    }

    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        percentile(&self.latencies, p)
    }

    /// CPU per request, user and kernel.
    fn cpu_per_request(&self) -> Option<(Duration, Duration)> {
        let (user, system) = self.cpu?;
        let n = self.requests.max(1.0);
        Some((user.div_f64(n), system.div_f64(n)))
    }
}

/// CPU time used so far by `pid` and its children (nginx's workers), in user space and in the
/// kernel, from `/proc` (Linux only).
fn cpu_time(pid: u32) -> Option<(Duration, Duration)> {
    let ticks = |pid: &str| -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which is in parentheses: utime is the 12th, stime the 13th.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
    };
    let mut total = ticks(&pid.to_string())?;
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children.split_whitespace() {
        let (user, system) = ticks(child).unwrap_or_default();
        total = (total.0 + user, total.1 + system);
    }
    // Clock ticks are 1/100 s on Linux.
    Some((
        Duration::from_millis(total.0 * 10),
        Duration::from_millis(total.1 * 10),
    ))
}

/// `concurrency` connections for `duration` (after a short warm-up): the latencies and requests/s.
async fn load(addr: &str, concurrency: usize, duration: Duration) -> (Vec<Duration>, f64) {
    let measure_from = Instant::now() + Duration::from_millis(200);
    let end = measure_from + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|c| {
            let path = format!("/bench/{c}");
            tokio::spawn(connection(addr.to_owned(), path, measure_from, end))
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("load connection"));
    }
    let rps = latencies.len() as f64 / duration.as_secs_f64();
    (latencies, rps)
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The backend runs on a thread of its own; the load on another.
    let backend_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("backend runtime");
    let backend = backend_runtime.block_on(backend());
    let load_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("load runtime");

    let dir = tempfile::tempdir().expect("tempdir");
    let storage = format!("sqlite://{}", dir.path().join("discovery.db").display());
    let (_registry, registry) = minos(
        &["discovery", "--port", "0", "--storage", &storage],
        // The backend does not heartbeat: its registration must outlast the run.
        &[("MINOS_REGISTRY_LEASE_TTL_MS", "86400000".to_owned())],
        "discovery",
    );
    let registration = serde_json::json!({
        "address": "127.0.0.1", "port": backend.port(), "endpoints": [["GET", "/bench/{id}"]],
    });
    let registered = minos_support::http::Client::new(format!("http://{registry}"))
        .post("/microservices/bench", &registration.to_string())
        .expect("register the backend");
    assert_eq!(registered.status, 201, "{}", registered.body);
    // The same number of worker threads (processes for nginx) for both proxies: half the cores by
    // default, the other half being the load's and the backend's.
    let workers: usize = std::env::var("MINOS_BENCH_PROXY_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or((cores / 2).max(1));
    let (gateway_process, gateway) = minos(
        &["gateway", "--port", "0"],
        &[
            ("MINOS_DISCOVERY_URL", format!("http://{registry}")),
            ("MINOS_GATEWAY_WORKERS", workers.to_string()),
        ],
        "gateway",
    );
    let nginx_dir = tempfile::tempdir().expect("tempdir");
    let nginx = nginx(nginx_dir.path(), backend, workers);
    if nginx.is_none() {
        println!("nginx is not installed at {NGINX}: its rows are skipped (apt-get install nginx)");
    }

    let duration = Duration::from_millis(scale(1_000, 200) as u64);
    let rounds = 3;
    println!(
        "gateway vs nginx, {cores} cores, {workers} proxy worker(s) each (MINOS_BENCH_PROXY_WORKERS), \
         {rounds} interleaved rounds of {duration:?} per target, \
         GET /bench/{{id}} -> small JSON (req/s: the median round; latencies: all rounds)"
    );
    println!(
        "{:>5} {:>8} {:>10} {:>9} {:>9}  proxy CPU/req (user + kernel)",
        "conns", "target", "req/s", "p50", "p99"
    );
    let mut targets: Vec<(&str, String, Option<u32>)> = vec![
        ("direct", backend.to_string(), None),
        ("gateway", gateway, Some(gateway_process.0.id())),
    ];
    if let Some((process, addr)) = &nginx {
        targets.push(("nginx", addr.clone(), Some(process.0.id())));
    }
    for concurrency in CONCURRENCY {
        let mut results: Vec<(&str, Measure)> = targets
            .iter()
            .map(|(label, _, _)| (*label, Measure::default()))
            .collect();
        for _ in 0..rounds {
            for ((_, addr, pid), (_, measure)) in targets.iter().zip(&mut results) {
                let before = pid.and_then(cpu_time);
                let (latencies, rps) = load_runtime.block_on(load(addr, concurrency, duration));
                if let (Some(before), Some(after)) = (before, pid.and_then(cpu_time)) {
                    let (user, system) = measure.cpu.unwrap_or_default();
                    measure.cpu = Some((user + after.0 - before.0, system + after.1 - before.1));
                }
                // The warm-up's requests used CPU too: count them in.
                measure.requests += rps * (duration.as_secs_f64() + 0.2);
                measure.rounds.push(rps);
                measure.latencies.extend(latencies);
            }
        }
        let mut summary: Vec<(&str, f64, Duration, Duration)> = Vec::new();
        for (label, measure) in &mut results {
            let (p50, p99) = (measure.percentile(0.5), measure.percentile(0.99));
            let cpu = measure
                .cpu_per_request()
                .map_or("-".to_owned(), |(user, system)| {
                    format!("{:.1?} ({user:.1?} + {system:.1?})", user + system)
                });
            println!(
                "{concurrency:>5} {label:>8} {:>10.0} {p50:>9.1?} {p99:>9.1?}  {cpu}",
                measure.rps()
            );
            summary.push((label, measure.rps(), p50, p99));
        }
        let find = |name: &str| summary.iter().find(|(l, ..)| *l == name).copied();
        if let (Some(direct), Some(gateway), Some(nginx)) =
            (find("direct"), find("gateway"), find("nginx"))
        {
            let added = |p50: Duration| p50.saturating_sub(direct.2);
            println!(
                "{concurrency:>5} gateway/nginx: throughput x{:.2}, p50 x{:.2}, p99 x{:.2}; \
                 added p50: gateway {:.1?}, nginx {:.1?}",
                gateway.1 / nginx.1,
                gateway.2.as_secs_f64() / nginx.2.as_secs_f64(),
                gateway.3.as_secs_f64() / nginx.3.as_secs_f64(),
                added(gateway.2),
                added(nginx.2),
            );
        }
    }
}
