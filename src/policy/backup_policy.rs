//! Pure: semantic checks of a `BackupPolicy` spec (deploy, retention, drill,
//! releases, durations) and its conversion into `model::BackupPolicy`.
//! References to storages and notifiers are checked later, across documents.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use chrono::TimeDelta;

use super::model::{self, DeploySpec, DrillCheck, DrillSpec, OnFailure, Retention};
use super::raw;
use super::source::{default_port, source};
use super::url;
use super::validate::{Sink, duration, schedule, secret_ref};
use crate::model::{Expectation, expectation};

/// Retention when the `retention` block is absent.
pub(crate) const DEFAULT_RETENTION: Retention = Retention {
    keep_last: 7,
    keep_hourly: 0,
    keep_daily: 0,
    keep_weekly: 0,
    keep_monthly: 0,
    keep_yearly: 0,
    keep_releases: 0,
};

/// Upper bound for one backup run when `timeout` is absent.
pub(crate) const DEFAULT_TIMEOUT: TimeDelta = TimeDelta::hours(1);

pub(crate) fn backup_policy(
    sink: &mut Sink<'_>,
    name: &str,
    labels: BTreeMap<String, String>,
    spec: raw::BackupPolicySpec,
) -> Option<model::BackupPolicy> {
    let source_type = spec.source.kind;
    let source = source(sink, spec.source, name);
    if spec.drill.is_some() && source.as_ref().is_some_and(|s| s.pitr().is_some()) {
        sink.err(
            "/spec/drill",
            "drills of a PITR policy (`source.pitr`) are not supported yet".to_owned(),
            "remove `drill`; check a base backup with `safepoint restore --policy P --latest --to-dir DIR --start` (docs/pitr.md)".to_owned(),
        );
        return None;
    }
    let schedule = spec.schedule.map(|s| schedule(sink, "/spec/schedule", s));
    let rpo = duration(sink, "/spec/rpo", spec.rpo.as_deref());
    let timeout = duration(sink, "/spec/timeout", spec.timeout.as_deref());
    let releases = spec.releases.map(|r| tag_pattern(sink, r.tag_pattern));
    let deploy = spec
        .deploy
        .map(|d| deploy(sink, d))
        .unwrap_or(Some(DeploySpec::default()));
    let retention = retention(sink, spec.retention);
    let drill = spec
        .drill
        .map(|d| drill(sink, d, source_type, source.as_ref()));
    let suspend = spec.suspend.unwrap_or(false);
    Some(model::BackupPolicy {
        name: name.to_owned(),
        labels,
        source: source?,
        storage: spec.storage,
        schedule: schedule.flatten_ok()?,
        rpo: rpo.ok()?,
        release_tag_pattern: releases.flatten_ok()?,
        deploy: deploy?,
        retention: retention?,
        drill: drill.flatten_ok()?,
        alerts: spec.alerts.map(|a| a.notifiers).unwrap_or_default(),
        suspend,
        timeout: timeout.ok()?.unwrap_or(DEFAULT_TIMEOUT),
    })
}

/// `Option<Option<T>>` where the inner `None` means "reported invalid".
trait FlattenOk<T> {
    fn flatten_ok(self) -> Option<Option<T>>;
}

impl<T> FlattenOk<T> for Option<Option<T>> {
    fn flatten_ok(self) -> Option<Option<T>> {
        match self {
            None => Some(None),
            Some(None) => None,
            Some(Some(v)) => Some(Some(v)),
        }
    }
}

fn tag_pattern(sink: &mut Sink<'_>, pattern: String) -> Option<String> {
    match glob::Pattern::new(&pattern) {
        Ok(_) if !pattern.is_empty() => Some(pattern),
        Ok(_) => {
            sink.err(
                "/spec/releases/tagPattern",
                "empty release tag pattern".to_owned(),
                "use a glob such as `v*`".to_owned(),
            );
            None
        }
        Err(e) => {
            sink.err(
                "/spec/releases/tagPattern",
                format!("invalid release tag pattern `{pattern}`: {}", e.msg),
                "use a glob such as `v*` or `release-[0-9]*`".to_owned(),
            );
            None
        }
    }
}

fn deploy(sink: &mut Sink<'_>, d: raw::Deploy) -> Option<DeploySpec> {
    let snapshot_before = d.before == Some(raw::Before::Snapshot);
    let mut on_failure: Vec<OnFailure> = Vec::new();
    let mut ok = true;
    for (i, f) in d.on_failure.unwrap_or_default().into_iter().enumerate() {
        let ptr = format!("/spec/deploy/onFailure/{i}");
        let f = match f {
            raw::OnFailure::PinPreDeploy => OnFailure::PinPreDeploy,
            raw::OnFailure::ForensicSnapshot => OnFailure::ForensicSnapshot,
            raw::OnFailure::Alert => OnFailure::Alert,
        };
        if on_failure.contains(&f) {
            ok = false;
            sink.err(
                &ptr,
                "action listed twice in `onFailure`".to_owned(),
                "remove the repetition".to_owned(),
            );
        } else if f == OnFailure::PinPreDeploy && !snapshot_before {
            ok = false;
            sink.err(
                &ptr,
                "`pin-pre-deploy` needs a pre-deploy snapshot, but `deploy.before` is not `snapshot`".to_owned(),
                "set `deploy.before: snapshot` or remove `pin-pre-deploy`".to_owned(),
            );
        }
        on_failure.push(f);
    }
    ok.then_some(DeploySpec {
        snapshot_before,
        baseline_on_success: d.on_success == Some(raw::OnSuccess::Baseline),
        on_failure,
    })
}

fn retention(sink: &mut Sink<'_>, r: Option<raw::RetentionSpec>) -> Option<Retention> {
    let Some(r) = r else {
        return Some(DEFAULT_RETENTION);
    };
    let retention = Retention {
        keep_last: r.keep_last.unwrap_or(0),
        keep_hourly: r.keep_hourly.unwrap_or(0),
        keep_daily: r.keep_daily.unwrap_or(0),
        keep_weekly: r.keep_weekly.unwrap_or(0),
        keep_monthly: r.keep_monthly.unwrap_or(0),
        keep_yearly: r.keep_yearly.unwrap_or(0),
        keep_releases: r.keep_releases.unwrap_or(0),
    };
    if retention.keeps_nothing() {
        sink.err_key(
            "/spec/retention",
            "retention keeps nothing: every rule is 0 or missing".to_owned(),
            "keep at least one backup, e.g. `keepLast: 3` (without a `retention` block the default is `keepLast: 7`)"
                .to_owned(),
        );
        return None;
    }
    Some(retention)
}

fn drill(
    sink: &mut Sink<'_>,
    d: raw::Drill,
    source_type: raw::SourceType,
    source: Option<&model::Source>,
) -> Option<DrillSpec> {
    let schedule = d
        .schedule
        .map(|s| schedule(sink, "/spec/drill/schedule", s))
        .flatten_ok();
    let max_duration = duration(sink, "/spec/drill/maxDuration", d.max_duration.as_deref());
    let target = drill_target(sink, d.target, source_type, source);
    let verify = d.verify.unwrap_or(raw::Verify {
        completeness: None,
        checks: Vec::new(),
    });
    let mut ok = true;
    if let Some(model::Source::Command { restore: None, .. }) = source {
        ok = false;
        sink.err_key(
            "/spec/drill",
            "a drill of a `command` source needs `source.restoreCommand`".to_owned(),
            "add `restoreCommand:` (reads the backup on stdin) or remove `drill`".to_owned(),
        );
    }
    let completeness = match (verify.completeness, source_type) {
        (None, raw::SourceType::Command | raw::SourceType::Directory) => model::Completeness::Off,
        (None, _) => model::Completeness::Exact,
        (Some(raw::Completeness::Off), _) => model::Completeness::Off,
        (Some(_), raw::SourceType::Command | raw::SourceType::Directory) => {
            ok = false;
            sink.err(
                "/spec/drill/verify/completeness",
                format!("completeness checks compare table row counts, which a `{}` source does not have", source_type.name()),
                "remove `completeness` or set it to `off`".to_owned(),
            );
            model::Completeness::Off
        }
        (Some(raw::Completeness::Exact), _) => model::Completeness::Exact,
        (Some(raw::Completeness::Estimate), _) => model::Completeness::Estimate,
    };
    let sql_capable = !matches!(
        source_type,
        raw::SourceType::Command | raw::SourceType::Directory
    );
    let mut checks: Vec<DrillCheck> = Vec::new();
    for (i, c) in verify.checks.into_iter().enumerate() {
        let ptr = format!("/spec/drill/verify/checks/{i}");
        if !sql_capable {
            ok = false;
            sink.err_key(
                &ptr,
                format!(
                    "sql checks need a database, but the source is `{}`",
                    source_type.name()
                ),
                "remove `checks` from this drill".to_owned(),
            );
            continue;
        }
        if checks.iter().any(|k| k.name == c.name) {
            ok = false;
            sink.err(
                &format!("{ptr}/name"),
                format!("check name `{}` used twice", c.name),
                "give each check its own name".to_owned(),
            );
        }
        if c.sql.trim().is_empty() {
            ok = false;
            sink.err(
                &format!("{ptr}/sql"),
                "empty sql in check".to_owned(),
                "write a query returning one value".to_owned(),
            );
        }
        let expect = match Expectation::parse(&c.expect) {
            Ok(expect) => Some(expect),
            Err(problem) => {
                ok = false;
                sink.err(
                    &format!("{ptr}/expect"),
                    format!("invalid expectation: {problem}"),
                    expectation::FORMS.to_owned(),
                );
                None
            }
        };
        if let Some(expect) = expect {
            checks.push(DrillCheck {
                name: c.name,
                sql: c.sql,
                expect,
            });
        }
    }
    let (schedule, max_duration, target) = (schedule?, max_duration.ok()?, target?);
    ok.then_some(DrillSpec {
        schedule,
        target,
        completeness,
        checks,
        max_duration,
    })
}

fn drill_target(
    sink: &mut Sink<'_>,
    t: raw::DrillTargetSpec,
    source_type: raw::SourceType,
    source: Option<&model::Source>,
) -> Option<model::DrillTarget> {
    let base = "/spec/drill/target";
    let expected = match source_type {
        raw::SourceType::Postgres => Some(raw::DrillTargetType::Postgres),
        raw::SourceType::Mysql => Some(raw::DrillTargetType::Mysql),
        raw::SourceType::Sqlite | raw::SourceType::Directory => {
            Some(raw::DrillTargetType::Directory)
        }
        raw::SourceType::Command => None,
    };
    let mut ok = true;
    if let Some(expected) = expected.filter(|e| *e != t.kind) {
        ok = false;
        sink.err(
            &format!("{base}/type"),
            format!(
                "a `{}` drill target cannot restore a `{}` source",
                t.kind.name(),
                source_type.name()
            ),
            format!("use `type: {}`", expected.name()),
        );
    }
    let is_db = t.kind != raw::DrillTargetType::Directory;
    let uses = if is_db {
        "`url` and `passwordFrom`"
    } else {
        "`path`"
    };
    for (field, present, allowed) in [
        ("url", t.url.is_some(), is_db),
        ("passwordFrom", t.password_from.is_some(), is_db),
        ("path", t.path.is_some(), !is_db),
    ] {
        if present && !allowed {
            ok = false;
            sink.err_key(
                &format!("{base}/{field}"),
                format!(
                    "`{field}` does not apply to a `{}` drill target",
                    t.kind.name()
                ),
                format!("remove it; a `{}` drill target uses {uses}", t.kind.name()),
            );
        }
    }
    let password_from = t
        .password_from
        .and_then(|p| secret_ref(sink, &format!("{base}/passwordFrom"), p, &mut ok));
    let target = if is_db {
        let Some(u) = t.url else {
            sink.err_key(base, format!("a `{}` drill target needs `url`", t.kind.name()), "add `url:` of a scratch server, e.g. `postgres://drill@scratch.internal:5432/postgres`".to_owned());
            return None;
        };
        let parsed = url::parse(&u);
        if parsed.is_none() {
            ok = false;
            sink.err(
                &format!("{base}/url"),
                "drill target url is not a URL".to_owned(),
                "write it like `postgres://user@host:port/database`".to_owned(),
            );
        }
        if let (Some(target), Some(src)) = (parsed, source) {
            let src_url = match src {
                model::Source::Postgres { url, .. } | model::Source::Mysql { url, .. } => {
                    url::parse(url)
                }
                _ => None,
            };
            let port = default_port(src);
            if src_url.is_some_and(|s| url::server_key(&s, port) == url::server_key(&target, port))
            {
                ok = false;
                sink.err(
                    &format!("{base}/url"),
                    "drill target is the source database (same host, port and database)".to_owned(),
                    "drills restore into a segregated scratch server; point `target.url` at another server".to_owned(),
                );
            }
        }
        if t.kind == raw::DrillTargetType::Postgres {
            model::DrillTarget::Postgres {
                url: u,
                password_from,
            }
        } else {
            model::DrillTarget::Mysql {
                url: u,
                password_from,
            }
        }
    } else {
        let Some(p) = t.path else {
            sink.err_key(
                base,
                "a `directory` drill target needs `path`".to_owned(),
                "add `path: /var/tmp/safepoint-drills`".to_owned(),
            );
            return None;
        };
        let src_path = match source {
            Some(model::Source::Sqlite { path } | model::Source::Directory { path, .. }) => {
                Some(path.as_path())
            }
            _ => None,
        };
        if src_path.is_some_and(|s| normalize(Path::new(&p)).starts_with(normalize(s))) {
            ok = false;
            sink.err(
                &format!("{base}/path"),
                "drill target is the source path (or inside it)".to_owned(),
                "restore drills into a separate scratch directory, e.g. `/var/tmp/safepoint-drills`".to_owned(),
            );
        }
        model::DrillTarget::Directory {
            path: PathBuf::from(p),
        }
    };
    ok.then_some(target)
}

/// Lexical normalisation: drops `.` and resolves `..` without touching disk.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_lexically() {
        assert_eq!(
            normalize(Path::new("/srv/./a/../b/")),
            PathBuf::from("/srv/b")
        );
    }
}
