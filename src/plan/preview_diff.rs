//! Pure: the desired-state half of a preview — policies added, removed,
//! renamed-looking (a removed and an added policy with the same source) and
//! changed (dotted fields); storages, notifiers and drills added, removed or
//! changed; schedules that change, with the next run before and after.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::preview::{Change, FieldChange, NamedChange, PolicyChange, Preview, ScheduleChange};
use super::schedule;
use crate::policy::{BackupPolicy, DesiredState, Schedule};

/// Fills the desired-state diff of `out`.
pub(super) fn diff(
    current: &DesiredState,
    proposed: &DesiredState,
    now: DateTime<Utc>,
    out: &mut Preview,
) {
    diff_policies(current, proposed, out);
    out.storages = diff_named(&current.storages, &proposed.storages);
    out.notifiers = diff_named(&current.notifiers, &proposed.notifiers);
    diff_drills_and_schedules(current, proposed, now, out);
}

fn diff_policies(current: &DesiredState, proposed: &DesiredState, out: &mut Preview) {
    let removed: Vec<&BackupPolicy> = current
        .policies
        .values()
        .filter(|p| !proposed.policies.contains_key(&p.name))
        .collect();
    let mut renamed_to: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, p) in &proposed.policies {
        let Some(old) = current.policies.get(name) else {
            let from = removed
                .iter()
                .find(|r| r.source == p.source && !renamed_to.contains_key(r.name.as_str()))
                .copied();
            if let Some(r) = from {
                renamed_to.insert(r.name.as_str(), name.as_str());
            }
            out.policies.push(PolicyChange {
                policy: name.clone(),
                change: Change::Added,
                fields: Vec::new(),
                renamed: from.map(|r| r.name.clone()),
            });
            continue;
        };
        if old != p {
            out.policies.push(PolicyChange {
                policy: name.clone(),
                change: Change::Changed,
                fields: field_changes(old, p),
                renamed: None,
            });
        }
    }
    for r in removed {
        out.policies.push(PolicyChange {
            policy: r.name.clone(),
            change: Change::Removed,
            fields: Vec::new(),
            renamed: renamed_to.get(r.name.as_str()).map(|s| s.to_string()),
        });
    }
}

/// Dotted paths whose values differ, one level of nesting deep enough for
/// `retention.keepDaily` and `source.path`; lists compare as a whole.
fn field_changes(old: &BackupPolicy, new: &BackupPolicy) -> Vec<FieldChange> {
    let (a, b) = (
        serde_json::to_value(old).unwrap_or_default(),
        serde_json::to_value(new).unwrap_or_default(),
    );
    let mut out = Vec::new();
    diff_values("", &a, &b, &mut out);
    out
}

fn diff_values(path: &str, a: &Value, b: &Value, out: &mut Vec<FieldChange>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let field = if path.is_empty() {
                    camel(k)
                } else {
                    format!("{path}.{}", camel(k))
                };
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                diff_values(&field, va, vb, out);
            }
        }
        _ => out.push(FieldChange {
            field: path.to_string(),
            before: a.clone(),
            after: b.clone(),
        }),
    }
}

/// The model's snake_case field names as users write them in YAML.
fn camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut upper = false;
    for c in s.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn diff_named<T: PartialEq>(a: &BTreeMap<String, T>, b: &BTreeMap<String, T>) -> Vec<NamedChange> {
    let mut out = Vec::new();
    for (name, x) in a {
        match b.get(name) {
            None => out.push(named(name, Change::Removed)),
            Some(y) if x != y => out.push(named(name, Change::Changed)),
            Some(_) => {}
        }
    }
    for name in b.keys().filter(|n| !a.contains_key(*n)) {
        out.push(named(name, Change::Added));
    }
    out
}

fn named(name: &str, change: Change) -> NamedChange {
    NamedChange {
        name: name.to_string(),
        change,
    }
}

fn describe_schedule(s: &Schedule) -> String {
    format!("{} ({})", s.cron, s.timezone.name())
}

fn diff_drills_and_schedules(
    current: &DesiredState,
    proposed: &DesiredState,
    now: DateTime<Utc>,
    out: &mut Preview,
) {
    fn drill(d: &DesiredState) -> BTreeMap<String, &crate::policy::DrillSpec> {
        d.policies
            .iter()
            .filter_map(|(n, p)| p.drill.as_ref().map(|d| (n.clone(), d)))
            .collect()
    }
    out.drills = diff_named(&drill(current), &drill(proposed));
    let names: BTreeSet<&String> = current
        .policies
        .keys()
        .chain(proposed.policies.keys())
        .collect();
    for name in names {
        let a = current.policies.get(name).and_then(|p| p.schedule.as_ref());
        let b = proposed
            .policies
            .get(name)
            .and_then(|p| p.schedule.as_ref());
        if a == b {
            continue;
        }
        out.schedules.push(ScheduleChange {
            policy: name.clone(),
            before: a.map(describe_schedule),
            after: b.map(describe_schedule),
            next_before: a.and_then(|s| schedule::next_slot(s, now)),
            next_after: b.and_then(|s| schedule::next_slot(s, now)),
        });
    }
}
