//! Preview of a policy pull request at fleet scale: 2,000 policies x 1,000
//! backups each must answer in under 1 s (docs/performance.md, "Preview").
//! Run: `cargo bench --bench preview`.
//!
//! Timed, as `POST /api/v1/previews` does it after reading the catalog:
//! parsing and validating the proposed repository (2,000 YAML files), then
//! `plan::preview::preview` (both plans, the diff, the guard) and the
//! Markdown. The proposal cuts the retention of every 4th policy, moves the
//! schedule of every 10th and renames 10. Median of 5 runs after a warm-up;
//! the observed state is generated and indexed outside the timed region.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use safepoint::observed::{BackupRecord, Health, ObservedState, Trigger};
use safepoint::plan::PlanOptions;
use safepoint::plan::preview::preview;
use safepoint::policy::{PolicyFile, load};

const POLICIES: usize = 2_000;
const BACKUPS: usize = 1_000;

const STORAGE: &str = "apiVersion: safepoint/v1\nkind: Storage\nmetadata: {name: primary}\nspec: {type: local, path: /var/lib/safepoint}\n";

fn policy_yaml(name: &str, cron: &str, keep_daily: u32) -> String {
    format!(
        "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: {name}\n  labels: {{team: t{}}}\nspec:\n  source: {{type: directory, path: /srv/{name}}}\n  storage: primary\n  schedule: {{cron: \"{cron}\", timezone: Europe/Berlin}}\n  rpo: 12h\n  retention: {{keepLast: 3, keepDaily: {keep_daily}, keepWeekly: 4, keepMonthly: 12}}\n",
        name.len() % 7
    )
}

fn repository(proposed: bool) -> Vec<PolicyFile> {
    let mut files = vec![PolicyFile::new("policies/storage.yaml", STORAGE)];
    for p in 0..POLICIES {
        let mut name = format!("policy-{p:05}");
        let (mut cron, mut keep_daily) = ("0 */6 * * *", 7);
        if proposed {
            if p % 4 == 0 {
                keep_daily = 5;
            }
            if p % 10 == 1 {
                cron = "30 */4 * * *";
            }
            if p < 10 {
                name = format!("renamed-{p:05}");
            }
        }
        files.push(PolicyFile::new(
            format!("policies/{name}.yaml"),
            policy_yaml(&name, cron, keep_daily),
        ));
    }
    files
}

/// One backup every 6 hours (250 days of history), newest first.
fn history(name: &str, now: DateTime<Utc>) -> Vec<BackupRecord> {
    let newest = now - TimeDelta::hours(1);
    (0..BACKUPS)
        .map(|i| {
            let started = newest - TimeDelta::hours(6 * i as i64);
            BackupRecord {
                id: format!("{}-{i:04}", started.format("%Y%m%dT%H%M")),
                policy: name.to_string(),
                storage: "primary".into(),
                trigger: Trigger::Schedule,
                release: None,
                started_at: started,
                finished_at: started + TimeDelta::minutes(3),
                size: 1 << 20,
                checksum: String::new(),
                health: Health::Verified,
                pinned: None,
                pin_unknown: None,
            }
        })
        .collect()
}

fn main() {
    let now: DateTime<Utc> = "2026-11-25T07:30:00Z".parse().expect("valid time");
    let current = load(&repository(false)).expect("the current repository is valid");
    let proposed_files = repository(true);
    let mut observed = ObservedState::default();
    for name in current.policies.keys() {
        observed.backups.insert(name.clone(), history(name, now));
    }
    observed.index_backups();
    let options = PlanOptions::default();

    let answer = || {
        let proposed = load(&proposed_files).expect("the proposed repository is valid");
        let p = preview(&current, &proposed, &observed, now, &options);
        let md = p.markdown("bench");
        // What the API answers: the compact JSON (pending deletions counted).
        let p = p.compact();
        let json = serde_json::to_vec(&p).expect("the preview serializes");
        (p, md, json)
    };
    let (warm, md, json) = answer();
    println!(
        "preview: {POLICIES} policies x {BACKUPS} backups: {} policy changes, {} deletions ({} caused by the change), {} new backups, {} schedule changes, {} orphaned, {} guard checks ({} refused), {} bytes of Markdown, {} bytes of JSON",
        warm.policies.len(),
        warm.deletions.iter().map(|d| d.count).sum::<usize>(),
        warm.caused_count(),
        warm.backups.len(),
        warm.schedules.len(),
        warm.orphaned.len(),
        warm.guard.len(),
        warm.refusals().len(),
        md.len(),
        json.len()
    );
    drop((warm, md, json));

    let n = 5;
    let mut runs: Vec<Duration> = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let out = answer();
        runs.push(start.elapsed());
        drop(black_box(out));
    }
    runs.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "preview (load + preview + Markdown + JSON answer): median {:.1} ms of {n} runs (min {:.1}, max {:.1}; target < 1000 ms)",
        ms(runs[n / 2]),
        ms(runs[0]),
        ms(runs[n - 1])
    );
}
