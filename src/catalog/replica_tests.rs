//! Leases, heartbeats and forwarded jobs on both backends.

use super::tests::{BOTH, Scratch};

#[tokio::test]
async fn a_lease_has_one_holder_until_it_expires_and_changes_hands_with_a_new_epoch() {
    for backend in BOTH {
        let s = Scratch::new(backend);
        let c = s.open().await;
        assert_eq!(
            c.acquire_lease("orders", "r1", 60_000).await.unwrap(),
            Some(1)
        );
        assert_eq!(
            c.acquire_lease("orders", "r2", 60_000).await.unwrap(),
            None,
            "{backend:?}"
        );
        // Taking it again as its holder keeps the epoch (a renewal).
        assert_eq!(
            c.acquire_lease("orders", "r1", 60_000).await.unwrap(),
            Some(1)
        );
        assert!(c.holds_lease("orders", "r1", 1).await.unwrap());
        assert!(!c.holds_lease("orders", "r2", 1).await.unwrap());
        assert_eq!(
            c.renew_leases("r1", 60_000).await.unwrap(),
            vec![("orders".to_string(), 1)]
        );
        assert!(c.renew_leases("r2", 60_000).await.unwrap().is_empty());
        // Released: another replica takes it at once, under a new epoch,
        // and the old holder's renewal no longer returns it.
        c.release_lease("orders", "r1").await.unwrap();
        assert_eq!(
            c.acquire_lease("orders", "r2", 60_000).await.unwrap(),
            Some(2)
        );
        assert!(c.renew_leases("r1", 60_000).await.unwrap().is_empty());
        assert!(!c.holds_lease("orders", "r1", 1).await.unwrap());
        // Expired (ttl 1 ms): free for anyone.
        assert_eq!(c.acquire_lease("billing", "r1", 1).await.unwrap(), Some(1));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(c.renew_leases("r1", 60_000).await.unwrap().is_empty());
        assert_eq!(
            c.acquire_lease("billing", "r3", 60_000).await.unwrap(),
            Some(2)
        );
        let rows = c.leases().await.unwrap();
        let holders: Vec<(&str, &str, bool)> = rows
            .iter()
            .map(|r| (r.name.as_str(), r.holder.as_str(), r.live))
            .collect();
        assert_eq!(holders, [("billing", "r3", true), ("orders", "r2", true)]);
    }
}

#[tokio::test]
async fn replicas_are_live_while_they_heartbeat_and_leave_with_their_leases() {
    for backend in BOTH {
        let s = Scratch::new(backend);
        let c = s.open().await;
        c.heartbeat("r2", 0).await.unwrap();
        c.heartbeat("r1", 3).await.unwrap();
        c.heartbeat("r1", 4).await.unwrap();
        assert_eq!(c.live_replicas(60_000).await.unwrap(), ["r1", "r2"]);
        c.acquire_lease("orders", "r1", 60_000).await.unwrap();
        c.leave("r1").await.unwrap();
        assert_eq!(c.live_replicas(60_000).await.unwrap(), ["r2"]);
        assert_eq!(
            c.acquire_lease("orders", "r2", 60_000).await.unwrap(),
            Some(2)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(c.live_replicas(5).await.unwrap().is_empty(), "{backend:?}");
    }
}

#[tokio::test]
async fn a_forwarded_job_is_claimed_once_answered_by_its_claimer_and_reclaimable_after_takeover() {
    for backend in BOTH {
        let s = Scratch::new(backend);
        let c = s.open().await;
        let id = c
            .queue_job("orders", "{\"job\":\"backup\"}", "token:ci")
            .await
            .unwrap();
        let open = c.open_jobs().await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(
            (open[0].policy.as_str(), open[0].state.as_str()),
            ("orders", "queued")
        );
        assert!(c.claim_job(id, "r1").await.unwrap());
        assert!(!c.claim_job(id, "r1").await.unwrap(), "claimed once");
        // The lease moved to r2: r2 claims the row again; r1's late answer
        // is refused, r2's stands.
        assert!(c.claim_job(id, "r2").await.unwrap());
        assert!(!c.answer_job(id, "r1", "late").await.unwrap());
        assert_eq!(c.job_answer(id).await.unwrap(), None);
        assert!(c.answer_job(id, "r2", "{\"ok\":1}").await.unwrap());
        assert_eq!(
            c.job_answer(id).await.unwrap(),
            Some(("{\"ok\":1}".to_string(), "r2".to_string()))
        );
        assert!(c.open_jobs().await.unwrap().is_empty());
        // A withdrawn job is never run.
        let gone = c.queue_job("orders", "{}", "token:ci").await.unwrap();
        c.withdraw_job(gone).await.unwrap();
        assert!(!c.claim_job(gone, "r1").await.unwrap());
    }
}

#[tokio::test]
async fn many_leases_are_taken_in_chunks_skipping_those_another_replica_holds() {
    for backend in BOTH {
        let s = Scratch::new(backend);
        let c = s.open().await;
        let names: Vec<String> = (0..1200).map(|i| format!("p{i:04}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        // r2 holds every 3rd; every 5th expired under r3.
        for (i, n) in refs.iter().enumerate() {
            if i.is_multiple_of(3) {
                c.acquire_lease(n, "r2", 60_000).await.unwrap();
            } else if i.is_multiple_of(5) {
                c.acquire_lease(n, "r3", 1).await.unwrap();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let taken = c.acquire_leases(&refs, "r1", 60_000).await.unwrap();
        assert_eq!(taken.len(), 800, "{backend:?}");
        for (name, epoch) in &taken {
            let i: usize = name[1..].parse().unwrap();
            assert_ne!(i % 3, 0, "{name} is r2's");
            assert_eq!(*epoch, if i.is_multiple_of(5) { 2 } else { 1 }, "{name}");
        }
        // Taking them again as their holder keeps every epoch.
        let again = c.acquire_leases(&refs, "r1", 60_000).await.unwrap();
        let mut a = again.clone();
        let mut t = taken.clone();
        a.sort();
        t.sort();
        assert_eq!(a, t);
        assert_eq!(c.renew_leases("r1", 60_000).await.unwrap().len(), 800);
    }
}
