//! Pure: the operator's permissions — what policies may use (source types,
//! paths, database hosts, secret references), granted per team by policy
//! name, label or file path — as a value, and the check of one validated
//! document against it. The daemon's own files (data dir, catalog, token
//! files, age identity, …) are never readable by a policy, whatever the
//! grants. Reading the operator file is IO (in `cli`); `file.rs` parses its text.

mod file;
mod net;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use glob::{MatchOptions, Pattern};

use super::model::{
    BackupPolicy, DrillTarget, NotifierSpec, SecretRef, Source, StorageKind, StorageSpec,
};
use super::validate::Sink;

pub use file::parse;
pub use net::HostPattern;

/// Source types a grant may list in `sourceKinds`.
pub const SOURCE_KINDS: [&str; 5] = ["postgres", "mysql", "sqlite", "directory", "command"];

/// Environment variables with this prefix configure the daemon and hold its
/// secrets (`SAFEPOINT_SMTP_PASSWORD`, `SAFEPOINT_TOKEN`): never for policies.
pub const RESERVED_ENV_PREFIX: &str = "SAFEPOINT_";

/// What policies may use, as the operator decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Permissions {
    /// Where the rules come from, for messages (a file path, or the embedded default).
    pub origin: String,
    pub grants: Vec<Grant>,
    /// The daemon's own files and directories: no policy may read them.
    pub protected: Vec<Protected>,
    /// Relative paths in policies resolve against this directory.
    pub base_dir: PathBuf,
    /// The policy directory (`--path`, or the directory given to `validate`):
    /// `match.paths` globs are matched against file paths relative to it.
    pub policy_root: String,
}

/// One grant: which documents it applies to and what they may use. A
/// document may use something when at least one grant that applies to it allows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub name: String,
    /// Line of the grant in the operator file (0 for the embedded default).
    pub line: usize,
    pub select: Selector,
    pub source_kinds: Vec<String>,
    /// `directory` and `sqlite` source paths must lie under one of these.
    pub source_roots: Vec<PathBuf>,
    /// `directory` drill targets (scratch space) must lie under one of these.
    pub scratch_roots: Vec<PathBuf>,
    /// Database hosts (and ports) of sources and drill targets.
    pub hosts: Vec<HostPattern>,
    /// Environment variable names `passwordFrom: {env}` and friends may name.
    pub env: Vec<Pattern>,
    /// Absolute paths `passwordFrom: {file}` and friends may name.
    pub files: Vec<Pattern>,
}

/// Which documents a grant applies to: every given criterion must hold
/// (names: any glob; paths: any glob; labels: every pair). Empty = all documents.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    pub names: Vec<Pattern>,
    pub paths: Vec<Pattern>,
    pub labels: BTreeMap<String, String>,
}

/// A path of the daemon itself, and what it is ("the catalog", "the API tokens file").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    pub path: PathBuf,
    pub what: String,
}

/// The document being checked, as the selectors see it.
pub(crate) struct Subject<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub file: &'a str,
}

/// Globs where `*` stays within one path segment and `**` crosses them.
pub(crate) const PATH_MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl Permissions {
    /// Everything a single team may want, except `command` sources: any
    /// path, host and secret reference (the daemon's own files and
    /// `SAFEPOINT_*` variables stay forbidden). Used without `--permissions`.
    pub fn single_team() -> Permissions {
        let mut p = Permissions::unrestricted();
        p.origin = "the embedded default permissions (single team, no --permissions file)".into();
        p.grants[0].name = "single-team".into();
        p.grants[0].source_kinds.retain(|k| k != "command");
        p
    }

    /// Every source type, path, host and secret; nothing protected. For
    /// trusted inputs only (tests, planner scenarios, benchmarks).
    pub fn unrestricted() -> Permissions {
        let any = |s: &str| Pattern::new(s).ok().into_iter().collect::<Vec<_>>();
        Permissions {
            origin: "unrestricted permissions".into(),
            grants: vec![Grant {
                name: "everything".into(),
                line: 0,
                select: Selector::default(),
                source_kinds: SOURCE_KINDS.iter().map(|k| (*k).to_owned()).collect(),
                source_roots: vec![PathBuf::from("/")],
                scratch_roots: vec![PathBuf::from("/")],
                hosts: HostPattern::parse("*").into_iter().collect(),
                env: any("*"),
                files: any("/**"),
            }],
            protected: Vec::new(),
            base_dir: PathBuf::from("/"),
            policy_root: String::new(),
        }
    }

    /// The grants that apply to a document.
    fn applicable<'a>(&'a self, subject: &Subject<'_>) -> Vec<&'a Grant> {
        let rel = relative_to(subject.file, &self.policy_root);
        self.grants
            .iter()
            .filter(|g| g.select.matches(subject, rel))
            .collect()
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        normalize(&self.base_dir.join(p))
    }
}

impl Selector {
    fn matches(&self, s: &Subject<'_>, rel_path: &str) -> bool {
        (self.names.is_empty() || self.names.iter().any(|p| p.matches(s.name)))
            && (self.paths.is_empty()
                || self
                    .paths
                    .iter()
                    .any(|p| p.matches_with(rel_path, PATH_MATCH)))
            && self.labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
    }
}

fn relative_to<'a>(file: &'a str, root: &str) -> &'a str {
    let root = root.trim_start_matches("./").trim_end_matches('/');
    let file = file.trim_start_matches("./");
    if root.is_empty() || root == "." {
        return file;
    }
    file.strip_prefix(root)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(file)
}

/// Lexical normalisation: drops `.` and resolves `..` without touching disk.
pub(crate) fn normalize(p: &Path) -> PathBuf {
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

/// Checks one validated `BackupPolicy` against the permissions.
pub(crate) fn check_policy(
    sink: &mut Sink<'_>,
    perms: &Permissions,
    s: &Subject<'_>,
    p: &BackupPolicy,
) {
    let mut c = Checker::new(sink, perms, s);
    let kind = p.source.kind();
    if !c
        .grants
        .iter()
        .any(|g| g.source_kinds.iter().any(|k| k == kind))
    {
        c.deny(
            "/spec/source/type",
            &format!("source type `{kind}`"),
            "sourceKinds",
            kind,
        );
    }
    match &p.source {
        Source::Sqlite { path } => c.path("/spec/source/path", path, Access::ReadFile),
        Source::Directory { path, .. } => c.path("/spec/source/path", path, Access::ReadTree),
        Source::Postgres {
            url,
            password_from,
            bin_dir,
            ..
        } => {
            c.host("/spec/source/url", url, net::default_port(kind));
            c.secret("/spec/source/passwordFrom", password_from.as_ref());
            // The client tools run from there: it must be a granted root too.
            if let Some(dir) = bin_dir {
                c.path("/spec/source/binDir", dir, Access::ReadTree);
            }
        }
        Source::Mysql { url, password_from } => {
            c.host("/spec/source/url", url, net::default_port(kind));
            c.secret("/spec/source/passwordFrom", password_from.as_ref());
        }
        Source::Command { .. } => {}
    }
    let Some(drill) = &p.drill else { return };
    let base = "/spec/drill/target";
    match &drill.target {
        DrillTarget::Directory { path } => c.path(&format!("{base}/path"), path, Access::Scratch),
        // Under the daemon's own data directory, never a policy's choice.
        DrillTarget::PitrCluster => {}
        DrillTarget::Postgres { url, password_from }
        | DrillTarget::Mysql { url, password_from } => {
            let target_kind = match drill.target {
                DrillTarget::Mysql { .. } => "mysql",
                _ => "postgres",
            };
            let port = net::default_port(target_kind);
            c.host(&format!("{base}/url"), url, port);
            c.secret(&format!("{base}/passwordFrom"), password_from.as_ref());
        }
    }
}

/// Checks the secret references of a `Storage` (S3 credentials).
pub(crate) fn check_storage(
    sink: &mut Sink<'_>,
    perms: &Permissions,
    s: &Subject<'_>,
    st: &StorageSpec,
) {
    if let StorageKind::S3 {
        credentials: Some(cr),
        ..
    } = &st.kind
    {
        let mut c = Checker::new(sink, perms, s);
        c.secret(
            "/spec/credentials/accessKeyIdFrom",
            Some(&cr.access_key_id_from),
        );
        c.secret(
            "/spec/credentials/secretAccessKeyFrom",
            Some(&cr.secret_access_key_from),
        );
    }
}

/// Checks the secret reference of a `Notifier` (webhook signing secret).
pub(crate) fn check_notifier(
    sink: &mut Sink<'_>,
    perms: &Permissions,
    s: &Subject<'_>,
    n: &NotifierSpec,
) {
    if let Some(w) = &n.webhook {
        Checker::new(sink, perms, s).secret("/spec/webhook/secretFrom", w.secret_from.as_ref());
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// A file that is read (`sqlite` source).
    ReadFile,
    /// A directory tree that is read (`directory` source).
    ReadTree,
    /// A directory tree that is written and removed (drill scratch).
    Scratch,
}

struct Checker<'s, 'a> {
    sink: &'s mut Sink<'a>,
    perms: &'s Permissions,
    subject: &'s Subject<'s>,
    grants: Vec<&'s Grant>,
}

impl<'s, 'a> Checker<'s, 'a> {
    fn new(sink: &'s mut Sink<'a>, perms: &'s Permissions, subject: &'s Subject<'s>) -> Self {
        let grants = perms.applicable(subject);
        Checker {
            sink,
            perms,
            subject,
            grants,
        }
    }

    /// Reports `what` as not granted: names the rule (`field` of the grants
    /// that apply) and the operator file.
    fn deny(&mut self, ptr: &str, what: &str, field: &str, value: &str) {
        let s = self.subject;
        let message = format!(
            "{what} is not allowed for {} `{}` by {}",
            s.kind, s.name, self.perms.origin
        );
        let hint = if self.grants.is_empty() {
            format!(
                "no grant applies to {} `{}` ({}): the operator adds a grant whose `match` \
                 selects it (name, labels or path) with `{value}` in `{field}`",
                s.kind, s.name, s.file
            )
        } else {
            let names: Vec<String> = self
                .grants
                .iter()
                .map(|g| match g.line {
                    0 => format!("`{}`", g.name),
                    l => format!("`{}` (line {l})", g.name),
                })
                .collect();
            format!(
                "`{field}` of the grants that apply ({}) does not cover `{value}`; use what \
                 they allow, or ask the operator to add it",
                names.join(", ")
            )
        };
        self.sink.err(ptr, message, hint);
    }

    fn forbid(&mut self, ptr: &str, message: String) {
        self.sink.err(
            ptr,
            message,
            "the daemon's own data and secrets are never readable by policies, whatever \
             the permissions file says; back up application data only"
                .to_owned(),
        );
    }

    fn path(&mut self, ptr: &str, raw: &Path, access: Access) {
        let perms = self.perms;
        let path = perms.resolve(raw);
        let shown = raw.display().to_string();
        for p in &perms.protected {
            let inside = path.starts_with(&p.path);
            let contains = access != Access::ReadFile && p.path.starts_with(&path);
            if inside || contains {
                let how = if inside { "is" } else { "contains" };
                let verb = if access == Access::Scratch {
                    "drill scratch path"
                } else {
                    "source path"
                };
                self.forbid(
                    ptr,
                    format!(
                        "{verb} `{shown}` {how} the daemon's {} ({})",
                        p.what,
                        p.path.display()
                    ),
                );
                return;
            }
        }
        let grants = self.grants.clone();
        let scratch = access == Access::Scratch;
        let field = if scratch {
            "scratchRoots"
        } else {
            "sourceRoots"
        };
        let mut roots = grants.iter().flat_map(|g| {
            if scratch {
                &g.scratch_roots
            } else {
                &g.source_roots
            }
        });
        if !roots.any(|r| path.starts_with(r)) {
            let what = match access {
                Access::Scratch => format!("drill scratch path `{}`", path.display()),
                _ => format!("source path `{}`", path.display()),
            };
            self.deny(ptr, &what, field, &path.display().to_string());
        }
    }

    fn host(&mut self, ptr: &str, url: &str, default_port: u16) {
        let grants = self.grants.clone();
        let denied = net::endpoints(url, default_port)
            .into_iter()
            .find(|(host, port)| {
                !grants
                    .iter()
                    .flat_map(|g| &g.hosts)
                    .any(|h| h.allows(host, *port))
            });
        if let Some((host, port)) = denied {
            let endpoint = format!("{host}:{port}");
            self.deny(
                ptr,
                &format!("database host `{endpoint}`"),
                "hosts",
                &endpoint,
            );
        }
    }

    fn secret(&mut self, base: &str, secret: Option<&SecretRef>) {
        match secret {
            None => {}
            Some(SecretRef::Env(name)) => {
                let ptr = format!("{base}/env");
                if name.starts_with(RESERVED_ENV_PREFIX) {
                    self.forbid(
                        &ptr,
                        format!(
                            "environment variable `{name}` belongs to the daemon \
                             (`{RESERVED_ENV_PREFIX}*` variables are its settings and secrets)"
                        ),
                    );
                } else if !self
                    .grants
                    .iter()
                    .flat_map(|g| &g.env)
                    .any(|p| p.matches(name))
                {
                    self.deny(
                        &ptr,
                        &format!("environment variable `{name}`"),
                        "secrets.env",
                        name,
                    );
                }
            }
            Some(SecretRef::File(file)) => {
                let ptr = format!("{base}/file");
                let perms = self.perms;
                let path = perms.resolve(file);
                if let Some(p) = perms.protected.iter().find(|p| path.starts_with(&p.path)) {
                    let message = format!(
                        "secret file `{}` is the daemon's {} ({})",
                        file.display(),
                        p.what,
                        p.path.display()
                    );
                    self.forbid(&ptr, message);
                    return;
                }
                let text = path.to_string_lossy();
                let granted = self.grants.iter().flat_map(|g| &g.files);
                if !granted
                    .into_iter()
                    .any(|p| p.matches_with(&text, PATH_MATCH))
                {
                    self.deny(
                        &ptr,
                        &format!("secret file `{text}`"),
                        "secrets.files",
                        &text,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
