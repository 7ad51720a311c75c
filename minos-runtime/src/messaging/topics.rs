//! The topics the runtime derives from service and type names. Every service subscribes to its own;
//! other services (and services in other languages) send to them by these names.

use crate::transaction::TransactionCommand;

/// `_Get{Type}Snapshots`: the owner of a root entity type answers the snapshots of the uuids asked for
/// (reference resolution).
pub fn snapshots(type_name: &str) -> String {
    format!("_Get{type_name}Snapshots")
}

/// `_Get{Type}Events`: the owner of a root entity type answers pages of its events in commit order
/// (views of other services are built from them).
pub fn events(type_name: &str) -> String {
    format!("_Get{type_name}Events")
}

/// `{Service}Reply`: the replies to a service's saga steps (the service's name in upper camel case).
pub fn saga_reply(service: &str) -> String {
    format!("{}Reply", upper_camel(service))
}

/// `_{Verb}{Service}Transaction`: a service answers reserve, commit and reject of the transactions it
/// holds (`foo-bar` → `_ReserveFooBarTransaction`).
pub fn transaction_command(command: TransactionCommand, service: &str) -> String {
    format!("_{}{}Transaction", command.as_str(), upper_camel(service))
}

/// `{service}.replies`: the replies to the commands and queries a service's handlers send (one topic
/// per service, whatever the number of instances and restarts; each instance reads it from where it
/// was when the instance started and keeps the replies it waits for).
pub fn client_replies(service: &str) -> String {
    format!("{service}.replies")
}

/// The end of every dead-letter topic's name.
pub const DEAD_LETTER_SUFFIX: &str = ".dead-letter";

/// `{service}.dead-letter`: where a service parks the messages it failed to handle.
pub fn dead_letter(service: &str) -> String {
    format!("{service}{DEAD_LETTER_SUFFIX}")
}

/// `foo-bar_baz` → `FooBarBaz`.
pub fn upper_camel(name: &str) -> String {
    name.split(['-', '_', '.', ' '])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names() {
        assert_eq!(snapshots("Foo"), "_GetFooSnapshots");
        assert_eq!(saga_reply("foo-bar"), "FooBarReply");
        assert_eq!(
            transaction_command(TransactionCommand::Reserve, "foo-bar_baz"),
            "_ReserveFooBarBazTransaction"
        );
        assert_eq!(dead_letter("foo"), "foo.dead-letter");
        assert_eq!(client_replies("foo"), "foo.replies");
    }
}
