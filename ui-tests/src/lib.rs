//! Compile-fail tests of the minos macros live in `tests/`.
