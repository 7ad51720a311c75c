//! Compile-fail tests: each case is a minimal file named after its error, with the expected compiler
//! output beside it. The expected output is tied to the toolchain it was written with; re-bless on a new
//! one with `TRYBUILD=overwrite cargo test -p minos-ui-tests` and read the diff.

#[rustversion::stable(1.95)]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*/*.rs");
}
