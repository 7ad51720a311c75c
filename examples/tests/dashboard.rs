//! The dashboard in a real browser: headless Chromium loads `minos dashboard` against a registry and
//! the `foo` and `foobar` services over PostgreSQL and Kafka, with tokens checked; the page shows the
//! services, a saga that failed with its error, and that saga's log lines across both services. A
//! screenshot is saved (`target/tmp/dashboard.png`; also at `$MINOS_DASHBOARD_SCREENSHOT` when set).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use minos_support::http::Client;
use minos_support::postgres::fresh_schema_url;
use minos_support::process::{eventually, minos_binary, start_process as start};
use serde_json::{json, Value};

const SECRET: &str = "dashboard-test-secret-of-32-bytes!";

fn token(minos: &Path, subject: &str, roles: &str) -> String {
    let output = Command::new(minos)
        .args([
            "token", "--secret", SECRET, "--sub", subject, "--roles", roles,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Chromium, or why the test cannot run (it is installed by `.ci/run`).
fn chromium() -> PathBuf {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("chromium is not installed: `apt-get install chromium` (.ci/run installs it)");
}

/// Runs headless Chromium on `url` with `args` (a profile of its own, scripts given 10 s).
fn headless(chromium: &Path, args: &[String], url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1400,1100",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap()
}

/// The page's DOM after its scripts ran.
fn rendered(chromium: &Path, url: &str) -> String {
    let output = headless(chromium, &["--dump-dom".to_owned()], url);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn screenshot(chromium: &Path, url: &str, file: &Path) {
    let output = headless(chromium, &[format!("--screenshot={}", file.display())], url);
    assert!(
        file.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_dashboard_shows_services_a_failed_saga_and_its_trace_in_a_browser() {
    let chromium = chromium();
    let minos = minos_binary(env!("CARGO_BIN_EXE_foo"));
    let bootstrap = std::env::var("MINOS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(&minos);
    command
        .args(["discovery", "--port", "0", "--storage"])
        .arg(format!(
            "sqlite://{}",
            dir.path().join("discovery.db").display()
        ))
        .env("MINOS_AUTH_SECRET", SECRET);
    let registry = start(command, "discovery");
    let registry_url = format!("http://{}", registry.addr);

    let suffix = &minos::Uuid::new_v4().simple().to_string()[..8];
    let (foo_name, foobar_name) = (format!("foo-{suffix}"), format!("foobar-{suffix}"));
    let service = |binary: &str, name: &str| {
        let mut command = Command::new(binary);
        command
            .env("MINOS_NAME", name)
            .env("MINOS_STORAGE", fresh_schema_url())
            .env("MINOS_BROKER", format!("kafka://{bootstrap}"))
            .env("MINOS_DISCOVERY_URL", &registry_url)
            .env("MINOS_AUTH_SECRET", SECRET)
            .env("MINOS_LOG_AGGREGATE", "true");
        start(command, name)
    };
    let _foobar = service(env!("CARGO_BIN_EXE_foobar"), &foobar_name);
    let foo = service(env!("CARGO_BIN_EXE_foo"), &foo_name);

    let mut command = Command::new(&minos);
    command
        .args(["dashboard", "--port", "0", "--registry", &registry_url])
        .args(["--broker", &format!("kafka://{bootstrap}")])
        .env("MINOS_AUTH_SECRET", SECRET);
    let dashboard = start(command, "dashboard");
    let url = format!("http://{}/", dashboard.addr);

    // A saga that fails in foobar (an empty text is refused) and is compensated in foo.
    let alice = token(&minos, "alice", "user");
    let client = Client::new(format!("http://{}", foo.addr)).with_token(&alice);
    let created = client.post("/foos", r#"{"bar": "dashboard"}"#).unwrap();
    assert_eq!(created.status, 200, "{}", created.body);
    let started = client
        .post(
            "/foos/add-foobar",
            &json!({"uuid": created.json()["uuid"], "something": ""}).to_string(),
        )
        .unwrap();
    assert_eq!(started.status, 200, "{}", started.body);
    let execution = started.json()["uuid"].as_str().unwrap().to_owned();
    let admin = token(&minos, "root", "admin");
    let foo_admin = Client::new(format!("http://{}", foo.addr)).with_token(&admin);
    let mut ended = Value::Null;
    eventually("the saga to fail", Duration::from_secs(60), || {
        ended = foo_admin
            .get(&format!("/saga/executions/{execution}"))
            .unwrap()
            .json();
        ended["status"] == json!("errored")
    });
    let trace = ended["trace_id"]
        .as_str()
        .expect("the saga's trace")
        .to_owned();

    // The data needs an admin token; the page itself is served to anyone and says so.
    let api = Client::new(format!("http://{}", dashboard.addr));
    assert_eq!(api.get("/api/overview").unwrap().status, 401);
    assert_eq!(
        api.clone()
            .with_token(&alice)
            .get("/api/overview")
            .unwrap()
            .status,
        403
    );
    let page = rendered(&chromium, &url);
    assert!(
        page.contains("needs an access token with the admin role"),
        "{page}"
    );

    // Both services registered and healthy, then the failed saga and its log lines.
    let with_admin = api.with_token(&admin);
    eventually(
        "both services healthy on the dashboard",
        Duration::from_secs(30),
        || {
            let overview = with_admin.get("/api/overview").unwrap().json();
            overview["services"].as_array().is_some_and(|services| {
                [&foo_name, &foobar_name].iter().all(|name| {
                    services.iter().any(|s| {
                        s["name"] == json!(name)
                            && s["instances"][0]["health"]["status"] == json!("ok")
                    })
                })
            })
        },
    );
    eventually("the trace's log lines", Duration::from_secs(30), || {
        let logs = with_admin
            .get(&format!("/api/logs?trace={trace}"))
            .unwrap()
            .json();
        logs["records"].as_array().is_some_and(|records| {
            records.iter().any(|r| r["service"] == json!(foobar_name))
                && records.iter().any(|r| r["service"] == json!(foo_name))
        })
    });
    let address = format!("{url}#token={admin}&trace={trace}");
    let page = rendered(&chromium, &address);
    for shown in [
        foo_name.as_str(),
        foobar_name.as_str(),
        "registry ok",
        execution.as_str(),
        "errored",
        "must not be empty",
        "POST /foos/add-foobar",
    ] {
        assert!(
            page.contains(shown),
            "the page does not show `{shown}`:\n{page}"
        );
    }
    // The trace's log lines, from both services, in the page.
    let logs = page.split("id=\"logs\"").nth(1).expect("the log panel");
    assert!(
        logs.contains(&foobar_name) && logs.contains(&foo_name),
        "{logs}"
    );
    assert!(logs.contains("saga failed"), "{logs}");

    let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&file);
    screenshot(&chromium, &address, &file);
    let png = std::fs::read(&file).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    println!("dashboard screenshot: {}", file.display());
    if let Ok(copy) = std::env::var("MINOS_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&file, copy).unwrap();
    }
}
