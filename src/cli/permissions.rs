//! Startup wiring: reads the operator's permissions file (`--permissions`,
//! never from the policy repository) and adds the daemon's own paths, which
//! no policy may read whatever the file says.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::policy::permissions::{self, Permissions, Protected, normalize};

/// Daemon flags naming secret files, by their environment variable: a
/// command other than `daemon` (e.g. `validate`) protects them too when
/// they are set, so it rejects what the daemon would.
const DAEMON_SECRET_ENV: [(&str, &str); 3] = [
    ("SAFEPOINT_API_TOKENS_FILE", "API tokens file"),
    ("SAFEPOINT_WEBHOOK_SECRET_FILE", "webhook secret file"),
    ("SAFEPOINT_SMTP_PASSWORD_FILE", "SMTP password file"),
];

/// The permissions in force: the file's, or the embedded single-team
/// default; with `own` (the daemon's data dir, catalog, secret files) protected.
pub fn load(
    file: Option<&Path>,
    base_dir: &Path,
    policy_root: &str,
    own: &[(Option<PathBuf>, &str)],
) -> anyhow::Result<Permissions> {
    let mut perms = match file {
        None => Permissions::single_team(),
        Some(path) => {
            let path = base_dir.join(path);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read the permissions file {}; pass --permissions FILE (see docs/permissions.md)",
                    path.display()
                )
            })?;
            permissions::parse(&path.display().to_string(), &text).map_err(|diags| {
                let lines: Vec<String> = diags.iter().map(|d| format!("  {d}")).collect();
                anyhow::anyhow!(
                    "the permissions file {} is invalid:\n{}",
                    path.display(),
                    lines.join("\n")
                )
            })?
        }
    };
    perms.base_dir = base_dir.to_path_buf();
    perms.policy_root = policy_root.to_owned();
    let from_env: Vec<(Option<PathBuf>, &str)> = DAEMON_SECRET_ENV
        .iter()
        .map(|(var, what)| (std::env::var_os(var).map(PathBuf::from), *what))
        .collect();
    let file = file.map(|f| (Some(f.to_path_buf()), "permissions file"));
    for (path, what) in own.iter().chain(&from_env).chain(file.as_ref()) {
        if let Some(path) = path {
            protect(&mut perms, base_dir, path, what);
        }
    }
    Ok(perms)
}

/// Protects the path as written and, when it exists, where it really is.
fn protect(perms: &mut Permissions, base_dir: &Path, path: &Path, what: &str) {
    let lexical = normalize(&base_dir.join(path));
    let real = std::fs::canonicalize(&lexical).ok();
    for p in std::iter::once(lexical).chain(real) {
        if !perms.protected.iter().any(|x| x.path == p) {
            perms.protected.push(Protected {
                path: p,
                what: what.to_owned(),
            });
        }
    }
}

/// The daemon's own paths that every command knows from the global flags.
pub fn own_paths(
    data_dir: &Path,
    catalog: &Path,
    age_identity: Option<&Path>,
    token_file: Option<&Path>,
) -> Vec<(Option<PathBuf>, &'static str)> {
    let side = |suffix: &str| {
        let mut s = catalog.as_os_str().to_owned();
        s.push(suffix);
        Some(PathBuf::from(s))
    };
    vec![
        (Some(data_dir.to_path_buf()), "data directory"),
        (Some(catalog.to_path_buf()), "catalog"),
        (side("-wal"), "catalog"),
        (side("-shm"), "catalog"),
        (age_identity.map(Path::to_path_buf), "age identity"),
        (token_file.map(Path::to_path_buf), "API client token file"),
    ]
}
