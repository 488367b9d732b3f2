//! `safepoint validate [DIR]`: the policy files against the schema, the
//! semantic rules and the operator's permissions; files only, so it also
//! runs with `--server` (CI). Exit 1 when a problem is found.

use std::path::Path;

use anyhow::Context as _;

use super::shared::{print_json, read_policy_dir};
use crate::cli::{Cli, Output};
use crate::policy;

/// The permissions `validate` checks against: the daemon's, as far as the
/// global flags and environment tell (nothing is created on disk).
pub(super) fn validate_permissions(cli: &Cli, dir: &Path) -> anyhow::Result<policy::Permissions> {
    let base_dir = std::env::current_dir().context("cannot read the current directory")?;
    let data_dir = base_dir.join(&cli.data_dir);
    let catalog = cli
        .catalog
        .as_ref()
        .map_or_else(|| data_dir.join("catalog.db"), |c| base_dir.join(c));
    let own = crate::cli::permissions::own_paths(
        &data_dir,
        &catalog,
        cli.age_identity_file.as_deref(),
        cli.token_file.as_deref(),
    );
    let root = dir.to_string_lossy();
    crate::cli::permissions::load(cli.permissions.as_deref(), &base_dir, &root, &own)
}

pub(super) fn validate(
    dir: &Path,
    permissions: &policy::Permissions,
    output: Output,
) -> anyhow::Result<u8> {
    let files = read_policy_dir(dir).with_context(|| {
        format!(
            "cannot read policy directory {}; pass the directory holding *.yaml policies",
            dir.display()
        )
    })?;
    let result = policy::load_permitted(&files, permissions);
    match (output, &result) {
        (Output::Json, Ok(d)) => {
            print_json(&serde_json::json!({"valid": true, "files": files.len(),
            "storages": d.storages.len(), "notifiers": d.notifiers.len(), "policies": d.policies.len(), "problems": []}))?
        }
        (Output::Json, Err(diags)) => print_json(
            &serde_json::json!({"valid": false, "files": files.len(), "problems": diags}),
        )?,
        (Output::Table, Ok(d)) => outln!(
            "{}: valid ({} files, {} policies, {} storages, {} notifiers)",
            dir.display(),
            files.len(),
            d.policies.len(),
            d.storages.len(),
            d.notifiers.len()
        ),
        (Output::Table, Err(diags)) => {
            for d in diags {
                outln!("{d}");
            }
            outln!("{}: {} problem(s) found", dir.display(), diags.len());
        }
    }
    Ok(if result.is_ok() { 0 } else { 1 })
}
