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
