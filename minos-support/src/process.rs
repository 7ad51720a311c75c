//! Services as separate processes, the way a user runs them: started, waited for until they listen,
//! signalled.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A started process and where it listens.
#[derive(Debug)]
pub struct Listening {
    /// The process.
    pub child: Child,
    /// `host:port` from its "listening on http://…" line.
    pub addr: String,
    /// The lines it prints after that one.
    pub lines: mpsc::Receiver<String>,
}

/// Starts `command` with its standard output piped (each line echoed, prefixed with `label`) and
/// waits up to `timeout` for the line saying where it listens. Panics, naming `label`, when it does not
/// start or never says so.
pub fn spawn_listening(command: &mut Command, label: &str, timeout: Duration) -> Listening {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {label}: {e}"));
    let stdout = child.stdout.take().expect("a piped stdout");
    let (sender, lines) = mpsc::channel();
    let prefix = label.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("[{prefix}] {line}");
            let _ = sender.send(line);
        }
    });
    let deadline = Instant::now() + timeout;
    let addr = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("{label} did not say where it listens within {timeout:?}"));
        if let Some(rest) = line.split("listening on http://").nth(1) {
            // Text or JSON logs: the address ends at the first character an address has not.
            break rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || ".:[]-".contains(*c))
                .collect();
        }
    };
    Listening { child, addr, lines }
}

/// Sends `signal` (`-TERM`, `-INT`, `-KILL`, `-STOP`, …) to `child`.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {}", child.id());
}

/// The `minos` command, built beside `sibling` (a binary of the test's package, e.g.
/// `env!("CARGO_BIN_EXE_quickstart")`); built here when a narrower `cargo test` did not build it.
pub fn minos_binary(sibling: &str) -> std::path::PathBuf {
    let binary = std::path::Path::new(sibling).with_file_name("minos");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "minos", "--bin", "minos"])
            .status()
            .expect("cargo build -p minos --bin minos");
        assert!(status.success(), "the minos binary does not build");
    }
    binary
}

/// Waits until `check` answers true, trying every 50 ms for up to `timeout`; panics naming `what`
/// when it never does (the blocking twin of `minos::testing::eventually`, for process tests).
pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}

/// The next of `lines` containing `text`, waiting up to `timeout`; panics saying which text never came.
pub fn next_line_containing(
    lines: &mpsc::Receiver<String>,
    text: &str,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no output line containing {text:?}"));
        if line.contains(text) {
            return line;
        }
    }
}

/// A started process, killed (and reaped) when dropped, and where it listens.
#[derive(Debug)]
pub struct Process {
    /// The process.
    pub child: Child,
    /// `host:port`.
    pub addr: String,
}

impl Process {
    /// An HTTP client of it.
    pub fn client(&self) -> crate::http::Client {
        crate::http::Client::new(format!("http://{}", self.addr))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` (a service, or `minos discovery|gateway|dashboard`) on 127.0.0.1 and a free port,
/// logging at `info` with its standard error shown, and waits up to 90 s until it listens; its later
/// output lines are echoed and otherwise dropped.
pub fn start_process(mut command: Command, label: &str) -> Process {
    command
        .env("RUST_LOG", "info")
        .env("MINOS_HTTP_HOST", "127.0.0.1")
        .env("MINOS_HTTP_PORT", "0")
        .stderr(Stdio::inherit());
    let started = spawn_listening(&mut command, label, Duration::from_secs(90));
    let lines = started.lines;
    std::thread::spawn(move || while lines.recv().is_ok() {});
    Process {
        child: started.child,
        addr: started.addr,
    }
}
