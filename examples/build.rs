//! Release builds of the example services link the code a service runs at start-up and per request
//! next to each other (`hot-symbols.txt`, refreshed by `scripts/hot-symbols.sh`), so the pages of
//! code a running service keeps in memory are few: the quickstart's resident code falls from about
//! 12 to 7.5 MB. Only where the linker is LLD (Rust 1.90 and later on x86_64 Linux, by default);
//! `MINOS_SYMBOL_ORDER=0` turns it off. Names the file lists that a build does not have (another
//! compiler version, changed code) are skipped: the binary is then as it would be without the file.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=hot-symbols.txt");
    println!("cargo:rerun-if-env-changed=MINOS_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let wanted = env("PROFILE") == "release"
        && env("TARGET") == "x86_64-unknown-linux-gnu"
        && env("MINOS_SYMBOL_ORDER") != "0"
        // Another linker than the default may not know the option.
        && env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_empty()
        && !env("CARGO_ENCODED_RUSTFLAGS").contains("link");
    if !wanted || !default_linker_is_lld() {
        return;
    }
    let file = Path::new(&env("CARGO_MANIFEST_DIR")).join("hot-symbols.txt");
    if file.exists() {
        println!(
            "cargo:rustc-link-arg=-Wl,--symbol-ordering-file={}",
            file.display()
        );
        println!("cargo:rustc-link-arg=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the compiler links with its own LLD by default on this target: Rust 1.90 and later.
fn default_linker_is_lld() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(output) = Command::new(rustc).arg("-V").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&output.stdout);
    let mut numbers = version
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
