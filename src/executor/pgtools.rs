//! IO: which PostgreSQL client programs a backup or restore runs. pg_dump
//! refuses a server of a newer major version, so with several clients
//! installed side by side (Debian/Ubuntu: `/usr/lib/postgresql/<major>/bin`)
//! the newest one that is at least the server's major is used; a policy may
//! name the directory itself (`source.binDir`); otherwise the program on
//! PATH. A client older than the server fails at once (not retried).

use std::path::{Path, PathBuf};

/// Where Debian/Ubuntu install one directory per client major version.
pub(crate) const LAYOUT_ROOT: &str = "/usr/lib/postgresql";

/// One installed client: its major version and the program's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Install {
    pub major: u32,
    pub program: PathBuf,
}

/// Every `<root>/<major>/bin/<program>` that exists, highest major first.
pub(crate) fn installed(root: &Path, program: &str) -> Vec<Install> {
    let mut found: Vec<Install> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let program = e.path().join("bin").join(program);
            program.is_file().then_some(Install { major, program })
        })
        .collect();
    found.sort_by_key(|i| std::cmp::Reverse(i.major));
    found
}

/// The install to use for a server of `server_major`: the newest one when
/// it is new enough (pg_dump/pg_restore read and talk to older servers), else
/// none (the caller falls back to PATH and checks that version).
pub(crate) fn choose(installs: &[Install], server_major: u32) -> Option<&Install> {
    installs
        .iter()
        .max_by_key(|i| i.major)
        .filter(|i| i.major >= server_major)
}

/// The program to run: `<bin_dir>/<program>` when the policy names a
/// directory, else the chosen install under `root`, else `program` on PATH.
pub(crate) fn program_for(
    root: &Path,
    bin_dir: Option<&Path>,
    program: &str,
    server_major: u32,
) -> PathBuf {
    match bin_dir {
        Some(dir) => dir.join(program),
        None => choose(&installed(root, program), server_major)
            .map(|i| i.program.clone())
            .unwrap_or_else(|| PathBuf::from(program)),
    }
}

/// How to get a client that fits a server of `server_major` (for the error).
pub(crate) fn fix_hint(program: &str, server_major: u32) -> String {
    format!(
        "install the PostgreSQL {server_major} client (Debian/Ubuntu: `apt-get install postgresql-client-{server_major}`, \
         found automatically under {LAYOUT_ROOT}/{server_major}/bin) or set the policy's `source.binDir` \
         to the directory of a {program} of major version {server_major} or newer"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/usr/lib/postgresql` with the given majors (13 has no pg_dump).
    fn layout(majors: &[u32]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for m in majors {
            let bin = root.path().join(m.to_string()).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            if *m != 13 {
                std::fs::write(bin.join("pg_dump"), "#!/bin/sh\n").unwrap();
            }
        }
        std::fs::create_dir_all(root.path().join("common/bin")).unwrap();
        root
    }

    #[test]
    fn installs_are_listed_highest_first_and_others_ignored() {
        let root = layout(&[15, 9, 17, 13]);
        let majors: Vec<u32> = installed(root.path(), "pg_dump")
            .iter()
            .map(|i| i.major)
            .collect();
        assert_eq!(majors, vec![17, 15, 9]);
        assert!(installed(&root.path().join("missing"), "pg_dump").is_empty());
    }

    #[test]
    fn the_newest_client_serves_older_and_equal_servers() {
        let root = layout(&[15, 16, 17]);
        let all = installed(root.path(), "pg_dump");
        for server in [12, 15, 16, 17] {
            assert_eq!(choose(&all, server).map(|i| i.major), Some(17), "{server}");
        }
        assert_eq!(
            program_for(root.path(), None, "pg_dump", 16),
            root.path().join("17/bin/pg_dump")
        );
    }

    #[test]
    fn a_server_newer_than_every_install_falls_back_to_path() {
        let root = layout(&[14, 15]);
        let all = installed(root.path(), "pg_dump");
        assert_eq!(choose(&all, 16), None);
        assert_eq!(
            program_for(root.path(), None, "pg_dump", 16),
            PathBuf::from("pg_dump")
        );
        let empty = layout(&[]);
        assert_eq!(
            program_for(empty.path(), None, "pg_dump", 15),
            PathBuf::from("pg_dump")
        );
    }

    #[test]
    fn an_explicit_bin_dir_wins_over_the_layout() {
        let root = layout(&[15, 17]);
        assert_eq!(
            program_for(root.path(), Some(Path::new("/opt/pg16/bin")), "pg_dump", 16),
            PathBuf::from("/opt/pg16/bin/pg_dump")
        );
    }

    #[test]
    fn the_hint_names_the_version_and_both_fixes() {
        let hint = fix_hint("pg_dump", 17);
        assert!(hint.contains("postgresql-client-17"), "{hint}");
        assert!(hint.contains("source.binDir"), "{hint}");
    }
}
