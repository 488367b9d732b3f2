//! Pure: the `source.pitr` block of a `postgres` source: the WAL flush
//! interval and the replication slot (default derived from the policy name).

use chrono::TimeDelta;

use super::model;
use super::raw;
use super::validate::{Sink, duration};

/// `walFlushInterval` when absent.
pub(crate) const DEFAULT_WAL_FLUSH_INTERVAL: TimeDelta = TimeDelta::seconds(10);

/// The slot a policy streams from when `slot` is absent:
/// `safepoint_<name>` with `-` written as `_` (slot names allow `[a-z0-9_]`).
pub(crate) fn default_slot(policy: &str) -> String {
    let mut slot = format!("safepoint_{}", policy.replace('-', "_"));
    slot.truncate(63);
    slot
}

/// Validates the block; `None` when something was reported.
pub(crate) fn pitr(
    sink: &mut Sink<'_>,
    base: &str,
    spec: raw::PitrSpec,
    policy: &str,
) -> Option<model::Pitr> {
    let ptr = format!("{base}/walFlushInterval");
    let interval = duration(sink, &ptr, spec.wal_flush_interval.as_deref());
    let interval = match interval {
        Ok(Some(d)) if d > TimeDelta::hours(1) => {
            sink.err(
                &ptr,
                format!(
                    "`walFlushInterval` of {}s is longer than an hour",
                    d.num_seconds()
                ),
                "the RPO of a PITR policy is about this interval: use seconds, e.g. `10s`"
                    .to_owned(),
            );
            None
        }
        Ok(d) => Some(d.unwrap_or(DEFAULT_WAL_FLUSH_INTERVAL)),
        Err(()) => None,
    };
    let slot = match spec.slot {
        None => Some(default_slot(policy)),
        Some(s) if valid_slot(&s) => Some(s),
        Some(s) => {
            sink.err(
                &format!("{base}/slot"),
                format!("invalid replication slot name `{s}`"),
                format!(
                    "use lowercase letters, digits and `_`, at most 63 characters, e.g. `{}`",
                    default_slot(policy)
                ),
            );
            None
        }
    };
    Some(model::Pitr {
        wal_flush_interval: interval?,
        slot: slot?,
    })
}

/// PostgreSQL's rule for replication slot names.
fn valid_slot(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_slots_are_valid_slot_names() {
        assert_eq!(default_slot("orders-db"), "safepoint_orders_db");
        assert!(valid_slot(&default_slot(&"a-".repeat(31))));
        assert!(!valid_slot("Orders"));
        assert!(!valid_slot("a-b"));
    }
}
