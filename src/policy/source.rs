//! Pure: the `source` of a `BackupPolicy`: fields required and forbidden per
//! source type, URL shape, exclude globs; conversion into `model::Source`.

use std::path::PathBuf;

use super::model;
use super::raw;
use super::url;
use super::validate::{Sink, does_not_apply, secret_ref};

/// Checks required and forbidden fields per source type.
pub(crate) fn source(
    sink: &mut Sink<'_>,
    s: raw::SourceSpec,
    policy: &str,
) -> Option<model::Source> {
    let base = "/spec/source";
    let kind = s.kind.name();
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
            does_not_apply(sink, base, field, kind, "source", uses);
        }
    }
    let require = |sink: &mut Sink<'_>,
                   field: &str,
                   value: Option<String>,
                   example: &str|
     -> Option<String> {
        match value {
            Some(v) if !v.trim().is_empty() => Some(v),
            Some(_) => {
                sink.err(
                    &format!("{base}/{field}"),
                    format!("`{field}` of a `{kind}` source is empty"),
                    format!("write it like `{field}: {example}`"),
                );
                None
            }
            None => {
                sink.err_key(
                    base,
                    format!("a `{kind}` source needs `{field}`"),
                    format!("add `{field}: {example}`"),
                );
                None
            }
        }
    };
    let source = match s.kind {
        raw::SourceType::Postgres | raw::SourceType::Mysql => {
            let example = if is_db && s.kind == raw::SourceType::Postgres {
                "postgres://backup@db.internal:5432/orders"
            } else {
                "mysql://backup@db.internal:3306/orders"
            };
            let url = require(sink, "url", s.url, example);
            let url = url.filter(|u| db_url(sink, &format!("{base}/url"), s.kind.name(), u));
            let password_from = s
                .password_from
                .and_then(|p| secret_ref(sink, &format!("{base}/passwordFrom"), p, &mut ok));
            let bin_dir = match s.bin_dir {
                Some(d) if d.trim().is_empty() => {
                    ok = false;
                    sink.err(
                        &format!("{base}/binDir"),
                        "`binDir` is empty".to_owned(),
                        "write it like `binDir: /usr/lib/postgresql/17/bin`, or remove it to use the newest installed client".to_owned(),
                    );
                    None
                }
                d => d.map(PathBuf::from),
            };
            let pitr = match s.pitr.filter(|_| s.kind == raw::SourceType::Postgres) {
                Some(p) => Some(super::pitr::pitr(sink, &format!("{base}/pitr"), p, policy)?),
                None => None,
            };
            let url = url?;
            if s.kind == raw::SourceType::Postgres {
                model::Source::Postgres {
                    url,
                    password_from,
                    bin_dir,
                    pitr,
                }
            } else {
                model::Source::Mysql { url, password_from }
            }
        }
        raw::SourceType::Sqlite => model::Source::Sqlite {
            path: PathBuf::from(require(sink, "path", s.path, "/var/lib/app/app.db")?),
        },
        raw::SourceType::Directory => {
            let exclude = s.exclude.unwrap_or_default();
            for (i, pattern) in exclude.iter().enumerate() {
                if let Err(e) = glob::Pattern::new(pattern) {
                    ok = false;
                    sink.err(
                        &format!("{base}/exclude/{i}"),
                        format!("invalid exclude pattern `{pattern}`: {}", e.msg),
                        "use glob syntax: `*.tmp`, `cache/**`".to_owned(),
                    );
                }
            }
            model::Source::Directory {
                path: PathBuf::from(require(sink, "path", s.path, "/srv/uploads")?),
                exclude,
            }
        }
        raw::SourceType::Command => model::Source::Command {
            backup: require(
                sink,
                "backupCommand",
                s.backup_command,
                "\"pg_dumpall --clean\"",
            )?,
            restore: s.restore_command,
        },
    };
    ok.then_some(source)
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
