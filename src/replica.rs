//! App: one replica of several on a shared PostgreSQL catalog — the lease
//! keeper. Every `ttl / 3` it heartbeats, renews every lease it holds in one
//! statement, computes which replica should hold each policy (the same
//! answer on every replica: `assign`), takes the leases assigned to it that
//! are free or expired, and gives up the ones assigned elsewhere once their
//! work ended. A separate tick cancels work whose lease could not be renewed
//! in time (`Leases::expire`), independently of how long a catalog call hangs.
//!
//! Bounds (defaults: ttl 15 s): a replica that stops renewing stops its work
//! `ttl / 3` before its leases expire; a dead replica's policies are taken
//! over within `ttl + ttl / 3` (expiry, then the next round of a live one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify, watch};

use crate::catalog::Catalog;
use crate::engine::context::RepoState;
use crate::lease::{COORDINATOR, Leases};
use crate::lock;

/// How a replica keeps its leases.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub id: String,
    /// Lease duration: how long a lease lives without a renewal.
    pub ttl: Duration,
}

impl ReplicaConfig {
    /// Time between rounds (heartbeat, renewal, assignment).
    pub fn interval(&self) -> Duration {
        self.ttl / 3
    }

    /// Work stops this long before a lease that was not renewed expires.
    pub fn margin(&self) -> Duration {
        self.ttl / 3
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }
}

/// This replica's id: `--replica-id`, or the one kept in `<data-dir>/replica-id`
/// (created as `<hostname>-<random>` the first time), so that a restarted
/// replica takes its own leases back at once.
pub fn replica_id(flag: Option<&str>, data_dir: &Path) -> std::io::Result<String> {
    if let Some(id) = flag.filter(|s| !s.trim().is_empty()) {
        return Ok(id.trim().to_string());
    }
    let file = data_dir.join("replica-id");
    if let Ok(id) = std::fs::read_to_string(&file)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".into());
    let random = {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    let id = format!("{host}-{:08x}", random as u32);
    std::fs::create_dir_all(data_dir)?;
    std::fs::write(&file, format!("{id}\n"))?;
    Ok(id)
}

/// A stable 64-bit hash (FNV-1a, then a mixer): every replica, whatever
/// its build, computes the same assignment.
fn hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// Which replica should hold each name: rendezvous hashing with bounded
/// load. Names are placed in a fixed order, each on the replica it ranks
/// highest among those below `ceil(names / replicas)`: no replica gets more
/// than one above an even share, and a change of replicas moves few names.
pub fn assign<'a>(names: &'a [String], replicas: &'a [String]) -> BTreeMap<&'a str, &'a str> {
    let mut out = BTreeMap::new();
    if replicas.is_empty() {
        return out;
    }
    let cap = names.len().div_ceil(replicas.len());
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    let mut order: Vec<&String> = names.iter().collect();
    order.sort_by_key(|n| (hash(&[n.as_str()]), n.as_str()));
    for name in order {
        let mut ranked: Vec<&String> = replicas.iter().collect();
        ranked.sort_by_key(|r| std::cmp::Reverse((hash(&[name, r]), r.as_str())));
        let chosen = ranked
            .into_iter()
            .find(|r| load.get(r.as_str()).copied().unwrap_or(0) < cap)
            .expect("capacity covers every name");
        *load.entry(chosen.as_str()).or_default() += 1;
        out.insert(name.as_str(), chosen.as_str());
    }
    out
}

/// What the keeper works with.
pub struct Keeper<'a> {
    pub catalog: Catalog,
    pub leases: Leases,
    pub config: ReplicaConfig,
    /// The policies in force (read without waiting for a refresh).
    pub state: &'a Mutex<RepoState>,
    pub locks_dir: std::path::PathBuf,
    /// Rung to run a round now (a new revision was applied).
    pub wake: &'a Notify,
    /// Rung when this replica took leases (its scheduled lane plans at once).
    pub gained: Arc<Notify>,
}

impl Keeper<'_> {
    /// Rounds until `quit`; then gives every lease up for the others.
    /// `names` are the lease names known now; each round reads them again
    /// from the state when it is not being refreshed (a name missing from
    /// the list would be given up).
    pub async fn run(&self, mut names: Vec<String>, mut quit: watch::Receiver<bool>) {
        let expiry = async {
            loop {
                for name in self.leases.expire() {
                    tracing::error!(lease = %name, "lease not renewed in time (catalog unreachable?): work on it stopped");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        tokio::pin!(expiry);
        while !*quit.borrow() {
            if let Ok(state) = self.state.try_lock() {
                names = policy_names(&state);
            }
            let round = self.round(&names);
            tokio::select! {
                _ = round => {}
                _ = &mut expiry => {}
                _ = quit.wait_for(|q| *q) => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval()) => {}
                _ = self.wake.notified() => {}
                _ = &mut expiry => {}
                _ = quit.wait_for(|q| *q) => {}
            }
        }
        self.leave().await;
    }

    /// The lease names of the revision in force (waits for the state).
    pub async fn names(&self) -> Vec<String> {
        policy_names(&*self.state.lock().await)
    }

    /// Gives every lease up and leaves the replica set (clean shutdown).
    async fn leave(&self) {
        for name in self.leases.held() {
            self.leases.revoke(&name);
        }
        if let Err(e) = self.catalog.leave(&self.config.id).await {
            tracing::warn!(error = %e, "cannot hand the leases back; they pass to another replica when they expire");
        }
    }

    /// One round: heartbeat, renew, take and give up.
    pub async fn round(&self, names: &[String]) {
        let (id, ttl) = (&self.config.id, self.config.ttl_ms());
        let sent = Instant::now();
        match self.catalog.renew_leases(id, ttl).await {
            Ok(renewed) => self.leases.renewed(&renewed, sent + self.config.ttl),
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew leases; work stops if this lasts");
                return;
            }
        }
        let held = self.leases.held().len() as i64;
        if let Err(e) = self.catalog.heartbeat(id, held).await {
            tracing::warn!(error = %e, "cannot record this replica's heartbeat");
            return;
        }
        let live = match self.catalog.live_replicas(ttl).await {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the live replicas");
                return;
            }
        };
        let assigned = assign(names, &live);
        let before = self.leases.held().len();
        let mine: BTreeSet<&str> = assigned
            .iter()
            .filter(|(_, r)| **r == id.as_str())
            .map(|(n, _)| *n)
            .collect();
        let wanted: Vec<&str> = mine
            .iter()
            .copied()
            .filter(|name| !self.leases.holds(name))
            .collect();
        if !wanted.is_empty() {
            let sent = Instant::now();
            match self.catalog.acquire_leases(&wanted, id, ttl).await {
                Ok(taken) => {
                    for (name, epoch) in taken {
                        tracing::info!(lease = %name, epoch, "lease taken");
                        self.leases.granted(&name, epoch, sent + self.config.ttl);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot take leases"),
            }
        }
        if self.leases.held().len() > before {
            self.gained.notify_one();
        }
        for name in self.leases.held() {
            if mine.contains(name.as_str()) || self.busy(&name) {
                continue;
            }
            self.leases.revoke(&name);
            match self.catalog.release_lease(&name, id).await {
                Ok(()) => {
                    tracing::info!(lease = %name, "lease handed over (assigned to another replica)")
                }
                Err(e) => {
                    tracing::warn!(lease = %name, error = %e, "cannot release lease; it expires instead")
                }
            }
        }
    }

    /// True while work of `name` runs here (its backup lock is held).
    fn busy(&self, name: &str) -> bool {
        name != COORDINATOR && lock::busy(&self.locks_dir, name).unwrap_or(true)
    }
}

/// The lease names of the revision in force: the coordinator and every policy.
fn policy_names(state: &RepoState) -> Vec<String> {
    let mut names = vec![COORDINATOR.to_string()];
    if let Some(a) = &state.applied {
        names.extend(a.desired.policies.keys().cloned());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("policy-{i}")).collect()
    }

    fn loads<'a>(a: &BTreeMap<&str, &'a str>) -> BTreeMap<&'a str, usize> {
        let mut l = BTreeMap::new();
        for r in a.values() {
            *l.entry(*r).or_default() += 1;
        }
        l
    }

    #[test]
    fn every_name_gets_one_replica_and_no_replica_more_than_an_even_share_plus_one() {
        let replicas: Vec<String> = ["r-a", "r-b", "r-c"].map(String::from).to_vec();
        for n in [1, 2, 10, 101, 1000] {
            let names = names(n);
            let a = assign(&names, &replicas);
            assert_eq!(a.len(), n);
            for (_, load) in loads(&a) {
                assert!(load <= n.div_ceil(3), "{n} names: a replica got {load}");
            }
        }
        assert!(assign(&names(5), &[]).is_empty());
    }

    #[test]
    fn every_replica_computes_the_same_assignment_whatever_the_order() {
        let names = names(50);
        let one: Vec<String> = ["r-a", "r-b", "r-c"].map(String::from).to_vec();
        let other: Vec<String> = ["r-c", "r-a", "r-b"].map(String::from).to_vec();
        let mut reversed = names.clone();
        reversed.reverse();
        assert_eq!(assign(&names, &one), assign(&reversed, &other));
    }

    #[test]
    fn a_replica_leaving_moves_only_its_own_names_mostly() {
        let names = names(300);
        let three: Vec<String> = ["r-a", "r-b", "r-c"].map(String::from).to_vec();
        let two: Vec<String> = ["r-a", "r-b"].map(String::from).to_vec();
        let before = assign(&names, &three);
        let after = assign(&names, &two);
        let moved = names
            .iter()
            .filter(|n| before[n.as_str()] != "r-c" && before[n.as_str()] != after[n.as_str()])
            .count();
        // Only capacity limits move a survivor's names: a few, not a reshuffle.
        assert!(moved < 60, "{moved} of the survivors' names moved");
    }

    #[test]
    fn a_replica_id_is_kept_in_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = replica_id(None, dir.path()).unwrap();
        assert_eq!(replica_id(None, dir.path()).unwrap(), first);
        assert_eq!(replica_id(Some(" pod-1 "), dir.path()).unwrap(), "pod-1");
    }
}
