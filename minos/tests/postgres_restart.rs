//! PostgreSQL restarted under load: requests fail cleanly while it is down and succeed after, and every
//! create that was acknowledged is stored. Restarting the server is disruptive, so this test runs only
//! when `MINOS_TEST_PG_RESTART=1` (CI sets it); it lives in its own binary so no other test runs meanwhile.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use minos::testing::models::Customer;
use minos_support::postgres::fresh_repository;

fn restart_command() -> String {
    std::env::var("MINOS_TEST_PG_RESTART_COMMAND").unwrap_or_else(|_| {
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n 1) main restart"
            .into()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_cleanly_during_a_restart_and_succeed_after() {
    if std::env::var("MINOS_TEST_PG_RESTART").as_deref() != Ok("1") {
        eprintln!(
            "not run: set MINOS_TEST_PG_RESTART=1 to let this test restart the PostgreSQL server"
        );
        return;
    }
    let repository = Arc::new(fresh_repository().await);
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (repository, stop) = (Arc::clone(&repository), Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut stored, mut failures) = (Vec::new(), Vec::new());
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                match repository
                    .create(Customer {
                        name: format!("c{i}"),
                    })
                    .await
                {
                    Ok(customer) => stored.push(customer.uuid()),
                    Err(error) => failures.push(error),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (stored, failures)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(restart_command())
        .status()
        .await
        .unwrap();
    assert!(
        status.success(),
        "restarting PostgreSQL with `{}` failed",
        restart_command()
    );

    // After the restart, creates succeed again within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match repository
            .create(Customer {
                name: "after".into(),
            })
            .await
        {
            Ok(_) => break,
            Err(error) if Instant::now() < deadline => {
                eprintln!("still failing after the restart: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("creates did not recover after the restart: {error}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (stored, failures) = load.await.unwrap();
    assert!(!stored.is_empty());
    for error in &failures {
        let error_status = error.status();
        assert!(
            error_status == 503 || error_status == 500,
            "clean error, got {error_status}: {error}"
        );
    }
    eprintln!(
        "{} creates acknowledged, {} failed cleanly during the restart",
        stored.len(),
        failures.len()
    );
    // Every acknowledged create is there.
    for uuid in stored {
        repository
            .get::<Customer>(uuid)
            .await
            .expect("an acknowledged create is stored");
    }
}
