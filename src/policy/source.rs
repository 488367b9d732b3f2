//! Pure: the `source` of a `BackupPolicy`: fields required and forbidden per
//! source type, URL shape, exclude globs; conversion into `model::Source`.

use std::path::PathBuf;

use super::model;
use super::raw;
use super::url;
use super::validate::{Sink, does_not_apply, secret_ref};

const BASE: &str = "/spec/source";

/// Checks required and forbidden fields per source type.
pub(crate) fn source(
    sink: &mut Sink<'_>,
    s: raw::SourceSpec,
    policy: &str,
) -> Option<model::Source> {
    let mut ok = fields_apply(sink, &s);
    let source = match s.kind {
        raw::SourceType::Postgres | raw::SourceType::Mysql => database(sink, s, policy, &mut ok)?,
        raw::SourceType::Sqlite => model::Source::Sqlite {
            path: PathBuf::from(require(
                sink,
                s.kind,
                "path",
                s.path,
                "/var/lib/app/app.db",
            )?),
        },
        raw::SourceType::Directory => directory(sink, s, &mut ok)?,
        raw::SourceType::Command => model::Source::Command {
            backup: require(
                sink,
                s.kind,
                "backupCommand",
                s.backup_command,
                "\"pg_dumpall --clean\"",
            )?,
            restore: s.restore_command,
        },
    };
    ok.then_some(source)
}

/// Every field present is one of the source type's own.
fn fields_apply(sink: &mut Sink<'_>, s: &raw::SourceSpec) -> bool {
    let uses = match s.kind {
        raw::SourceType::Postgres => "`url`, `passwordFrom`, `binDir` and `pitr`",
        raw::SourceType::Mysql => "`url` and `passwordFrom`",
        raw::SourceType::Sqlite => "`path`",
        raw::SourceType::Directory => "`path` and `exclude`",
        raw::SourceType::Command => "`backupCommand` and `restoreCommand`",
    };
    let is_db = matches!(s.kind, raw::SourceType::Postgres | raw::SourceType::Mysql);
    let is_file = matches!(s.kind, raw::SourceType::Sqlite | raw::SourceType::Directory);
    let is_cmd = s.kind == raw::SourceType::Command;
    let mut ok = true;
    for (field, present, allowed) in [
        ("url", s.url.is_some(), is_db),
        ("passwordFrom", s.password_from.is_some(), is_db),
        (
            "binDir",
            s.bin_dir.is_some(),
            s.kind == raw::SourceType::Postgres,
        ),
        (
            "pitr",
            s.pitr.is_some(),
            s.kind == raw::SourceType::Postgres,
        ),
        ("path", s.path.is_some(), is_file),
        (
            "exclude",
            s.exclude.is_some(),
            s.kind == raw::SourceType::Directory,
        ),
        ("backupCommand", s.backup_command.is_some(), is_cmd),
        ("restoreCommand", s.restore_command.is_some(), is_cmd),
    ] {
        if present && !allowed {
            ok = false;
            does_not_apply(sink, BASE, field, s.kind.name(), "source", uses);
        }
    }
    ok
}

/// A field the source type needs, present and not blank.
fn require(
    sink: &mut Sink<'_>,
    kind: raw::SourceType,
    field: &str,
    value: Option<String>,
    example: &str,
) -> Option<String> {
    let kind = kind.name();
    match value {
        Some(v) if !v.trim().is_empty() => Some(v),
        Some(_) => {
            sink.err(
                &format!("{BASE}/{field}"),
                format!("`{field}` of a `{kind}` source is empty"),
                format!("write it like `{field}: {example}`"),
            );
            None
        }
        None => {
            sink.err_key(
                BASE,
                format!("a `{kind}` source needs `{field}`"),
                format!("add `{field}: {example}`"),
            );
            None
        }
    }
}

/// A `postgres` or `mysql` source: its URL, password reference and, for
/// PostgreSQL, client directory and point-in-time recovery.
fn database(
    sink: &mut Sink<'_>,
    s: raw::SourceSpec,
    policy: &str,
    ok: &mut bool,
) -> Option<model::Source> {
    let postgres = s.kind == raw::SourceType::Postgres;
    let example = if postgres {
        "postgres://backup@db.internal:5432/orders"
    } else {
        "mysql://backup@db.internal:3306/orders"
    };
    let url = require(sink, s.kind, "url", s.url, example);
    let url = url.filter(|u| db_url(sink, &format!("{BASE}/url"), s.kind.name(), u));
    let password_from = s
        .password_from
        .and_then(|p| secret_ref(sink, &format!("{BASE}/passwordFrom"), p, ok));
    let bin_dir = bin_dir(sink, s.bin_dir, ok);
    let pitr = match s.pitr.filter(|_| postgres) {
        Some(p) => Some(super::pitr::pitr(sink, &format!("{BASE}/pitr"), p, policy)?),
        None => None,
    };
    let url = url?;
    Some(if postgres {
        model::Source::Postgres {
            url,
            password_from,
            bin_dir,
            pitr,
        }
    } else {
        model::Source::Mysql { url, password_from }
    })
}

/// `binDir`, when given, is not blank.
fn bin_dir(sink: &mut Sink<'_>, dir: Option<String>, ok: &mut bool) -> Option<PathBuf> {
    match dir {
        Some(d) if d.trim().is_empty() => {
            *ok = false;
            sink.err(
                &format!("{BASE}/binDir"),
                "`binDir` is empty".to_owned(),
                "write it like `binDir: /usr/lib/postgresql/17/bin`, or remove it to use the newest installed client".to_owned(),
            );
            None
        }
        d => d.map(PathBuf::from),
    }
}

/// A `directory` source: its path and exclude globs.
fn directory(sink: &mut Sink<'_>, s: raw::SourceSpec, ok: &mut bool) -> Option<model::Source> {
    let exclude = s.exclude.unwrap_or_default();
    for (i, pattern) in exclude.iter().enumerate() {
        if let Err(e) = glob::Pattern::new(pattern) {
            *ok = false;
            sink.err(
                &format!("{BASE}/exclude/{i}"),
                format!("invalid exclude pattern `{pattern}`: {}", e.msg),
                "use glob syntax: `*.tmp`, `cache/**`".to_owned(),
            );
        }
    }
    Some(model::Source::Directory {
        path: PathBuf::from(require(sink, s.kind, "path", s.path, "/srv/uploads")?),
        exclude,
    })
}

/// A `postgres`/`mysql` URL: right scheme, a host or socket, no database check.
fn db_url(sink: &mut Sink<'_>, ptr: &str, kind: &str, u: &str) -> bool {
    let schemes: &[&str] = if kind == "postgres" {
        &["postgres", "postgresql"]
    } else {
        &["mysql", "mariadb"]
    };
    match url::parse(u) {
        Some(parsed) if schemes.contains(&parsed.scheme) => true,
        _ => {
            sink.err(
                ptr,
                format!("not a `{kind}` URL"),
                format!(
                    "write it like `{}://user@host:port/database` (password via passwordFrom)",
                    schemes[0]
                ),
            );
            false
        }
    }
}

pub(crate) fn default_port(source: &model::Source) -> u16 {
    match source {
        model::Source::Mysql { .. } => 3306,
        _ => 5432,
    }
}
