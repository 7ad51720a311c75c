//! Example services of Minos for Rust: run them with `cargo run --example <name>`.
