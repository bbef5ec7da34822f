//! The conformance suite that every keyed backend runs (feature `testkit`).
//!
//! A backend's tests call one macro with a [`KeyedBackendFactory`]:
//!
//! ```ignore
//! state_api::conformance_tests!(state_heap::HeapBackendFactory);
//! ```
//!
//! which expands to one `#[test]` per case of [`CASES`]. The cases are also plain
//! public functions taking the factory, so a backend can call them with other
//! configurations, and [`savepoint_moves_between`] checks that a savepoint written by
//! one backend restores on another.
//!
//! Cases panic (assert) on a failed expectation, as tests do.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::panic)]

mod cases_namespaces;
mod cases_ops;
mod cases_schema;
mod cases_snapshot;
mod cases_timers;
mod cases_ttl;
mod model;
mod storage;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use cases_namespaces::*;
pub use cases_ops::*;
pub use cases_schema::*;
pub use cases_snapshot::*;
pub use cases_timers::*;
pub use cases_ttl::*;
pub use model::*;
pub use storage::{MemFiles, TestStorage};

use crate::backend::{BackendContext, KeyedBackendFactory, KeyedStateBackend};
use crate::snapshot::{CheckpointStorage, KeyedSnapshotHandle};
use crate::state::StateKey;
use crate::ttl::ManualClock;

/// A window namespace for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TestWindow {
    pub start: i64,
    pub end: i64,
}

/// The default max parallelism of the suite.
pub const MAX_P: u32 = 128;

/// A context owning every key group, with a manual clock at 1_000_000.
pub fn ctx_all() -> (BackendContext, ManualClock) {
    let clock = ManualClock::new(1_000_000);
    (BackendContext::single(MAX_P).with_clock(Arc::new(clock.clone())), clock)
}

/// The context of subtask `index` of `parallelism`, with a manual clock at 1_000_000.
pub fn ctx_subtask(parallelism: u32, index: u32) -> BackendContext {
    BackendContext::for_subtask(MAX_P, parallelism, index)
        .unwrap()
        .with_clock(Arc::new(ManualClock::new(1_000_000)))
}

/// An empty backend owning every key group.
pub fn fresh<F: KeyedBackendFactory, K: StateKey>(f: &F) -> F::Backend<K> {
    f.create::<K>(&ctx_all().0).expect("create backend")
}

/// Snapshots synchronously and asynchronously into `storage`.
pub fn snap<B: KeyedStateBackend>(b: &mut B, id: u64, storage: &dyn CheckpointStorage) -> KeyedSnapshotHandle {
    b.snapshot(id).expect("sync part").run(storage).expect("async part")
}

/// Restores a backend owning every key group.
pub fn restore_all<F: KeyedBackendFactory, K: StateKey>(
    f: &F,
    handles: &[KeyedSnapshotHandle],
    storage: &dyn CheckpointStorage,
) -> F::Backend<K> {
    f.restore::<K>(&ctx_all().0, handles, storage).expect("restore")
}

/// Restores subtask `index` of `parallelism`.
pub fn restore_subtask<F: KeyedBackendFactory, K: StateKey>(
    f: &F,
    handles: &[KeyedSnapshotHandle],
    storage: &dyn CheckpointStorage,
    parallelism: u32,
    index: u32,
) -> F::Backend<K> {
    f.restore::<K>(&ctx_subtask(parallelism, index), handles, storage)
        .expect("restore subtask")
}

/// The one list of the keyed conformance cases: `((path::to::m) { prefix })` expands to
/// `path::to::m! { prefix case, … }`.
/// [`CASES`] and [`conformance_tests!`](crate::conformance_tests) are both made from it, and
/// a unit test checks that every `pub fn` case of the case files is in it.
#[doc(hidden)]
#[macro_export]
macro_rules! __keyed_conformance_cases {
    (($($callback:tt)*) { $($prefix:tt)* }) => {
        $($callback)*! { $($prefix)*
            value_get_without_value_is_none,
            value_update_then_get,
            value_default_is_returned_when_empty,
            value_clear_removes,
            values_are_isolated_per_key,
            list_add_and_get_keep_order,
            list_add_all_appends,
            list_update_replaces,
            list_update_with_nothing_clears,
            list_clear_removes,
            map_put_and_get,
            map_put_all_and_overwrite,
            map_remove_entry,
            map_contains,
            map_iterates_entries_keys_and_values,
            map_is_empty_tracks_entries,
            map_clear_removes_all,
            reducing_adds_with_reduce_function,
            reducing_clear_removes,
            aggregating_adds_with_accumulator,
            aggregating_clear_removes,
            namespaces_are_isolated,
            keys_lists_keys_of_a_namespace,
            access_without_current_key_is_an_error,
            key_outside_key_group_range_is_rejected,
            registering_twice_returns_the_same_state,
            registering_with_another_kind_is_an_error,
            registering_with_another_type_is_an_error,
            ttl_value_expires,
            ttl_read_refreshes_when_configured,
            ttl_return_expired_if_not_cleaned_up,
            ttl_list_elements_expire_individually,
            ttl_map_entries_expire_individually,
            ttl_full_snapshot_cleanup_leaves_expired_out,
            ttl_incremental_cleanup_removes_untouched_entries,
            merging_list_namespaces_appends_and_removes_the_sources,
            merging_only_empty_sources_creates_nothing,
            merging_reducing_state_gives_flinks_values,
            merging_lists_with_ttl_keeps_their_elements,
            merging_reducing_and_aggregating_namespaces_combines_the_values,
            keys_and_namespaces_lists_every_pair_once,
            approximate_entries_and_size_grow_with_the_state,
            apply_to_all_keys_may_update_and_clear_the_visited_state,
            clearing_every_state_leaves_no_entries,
            map_cursor_removes_and_updates_the_current_entry,
            snapshot_restore_round_trips_every_kind,
            incremental_snapshot_is_offered_or_refused_as_unsupported,
            cancelling_a_snapshot_stops_it_and_deletes_what_it_wrote,
            snapshot_holds_state_as_of_sync_part,
            async_part_runs_on_another_thread_while_task_writes,
            async_part_completes_after_the_backend_is_dropped,
            empty_backend_snapshot_restores,
            unregistered_restored_state_survives_next_snapshot,
            restore_reads_only_owned_key_groups,
            rescale_one_to_three_to_two,
            rescale_four_to_one,
            operator_list_even_split_on_rescale,
            operator_list_and_broadcast_states_have_separate_names,
            operator_union_list_on_rescale,
            operator_broadcast_state_on_rescale,
            restore_with_incompatible_value_type_is_an_error,
            restore_with_incompatible_key_type_is_an_error,
            corrupted_snapshot_is_an_error,
            truncated_snapshot_is_an_error,
            foreign_file_is_an_error,
            large_values_round_trip,
            model_random_operations_with_snapshots,
            savepoint_restores_on_same_backend_kind,
            changed_value_types_without_migration_are_refused_at_registration,
            renamed_types_and_appended_variants_restore_as_is,
            migrations_convert_values_and_next_snapshot_has_new_type,
            migration_chains_and_declared_schemas,
            changed_key_namespace_and_user_key_types_are_refused,
            format_v1_snapshot_restores_by_type_name,
            changed_operator_state_types_are_refused,
        }
    };
}

/// Expands a list of case names into a `&[&str]` of their names.
#[doc(hidden)]
#[macro_export]
macro_rules! __case_names {
    ($($case:ident),* $(,)?) => {
        &[$(stringify!($case)),*]
    };
}

/// Every case of the suite, by name (the macro expands one test per name).
pub const CASES: &[&str] = crate::__keyed_conformance_cases!((crate::__case_names) {});

/// Expands to one `#[test]` per conformance case, each calling the case with `$factory`
/// and a function creating a fresh [`TestStorage`] (by default [`MemFiles`]).
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!($factory, $crate::testkit::MemFiles::default);
    };
    ($factory:expr, $storage:expr) => {
        $crate::__keyed_conformance_cases!(($crate::conformance_tests) { @cases $factory, $storage; });
    };
    (@cases $factory:expr, $storage:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testkit::$case(&$factory, &$storage);
            }
        )*
    };
}

#[cfg(test)]
mod list_tests {
    /// Every `pub fn` case of the case files is in the one list: a case cannot be written
    /// and then silently never run.
    #[test]
    fn every_case_function_is_listed() {
        let sources = [
            include_str!("cases_namespaces.rs"),
            include_str!("cases_ops.rs"),
            include_str!("cases_schema.rs"),
            include_str!("cases_snapshot.rs"),
            include_str!("cases_ttl.rs"),
            include_str!("model.rs"),
        ];
        let mut defined: Vec<&str> = sources
            .iter()
            .flat_map(|src| src.lines())
            .filter_map(|l| l.strip_prefix("pub fn "))
            .filter(|l| l.contains("<F: KeyedBackendFactory"))
            .filter_map(|l| l.split('<').next())
            .collect();
        defined.sort_unstable();
        let mut listed: Vec<&str> = super::CASES.to_vec();
        listed.sort_unstable();
        assert_eq!(defined, listed);
    }
}
