//! Pure: the `drill` block of a `BackupPolicy`: its schedule and time limit,
//! the scratch target it restores into (of the source's type, never the
//! source itself), completeness and SQL checks with their expectations.
//! A PITR policy's drill takes no target (a scratch cluster under the
//! daemon's data directory) and no completeness (row counts at a random
//! point in time are not known in advance).

use std::path::{Component, Path, PathBuf};

use super::super::model::{self, DrillCheck, DrillSpec};
use super::super::raw;
use super::super::source::default_port;
use super::super::url;
use super::super::validate::{Sink, duration, schedule, secret_ref};
use super::FlattenOk;
use crate::model::{Expectation, expectation};

const TARGET: &str = "/spec/drill/target";

pub(super) fn drill(
    sink: &mut Sink<'_>,
    d: raw::Drill,
    source_type: raw::SourceType,
    source: Option<&model::Source>,
    pitr: bool,
) -> Option<DrillSpec> {
    let schedule = d
        .schedule
        .map(|s| schedule(sink, "/spec/drill/schedule", s))
        .flatten_ok();
    let max_duration = duration(sink, "/spec/drill/maxDuration", d.max_duration.as_deref());
    let target = match (d.target, pitr) {
        (Some(t), false) => target(sink, t, source_type, source),
        (None, false) => {
            sink.err_key(
                "/spec/drill",
                "a drill needs `target`".to_owned(),
                "add `target:` (a scratch server or directory, never the source)".to_owned(),
            );
            None
        }
        (None, true) => Some(model::DrillTarget::PitrCluster),
        (Some(_), true) => {
            sink.err_key(
                TARGET,
                "a drill of a PITR policy restores into a scratch cluster under the daemon's data directory; it takes no `target`".to_owned(),
                "remove `target` (docs/pitr.md, \"Drills\")".to_owned(),
            );
            None
        }
    };
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
    let completeness = if pitr {
        pitr_completeness(sink, verify.completeness, &mut ok)
    } else {
        completeness(sink, verify.completeness, source_type, &mut ok)
    };
    let checks = checks(sink, verify.checks, source_type, &mut ok);
    let (schedule, max_duration, target) = (schedule?, max_duration.ok()?, target?);
    ok.then_some(DrillSpec {
        schedule,
        target,
        completeness,
        checks,
        max_duration,
    })
}

/// Row counts are compared by default where there are tables; asking for
/// them where there are none is an error.
fn completeness(
    sink: &mut Sink<'_>,
    c: Option<raw::Completeness>,
    source_type: raw::SourceType,
    ok: &mut bool,
) -> model::Completeness {
    match (c, source_type) {
        (None, raw::SourceType::Command | raw::SourceType::Directory) => model::Completeness::Off,
        (None, _) => model::Completeness::Exact,
        (Some(raw::Completeness::Off), _) => model::Completeness::Off,
        (Some(_), raw::SourceType::Command | raw::SourceType::Directory) => {
            *ok = false;
            sink.err(
                "/spec/drill/verify/completeness",
                format!("completeness checks compare table row counts, which a `{}` source does not have", source_type.name()),
                "remove `completeness` or set it to `off`".to_owned(),
            );
            model::Completeness::Off
        }
        (Some(raw::Completeness::Exact), _) => model::Completeness::Exact,
        (Some(raw::Completeness::Estimate), _) => model::Completeness::Estimate,
    }
}

/// A PITR drill restores to a random point in time, whose row counts are
/// not known in advance: completeness does not apply.
fn pitr_completeness(
    sink: &mut Sink<'_>,
    c: Option<raw::Completeness>,
    ok: &mut bool,
) -> model::Completeness {
    if matches!(
        c,
        Some(raw::Completeness::Exact | raw::Completeness::Estimate)
    ) {
        *ok = false;
        sink.err(
            "/spec/drill/verify/completeness",
            "a drill of a PITR policy restores to a random point in time, whose row counts are not known in advance: completeness checks do not apply".to_owned(),
            "remove `completeness` (or set it to `off`) and check the restored data with `checks`".to_owned(),
        );
    }
    model::Completeness::Off
}

/// The SQL checks, for sources that are databases.
fn checks(
    sink: &mut Sink<'_>,
    list: Vec<raw::Check>,
    source_type: raw::SourceType,
    ok: &mut bool,
) -> Vec<DrillCheck> {
    let sql_capable = !matches!(
        source_type,
        raw::SourceType::Command | raw::SourceType::Directory
    );
    let mut checks: Vec<DrillCheck> = Vec::new();
    for (i, c) in list.into_iter().enumerate() {
        let ptr = format!("/spec/drill/verify/checks/{i}");
        if !sql_capable {
            *ok = false;
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
        if let Some(check) = check(sink, &ptr, c, &checks, ok) {
            checks.push(check);
        }
    }
    checks
}

/// One check: a name of its own, some SQL, an expectation in the grammar
/// drills evaluate. `None` only when the expectation does not parse.
fn check(
    sink: &mut Sink<'_>,
    ptr: &str,
    c: raw::Check,
    earlier: &[DrillCheck],
    ok: &mut bool,
) -> Option<DrillCheck> {
    if earlier.iter().any(|k| k.name == c.name) {
        *ok = false;
        sink.err(
            &format!("{ptr}/name"),
            format!("check name `{}` used twice", c.name),
            "give each check its own name".to_owned(),
        );
    }
    if c.sql.trim().is_empty() {
        *ok = false;
        sink.err(
            &format!("{ptr}/sql"),
            "empty sql in check".to_owned(),
            "write a query returning one value".to_owned(),
        );
    }
    match Expectation::parse(&c.expect) {
        Ok(expect) => Some(DrillCheck {
            name: c.name,
            sql: c.sql,
            expect,
        }),
        Err(problem) => {
            *ok = false;
            sink.err(
                &format!("{ptr}/expect"),
                format!("invalid expectation: {problem}"),
                expectation::FORMS.to_owned(),
            );
            None
        }
    }
}

/// The scratch target: its type fits the source's, its fields fit its type,
/// and it is not the source.
fn target(
    sink: &mut Sink<'_>,
    t: raw::DrillTargetSpec,
    source_type: raw::SourceType,
    source: Option<&model::Source>,
) -> Option<model::DrillTarget> {
    let mut ok = kind_fits(sink, t.kind, source_type);
    let is_db = t.kind != raw::DrillTargetType::Directory;
    ok &= fields_apply(sink, &t, is_db);
    let password_from = t
        .password_from
        .and_then(|p| secret_ref(sink, &format!("{TARGET}/passwordFrom"), p, &mut ok));
    let target = if is_db {
        let Some(u) = t.url else {
            sink.err_key(TARGET, format!("a `{}` drill target needs `url`", t.kind.name()), "add `url:` of a scratch server, e.g. `postgres://drill@scratch.internal:5432/postgres`".to_owned());
            return None;
        };
        ok &= not_the_source_server(sink, &u, source);
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
                TARGET,
                "a `directory` drill target needs `path`".to_owned(),
                "add `path: /var/tmp/safepoint-drills`".to_owned(),
            );
            return None;
        };
        ok &= not_the_source_path(sink, &p, source);
        model::DrillTarget::Directory {
            path: PathBuf::from(p),
        }
    };
    ok.then_some(target)
}

/// A database is restored into a server of its own type, files into a
/// directory; a command's restore decides itself.
fn kind_fits(
    sink: &mut Sink<'_>,
    kind: raw::DrillTargetType,
    source_type: raw::SourceType,
) -> bool {
    let expected = match source_type {
        raw::SourceType::Postgres => Some(raw::DrillTargetType::Postgres),
        raw::SourceType::Mysql => Some(raw::DrillTargetType::Mysql),
        raw::SourceType::Sqlite | raw::SourceType::Directory => {
            Some(raw::DrillTargetType::Directory)
        }
        raw::SourceType::Command => None,
    };
    let Some(expected) = expected.filter(|e| *e != kind) else {
        return true;
    };
    sink.err(
        &format!("{TARGET}/type"),
        format!(
            "a `{}` drill target cannot restore a `{}` source",
            kind.name(),
            source_type.name()
        ),
        format!("use `type: {}`", expected.name()),
    );
    false
}

/// `url` and `passwordFrom` for a database target, `path` for a directory.
fn fields_apply(sink: &mut Sink<'_>, t: &raw::DrillTargetSpec, is_db: bool) -> bool {
    let uses = if is_db {
        "`url` and `passwordFrom`"
    } else {
        "`path`"
    };
    let mut ok = true;
    for (field, present, allowed) in [
        ("url", t.url.is_some(), is_db),
        ("passwordFrom", t.password_from.is_some(), is_db),
        ("path", t.path.is_some(), !is_db),
    ] {
        if present && !allowed {
            ok = false;
            sink.err_key(
                &format!("{TARGET}/{field}"),
                format!(
                    "`{field}` does not apply to a `{}` drill target",
                    t.kind.name()
                ),
                format!("remove it; a `{}` drill target uses {uses}", t.kind.name()),
            );
        }
    }
    ok
}

/// The target URL parses and names another server or database than the
/// source's.
fn not_the_source_server(sink: &mut Sink<'_>, u: &str, source: Option<&model::Source>) -> bool {
    let mut ok = true;
    let parsed = url::parse(u);
    if parsed.is_none() {
        ok = false;
        sink.err(
            &format!("{TARGET}/url"),
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
        if src_url.is_some_and(|s| url::server_key(&s, port) == url::server_key(&target, port)) {
            ok = false;
            sink.err(
                &format!("{TARGET}/url"),
                "drill target is the source database (same host, port and database)".to_owned(),
                "drills restore into a segregated scratch server; point `target.url` at another server".to_owned(),
            );
        }
    }
    ok
}

/// The target directory is neither the source path nor inside it.
fn not_the_source_path(sink: &mut Sink<'_>, p: &str, source: Option<&model::Source>) -> bool {
    let src_path = match source {
        Some(model::Source::Sqlite { path } | model::Source::Directory { path, .. }) => {
            Some(path.as_path())
        }
        _ => None,
    };
    if src_path.is_some_and(|s| normalize(Path::new(p)).starts_with(normalize(s))) {
        sink.err(
            &format!("{TARGET}/path"),
            "drill target is the source path (or inside it)".to_owned(),
            "restore drills into a separate scratch directory, e.g. `/var/tmp/safepoint-drills`"
                .to_owned(),
        );
        return false;
    }
    true
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
