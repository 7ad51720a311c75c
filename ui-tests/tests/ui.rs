//! Compile-fail tests: each case is a minimal file named after its error, with the expected compiler
//! output beside it.
//!
//! The expected output was written with one toolchain ([`BLESSED`]); there every byte is compared. Other
//! toolchains render diagnostics a little differently (notes, help lines, suggestions), so there each case
//! is compiled afresh and what must not change is compared: that it fails to compile, and each error's
//! headline and the user's tokens it points at (`file:line:column`). The test never passes without
//! compiling the cases. Re-bless on a new toolchain with `TRYBUILD=overwrite cargo test -p minos-ui-tests`
//! and read the diff; `MINOS_UI_PORTABLE=1` runs the portable comparison on the blessed toolchain too.

use std::path::{Path, PathBuf};

/// The toolchain the `.stderr` files were written with.
const BLESSED: (u32, u32) = (1, 95);

#[test]
fn ui() {
    let version = rustc_version();
    let portable = std::env::var("MINOS_UI_PORTABLE").is_ok_and(|v| v == "1");
    if version == BLESSED && !portable {
        trybuild::TestCases::new().compile_fail("tests/ui/*/*.rs");
    } else {
        eprintln!(
            "rustc {}.{}: comparing each case's errors and locations with the output of rustc {}.{}",
            version.0, version.1, BLESSED.0, BLESSED.1
        );
        portable_check();
    }
}

/// `(major, minor)` of the rustc that builds the cases (the one cargo runs).
fn rustc_version() -> (u32, u32) {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .expect("rustc --version runs");
    let text = String::from_utf8_lossy(&output.stdout);
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let number = text.split_whitespace().nth(1).unwrap_or_default();
    let mut parts = number
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Copies the cases (without their expected output) to a scratch folder, lets trybuild compile them and
/// write what this toolchain prints (it fails any case that compiles), then compares the essentials.
fn portable_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-portable");
    let _ = std::fs::remove_dir_all(&scratch);
    let mut cases = Vec::new();
    for category in sorted_entries(&root) {
        if !category.is_dir() {
            continue;
        }
        for case in sorted_entries(&category) {
            if case.extension().is_some_and(|e| e == "rs") {
                let relative = case.strip_prefix(&root).unwrap().to_path_buf();
                let copy = scratch.join(&relative);
                std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
                std::fs::copy(&case, &copy).unwrap();
                cases.push(relative);
            }
        }
    }
    assert!(!cases.is_empty(), "no ui cases under {}", root.display());
    // Overwrite mode writes each case's output beside the copy; a case that compiles still fails. The
    // cases are compiled when the `TestCases` is dropped, at the end of this statement.
    std::env::set_var("TRYBUILD", "overwrite");
    trybuild::TestCases::new().compile_fail(scratch.join("*/*.rs"));

    let mut mismatches = Vec::new();
    for relative in &cases {
        let expected_path = root.join(relative).with_extension("stderr");
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        let actual_path = scratch.join(relative).with_extension("stderr");
        let actual = std::fs::read_to_string(&actual_path).unwrap_or_else(|e| {
            panic!(
                "{}: no compiler output was written ({e}): did the case compile?",
                relative.display()
            )
        });
        let (expected, actual) = (essentials(&expected), essentials(&actual));
        assert!(
            !expected.is_empty(),
            "{}: the expected output names no error",
            relative.display()
        );
        if expected != actual {
            mismatches.push(format!(
                "{}:\n  expected {expected:#?}\n  found    {actual:#?}",
                relative.display()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} ui cases differ in their errors or locations:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
    eprintln!(
        "{} ui cases give the blessed errors at the blessed locations",
        cases.len()
    );
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    entries
}

/// Each error's headline with the file name, line and column of the first location it points at.
fn essentials(stderr: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut lines = stderr.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(headline) = line.strip_prefix("error") else {
            continue;
        };
        if headline.starts_with(": aborting") || headline.starts_with(": could not compile") {
            continue;
        }
        // The first place it points at: the `-->` line after the headline and its continuation lines.
        let mut location = String::new();
        while let Some(next) = lines.next_if(|l| !l.trim().is_empty() && !l.starts_with("error")) {
            if let Some(place) = next.trim_start().strip_prefix("--> ") {
                let place = place.trim();
                // Only the file's name: the cases live in another folder here.
                location = place.rsplit(['/', '\\']).next().unwrap_or(place).to_owned();
                break;
            }
        }
        found.push((format!("error{headline}"), location));
    }
    found
}
