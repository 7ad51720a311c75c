//! Application transactions (used by sagas). The entries and their status machine live in the domain
//! layer, so the stores can keep them; this layer will run reserve, commit and reject.

pub use crate::domain::{InvalidTransition, TransactionEntry, TransactionStatus};
