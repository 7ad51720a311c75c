// The quickstart example as a binary target too, so end-to-end tests can start it as a separate process
// (`CARGO_BIN_EXE_quickstart`).
include!("main.rs");
