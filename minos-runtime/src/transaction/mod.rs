//! Application transactions (used by sagas).
//!
//! Inside [`TransactionScope::run`], entity operations (`Foo::create`, `root.save()`, …) do not reach the
//! store: their events are *held* under the innermost transaction, reads see them on top of the store, and
//! nothing is published. [`Transactions::reserve`] checks that the held writes still apply to the
//! destination (the enclosing transaction, or the store itself at the top level) and that no sibling
//! transaction touched the same roots; [`Transactions::commit`] moves the writes into the destination —
//! at the top level that is one atomic store commit, which is when domain events are published;
//! [`Transactions::reject`] drops them.

mod commands;
mod scope;
mod view;

pub use crate::domain::{InvalidTransition, TransactionEntry, TransactionStatus};
pub use crate::store::HeldWrites;
pub use commands::{TransactionCommand, Transactions};
pub use scope::TransactionScope;
pub(crate) use scope::WriteScope;
pub(crate) use view::View;
