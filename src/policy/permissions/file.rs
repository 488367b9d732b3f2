//! Pure: the text of the operator's permissions file -> `Permissions`, or
//! every problem with file:line (the same YAML reader as policies).

use std::collections::BTreeMap;
use std::path::PathBuf;

use glob::Pattern;
use serde::Deserialize;
use serde_json::Value;

use super::super::Diagnostic;
use super::super::suggest::{closest, one_of};
use super::super::validate::{API_VERSION, Sink};
use super::super::yaml::{self, join};
use super::{Grant, HostPattern, Permissions, Protected, SOURCE_KINDS, Selector};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFile {
    api_version: String,
    kind: String,
    #[serde(default)]
    grants: Vec<RawGrant>,
    #[serde(default)]
    protected_paths: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawGrant {
    name: String,
    #[serde(default, rename = "match")]
    select: RawSelector,
    #[serde(default)]
    source_kinds: Vec<String>,
    #[serde(default)]
    source_roots: Vec<String>,
    #[serde(default)]
    scratch_roots: Vec<String>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    secrets: RawSecrets,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSelector {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    files: Vec<String>,
}

/// Parses the operator file `origin` (its path, used in messages). Relative
/// policy paths resolve against `/` and nothing is protected until the
/// caller fills in `base_dir`, `policy_root` and the daemon's own paths.
pub fn parse(origin: &str, text: &str) -> Result<Permissions, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let parsed = yaml::parse(text);
    for p in parsed.problems {
        diags.push(Diagnostic {
            file: origin.to_owned(),
            line: p.pos.line,
            column: p.pos.col,
            message: p.message,
            hint: p.hint,
        });
    }
    let docs: Vec<_> = parsed.documents.iter().map(yaml::to_json).collect();
    let docs: Vec<_> = docs.into_iter().filter(|(v, _)| !v.is_null()).collect();
    let mut result = None;
    match docs.as_slice() {
        [(value, locs)] => {
            let mut sink = Sink {
                file: origin,
                locs,
                diags: &mut diags,
            };
            result = convert(&mut sink, origin, value.clone());
        }
        [] if diags.is_empty() => diags.push(Diagnostic {
            file: origin.to_owned(),
            line: 0,
            column: 0,
            message: "the permissions file is empty".into(),
            hint: Some(format!(
                "start it with `apiVersion: {API_VERSION}` and `kind: Permissions` (see docs/permissions.md)"
            )),
        }),
        [] => {}
        [_, (_, locs), ..] => diags.push(Diagnostic {
            file: origin.to_owned(),
            line: locs.value("").line,
            column: 0,
            message: "the permissions file holds more than one YAML document".into(),
            hint: Some("keep a single document; list every team under `grants`".into()),
        }),
    }
    match result {
        Some(p) if diags.is_empty() => Ok(p),
        _ => Err(diags),
    }
}

fn convert(sink: &mut Sink<'_>, origin: &str, value: Value) -> Option<Permissions> {
    let raw: RawFile = match serde_path_to_error::deserialize(value) {
        Ok(r) => r,
        Err(e) => {
            let mut ptr = String::new();
            for seg in e.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Seq { index } => {
                        ptr = join(&ptr, &index.to_string())
                    }
                    serde_path_to_error::Segment::Map { key } => ptr = join(&ptr, key),
                    _ => {}
                }
            }
            let shown = if ptr.is_empty() {
                "the file".to_owned()
            } else {
                format!("`{ptr}`")
            };
            sink.err(
                &ptr,
                format!("invalid {shown}: {}", e.inner()),
                "see docs/permissions.md for the format".to_owned(),
            );
            return None;
        }
    };
    if raw.api_version != API_VERSION {
        sink.err(
            "/apiVersion",
            format!("unsupported apiVersion `{}`", raw.api_version),
            format!("set `apiVersion: {API_VERSION}`"),
        );
    }
    if raw.kind != "Permissions" {
        sink.err(
            "/kind",
            format!(
                "this file is a `{}`, not the operator's permissions",
                raw.kind
            ),
            "set `kind: Permissions`".to_owned(),
        );
    }
    let mut grants = Vec::new();
    for (i, g) in raw.grants.into_iter().enumerate() {
        let ptr = format!("/grants/{i}");
        if grants.iter().any(|x: &Grant| x.name == g.name) || g.name.trim().is_empty() {
            sink.err(
                &format!("{ptr}/name"),
                format!("grant name `{}` is empty or used twice", g.name),
                "give each grant its own name, e.g. the team's".to_owned(),
            );
        }
        grants.push(grant(sink, &ptr, g));
    }
    let protected = raw
        .protected_paths
        .iter()
        .enumerate()
        .filter_map(|(i, p)| absolute(sink, &format!("/protectedPaths/{i}"), p))
        .map(|path| Protected {
            path,
            what: "protected path (permissions file)".into(),
        })
        .collect();
    Some(Permissions {
        origin: origin.to_owned(),
        grants,
        protected,
        base_dir: PathBuf::from("/"),
        policy_root: String::new(),
    })
}

fn grant(sink: &mut Sink<'_>, ptr: &str, g: RawGrant) -> Grant {
    check_source_kinds(sink, ptr, &g.source_kinds);
    let source_roots = roots(sink, &format!("{ptr}/sourceRoots"), &g.source_roots);
    let scratch_roots = roots(sink, &format!("{ptr}/scratchRoots"), &g.scratch_roots);
    let hosts = hosts(sink, ptr, &g.hosts);
    check_env_names(sink, ptr, &g.secrets.env);
    let files = absolute_files(sink, ptr, &g.secrets.files);
    Grant {
        name: g.name,
        line: sink.locs.value(ptr).line,
        select: Selector {
            names: globs(sink, &format!("{ptr}/match/names"), &g.select.names),
            paths: globs(sink, &format!("{ptr}/match/paths"), &g.select.paths),
            labels: g.select.labels,
        },
        source_kinds: g.source_kinds,
        source_roots,
        scratch_roots,
        hosts,
        env: globs(sink, &format!("{ptr}/secrets/env"), &g.secrets.env),
        files: globs(sink, &format!("{ptr}/secrets/files"), &files),
    }
}

/// Every kind is a source type safepoint knows.
fn check_source_kinds(sink: &mut Sink<'_>, ptr: &str, kinds: &[String]) {
    for (i, k) in kinds.iter().enumerate() {
        if !SOURCE_KINDS.contains(&k.as_str()) {
            let hint = match closest(k, &SOURCE_KINDS) {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!("use {}", one_of(&SOURCE_KINDS)),
            };
            sink.err(
                &format!("{ptr}/sourceKinds/{i}"),
                format!("unknown source type `{k}`"),
                hint,
            );
        }
    }
}

/// The absolute paths of `list` (at `ptr`), normalised; others reported.
fn roots(sink: &mut Sink<'_>, ptr: &str, list: &[String]) -> Vec<PathBuf> {
    list.iter()
        .enumerate()
        .filter_map(|(i, p)| absolute(sink, &format!("{ptr}/{i}"), p))
        .collect()
}

/// The host patterns that parse; the others reported.
fn hosts(sink: &mut Sink<'_>, ptr: &str, list: &[String]) -> Vec<HostPattern> {
    list.iter()
        .enumerate()
        .filter_map(|(i, h)| match HostPattern::parse(h) {
            Ok(p) => Some(p),
            Err(e) => {
                sink.err(
                    &format!("{ptr}/hosts/{i}"),
                    format!("invalid host pattern `{h}`: {e}"),
                    "write `db.internal`, `db.internal:5432`, `*.payments.internal` or `*`"
                        .to_owned(),
                );
                None
            }
        })
        .collect()
}

/// Environment variable names or globs of them.
fn check_env_names(sink: &mut Sink<'_>, ptr: &str, env: &[String]) {
    for (i, e) in env.iter().enumerate() {
        if e.is_empty()
            || !e
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_*?[]!".contains(c))
        {
            sink.err(
                &format!("{ptr}/secrets/env/{i}"),
                format!("`{e}` is not an environment variable name or glob"),
                "write a name or a glob such as `PAYMENTS_*`".to_owned(),
            );
        }
    }
}

/// The secret file patterns that are absolute; the others reported.
fn absolute_files(sink: &mut Sink<'_>, ptr: &str, files: &[String]) -> Vec<String> {
    files
        .iter()
        .enumerate()
        .filter(|(i, f)| {
            let ok = f.starts_with('/');
            if !ok {
                sink.err(
                    &format!("{ptr}/secrets/files/{i}"),
                    format!("secret file pattern `{f}` is not absolute"),
                    "write a full path or glob, e.g. `/run/secrets/payments/*`".to_owned(),
                );
            }
            ok
        })
        .map(|(_, f)| f.clone())
        .collect()
}

fn globs(sink: &mut Sink<'_>, ptr: &str, list: &[String]) -> Vec<Pattern> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| match Pattern::new(s) {
            Ok(p) => Some(p),
            Err(e) => {
                sink.err(
                    &format!("{ptr}/{i}"),
                    format!("invalid glob `{s}`: {}", e.msg),
                    "use `*` (one path segment), `**` (any depth), `?` and `[...]`".to_owned(),
                );
                None
            }
        })
        .collect()
}

fn absolute(sink: &mut Sink<'_>, ptr: &str, p: &str) -> Option<PathBuf> {
    if p.starts_with('/') {
        Some(super::normalize(&PathBuf::from(p)))
    } else {
        sink.err(
            ptr,
            format!("`{p}` is not an absolute path"),
            "write the full path, e.g. `/srv/payments`".to_owned(),
        );
        None
    }
}
