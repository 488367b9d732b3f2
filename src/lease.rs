//! IO: which policies this process may act on. On one node (a SQLite
//! catalog) that is every policy, always. With several replicas on one
//! PostgreSQL catalog, a policy is acted on only by the replica holding its
//! lease (catalog/leases.rs); the lease keeper (`replica.rs`) grants and
//! renews them here, and the engine asks before it starts work
//! (`holds`), before a backup becomes visible (`fence`), and cancels running
//! work when a lease is lost (`lost`).
//!
//! Validity is measured on this process's monotonic clock from the moment
//! the renewing query was *sent*: the catalog sets the expiry when it runs
//! the query, later, so a lease always ends here before it can pass to
//! another replica there. Work stops `margin` before that end, which leaves
//! the margin for cancelling and cleaning up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The lease of the replica that applies revisions, evaluates alerts and
/// delivers notices (not a valid policy name).
pub const COORDINATOR: &str = "@coordinator";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "replica {replica} no longer holds the lease of {policy} (the catalog could not be reached to renew it, or another replica took it over); the work was stopped and will be retried by the lease holder"
)]
pub struct LeaseLost {
    pub policy: String,
    pub replica: String,
}

/// Handle shared by every part of a process (cheap to clone).
#[derive(Clone, Default)]
pub struct Leases {
    /// `None` on one node: everything is ours.
    shared: Option<Arc<Shared>>,
}

struct Shared {
    replica: String,
    margin: Duration,
    held: Mutex<BTreeMap<String, Held>>,
}

struct Held {
    epoch: i64,
    valid_until: Instant,
    /// Set to `true` when the lease is lost; running work watches it.
    lost: watch::Sender<bool>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shared {
            None => write!(f, "Leases(single node)"),
            Some(s) => write!(f, "Leases({}, {} held)", s.replica, self.held().len()),
        }
    }
}

impl Leases {
    /// One node: every policy is ours.
    pub fn single_node() -> Leases {
        Leases { shared: None }
    }

    /// One replica of several: nothing is ours until granted.
    pub fn replicated(replica: &str, margin: Duration) -> Leases {
        Leases {
            shared: Some(Arc::new(Shared {
                replica: replica.to_string(),
                margin,
                held: Mutex::new(BTreeMap::new()),
            })),
        }
    }

    /// This replica's id (`None` on one node).
    pub fn replica(&self) -> Option<&str> {
        self.shared.as_deref().map(|s| s.replica.as_str())
    }

    fn with<T>(&self, f: impl FnOnce(&Shared, &mut BTreeMap<String, Held>) -> T) -> Option<T> {
        let shared = self.shared.as_deref()?;
        let mut held = shared.held.lock().unwrap_or_else(|e| e.into_inner());
        Some(f(shared, &mut held))
    }

    /// True when this process may start work on `name` now.
    pub fn holds(&self, name: &str) -> bool {
        self.with(|s, held| {
            held.get(name)
                .is_some_and(|h| Instant::now() + s.margin < h.valid_until)
        })
        .unwrap_or(true)
    }

    /// Ok when `name`'s lease is held with time to spare: checked right
    /// before a backup becomes visible.
    pub fn fence(&self, name: &str) -> Result<(), LeaseLost> {
        if self.holds(name) {
            return Ok(());
        }
        Err(LeaseLost {
            policy: name.to_string(),
            replica: self.replica().unwrap_or_default().to_string(),
        })
    }

    /// The epoch of a held lease (`None` on one node or when not held).
    pub fn epoch(&self, name: &str) -> Option<i64> {
        self.with(|_, held| held.get(name).map(|h| h.epoch))
            .flatten()
    }

    /// Turns `true` when `name`'s lease is lost (never on one node, nor for
    /// a lease not held: such work is refused by `holds` first).
    pub fn lost(&self, name: &str) -> watch::Receiver<bool> {
        self.with(|_, held| held.get(name).map(|h| h.lost.subscribe()))
            .flatten()
            .unwrap_or_else(|| watch::channel(false).1)
    }

    /// True when this process applies revisions, evaluates alerts and sends
    /// notices (always on one node).
    pub fn is_coordinator(&self) -> bool {
        self.holds(COORDINATOR)
    }

    /// Names of the leases held (valid now), sorted.
    pub fn held(&self) -> Vec<String> {
        self.with(|s, held| {
            let now = Instant::now() + s.margin;
            held.iter()
                .filter(|(_, h)| now < h.valid_until)
                .map(|(n, _)| n.clone())
                .collect()
        })
        .unwrap_or_default()
    }

    /// The keeper took (or renewed) `name` with `epoch`, valid until
    /// `valid_until`. A new epoch replaces the old holding (its work is
    /// told it lost the lease).
    pub fn granted(&self, name: &str, epoch: i64, valid_until: Instant) {
        self.with(|_, held| match held.get_mut(name) {
            Some(h) if h.epoch == epoch => h.valid_until = valid_until,
            _ => {
                if let Some(old) = held.remove(name) {
                    let _ = old.lost.send(true);
                }
                let (lost, _) = watch::channel(false);
                held.insert(
                    name.to_string(),
                    Held {
                        epoch,
                        valid_until,
                        lost,
                    },
                );
            }
        });
    }

    /// The keeper renewed the leases in `renewed` until `valid_until`; every
    /// other lease is lost.
    pub fn renewed(&self, renewed: &[(String, i64)], valid_until: Instant) {
        let keep: BTreeMap<&str, i64> = renewed.iter().map(|(n, e)| (n.as_str(), *e)).collect();
        let gone: Vec<String> = self
            .with(|_, held| {
                held.iter()
                    .filter(|(n, h)| keep.get(n.as_str()) != Some(&h.epoch))
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        for name in gone {
            self.revoke(&name);
        }
        for (name, epoch) in renewed {
            self.granted(name, *epoch, valid_until);
        }
    }

    /// Drops `name` (released or lost): running work on it is cancelled.
    pub fn revoke(&self, name: &str) {
        self.with(|_, held| {
            if let Some(h) = held.remove(name) {
                let _ = h.lost.send(true);
            }
        });
    }

    /// Cancels the work of every lease whose validity (minus the margin)
    /// ran out: the catalog could not be reached to renew it in time.
    pub fn expire(&self) -> Vec<String> {
        let expired: Vec<String> = self
            .with(|s, held| {
                let now = Instant::now() + s.margin;
                held.iter()
                    .filter(|(_, h)| now >= h.valid_until)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        for name in &expired {
            self.revoke(name);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_node_holds_everything_and_never_loses_it() {
        let l = Leases::single_node();
        assert!(l.holds("orders") && l.is_coordinator());
        assert!(l.fence("orders").is_ok());
        assert!(!*l.lost("orders").borrow());
        assert!(l.expire().is_empty());
    }

    #[test]
    fn a_replica_holds_only_what_it_was_granted_and_loses_it_on_time() {
        let l = Leases::replicated("r1", Duration::from_millis(50));
        assert!(!l.holds("orders") && !l.is_coordinator());
        let err = l.fence("orders").unwrap_err();
        assert!(
            err.to_string()
                .contains("r1 no longer holds the lease of orders")
        );
        l.granted("orders", 3, Instant::now() + Duration::from_secs(60));
        let lost = l.lost("orders");
        assert!(l.holds("orders") && l.fence("orders").is_ok());
        assert_eq!(l.epoch("orders"), Some(3));
        // Validity within the margin: no new work, and running work is told.
        l.granted("billing", 1, Instant::now() + Duration::from_millis(10));
        assert!(!l.holds("billing"));
        assert_eq!(l.expire(), vec!["billing".to_string()]);
        assert_eq!(l.held(), vec!["orders".to_string()]);
        // A renewal that no longer returns a lease loses it.
        l.renewed(&[], Instant::now() + Duration::from_secs(60));
        assert!(*lost.borrow());
        assert!(!l.holds("orders"));
    }

    #[test]
    fn a_lease_taken_again_under_a_new_epoch_cancels_the_old_work() {
        let l = Leases::replicated("r1", Duration::ZERO);
        let later = Instant::now() + Duration::from_secs(60);
        l.granted("orders", 1, later);
        let old = l.lost("orders");
        l.granted("orders", 1, later);
        assert!(!*old.borrow(), "a renewal keeps the epoch and the work");
        l.granted("orders", 2, later);
        assert!(*old.borrow());
        assert_eq!(l.epoch("orders"), Some(2));
    }
}
