//! PostgreSQL for tests: the server at `MINOS_TEST_POSTGRES_URL` (default
//! `postgresql://postgres@127.0.0.1:5432/test`), a fresh schema per repository.

use minos::store::PostgresStore;
use minos::Repository;

/// The test server's URL.
pub fn url() -> String {
    std::env::var("MINOS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/test".into())
}

/// A URL for a schema of its own (`minos_t_…`), so tests running at once never see each other's rows.
pub fn fresh_schema_url() -> String {
    let base = url();
    let separator = if base.contains('?') { '&' } else { '?' };
    format!(
        "{base}{separator}schema=minos_t_{}",
        minos::Uuid::new_v4().simple()
    )
}

/// Drops the schema a [`fresh_schema_url`] URL names, with everything in it: what a benchmark calls when
/// it is done, so that runs do not pile up schemas in the test database (a crowded catalog makes later
/// numbers slower and noisier). A failure is printed, not raised: the numbers already printed stand.
pub async fn drop_schema(schema_url: &str) {
    let Some(schema) = schema_url.rsplit_once("schema=").map(|(_, s)| s.to_owned()) else {
        return;
    };
    let dropped = async {
        let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(connection);
        let result = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
        drop(client);
        let _ = connection.await;
        result
    };
    if let Err(error) = dropped.await {
        eprintln!("could not drop schema {schema}: {error}");
    }
}

/// A migrated store in a fresh schema. Panics, naming the URL, when the server cannot be reached:
/// a test that needs PostgreSQL never passes without it.
pub async fn fresh_store() -> PostgresStore {
    let url = fresh_schema_url();
    match PostgresStore::connect(&url).await {
        Ok(store) => store,
        Err(error) => panic!(
            "PostgreSQL is needed for this test and is not reachable at {url}: {error}\n\
             start it, or point MINOS_TEST_POSTGRES_URL at a server"
        ),
    }
}

/// A repository over [`fresh_store`].
pub async fn fresh_repository() -> Repository {
    Repository::new(fresh_store().await)
}
