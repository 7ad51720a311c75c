//! `minos new project`, `minos new microservice` and `minos set`: a project's files, written whole or
//! not at all.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// The file marking a project's root.
const MARKER: &str = "minos.toml";
/// Where a project's services live.
pub(crate) const SERVICES: &str = "microservices";
/// The first service's port; each new service takes the next free one.
pub(crate) const FIRST_PORT: u16 = 4545;

/// What `minos new` creates.
#[derive(clap::Subcommand)]
pub(crate) enum New {
    /// A project: a Cargo workspace for microservices, with a README, `.gitignore`, a compose file
    /// for PostgreSQL, Kafka, the registry and the gateway, and a CI script.
    Project {
        /// The project's name (lowercase letters, digits, `-` or `_`); also its directory.
        name: String,
        /// Build against the Minos checkout at DIR instead of the published crates (its `minos/`
        /// crate and its `Cargo.lock`).
        #[arg(long, value_name = "DIR")]
        minos_path: Option<PathBuf>,
    },
    /// A microservice in the current project (`microservices/NAME`): a root entity, a command
    /// service (create over REST and the broker), a query service (a view kept from the events,
    /// GET routes), `config.yml` and given/when/then tests; added to the workspace.
    Microservice {
        /// The service's name (lowercase letters, digits, `-` or `_`): its crate, its directory
        /// and its consumer group; `orders` gets the root entity `Order` and the routes `/orders`.
        name: String,
        /// Its HTTP port (default: the next port after the project's services, from 4545).
        #[arg(long)]
        port: Option<u16>,
    },
}

/// The backends `minos set` switches.
#[derive(clap::Subcommand)]
pub(crate) enum Set {
    /// The store of events, snapshots and the outbox: `postgres`, `sqlite` or `memory`.
    Database {
        /// `postgres`, `sqlite` or `memory`.
        backend: String,
        /// The service to change (default: the service whose directory you are in, else all).
        #[arg(long)]
        service: Option<String>,
        /// The PostgreSQL server (default `postgresql://postgres:postgres@localhost:5432/postgres`,
        /// the project's compose file); each service gets its own schema.
        #[arg(long)]
        url: Option<String>,
    },
    /// The broker: `kafka` or `memory` (in-process).
    Broker {
        /// `kafka` or `memory`.
        backend: String,
        /// The service to change (default: the service whose directory you are in, else all).
        #[arg(long)]
        service: Option<String>,
        /// Kafka's bootstrap servers (default `localhost:9092`).
        #[arg(long)]
        url: Option<String>,
    },
}

pub(crate) fn new(what: New) -> Result<()> {
    match what {
        New::Project { name, minos_path } => new_project(&name, minos_path.as_deref()),
        New::Microservice { name, port } => new_microservice(&name, port),
    }
}

pub(crate) type Result<T, E = String> = std::result::Result<T, E>;

pub(crate) fn failed(message: impl Into<String>) -> String {
    message.into()
}

pub(crate) fn io(what: &str, path: &Path, error: std::io::Error) -> String {
    failed(format!("{what} {}: {error}", path.display()))
}

/// Names become crates, directories, consumer groups and Rust identifiers: lowercase ASCII words
/// joined by `-` or `_`.
fn check_name(kind: &str, name: &str) -> Result<()> {
    const RESERVED: &[&str] = &[
        "minos",
        "test",
        "core",
        "std",
        "alloc",
        "proc_macro",
        "self",
        "crate",
        "super",
        "build",
        "deps",
        "examples",
        "target",
        "src",
        "as",
        "async",
        "await",
        "break",
        "const",
        "continue",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "fn",
        "for",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "match",
        "mod",
        "move",
        "mut",
        "pub",
        "ref",
        "return",
        "static",
        "struct",
        "trait",
        "true",
        "type",
        "unsafe",
        "use",
        "where",
        "while",
        "abstract",
        "become",
        "box",
        "do",
        "final",
        "macro",
        "override",
        "priv",
        "try",
        "typeof",
        "unsized",
        "virtual",
        "yield",
        "gen",
    ];
    let words: Vec<&str> = name.split(['-', '_']).collect();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && words.iter().all(|word| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if !valid {
        return Err(failed(format!(
            "`{name}` is not a valid {kind} name: use lowercase letters and digits, words joined by `-` or `_`, starting with a letter (like `orders` or `order-items`)"
        )));
    }
    if RESERVED.contains(&name.replace('-', "_").as_str()) {
        return Err(failed(format!(
            "`{name}` is reserved (a Rust keyword or crate name): choose another {kind} name"
        )));
    }
    Ok(())
}

/// Writes `files` under a fresh directory `target`: all of them, or nothing (they are written in a
/// hidden sibling directory first, which is renamed when complete).
fn write_tree(target: &Path, files: &[(String, String)]) -> Result<()> {
    let parent = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = parent.join(format!(".{name}.minos-new-{}", std::process::id()));
    let written = (|| {
        for (path, content) in files {
            let path = staging.join(path);
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
            }
            fs::write(&path, content).map_err(|e| io("cannot write", &path, e))?;
            #[cfg(unix)]
            if path.extension().is_some_and(|e| e == "sh") {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                    .map_err(|e| io("cannot make executable", &path, e))?;
            }
        }
        fs::rename(&staging, target).map_err(|e| io("cannot create", target, e))
    })();
    if written.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    written
}

/// Replaces `{{key}}` by its value.
fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (key, value) in values {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}

fn new_project(name: &str, minos_path: Option<&Path>) -> Result<()> {
    check_name("project", name)?;
    let target = PathBuf::from(name);
    if target.exists() {
        return Err(failed(format!(
            "`{name}` already exists here: choose another name or remove it"
        )));
    }
    let (dependency, lock) = match minos_path {
        Some(dir) => {
            let dir = dir.canonicalize().map_err(|e| io("--minos-path", dir, e))?;
            let manifest = dir.join("minos").join("Cargo.toml");
            if !manifest.is_file() {
                return Err(failed(format!(
                    "--minos-path {}: no `minos/Cargo.toml` there; give the root of a Minos for Rust checkout",
                    dir.display()
                )));
            }
            let path = dir.join("minos").display().to_string().replace('\\', "/");
            // The checkout's lock file: the project builds with the versions it was tested with.
            let lock = fs::read_to_string(dir.join("Cargo.lock")).ok();
            (format!("minos = {{ path = {path:?} }}"), lock)
        }
        None => (format!("minos = \"{}\"", env!("CARGO_PKG_VERSION")), None),
    };
    let values = [("project", name), ("minos_dependency", dependency.as_str())];
    let mut files: Vec<(String, String)> = [
        ("Cargo.toml", include_str!("templates/project.Cargo.toml")),
        (MARKER, include_str!("templates/project.minos.toml")),
        (".gitignore", include_str!("templates/project.gitignore")),
        ("README.md", include_str!("templates/project.README.md")),
        (
            "docker-compose.yml",
            include_str!("templates/project.docker-compose.yml"),
        ),
        (
            "deploy/minos.Dockerfile",
            include_str!("templates/project.minos.Dockerfile"),
        ),
        ("scripts/ci.sh", include_str!("templates/project.ci.sh")),
        (&format!("{SERVICES}/.gitkeep"), ""),
    ]
    .into_iter()
    .map(|(path, template)| (path.to_owned(), render(template, &values)))
    .collect();
    if let Some(lock) = lock {
        files.push(("Cargo.lock".into(), lock));
    }
    write_tree(&target, &files)?;
    println!("created the project `{name}` in ./{name}");
    println!("next: cd {name} && minos new microservice NAME");
    Ok(())
}

/// The project containing the working directory: the nearest directory up with a `minos.toml`.
pub(crate) fn project_root() -> Result<PathBuf> {
    let here = std::env::current_dir().map_err(|e| failed(format!("no working directory: {e}")))?;
    here.ancestors()
        .find(|dir| dir.join(MARKER).is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            failed(format!(
                "not inside a Minos project (no {MARKER} here or above {}): run `minos new project NAME` first, or cd into one",
                here.display()
            ))
        })
}

/// The project's services: directories of `microservices/` holding a `config.yml`, by name.
pub(crate) fn services(root: &Path) -> Result<Vec<String>> {
    let dir = root.join(SERVICES);
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries {
            let entry = entry.map_err(|e| io("cannot read", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.path().join("config.yml").is_file() {
                found.push(name);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The top-level scalar `key:` of a generated `config.yml`, and the `port:` of its `http:` section.
pub(crate) fn config_port(config: &str) -> Option<u16> {
    let mut in_http = false;
    for line in config.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') {
            in_http = line.trim_end() == "http:";
            if let Some(rest) = line.strip_prefix("http:") {
                // `http: { port: 4546 }`
                if let Some(port) = rest.split("port:").nth(1) {
                    return port
                        .trim_start()
                        .split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse()
                        .ok();
                }
            }
        } else if in_http {
            if let Some(port) = line.trim_start().strip_prefix("port:") {
                return port.trim().parse().ok();
            }
        }
    }
    None
}

/// `orders` → `Order`, `order-items` → `OrderItem`: the root entity of a service.
fn entity_name(service: &str) -> String {
    let words: Vec<&str> = service.split(['-', '_']).collect();
    let last = words.len() - 1;
    let mut out = String::new();
    for (i, word) in words.iter().enumerate() {
        let word = if i == last {
            singular(word)
        } else {
            (*word).to_owned()
        };
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    out
}

fn singular(word: &str) -> String {
    if let Some(stem) = word.strip_suffix("ies").filter(|stem| !stem.is_empty()) {
        return format!("{stem}y");
    }
    match word.strip_suffix('s') {
        Some(stem) if !stem.is_empty() && !stem.ends_with('s') => stem.to_owned(),
        _ => word.to_owned(),
    }
}

/// `Order` → `order`, `OrderItem` → `order_item`.
fn snake(entity: &str) -> String {
    let mut out = String::new();
    for (i, c) in entity.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn new_microservice(name: &str, port: Option<u16>) -> Result<()> {
    check_name("microservice", name)?;
    let root = project_root()?;
    let existing = services(&root)?;
    let target = root.join(SERVICES).join(name);
    if target.exists()
        || existing
            .iter()
            .any(|s| s.replace('-', "_") == name.replace('-', "_"))
    {
        return Err(failed(format!(
            "the project already has a microservice `{name}` ({}): choose another name",
            target.display()
        )));
    }
    let manifest_path = root.join("Cargo.toml");
    let manifest =
        fs::read_to_string(&manifest_path).map_err(|e| io("cannot read", &manifest_path, e))?;
    let mut document: toml_edit::DocumentMut = manifest.parse().map_err(|e| {
        failed(format!(
            "{}: not a valid Cargo.toml: {e}",
            manifest_path.display()
        ))
    })?;
    let member = format!("{SERVICES}/{name}");
    let members = document
        .get_mut("workspace")
        .and_then(|w| w.get_mut("members"))
        .and_then(|m| m.as_array_mut())
        .ok_or_else(|| {
            failed(format!(
                "{}: no `[workspace] members = [...]`: is this a project made by `minos new project`?",
                manifest_path.display()
            ))
        })?;
    members.push(member.as_str());
    members.fmt();
    let port = match port {
        Some(port) => port,
        None => {
            let taken: Vec<u16> = existing
                .iter()
                .filter_map(|s| {
                    fs::read_to_string(root.join(SERVICES).join(s).join("config.yml")).ok()
                })
                .filter_map(|config| config_port(&config))
                .collect();
            taken
                .iter()
                .max()
                .map_or(FIRST_PORT, |p| p.saturating_add(1))
        }
    };
    let entity = entity_name(name);
    let entity_snake = snake(&entity);
    let path = if name.ends_with('s') {
        name.replace('_', "-")
    } else if let Some(stem) = name.strip_suffix('y') {
        format!("{}ies", stem.replace('_', "-"))
    } else {
        format!("{}s", name.replace('_', "-"))
    };
    let port_text = port.to_string();
    let crate_name = name.replace('-', "_");
    let words = entity_snake.replace('_', " ");
    let path_snake = path.replace('-', "_");
    let values = [
        ("name", name),
        ("crate", crate_name.as_str()),
        ("Entity", entity.as_str()),
        ("snake", entity_snake.as_str()),
        ("entity_words", words.as_str()),
        ("path", path.as_str()),
        ("path_snake", path_snake.as_str()),
        ("port", port_text.as_str()),
    ];
    let files: Vec<(String, String)> = [
        ("Cargo.toml", include_str!("templates/service.Cargo.toml")),
        ("src/lib.rs", include_str!("templates/service.lib.rs")),
        ("src/main.rs", include_str!("templates/service.main.rs")),
        ("config.yml", include_str!("templates/service.config.yml")),
        (
            &format!("tests/{crate_name}.rs"),
            include_str!("templates/service.test.rs"),
        ),
    ]
    .into_iter()
    .map(|(path, template)| (path.to_owned(), render(template, &values)))
    .collect();
    fs::create_dir_all(root.join(SERVICES))
        .map_err(|e| io("cannot create", &root.join(SERVICES), e))?;
    write_tree(&target, &files)?;
    // The workspace learns of it last; if that fails, the service goes too.
    let staged = root.join(format!(".Cargo.toml.minos-new-{}", std::process::id()));
    let added = fs::write(&staged, document.to_string())
        .and_then(|()| fs::rename(&staged, &manifest_path))
        .map_err(|e| io("cannot update", &manifest_path, e));
    if let Err(error) = added {
        let _ = fs::remove_file(&staged);
        let _ = fs::remove_dir_all(&target);
        return Err(error);
    }
    println!(
        "created the microservice `{name}` in {SERVICES}/{name}: root entity `{entity}`, POST/GET /{path}, port {port}"
    );
    println!("run it: cargo run -p {name}; test it: cargo test -p {name}");
    Ok(())
}

/// The services `minos set` changes: `--service`, else the one whose directory holds the working
/// directory, else every one.
fn chosen_services(root: &Path, service: Option<String>) -> Result<Vec<String>> {
    let all = services(root)?;
    if let Some(service) = service {
        if !all.contains(&service) {
            return Err(failed(format!(
                "the project has no microservice `{service}` (it has: {}); `minos new microservice {service}` creates it",
                if all.is_empty() { "none".to_owned() } else { all.join(", ") }
            )));
        }
        return Ok(vec![service]);
    }
    let here = std::env::current_dir().map_err(|e| failed(format!("no working directory: {e}")))?;
    let services_dir = root.join(SERVICES);
    if let Ok(inside) = here.strip_prefix(&services_dir) {
        if let Some(first) = inside.components().next() {
            let name = first.as_os_str().to_string_lossy().into_owned();
            if all.contains(&name) {
                return Ok(vec![name]);
            }
        }
    }
    if all.is_empty() {
        return Err(failed(
            "the project has no microservices yet: `minos new microservice NAME` creates one",
        ));
    }
    Ok(all)
}

/// Replaces the top-level `key: value` line of a `config.yml` (or adds it after `name:`).
fn set_key(config: &str, key: &str, value: &str) -> Result<String> {
    let mut out = String::new();
    let mut replaced = false;
    let prefix = format!("{key}:");
    let mut lines = config.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with(&prefix) && !replaced {
            let rest = line[prefix.len()..].trim();
            // A section (`storage:` then indented lines) is not ours to rewrite.
            let section = rest.is_empty()
                && lines
                    .peek()
                    .is_some_and(|next| next.starts_with(' ') || next.starts_with('\t'));
            if section || rest.starts_with('{') {
                return Err(format!(
                    "`{key}` is a section in this config.yml: set it by hand to `{key}: {value}`"
                ));
            }
            let _ = writeln!(out, "{key}: {value}");
            replaced = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        let _ = writeln!(out, "{key}: {value}");
    }
    Ok(out)
}

pub(crate) fn set(what: Set) -> Result<()> {
    let root = project_root()?;
    let (key, backend, service, url) = match what {
        Set::Database {
            backend,
            service,
            url,
        } => ("storage", backend, service, url),
        Set::Broker {
            backend,
            service,
            url,
        } => ("broker", backend, service, url),
    };
    let value_for = |service: &str| -> Result<String> {
        match (key, backend.as_str()) {
            ("storage", "postgres" | "postgresql") => {
                let url = url.clone().unwrap_or_else(|| {
                    "postgresql://postgres:postgres@localhost:5432/postgres".into()
                });
                let separator = if url.contains('?') { '&' } else { '?' };
                Ok(format!(
                    "{url}{separator}schema={}",
                    service.replace('-', "_")
                ))
            }
            ("storage", "sqlite") => Ok(format!("sqlite://.minos/{service}.db")),
            ("storage", "memory") | ("broker", "memory") => Ok("memory".into()),
            ("broker", "kafka") => Ok(format!(
                "kafka://{}",
                url.clone()
                    .unwrap_or_else(|| "localhost:9092".into())
                    .trim_start_matches("kafka://")
            )),
            ("storage", other) => Err(failed(format!(
                "unknown database `{other}`: write `postgres`, `sqlite` or `memory`"
            ))),
            (_, other) => Err(failed(format!(
                "unknown broker `{other}`: write `kafka` or `memory`"
            ))),
        }
    };
    let chosen = chosen_services(&root, service)?;
    // Every file is checked and prepared before any is written.
    let mut changes = Vec::new();
    for service in &chosen {
        let path = root.join(SERVICES).join(service).join("config.yml");
        let config = fs::read_to_string(&path).map_err(|e| io("cannot read", &path, e))?;
        let value = value_for(service)?;
        let changed = set_key(&config, key, &value)
            .map_err(|e| failed(format!("{}: {e}", path.display())))?;
        changes.push((path, changed, service, value));
    }
    for (path, changed, service, value) in changes {
        fs::write(&path, changed).map_err(|e| io("cannot write", &path, e))?;
        println!("{service}: {key}: {value}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_entities_and_paths() {
        assert_eq!(entity_name("orders"), "Order");
        assert_eq!(entity_name("order-items"), "OrderItem");
        assert_eq!(entity_name("categories"), "Category");
        assert_eq!(entity_name("address"), "Address");
        assert_eq!(snake("OrderItem"), "order_item");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("project", "shop").is_ok());
        assert!(check_name("project", "my-shop2").is_ok());
        for bad in [
            "", "Shop", "1shop", "sh op", "shop-", "a--b", "minos", "type", "é",
        ] {
            assert!(check_name("project", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_keys_are_replaced_or_added() {
        let config = "name: a\nstorage: memory\nhttp:\n  port: 4546\n";
        assert_eq!(config_port(config), Some(4546));
        assert_eq!(
            set_key(config, "storage", "sqlite://x").unwrap(),
            "name: a\nstorage: sqlite://x\nhttp:\n  port: 4546\n"
        );
        assert_eq!(
            set_key(config, "broker", "memory").unwrap(),
            "name: a\nstorage: memory\nhttp:\n  port: 4546\nbroker: memory\n"
        );
        assert!(set_key(config, "http", "x").is_err());
    }
}
