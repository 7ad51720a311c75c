//! The store conformance suite: the behaviour every backend must show, written once.
//!
//! Run it against a backend with [`conformance_tests!`](crate::conformance_tests), giving an async
//! expression that makes a fresh, empty [`Repository`] for each case:
//!
//! ```text
//! minos::conformance_tests!(async { minos::Repository::memory() });
//! ```

use crate::prelude::*;

/// Generates one `#[tokio::test]` per conformance case, each on a fresh repository from `$make`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            create_assigns_identity_version_and_timestamps,
            create_event_lists_every_field,
            save_stores_only_changed_fields,
            save_without_change_stores_nothing,
            update_changes_and_saves,
            refresh_drops_unsaved_changes,
            get_unknown_is_not_found,
            get_with_another_type_is_not_found,
            delete_makes_reads_fail_and_hides_from_queries,
            stale_writer_gets_a_conflict_and_loses_nothing,
            concurrent_writers_one_wins_per_version,
            outbox_holds_domain_messages_in_order,
            outbox_marks_messages_sent,
            a_lone_creation_keeps_its_headers_and_is_refused_twice,
            entity_set_diffs_are_incremental,
            value_object_set_diffs_are_incremental,
            replaying_events_gives_the_snapshot,
            timestamps_survive_a_reload,
            comparisons_on_scalars_and_paths,
            one_rule_for_nulls_and_mismatched_kinds,
            boolean_combinations,
            in_contains_and_like,
            meta_fields_are_queryable,
            ordering_and_limit,
            query_values_are_inert,
            invalid_field_paths_are_rejected,
            find_one_reports_no_match,
            queries_are_futures,
            references_store_only_the_uuid,
            create_json_rejects_caller_identity,
            events_read_in_global_order,
            units_commit_all_or_nothing,
            concurrent_units_fail_alone,
            units_record_the_inbox_once,
            concurrent_inbox_entries_are_each_recorded_once,
            the_inbox_keeps_a_commands_reply,
            staged_writes_wait_for_the_unit_commit,
            transactions_are_saved_and_found_by_status,
            transactions_hold_writes_until_released,
            a_hold_tells_whether_the_transaction_changes_existing_roots,
            writes_into_a_transaction_without_entry_are_refused,
            a_first_hold_opens_the_chain,
            holds_need_a_pending_transaction,
            writes_held_while_a_commit_runs_are_committed_or_refused,
            writes_held_while_a_reservation_runs_are_checked_or_refused,
            writes_held_while_a_reject_runs_are_dropped,
            transaction_writes_are_private_until_committed,
            reserve_refuses_conflicts_and_reject_drops_writes,
            nested_transactions_commit_into_their_destination,
            claims_are_exclusive_per_destination_until_released,
            transactions_open_read_and_settle_in_one_step,
            pending_changes_commit_unless_claimed_or_stale,
            stale_copies_in_a_transaction_conflict_when_saved,
            saga_executions_are_saved_and_listed,
            concurrent_saves_and_reads_answer_each_caller,
            retention_removes_only_finished_rows,
            registry_instances_have_leases_and_a_version
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let repository: $crate::Repository = $make.await;
                $crate::testing::conformance::$case(repository).await;
            }
        )*
    };
}

mod holds;
mod outbox;
mod queries;
mod registry;
mod retention;
mod sagas;
mod transactions;
mod writes;

pub use holds::*;
pub use outbox::*;
pub use queries::*;
pub use registry::*;
pub use retention::*;
pub use sagas::*;
pub use transactions::*;
pub use writes::*;

pub(super) fn topics(records: &[crate::store::OutboxRecord]) -> Vec<&str> {
    records.iter().map(|r| r.message.topic.as_str()).collect()
}

pub(super) async fn in_scope<F: std::future::Future>(
    repository: &Repository,
    future: F,
) -> F::Output {
    repository.clone().scope(future).await
}
