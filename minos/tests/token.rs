//! `minos token` mints tokens that services accept, and keys come from a JWKS URL (an OpenID Connect
//! provider's `jwks_uri`), fetched once, kept, and fetched again when a token names a new `kid`.
#![allow(missing_docs, unreachable_pub)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use minos::auth::{mint, AuthConfig, Authenticator, SigningKey, TokenSpec};
use minos::prelude::*;
use minos::testing::{test_config, TestService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEYS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../minos-runtime/src/auth/testdata"
);

pub struct Admin;

#[command_service]
impl Admin {
    #[enroute(rest = "POST /admin/purge", roles = ["admin"])]
    async fn purge(&self, request: Request) -> Result<Response> {
        Ok(Response::json(json!({"by": request.user()})))
    }
}

fn minos(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_minos"));
    command.args(args).env_remove("MINOS_AUTH_SECRET");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the minos binary runs")
}

fn token_of(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn minos_token_prints_a_token_a_service_with_the_same_secret_accepts() {
    let output = minos(
        &["token", "--sub", "alice", "--roles", "admin"],
        &[("MINOS_AUTH_SECRET", "s3cret")],
    );
    let token = token_of(&output);
    assert_eq!(token.split('.').count(), 3, "{token}");

    let mut config = test_config("token-cli");
    config.auth.secret = "s3cret".into();
    let service = TestService::start(config).await.unwrap();
    let answer = service
        .http()
        .clone()
        .with_token(&token)
        .post("/admin/purge", json!({}))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["by"], json!("alice"));
    // Without the role: 403; signed with another secret: 401.
    let clerk = token_of(&minos(
        &[
            "token",
            "--sub",
            "bob",
            "--roles",
            "clerk,sales",
            "--lifetime",
            "5m",
        ],
        &[("MINOS_AUTH_SECRET", "s3cret")],
    ));
    let other = token_of(&minos(
        &[
            "token", "--sub", "eve", "--roles", "admin", "--secret", "guess",
        ],
        &[],
    ));
    for (token, status) in [(clerk, 403), (other, 401)] {
        let answer = service
            .http()
            .clone()
            .with_token(token)
            .post("/admin/purge", json!({}))
            .await
            .unwrap();
        assert_eq!(answer.status, status, "{}", answer.body);
    }
    service.stop().await;
}

#[test]
fn minos_token_explains_what_is_missing() {
    let output = minos(&["token", "--sub", "alice"], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MINOS_AUTH_SECRET"), "{stderr}");
    let output = minos(
        &["token", "--sub", "alice", "--lifetime", "soon"],
        &[("MINOS_AUTH_SECRET", "x")],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("lifetime"));
}

/// Serves whatever JWKS `document` holds at any path, counting requests.
async fn jwks_server(document: Arc<Mutex<String>>, fetches: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let body = document.lock().unwrap().clone();
            fetches.fetch_add(1, AtomicOrdering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/.well-known/jwks.json")
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_come_from_a_jwks_url_fetched_once_and_again_for_a_new_kid() {
    let all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{KEYS}/jwks.json")).unwrap())
            .unwrap();
    let only = |kid: &str| {
        let keys: Vec<Value> = all["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["kid"] == json!(kid))
            .cloned()
            .collect();
        json!({ "keys": keys }).to_string()
    };
    let document = Arc::new(Mutex::new(only("rsa-1")));
    let fetches = Arc::new(AtomicUsize::new(0));
    let url = jwks_server(Arc::clone(&document), Arc::clone(&fetches)).await;
    let auth = Authenticator::from_config(&AuthConfig {
        jwks: url,
        issuer: "https://id.example".into(),
        ..AuthConfig::default()
    })
    .unwrap()
    .unwrap();
    let spec = TokenSpec {
        subject: "ivy".into(),
        issuer: "https://id.example".into(),
        ..TokenSpec::for_config(&AuthConfig::default())
    };
    let signed = |file: &str, kid: &str| {
        let key = SigningKey::Pem {
            pem: std::fs::read(format!("{KEYS}/{file}")).unwrap(),
            algorithm: None,
            kid: Some(kid.into()),
        };
        mint(&key, &spec).unwrap()
    };
    let rsa = signed("rsa.pem", "rsa-1");
    let now = minos::chrono::Utc::now().timestamp();
    for _ in 0..5 {
        assert_eq!(auth.verify(&rsa, now).await.unwrap().subject, "ivy");
    }
    assert_eq!(fetches.load(AtomicOrdering::SeqCst), 1, "the set is kept");

    // The provider rotates in an Ed25519 key: a token naming it makes the set be fetched again (at
    // most every few seconds).
    *document.lock().unwrap() = only("ed-1");
    let ed = signed("ed.pem", "ed-1");
    tokio::time::sleep(Duration::from_millis(5200)).await;
    assert_eq!(auth.verify(&ed, now).await.unwrap().subject, "ivy");
    assert_eq!(fetches.load(AtomicOrdering::SeqCst), 2);
    // The old key is gone from the set, so its tokens are refused now.
    let error = auth.verify(&rsa, now).await.unwrap_err();
    assert_eq!(error.status(), 401, "{error}");
    // Unknown kids do not make it hammer the provider.
    for _ in 0..10 {
        assert!(auth.verify(&rsa, now).await.is_err());
    }
    assert_eq!(fetches.load(AtomicOrdering::SeqCst), 2);
}
