//! The store conformance suite on every built-in backend.

mod memory {
    minos::conformance_tests!(async { minos::Repository::memory() });
}

mod sqlite_file {
    minos::conformance_tests!(async {
        let dir = tempfile::tempdir().expect("temporary directory").keep();
        minos::Repository::sqlite(dir.join("store.db")).expect("open the SQLite store")
    });
}

mod sqlite_in_memory {
    minos::conformance_tests!(async {
        minos::Repository::new(
            minos::store::SqliteStore::in_memory().expect("open the SQLite store"),
        )
    });
}

/// The suite's sample models (`Order`, `Customer`) are in every binary built with the `testing`
/// feature, as a service's binary is when its tests run: they belong to no service, so such a service
/// neither owns a `Customer` it never declared nor answers its snapshots or its event log.
#[test]
fn the_suites_sample_models_belong_to_no_service() {
    assert_eq!(
        <minos::testing::models::Customer as minos::Model>::NAME,
        "Customer"
    );
    let names = minos::registry::root_entity_names();
    assert!(
        !names.contains(&"Customer") && !names.contains(&"Order"),
        "{names:?}"
    );
    assert!(minos::registry::models()
        .iter()
        .all(|m| !m.rust_type.starts_with("minos::testing::")));
}
