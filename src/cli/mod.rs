//! Startup wiring and the command line. Every command builds an
//! `engine::context::Context` and goes through the engine; output is a table by
//! default, `--output json` everywhere. Exit codes: 0 ok / nothing to do,
//! 1 problem found / actions pending / action failed, 2 could not run.
//! Everything a command prints on stdout goes through `out!`/`outln!`
//! (`write_stdout`): a closed stdout (`safepoint list | head -1`) ends the
//! command quietly with exit 0, as Unix tools do.

/// `print!` that returns a closed or failing stdout as an error (`?`).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))?
    };
}

/// `println!` that returns a closed or failing stdout as an error (`?`).
macro_rules! outln {
    () => {
        $crate::cli::write_stdout(format_args!("\n"))?
    };
    ($($arg:tt)*) => {{
        $crate::cli::write_stdout(format_args!($($arg)*))?;
        $crate::cli::write_stdout(format_args!("\n"))?
    }};
}

mod commands;
mod daemon_args;
mod output;
mod permissions;
mod progress;
mod remote;
pub mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub(crate) use output::write_stdout;
use output::{error_text, is_closed_stdout};

#[derive(Debug, Parser)]
#[command(
    name = "safepoint",
    version,
    about = "Backups that move in lockstep with your deployments"
)]
pub struct Cli {
    /// Catalog, repository mirror, locks and scratch space.
    #[arg(
        long,
        global = true,
        env = "SAFEPOINT_DATA_DIR",
        default_value = ".safepoint"
    )]
    pub data_dir: PathBuf,
    /// Policy repository: a local path or a remote URL (https, ssh, file).
    #[arg(long, global = true, env = "SAFEPOINT_REPO", default_value = ".")]
    pub repo: String,
    /// Branch whose tip holds the policies in force.
    #[arg(long, global = true, env = "SAFEPOINT_BRANCH", default_value = "main")]
    pub branch: String,
    /// Policy directory inside the repository.
    #[arg(
        long,
        global = true,
        env = "SAFEPOINT_PATH",
        default_value = "policies"
    )]
    pub path: String,
    /// Run the command against a running daemon's API instead of in-process
    /// (deploy, backup, drill, status, plan, list): no database or storage
    /// credentials needed here.
    #[arg(long, global = true, env = "SAFEPOINT_SERVER")]
    pub server: Option<String>,
    /// File holding the API bearer token for --server (or set SAFEPOINT_TOKEN).
    #[arg(long, global = true, env = "SAFEPOINT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The catalog: a SQLite file, or a PostgreSQL database as
    /// postgres://USER@HOST:PORT/DATABASE (password from
    /// --catalog-password-file) [default: <data-dir>/catalog.db].
    #[arg(long, global = true, env = "SAFEPOINT_CATALOG")]
    pub catalog: Option<String>,
    /// File holding the password of a postgres:// --catalog (so it is
    /// neither in argv nor in the environment).
    #[arg(long, global = true, env = "SAFEPOINT_CATALOG_PASSWORD_FILE")]
    pub catalog_password_file: Option<PathBuf>,
    /// Re-read every stored artifact and check its checksum at most this
    /// often, in seconds (a size check runs every cycle).
    #[arg(
        long,
        global = true,
        env = "SAFEPOINT_VERIFY_INTERVAL",
        default_value_t = 86_400
    )]
    pub verify_interval: i64,
    /// age identity file (`age-keygen` output or an unencrypted ssh key)
    /// that decrypts encrypted backups for restores and drills.
    #[arg(long, global = true, env = "SAFEPOINT_AGE_IDENTITY_FILE")]
    pub age_identity_file: Option<PathBuf>,
    /// The operator's permissions file: what policies may use (source types,
    /// paths, database hosts, secret references), per team; never read from
    /// the policy repository (docs/permissions.md) [default: single team:
    /// everything except `command` sources and the daemon's own files].
    #[arg(long, global = true, env = "SAFEPOINT_PERMISSIONS")]
    pub permissions: Option<PathBuf>,
    /// Deletion guard: a policy revision may delete at most this many backups
    /// of one policy unless it acknowledges them (`safepoint.io/allow-deletions`);
    /// `preview` and the daemon apply the same guard.
    #[arg(
        long,
        global = true,
        env = "SAFEPOINT_DELETION_GUARD",
        default_value_t = 0
    )]
    pub deletion_guard: usize,
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, env = "SAFEPOINT_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Take a verified pre-deploy snapshot of every matching policy; exit 0
    /// only when all are stored and verified (use it to gate a migration).
    /// It always waits for the snapshots: a gate that returned earlier would
    /// let the deploy run unprotected.
    Start {
        #[arg(long)]
        release: String,
        /// A policy to snapshot (repeatable) [default: every policy with deploy.before: snapshot].
        #[arg(long)]
        policy: Vec<String>,
        /// `key=value` label selector (repeatable, all must match).
        #[arg(long)]
        selector: Vec<String>,
        /// Give up (exit 1, running snapshots cancelled) after this long, e.g. `10m`.
        #[arg(long)]
        timeout: Option<String>,
    },
    /// Record the deploy outcome: success => baseline backups; failure => pin the
    /// pre-deploy snapshot, forensic snapshot, alert (per policy's deploy.onFailure).
    Finish {
        #[arg(long)]
        release: String,
        #[arg(long, value_enum)]
        status: DeployStatus,
        #[arg(long)]
        policy: Vec<String>,
        #[arg(long)]
        selector: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeployStatus {
    Success,
    Failure,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; says where an entry was edited, deleted, inserted or reordered.
    Verify,
    /// Print audit entries.
    Export {
        /// Window ending now, e.g. `30d`.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Md,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a policy directory; print every problem with file:line and a hint.
    Validate {
        /// Directory of policy files [default: the --path directory].
        dir: Option<PathBuf>,
    },
    /// Print what the daemon would do now and why (exit 1 when actions are pending).
    Plan,
    /// What merging the policy revision at --ref would do: policy diff,
    /// deletions, new backups, schedules, orphans; never executed. Markdown
    /// (a pull-request comment) or --output json; exit 1 when the deletion
    /// guard refuses it.
    Preview {
        /// The proposed revision: a commit, branch or tag of --repo (with
        /// --server: of the local checkout, whose files are uploaded).
        #[arg(long = "ref", default_value = "HEAD")]
        git_ref: String,
    },
    /// Per policy: last good backup, RPO, next run, revision, Ready/Stalled.
    Status,
    /// List backups with trigger, size, checksum state and why each is kept.
    List {
        #[arg(long)]
        policy: Option<String>,
    },
    /// Take a backup of POLICY now (through the same plan/execute path).
    Backup { policy: String },
    /// Delete what retention no longer keeps.
    Prune {
        /// Print the deletions without executing them.
        #[arg(long)]
        dry_run: bool,
        /// Also delete backups of policies that were removed from Git.
        #[arg(long)]
        orphans: bool,
    },
    /// Restore a backup into a path (sqlite, directory) or a database URL (postgres, mysql).
    Restore {
        /// Backup id (see `safepoint list`); or use --policy with --latest.
        backup_id: Option<String>,
        #[arg(long)]
        policy: Option<String>,
        /// The newest verified backup of --policy.
        #[arg(long, requires = "policy")]
        latest: bool,
        /// The backup of --policy for this release: its baseline, or with
        /// --pre-deploy the snapshot taken before it was deployed.
        #[arg(long, requires = "policy", conflicts_with = "latest")]
        release: Option<String>,
        #[arg(long, requires = "release")]
        pre_deploy: bool,
        /// Where to restore: a file path (sqlite), a directory (directory), a
        /// database URL (postgres://user@host/db, mysql://user@host/db; created
        /// if missing), or a value passed to a command source's restoreCommand.
        #[arg(long, required_unless_present = "to_dir", conflicts_with = "to_dir")]
        to: Option<String>,
        /// PITR policies: recover to this moment (RFC 3339, e.g.
        /// 2026-11-29T10:42:00Z): every transaction committed at or before it.
        #[arg(long, requires = "to_dir", conflicts_with_all = ["latest", "release", "backup_id"])]
        to_time: Option<String>,
        /// PITR policies: recover to the restore point `deploy start
        /// --release TAG` created (else to the time that deploy started).
        #[arg(long, value_name = "TAG", requires = "to_dir", conflicts_with_all = ["latest", "release", "backup_id", "to_time"])]
        before_deploy: Option<String>,
        /// PITR policies: the new data directory to recover into (with
        /// --to-time, --before-deploy, or --latest for everything archived).
        #[arg(long, requires = "policy")]
        to_dir: Option<PathBuf>,
        /// With --to-dir: start the server on a free loopback port and wait
        /// until recovery reached the target (it keeps running).
        #[arg(long, requires = "to_dir")]
        start: bool,
        /// Password of the --to database: env:NAME or file:PATH [default: the
        /// URL's, else PGPASSWORD / MYSQL_PWD].
        #[arg(long)]
        to_password_from: Option<String>,
        /// Restore into a target that exists and is not empty: a database is
        /// dropped and created afresh; a directory gets the backup's files
        /// written over it (files the backup does not hold stay).
        #[arg(long)]
        force: bool,
        /// PostgreSQL: count the restored rows by reading every table back
        /// (`count(*)`) instead of counting them in the dump as it streams
        /// into pg_restore. Slower; what drills do.
        #[arg(long, conflicts_with = "to_dir")]
        recount: bool,
        /// PostgreSQL, into a database the restore creates: run `pg_restore
        /// -j N` from a spooled copy of the dump (1: stream in one
        /// transaction) [default: decided from the cores and the backup].
        #[arg(long, value_name = "N", conflicts_with = "to_dir", value_parser = clap::value_parser!(u16).range(1..=64))]
        jobs: Option<u16>,
    },
    /// Copy one archived WAL file of a PITR policy to PATH: the
    /// restore_command `restore --to-dir` writes (exit 1: not archived).
    WalFetch {
        /// The recovery file `restore --to-dir` wrote into the data directory.
        #[arg(long)]
        recovery: PathBuf,
        /// WAL file name (PostgreSQL's %f).
        wal_file: String,
        /// Where to write it (PostgreSQL's %p).
        #[arg(value_name = "PATH")]
        destination: PathBuf,
    },
    /// Catalog maintenance.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Run a recovery drill of POLICY now: restore into a scratch target and
    /// verify (exit 1 when a check fails).
    Drill {
        policy: String,
        /// The backup to drill [default: the newest verified one].
        #[arg(long)]
        backup: Option<String>,
    },
    /// The pre-deploy gate and the deploy outcome (see docs/ci/).
    Deploy {
        #[command(subcommand)]
        command: DeployCommand,
    },
    /// Keep a backup whatever retention says, until `unpin`. Recorded in the
    /// catalog and as `pin.json` next to the backup in storage, so it
    /// survives the loss of the catalog (`catalog rebuild` restores it).
    Pin {
        backup_id: String,
        #[arg(long, default_value = "pinned by hand")]
        reason: String,
    },
    /// Release a pinned backup to retention again (removes the pin marker
    /// from storage, then the catalog's pin).
    Unpin { backup_id: String },
    /// Verify or export the hash-chained audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Compliance report per policy (RPO met %, backups, retention, drills, deploys).
    Report {
        /// Window ending now, e.g. `90d`, `12h`, `2w`.
        #[arg(long, default_value = "90d")]
        since: String,
        #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
        format: ReportFormat,
    },
    /// Send a test notice through NOTIFIER (email with the --smtp-* options,
    /// webhook) and print what each endpoint answered (exit 1 when one
    /// refused, 4 when there is no such notifier).
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Run the reconcile loop until SIGTERM/SIGINT.
    Daemon {
        /// How often a remote policy repository is fetched, in seconds.
        #[arg(long, env = "SAFEPOINT_FETCH_INTERVAL", default_value_t = 60)]
        fetch_interval: u64,
        /// Scheduled backups running at once.
        #[arg(long, env = "SAFEPOINT_CONCURRENCY", default_value_t = 2)]
        concurrency: usize,
        /// Requested work (API gates, manual backups, drills) running at once:
        /// cycles of the requested lane, and backups within each; it runs
        /// beside scheduled work, never behind it.
        #[arg(long, env = "SAFEPOINT_REQUEST_CONCURRENCY", default_value_t = 2)]
        request_concurrency: usize,
        /// Seconds running backups get to finish after SIGTERM before they are cancelled.
        #[arg(long, env = "SAFEPOINT_SHUTDOWN_GRACE", default_value_t = 30)]
        shutdown_grace: u64,
        /// Stop after the first cycle (for cron-style use and smoke tests).
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        replica: daemon_args::ReplicaArgs,
        #[command(flatten)]
        observability: daemon_args::ObservabilityArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test notice through a Notifier of the policies in force.
    Test {
        notifier: String,
        #[command(flatten)]
        smtp: daemon_args::SmtpArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Re-create the catalog's backups from the manifests in every declared
    /// storage (after the catalog was lost); nothing is taken or deleted.
    Rebuild,
    /// Copy this catalog (--catalog) with its whole history into a new,
    /// empty one, e.g. a SQLite install onto PostgreSQL; stop the daemon
    /// first. Refuses a target that already holds anything.
    Migrate {
        /// The new catalog: postgres://USER@HOST:PORT/DATABASE (or a SQLite file).
        #[arg(long)]
        to: String,
        /// File holding the password of the --to database.
        #[arg(long)]
        to_password_file: Option<PathBuf>,
    },
}

/// glibc gives every thread that allocates its own malloc arena (up to 8 per
/// core), and memory freed in one is not reused by the others: a large first
/// convergence (10,000 backups on the blocking pool) peaked at 185 MB RSS
/// for 100 MB of heap. Two arenas keep it at 127 MB (docs/performance.md,
/// "Scale"). `MALLOC_ARENA_MAX` in the environment still wins.
fn bound_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before
        // the runtime starts any thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

pub fn main() -> ExitCode {
    // One TLS crypto provider for every rustls user (reqwest, sqlx, lettre).
    let _ = rustls::crypto::ring::default_provider().install_default();
    bound_malloc_arenas();
    let cli = Cli::parse();
    // One-shot commands print their results on stdout; only warnings and
    // errors go to stderr unless SAFEPOINT_LOG says otherwise.
    let default_level = if matches!(cli.command, Command::Daemon { .. }) {
        "info"
    } else {
        "warn"
    };
    init_tracing(cli.log_format, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_closed_stdout(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
}

/// Colour only for a person at a terminal: stderr is a TTY and `NO_COLOR`
/// is unset or empty (no-color.org). Files, journald and container logs get
/// plain text.
fn colour_logs() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

fn init_tracing(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("SAFEPOINT_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_logs())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
