//! PostgreSQL over TLS with libpq's parameters (`sslmode`, `sslrootcert`), against the local server with
//! a certificate from a CA made by the test setup (`scripts/postgres-tls.sh`, run by `scripts/test.sh`,
//! which sets `MINOS_TEST_POSTGRES_TLS` to the directory of `ca.pem` and `other-ca.pem`).
#![allow(missing_docs, unreachable_pub)]

use minos::prelude::*;
use minos::store::PostgresStore;

#[root_entity]
pub struct Sealed {
    pub text: String,
}

pub struct SealedCommands;

#[command_service]
impl SealedCommands {
    #[enroute(rest = "POST /sealed")]
    async fn create(&self, request: Request) -> Result<Response> {
        let text = request.json()["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let sealed = Sealed::create(Sealed { text }).await?;
        Ok(Response::json(json!({"uuid": sealed.uuid()})))
    }
}

/// The directory with the test CA, or `None` (the test says it did not run).
fn tls_dir() -> Option<String> {
    let dir = std::env::var("MINOS_TEST_POSTGRES_TLS").ok();
    if dir.is_none() {
        eprintln!("MINOS_TEST_POSTGRES_TLS is not set (scripts/test.sh sets it): not run");
    }
    dir
}

/// The test server's URL with `host` and extra parameters, in a schema of its own.
fn url(host: &str, parameters: &str) -> String {
    let base = minos_support::postgres::url();
    let base = base
        .replace("127.0.0.1", host)
        .replace("@localhost", &format!("@{host}"));
    let separator = if base.contains('?') { '&' } else { '?' };
    format!(
        "{base}{separator}schema=minos_t_{}&{parameters}",
        Uuid::new_v4().simple()
    )
}

/// Whether the store's own connections are encrypted, as the server sees them.
async fn encrypted(store: &PostgresStore) -> bool {
    let client = store.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_tls_connections_store_and_read() {
    let Some(dir) = tls_dir() else { return };
    for host in ["localhost", "127.0.0.1"] {
        let url = url(
            host,
            &format!("sslmode=verify-full&sslrootcert={dir}/ca.pem"),
        );
        let store = PostgresStore::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(encrypted(&store).await, "{host}: encrypted");
        let repository = Repository::new(store);
        let sealed = repository
            .create(Sealed {
                text: "over TLS".into(),
            })
            .await
            .unwrap();
        let read = repository.get::<Sealed>(sealed.uuid()).await.unwrap();
        assert_eq!(read.text, "over TLS");
    }
    // A whole service on such a URL.
    let mut config = minos::testing::test_config("sealed");
    config.storage = url(
        "localhost",
        &format!("sslmode=verify-ca&sslrootcert={dir}/ca.pem"),
    );
    let service = minos::testing::TestService::start(config).await.unwrap();
    let health = service.http().get("/system/health").await.unwrap();
    assert_eq!(health.status, 200, "{}", health.body);
    let created = service
        .http()
        .post("/sealed", json!({"text": "through the service"}))
        .await
        .unwrap();
    assert_eq!(created.status, 200, "{}", created.body);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_encrypts_and_no_sslmode_stays_plain() {
    let Some(_dir) = tls_dir() else { return };
    let store = PostgresStore::connect(&url("127.0.0.1", "sslmode=require"))
        .await
        .unwrap();
    assert!(encrypted(&store).await);
    let store = PostgresStore::connect(&url("127.0.0.1", "application_name=plain"))
        .await
        .unwrap();
    assert!(!encrypted(&store).await, "no sslmode: plain TCP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_the_ca_did_not_sign_is_refused_with_a_clear_error() {
    let Some(dir) = tls_dir() else { return };
    let refused = PostgresStore::connect(&url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={dir}/other-ca.pem&connect_timeout=5"),
    ))
    .await
    .unwrap_err()
    .to_string();
    println!("another CA: {refused}");
    assert!(
        refused.to_lowercase().contains("certificate"),
        "the error names the certificate: {refused}"
    );
    // verify-full compares the name: the certificate names localhost and 127.0.0.1, not the name
    // connected to here (the same server, reached through `hostaddr`).
    let misnamed = PostgresStore::connect(&url(
        "misnamed.invalid",
        &format!(
            "hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={dir}/ca.pem&connect_timeout=5"
        ),
    ))
    .await
    .unwrap_err()
    .to_string();
    println!("another name: {misnamed}");
    assert!(
        misnamed.to_lowercase().contains("certificate"),
        "{misnamed}"
    );
    // verify-ca does not.
    PostgresStore::connect(&url(
        "misnamed.invalid",
        &format!("hostaddr=127.0.0.1&sslmode=verify-ca&sslrootcert={dir}/ca.pem"),
    ))
    .await
    .unwrap();
    // Settings that cannot work are refused before any connection.
    let no_ca = PostgresStore::connect(&url("localhost", "sslmode=verify-full"))
        .await
        .unwrap_err()
        .to_string();
    assert!(no_ca.contains("sslrootcert"), "{no_ca}");
}
