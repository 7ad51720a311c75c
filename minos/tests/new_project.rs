//! `minos new project`, `minos new microservice`, `minos set` and `minos deploy`, used as a developer
//! uses them: in a temporary directory, then the generated project's own tests run offline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn minos(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_minos"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the minos command runs")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = minos(dir, args);
    assert!(
        out.status.success(),
        "minos {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a failing command; returns what it said on stderr.
fn refused(dir: &Path, args: &[&str]) -> String {
    let out = minos(dir, args);
    assert!(!out.status.success(), "minos {args:?} should fail");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.starts_with("minos: "), "{stderr}");
    stderr
}

/// This checkout's root: what `--minos-path` points at.
fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every file under `dir`, relative, sorted (hidden staging leftovers included).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn a_new_project_and_microservice_pass_their_own_tests_offline() {
    let temp = tempfile::tempdir().unwrap();
    let checkout = checkout();
    let said = ok(
        temp.path(),
        &[
            "new",
            "project",
            "shop",
            "--minos-path",
            checkout.to_str().unwrap(),
        ],
    );
    assert!(said.contains("shop"), "{said}");
    let shop = temp.path().join("shop");
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "minos.toml",
        "README.md",
        ".gitignore",
        "docker-compose.yml",
        "scripts/ci.sh",
    ] {
        assert!(shop.join(file).is_file(), "{file} missing");
    }
    let readme = std::fs::read_to_string(shop.join("README.md")).unwrap();
    assert!(
        readme.contains("cargo run -p") && readme.contains("cargo test"),
        "{readme}"
    );

    // From a subdirectory of the project, as from its root.
    std::fs::create_dir_all(shop.join("docs")).unwrap();
    ok(&shop.join("docs"), &["new", "microservice", "orders"]);
    let orders = shop.join("microservices/orders");
    for file in [
        "Cargo.toml",
        "config.yml",
        "src/lib.rs",
        "src/main.rs",
        "tests/orders.rs",
    ] {
        assert!(orders.join(file).is_file(), "{file} missing");
    }
    let manifest = std::fs::read_to_string(shop.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("\"microservices/orders\""), "{manifest}");
    let lib = std::fs::read_to_string(orders.join("src/lib.rs")).unwrap();
    for part in [
        "pub struct Order",
        "\"CreateOrder\"",
        "POST /orders",
        "GET /orders/{uuid}",
        "OrderListing",
    ] {
        assert!(
            lib.contains(part),
            "{part} missing from the service:\n{lib}"
        );
    }

    // The generated project is formatted and its tests pass with no network. Its build shares a
    // target directory under this workspace's, so a second run rebuilds only what changed.
    let target = checkout.join("target").join("generated-projects");
    let fmt = Command::new("cargo")
        .args(["fmt", "--check"])
        .current_dir(&shop)
        .output()
        .unwrap();
    assert!(
        fmt.status.success(),
        "the generated code is not formatted:\n{}",
        String::from_utf8_lossy(&fmt.stdout)
    );
    let test = Command::new("cargo")
        .args(["test", "--offline", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_NET_OFFLINE", "true")
        .env_remove("RUSTFLAGS")
        .current_dir(&shop)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(
        test.status.success(),
        "the generated project's tests failed:\n{said}"
    );
    assert!(said.contains("test result: ok. 4 passed"), "{said}");
}

#[test]
fn mistakes_are_refused_and_leave_nothing_behind() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();

    let said = refused(dir, &["new", "microservice", "orders"]);
    assert!(said.contains("not inside a Minos project"), "{said}");
    assert!(said.contains("minos new project"), "{said}");
    let said = refused(dir, &["set", "database", "postgres"]);
    assert!(said.contains("not inside a Minos project"), "{said}");
    let said = refused(dir, &["deploy"]);
    assert!(said.contains("not inside a Minos project"), "{said}");

    for bad in ["Shop", "my shop", "1shop", "shop-", "type", "minos", "a/b"] {
        let said = refused(dir, &["new", "project", bad]);
        assert!(
            said.contains(bad) && (said.contains("lowercase") || said.contains("reserved")),
            "{bad}: {said}"
        );
    }
    let said = refused(
        dir,
        &[
            "new",
            "project",
            "shop",
            "--minos-path",
            dir.to_str().unwrap(),
        ],
    );
    assert!(said.contains("no `minos/Cargo.toml`"), "{said}");
    assert!(tree(dir).is_empty(), "left behind: {:?}", tree(dir));

    ok(dir, &["new", "project", "shop"]);
    let shop = dir.join("shop");
    let manifest = std::fs::read_to_string(shop.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains(&format!("minos = \"{}\"", env!("CARGO_PKG_VERSION"))),
        "without --minos-path the published crate: {manifest}"
    );
    let before = tree(dir);
    let said = refused(dir, &["new", "project", "shop"]);
    assert!(said.contains("already exists"), "{said}");
    assert_eq!(tree(dir), before);

    let said = refused(&shop, &["deploy"]);
    assert!(said.contains("no microservices"), "{said}");
    ok(&shop, &["new", "microservice", "orders"]);
    let before = tree(dir);
    let said = refused(&shop, &["new", "microservice", "orders"]);
    assert!(
        said.contains("already has a microservice `orders`"),
        "{said}"
    );
    let said = refused(&shop, &["new", "microservice", "Payments"]);
    assert!(said.contains("not a valid microservice name"), "{said}");
    let said = refused(&shop, &["set", "database", "mongodb"]);
    assert!(
        said.contains("unknown database `mongodb`") && said.contains("postgres"),
        "{said}"
    );
    let said = refused(&shop, &["set", "broker", "rabbitmq"]);
    assert!(
        said.contains("unknown broker `rabbitmq`") && said.contains("kafka"),
        "{said}"
    );
    let said = refused(&shop, &["set", "broker", "kafka", "--service", "payments"]);
    assert!(
        said.contains("no microservice `payments`") && said.contains("orders"),
        "{said}"
    );
    assert_eq!(tree(dir), before, "a refused command changed files");

    // A workspace manifest the command cannot extend: refused before anything is written.
    let manifest_path = shop.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    std::fs::write(&manifest_path, "[package]\nname = \"x\"\n").unwrap();
    let before = tree(dir);
    let said = refused(&shop, &["new", "microservice", "payments"]);
    assert!(said.contains("members"), "{said}");
    assert_eq!(tree(dir), before);
    std::fs::write(&manifest_path, manifest).unwrap();

    // --help for every command.
    for command in [
        vec!["--help"],
        vec!["new", "--help"],
        vec!["new", "project", "--help"],
        vec!["new", "microservice", "--help"],
        vec!["set", "--help"],
        vec!["set", "database", "--help"],
        vec!["deploy", "--help"],
    ] {
        let help = ok(dir, &command);
        assert!(help.contains("Usage: minos"), "{command:?}: {help}");
    }
}

#[test]
fn set_switches_backends_and_deploy_writes_valid_manifests() {
    let temp = tempfile::tempdir().unwrap();
    ok(temp.path(), &["new", "project", "shop"]);
    let shop = temp.path().join("shop");
    ok(&shop, &["new", "microservice", "orders"]);
    ok(
        &shop,
        &["new", "microservice", "payments", "--port", "4600"],
    );
    ok(&shop, &["new", "microservice", "categories"]);
    let config = |service: &str| {
        minos::Config::load(shop.join("microservices").join(service).join("config.yml")).unwrap()
    };
    assert_eq!(config("orders").http.port, 4545);
    assert_eq!(config("payments").http.port, 4600);
    assert_eq!(config("categories").http.port, 4601, "the next free port");
    let categories =
        std::fs::read_to_string(shop.join("microservices/categories/src/lib.rs")).unwrap();
    assert!(
        categories.contains("pub struct Category") && categories.contains("\"POST /categories\"")
    );

    // Inside a service's directory: that service only.
    let said = ok(
        &shop.join("microservices/orders/src"),
        &["set", "database", "postgres"],
    );
    assert!(said.contains("orders"), "{said}");
    assert_eq!(
        config("orders").storage,
        "postgresql://postgres:postgres@localhost:5432/postgres?schema=orders"
    );
    assert_eq!(config("payments").storage, "sqlite://.minos/payments.db");
    // At the root: every service.
    ok(&shop, &["set", "broker", "kafka"]);
    for service in ["orders", "payments", "categories"] {
        assert_eq!(config(service).broker, "kafka://localhost:9092");
    }
    ok(&shop, &["set", "broker", "memory", "--service", "payments"]);
    assert_eq!(config("payments").broker, "memory");
    ok(
        &shop,
        &["set", "database", "memory", "--service", "payments"],
    );
    assert_eq!(config("payments").storage, "memory");
    ok(
        &shop,
        &[
            "set",
            "database",
            "postgres",
            "--url",
            "postgresql://db.internal/shop",
            "--service",
            "payments",
        ],
    );
    assert_eq!(
        config("payments").storage,
        "postgresql://db.internal/shop?schema=payments"
    );

    let said = ok(&shop, &["deploy"]);
    assert!(said.contains("deploy/docker-compose.yml"), "{said}");
    for service in ["orders", "payments", "categories"] {
        let dockerfile =
            std::fs::read_to_string(shop.join("microservices").join(service).join("Dockerfile"))
                .unwrap();
        assert!(dockerfile.contains(&format!("cargo build --release --locked -p {service}")));
        assert!(dockerfile.contains(&format!("COPY microservices/{service}/config.yml")));
    }
    // The compose file: every service built from a Dockerfile that exists, dependencies that exist.
    let check = Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import os, sys, yaml
path = sys.argv[1]
doc = yaml.safe_load(open(path))
base = os.path.dirname(path)
services = doc["services"]
for name in ["postgres", "kafka", "discovery", "gateway", "orders", "payments", "categories"]:
    assert name in services, name
for name, service in services.items():
    assert "image" in service or "build" in service, name
    if "build" in service:
        context = os.path.join(base, service["build"]["context"])
        assert os.path.isfile(os.path.join(context, service["build"]["dockerfile"])), name
    for dependency in service.get("depends_on", []):
        assert dependency in services, (name, dependency)
assert services["payments"]["environment"]["MINOS_HTTP_PORT"] == "4600"
print("ok")
"#,
        )
        .arg(shop.join("deploy/docker-compose.yml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let said = ok(&shop, &["deploy", "kubernetes"]);
    assert!(said.contains("deploy/kubernetes/orders.yaml"), "{said}");
    let manifests: Vec<PathBuf> = ["orders", "payments", "categories", "minos"]
        .iter()
        .map(|name| shop.join("deploy/kubernetes").join(format!("{name}.yaml")))
        .collect();
    let validated = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .args(&manifests)
        .output();
    let validated = validated.expect("python3 runs");
    let said = String::from_utf8_lossy(&validated.stdout).into_owned()
        + &String::from_utf8_lossy(&validated.stderr);
    assert!(
        !said.contains("No module named kubernetes_validate"),
        "kubernetes-validate is not installed: scripts/test.sh installs it (pip install kubernetes-validate)"
    );
    assert!(validated.status.success(), "{said}");
    assert_eq!(said.matches("passed").count(), 10, "{said}");
}
