//! IO: the policy repository. Policies are read from the commit at the tracked
//! branch (never from a work tree), from a local repository or from a mirror
//! of a remote one that is fetched into the data directory. git2 blocks: call
//! these functions from `spawn_blocking`.

pub mod watch;

use std::path::{Path, PathBuf};

use git2::{FetchOptions, ObjectType, RemoteCallbacks, Repository, TreeWalkMode, TreeWalkResult};
use serde::Serialize;

use crate::policy::PolicyFile;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(
        "cannot open policy repository {location}: {source}; pass --repo PATH|URL of a Git repository"
    )]
    Open {
        location: String,
        #[source]
        source: git2::Error,
    },
    #[error("branch {branch} does not exist in {location}; pass --branch NAME")]
    NoBranch { location: String, branch: String },
    #[error(
        "cannot fetch {location}: {source}; check the URL, the network and the credentials (ssh agent, git credential helper or SAFEPOINT_GIT_USERNAME/SAFEPOINT_GIT_PASSWORD)"
    )]
    Fetch {
        location: String,
        #[source]
        source: git2::Error,
    },
    #[error(
        "commit {commit} has no directory `{path}`; pass --path DIR (the policy directory inside the repository)"
    )]
    NoPath { commit: String, path: String },
    #[error(
        "no commit, branch or tag `{reference}` in {location}: {source}; pass --ref with a commit id, a branch or a tag of that repository"
    )]
    NoRef {
        location: String,
        reference: String,
        #[source]
        source: git2::Error,
    },
    #[error("cannot read commit {commit} of {location}: {source}")]
    Read {
        location: String,
        commit: String,
        #[source]
        source: git2::Error,
    },
}

impl GitError {
    pub fn kind(&self) -> &'static str {
        match self {
            GitError::Open { .. } => "open",
            GitError::NoBranch { .. } => "no-branch",
            GitError::Fetch { .. } => "fetch",
            GitError::NoPath { .. } => "no-path",
            GitError::NoRef { .. } => "no-ref",
            GitError::Read { .. } => "read",
        }
    }
}

/// Where policies come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoConfig {
    /// A local path or a remote URL (`https://`, `ssh://`, `git@host:org/repo`, `file://`).
    pub location: String,
    pub branch: String,
    /// Directory inside the repository holding the policy files.
    pub path: String,
    /// Where remote repositories are mirrored (`<data-dir>/repo.git`).
    pub mirror: PathBuf,
}

impl RepoConfig {
    pub fn is_remote(&self) -> bool {
        is_remote(&self.location)
    }
}

pub fn is_remote(location: &str) -> bool {
    location.contains("://")
        || (location.contains('@') && location.contains(':') && !Path::new(location).exists())
}

/// A commit of the policy repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revision {
    pub commit: String,
    pub author: String,
    pub summary: String,
}

impl Revision {
    pub fn short(&self) -> &str {
        &self.commit[..self.commit.len().min(12)]
    }
}

fn open(cfg: &RepoConfig) -> Result<Repository, GitError> {
    let path: &Path = if cfg.is_remote() {
        &cfg.mirror
    } else {
        Path::new(&cfg.location)
    };
    Repository::open(path).map_err(|source| GitError::Open {
        location: cfg.location.clone(),
        source,
    })
}

fn callbacks<'a>() -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    let mut attempts = 0;
    cb.credentials(move |url, username, allowed| {
        attempts += 1;
        if attempts > 3 {
            return Err(git2::Error::from_str(
                "authentication failed after 3 attempts",
            ));
        }
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            return git2::Cred::ssh_key_from_agent(username.unwrap_or("git"));
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            if let (Ok(user), Ok(pass)) = (
                std::env::var("SAFEPOINT_GIT_USERNAME"),
                std::env::var("SAFEPOINT_GIT_PASSWORD"),
            ) {
                return git2::Cred::userpass_plaintext(&user, &pass);
            }
            if let Ok(config) = git2::Config::open_default() {
                return git2::Cred::credential_helper(&config, url, username);
            }
        }
        git2::Cred::default()
    });
    cb
}

/// For a remote repository: clone (bare) or fetch the mirror. No-op for a
/// local repository, which is read in place.
pub fn sync(cfg: &RepoConfig) -> Result<(), GitError> {
    if !cfg.is_remote() {
        return Ok(());
    }
    let fetch_err = |source| GitError::Fetch {
        location: cfg.location.clone(),
        source,
    };
    let repo = match Repository::open_bare(&cfg.mirror) {
        Ok(repo) => repo,
        Err(_) => {
            std::fs::create_dir_all(&cfg.mirror)
                .map_err(|e| fetch_err(git2::Error::from_str(&e.to_string())))?;
            Repository::init_bare(&cfg.mirror).map_err(fetch_err)?
        }
    };
    let mut remote = match repo.find_remote("origin") {
        Ok(remote) if remote.url() == Ok(cfg.location.as_str()) => remote,
        Ok(_) => {
            repo.remote_set_url("origin", &cfg.location)
                .map_err(fetch_err)?;
            repo.find_remote("origin").map_err(fetch_err)?
        }
        Err(_) => repo.remote("origin", &cfg.location).map_err(fetch_err)?,
    };
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks());
    options.prune(git2::FetchPrune::On);
    remote
        .fetch(
            &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
            Some(&mut options),
            None,
        )
        .map_err(fetch_err)?;
    Ok(())
}

/// The commit at the tracked branch.
pub fn head(cfg: &RepoConfig) -> Result<Revision, GitError> {
    let repo = open(cfg)?;
    let reference = repo
        .find_reference(&format!("refs/heads/{}", cfg.branch))
        .map_err(|_| GitError::NoBranch {
            location: cfg.location.clone(),
            branch: cfg.branch.clone(),
        })?;
    let commit = reference
        .peel_to_commit()
        .map_err(|source| GitError::Read {
            location: cfg.location.clone(),
            commit: cfg.branch.clone(),
            source,
        })?;
    Ok(revision_of(&commit))
}

fn revision_of(commit: &git2::Commit<'_>) -> Revision {
    let author = commit.author();
    Revision {
        commit: commit.id().to_string(),
        author: format!(
            "{} <{}>",
            author.name().unwrap_or("?"),
            author.email().unwrap_or("?")
        ),
        summary: commit.summary().ok().flatten().unwrap_or("").to_string(),
    }
}

/// The commit a ref names: a commit id (or a unique prefix), a branch, a
/// tag, `HEAD`, or anything else `git rev-parse` accepts (`origin/feature`).
pub fn resolve(cfg: &RepoConfig, reference: &str) -> Result<String, GitError> {
    let repo = open(cfg)?;
    let no_ref = |source| GitError::NoRef {
        location: cfg.location.clone(),
        reference: reference.to_string(),
        source,
    };
    let object = repo.revparse_single(reference).map_err(no_ref)?;
    let commit = object.peel_to_commit().map_err(no_ref)?;
    Ok(commit.id().to_string())
}

/// Every `*.yaml`/`*.yml` under `cfg.path` at `commit`, sorted by path.
pub fn read(cfg: &RepoConfig, commit: &str) -> Result<(Revision, Vec<PolicyFile>), GitError> {
    let repo = open(cfg)?;
    let read_err = |source| GitError::Read {
        location: cfg.location.clone(),
        commit: commit.to_string(),
        source,
    };
    let oid = git2::Oid::from_str(commit).map_err(read_err)?;
    let commit_obj = repo.find_commit(oid).map_err(read_err)?;
    let root = commit_obj.tree().map_err(read_err)?;
    let dir = cfg.path.trim_matches('/');
    let tree = if dir.is_empty() || dir == "." {
        root
    } else {
        let entry = root
            .get_path(Path::new(dir))
            .map_err(|_| GitError::NoPath {
                commit: commit.to_string(),
                path: cfg.path.clone(),
            })?;
        if entry.kind() != Some(ObjectType::Tree) {
            return Err(GitError::NoPath {
                commit: commit.to_string(),
                path: cfg.path.clone(),
            });
        }
        repo.find_tree(entry.id()).map_err(read_err)?
    };
    let prefix = if dir.is_empty() || dir == "." {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut blobs = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
        if entry.kind() == Some(ObjectType::Blob)
            && let Ok(name) = entry.name()
            && (name.ends_with(".yaml") || name.ends_with(".yml"))
        {
            blobs.push((format!("{prefix}{parent}{name}"), entry.id()));
        }
        TreeWalkResult::Ok
    })
    .map_err(read_err)?;
    let mut files = Vec::with_capacity(blobs.len());
    for (path, id) in blobs {
        let blob = repo.find_blob(id).map_err(read_err)?;
        files.push(PolicyFile::from_bytes(path, blob.content().to_vec()));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((revision_of(&commit_obj), files))
}

/// The directory to watch for changes of a local repository's refs.
pub fn watch_dir(cfg: &RepoConfig) -> Option<PathBuf> {
    if cfg.is_remote() {
        return None;
    }
    let repo = Repository::open(&cfg.location).ok()?;
    Some(repo.path().to_path_buf())
}

/// Every tag of the repository (`refs/tags/*`), sorted by name.
pub fn tags(cfg: &RepoConfig) -> Result<Vec<String>, GitError> {
    let repo = open(cfg)?;
    let names = repo.tag_names(None).map_err(|source| GitError::Read {
        location: cfg.location.clone(),
        commit: "refs/tags".to_string(),
        source,
    })?;
    let mut tags: Vec<String> = names
        .iter()
        .flatten()
        .flatten()
        .map(str::to_string)
        .collect();
    tags.sort();
    Ok(tags)
}
