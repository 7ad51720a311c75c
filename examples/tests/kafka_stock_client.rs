//! A service in another language talks to the quickstart over Kafka with a stock client: Python's
//! confluent-kafka sends `CreateFoo` with a reply topic and reads the reply (scripts/kafka_stock_client.py).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_python_client_sends_create_foo_and_reads_the_reply() {
    let bootstrap = std::env::var("MINOS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let name = format!("foo-{}", uuid_suffix());
    let mut service = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .env("MINOS_NAME", &name)
        .env("MINOS_BROKER", format!("kafka://{bootstrap}"))
        .env("MINOS_STORAGE", "memory")
        .env("MINOS_HTTP_HOST", "127.0.0.1")
        .env("MINOS_HTTP_PORT", "0")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the quickstart");
    let stdout = service.stdout.take().expect("stdout");
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the service started (is Kafka running? scripts/kafka-dev.sh start)");
        if line.contains("listening on http://") {
            break;
        }
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/kafka_stock_client.py"
    );
    let output = Command::new("python3")
        .args([
            script,
            "--bootstrap",
            &bootstrap,
            "--topic",
            "CreateFoo",
            "--content",
            r#"{"bar": "from python"}"#,
        ])
        .output()
        .expect("run python3");
    let _ = service.kill();
    let _ = service.wait();
    assert!(
        output.status.success(),
        "the stock client failed (is confluent-kafka installed? pip install confluent-kafka): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON reply");
    assert_eq!(reply["payload"]["status"], 200, "{reply}");
    let uuid = reply["payload"]["content"]["uuid"]
        .as_str()
        .expect("the created Foo's uuid");
    assert_eq!(uuid.len(), 36, "{reply}");
    assert_eq!(reply["version"], 1);
}

fn uuid_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    )
}
