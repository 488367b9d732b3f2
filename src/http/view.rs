//! Pure: the status pages' content. Turns the daemon's last status and
//! catalog rows (gathered by `pages`) into page models and renders them with
//! the minijinja templates in src/http/templates/ (HTML autoescaping on; the
//! timeline SVG is escaped by `timeline` and embedded as is). Shows no
//! secret: no source URL, credential, notifier address or webhook URL.

use chrono::{DateTime, Utc};
use minijinja::{Environment, Value, context};
use serde::Serialize;

use super::timeline::{self, Mark};
use crate::catalog::{BackupRow, DeployRecord, DrillRow};
use crate::model::DriftKind;
use crate::notify::alerts::{ActiveAlert, human};
use crate::status::{PolicyStatus, Status};

/// Everything a page may show, read at request time.
pub struct Inputs {
    pub status: Option<Status>,
    /// When the daemon's last cycle ended.
    pub cycle_at: Option<DateTime<Utc>>,
    pub cycle_error: Option<String>,
    pub backups: Vec<BackupRow>,
    pub deploys: Vec<DeployRecord>,
    pub drills: Vec<DrillRow>,
    pub alerts: Vec<ActiveAlert>,
    pub now: DateTime<Utc>,
    /// Timeline window in days.
    pub days: i64,
}

#[derive(Serialize)]
struct PolicyRow {
    name: String,
    state: &'static str,
    reason: String,
    last_good: Option<String>,
    age: Option<String>,
    rpo: Option<String>,
    rpo_met: Option<bool>,
    next_run: Option<String>,
    drift: Vec<DriftKind>,
    backups: usize,
    last_drill: Option<&'static str>,
    /// PITR policies: the recoverable window, WAL lag and gaps.
    pitr_window: Option<String>,
}

#[derive(Serialize)]
struct BackupView {
    id: String,
    policy: String,
    trigger: &'static str,
    release: Option<String>,
    started: String,
    age: String,
    size: String,
    health: &'static str,
    pinned: Option<String>,
    problem: Option<String>,
    restore: String,
}

/// The exact command restoring backup `id` (the target is the reader's).
pub fn restore_command(id: &str) -> String {
    format!("safepoint restore {id} --to <TARGET>")
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
        _ => format!("{:.2} GiB", bytes as f64 / 1_073_741_824.0),
    }
}

fn policy_row(p: &PolicyStatus, now: DateTime<Utc>) -> PolicyRow {
    let state = if p.suspended {
        "Suspended"
    } else if p.ready {
        "Ready"
    } else {
        "Drift"
    };
    PolicyRow {
        name: p.name.clone(),
        state,
        reason: p.reason.clone(),
        last_good: p.last_good.as_ref().map(|g| g.id.clone()),
        age: p.last_good.as_ref().map(|g| human(g.age_seconds)),
        rpo: p.rpo_seconds.map(human),
        rpo_met: p.rpo_met,
        next_run: p.next_run.map(|t| {
            let until = (t - now).num_seconds();
            if until > 0 {
                format!("{} (in {})", time(t), human(until))
            } else {
                format!("{} (due)", time(t))
            }
        }),
        drift: p.drift.clone(),
        backups: p.backups,
        last_drill: p.last_drill_verdict,
        pitr_window: p.pitr.as_ref().map(pitr_window),
    }
}

/// `start → end (WAL lag 3s); missing <segments>` of a PITR policy.
fn pitr_window(w: &crate::pitr_status::PitrStatus) -> String {
    let at = |t: Option<DateTime<Utc>>| t.map_or_else(|| "–".to_string(), time);
    let mut text = format!("{} → {}", at(w.window_start), at(w.window_end));
    if let Some(lag) = w.lag_seconds {
        text.push_str(&format!(" (WAL lag {})", human(lag)));
    }
    if !w.gaps.is_empty() {
        text.push_str(&format!("; missing WAL {}", w.gaps.join(", ")));
    }
    text
}

fn backup_view(b: &BackupRow, now: DateTime<Utc>) -> BackupView {
    let r = &b.record;
    BackupView {
        id: r.id.clone(),
        policy: r.policy.clone(),
        trigger: r.trigger.as_str(),
        release: r.release.clone(),
        started: time(r.started_at),
        age: human((now - r.started_at).num_seconds()),
        size: size(r.size),
        health: r.health.as_str(),
        pinned: r.pinned.clone(),
        problem: b.problem.clone(),
        restore: restore_command(&r.id),
    }
}

/// The timeline's marks from the inputs, for `policy` only when given.
fn marks(i: &Inputs, policy: Option<&str>) -> Vec<Mark> {
    let wanted = |p: &str| policy.is_none_or(|w| w == p);
    let mut out = Vec::new();
    let mut releases = std::collections::BTreeMap::new();
    for b in i.backups.iter().filter(|b| wanted(&b.record.policy)) {
        let r = &b.record;
        if r.trigger == crate::observed::Trigger::Release
            && let Some(tag) = &r.release
        {
            releases.entry(tag.clone()).or_insert(r.started_at);
        }
        out.push(Mark::Backup {
            policy: r.policy.clone(),
            id: r.id.clone(),
            trigger: r.trigger.as_str().to_string(),
            at: r.started_at,
        });
    }
    for d in i.deploys.iter().filter(|d| wanted(&d.policy)) {
        out.push(Mark::Deploy {
            release: d.release.clone(),
            policy: d.policy.clone(),
            phase: d.phase.clone(),
            status: d.status.clone(),
            at: d.at,
        });
    }
    for d in i.drills.iter().filter(|d| wanted(&d.policy)) {
        if d.verdict == "running" {
            continue;
        }
        out.push(Mark::Drill {
            policy: d.policy.clone(),
            backup: d.backup_id.clone(),
            passed: d.verdict == "passed",
            at: d.finished_at.unwrap_or(d.started_at),
        });
    }
    for a in i
        .alerts
        .iter()
        .filter(|a| policy.is_none() || wanted(&a.policy))
    {
        out.push(Mark::Alert {
            policy: a.policy.clone(),
            reason: a.reason.clone(),
            since: a.since,
        });
    }
    out.extend(
        releases
            .into_iter()
            .map(|(tag, at)| Mark::Release { tag, at }),
    );
    out
}

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, text) in [
        ("base.html", include_str!("templates/base.html")),
        ("index.html", include_str!("templates/index.html")),
        ("policy.html", include_str!("templates/policy.html")),
        ("backup.html", include_str!("templates/backup.html")),
        ("missing.html", include_str!("templates/missing.html")),
    ] {
        // Compiled in: a syntax error shows as "template not found" when
        // rendering, and fails the unit tests (view_tests.rs) first.
        let _ = env.add_template(name, text);
    }
    env
}

fn render(template: &str, ctx: Value) -> Result<String, String> {
    env()
        .get_template(template)
        .and_then(|t| t.render(ctx))
        .map_err(|e| format!("cannot render {template}: {e}"))
}

fn legend() -> Vec<(&'static str, &'static str)> {
    [
        "schedule",
        "rpo",
        "release",
        "pre-deploy",
        "post-deploy",
        "forensic",
        "manual",
    ]
    .into_iter()
    .map(|t| (t, timeline::trigger_colour(t)))
    .collect()
}

/// `/`: the repository, every policy, the timeline, open alerts, recent backups.
pub fn index(i: &Inputs) -> Result<String, String> {
    let st = i.status.as_ref();
    let policies: Vec<PolicyRow> = st
        .map(|s| s.policies.iter().map(|p| policy_row(p, i.now)).collect())
        .unwrap_or_default();
    let names: Vec<String> = policies.iter().map(|p| p.name.clone()).collect();
    let svg = timeline::render(&names, &marks(i, None), i.now, i.days);
    let mut backups: Vec<&BackupRow> = i.backups.iter().collect();
    backups.sort_by_key(|b| std::cmp::Reverse(b.record.started_at));
    let backups: Vec<BackupView> = backups
        .into_iter()
        .take(20)
        .map(|b| backup_view(b, i.now))
        .collect();
    render(
        "index.html",
        context! {
            now => time(i.now),
            cycle_at => i.cycle_at.map(time),
            cycle_error => i.cycle_error,
            applied => st.and_then(|s| s.applied.clone()),
            attempted => st.and_then(|s| s.attempted.clone()),
            ready => st.is_some_and(|s| s.ready),
            repo_reason => st.map(|s| s.reason.clone()),
            diagnostics => st.map(|s| s.diagnostics.clone()).unwrap_or_default(),
            policies,
            timeline => Value::from_safe_string(svg),
            days => i.days,
            legend => legend(),
            alerts => alert_rows(&i.alerts, i.now),
            backups,
        },
    )
}

fn alert_rows(alerts: &[ActiveAlert], now: DateTime<Utc>) -> Vec<Value> {
    alerts
        .iter()
        .map(|a| {
            context! {
                policy => if a.policy.is_empty() { "repository".to_string() } else { a.policy.clone() },
                reason => a.reason,
                since => format!("{} ({} ago)", time(a.since), human((now - a.since).num_seconds())),
                detail => a.detail,
            }
        })
        .collect()
}

/// `/policies/{name}`; `None` when no such policy is in force.
pub fn policy(i: &Inputs, name: &str) -> Option<Result<String, String>> {
    let p = i
        .status
        .as_ref()?
        .policies
        .iter()
        .find(|p| p.name == name)?;
    let mut backups: Vec<&BackupRow> = i
        .backups
        .iter()
        .filter(|b| b.record.policy == name)
        .collect();
    backups.sort_by_key(|b| std::cmp::Reverse(b.record.started_at));
    let backups: Vec<BackupView> = backups.into_iter().map(|b| backup_view(b, i.now)).collect();
    let svg = timeline::render(&[name.to_string()], &marks(i, Some(name)), i.now, i.days);
    let deploys: Vec<&DeployRecord> = i.deploys.iter().filter(|d| d.policy == name).collect();
    let drills: Vec<Value> = i
        .drills
        .iter()
        .filter(|d| d.policy == name)
        .map(|d| context! { backup => d.backup_id, started => time(d.started_at), verdict => d.verdict,
            checks => d.checks.iter().map(|c| format!("{} {}: {}", if c.passed { "✓" } else { "✗" }, c.name, c.detail)).collect::<Vec<_>>() })
        .collect();
    Some(render(
        "policy.html",
        context! {
            now => time(i.now),
            p => policy_row(p, i.now),
            storage => p.storage,
            timeline => Value::from_safe_string(svg),
            days => i.days,
            legend => legend(),
            backups,
            deploys => deploys.iter().map(|d| context! { release => d.release, phase => d.phase, status => d.status, at => time(d.at), detail => d.detail, backup => d.backup_id }).collect::<Vec<_>>(),
            drills,
            alerts => alert_rows(&i.alerts.iter().filter(|a| a.policy == name).cloned().collect::<Vec<_>>(), i.now),
        },
    ))
}

/// `/backups/{id}`; `None` when the catalog has no such backup.
pub fn backup(i: &Inputs, id: &str) -> Option<Result<String, String>> {
    let b = i.backups.iter().find(|b| b.record.id == id)?;
    let drills: Vec<Value> = i
        .drills
        .iter()
        .filter(|d| d.backup_id == id)
        .map(|d| context! { started => time(d.started_at), verdict => d.verdict })
        .collect();
    Some(render(
        "backup.html",
        context! {
            now => time(i.now),
            b => backup_view(b, i.now),
            finished => time(b.record.finished_at),
            checksum => b.record.checksum,
            checked_at => b.checked_at.map(time),
            drills,
        },
    ))
}

/// A 404 page naming what was not found.
pub fn missing(what: &str) -> String {
    render("missing.html", context! { what => what }).unwrap_or_else(|_| "not found".to_string())
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
