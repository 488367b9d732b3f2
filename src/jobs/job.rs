//! The job resource: what was asked (`JobKind`), where it stands
//! (`JobView`, served by `GET /api/v1/jobs/{id}`), its typed answer
//! (`JobAnswer`; the HTTP layer maps it to a status code) and the `Board`
//! that keeps the newest jobs.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::deploy::{DeployError, DeployReport, Selection};
use crate::model::{DrillOutcome, Outcome};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "kebab-case")]
pub enum JobKind {
    DeployStart {
        release: String,
        selection: Selection,
    },
    DeployFinish {
        release: String,
        success: bool,
        selection: Selection,
    },
    Backup {
        policy: String,
    },
    Drill {
        policy: String,
        backup: Option<String>,
    },
}

/// What a job that ran reports (serialized as the report itself).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum JobResult {
    /// `deploy start` / `deploy finish`: every step, `ok` when all succeeded.
    Deploy(DeployReport),
    /// A manual backup: its outcomes (one per request).
    Backups(Vec<Outcome>),
    /// A drill: its checks and verdict.
    Drill(DrillOutcome),
}

impl JobResult {
    /// Whether what was asked succeeded (the gate passes, the backup was
    /// taken, the drill passed).
    pub fn ok(&self) -> bool {
        match self {
            JobResult::Deploy(r) => r.ok,
            JobResult::Backups(outcomes) => outcomes.iter().all(|o| o.ok),
            JobResult::Drill(o) => o.passed,
        }
    }
}

/// Why a job could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "message", rename_all = "kebab-case")]
pub enum JobError {
    /// No valid policy revision is applied.
    #[error("{0}")]
    NoRevision(String),
    /// The release, policy or drill named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The planner scheduled no drill (no verified backup to drill?).
    #[error("no drill could run (no verified backup?)")]
    NothingToDrill,
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// The catalog, storage or executor failed; the message says how.
    #[error("{0}")]
    Failed(String),
}

impl From<DeployError> for JobError {
    fn from(e: DeployError) -> JobError {
        match e {
            DeployError::NotFound(m) => JobError::NotFound(m),
            other => JobError::Failed(other.to_string()),
        }
    }
}

/// A job's answer.
pub type JobAnswer = Result<JobResult, JobError>;

/// Where a job stands (`GET /api/v1/jobs/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Queued,
    /// Behind a running backup of the same policy (`waiting_for` says which).
    Waiting,
    Running,
    Done,
}

/// The job resource the API serves while the job runs and after (the API
/// adds `result`, the answer as a status code and body, once `done`).
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: u64,
    #[serde(flatten)]
    pub kind: JobKind,
    pub state: JobState,
    pub requested_at: DateTime<Utc>,
    /// Bumped on every change (long polls wait for a newer one).
    pub version: u64,
    /// What the job waits for right now, in words.
    pub waiting_for: Option<String>,
    /// Everything the job reported, oldest first.
    pub messages: Vec<String>,
    /// The answer, once `state` is `done`.
    #[serde(skip)]
    pub answer: Option<JobAnswer>,
}

#[derive(Debug)]
pub struct Job {
    pub kind: JobKind,
    /// `token:<name>` of the API caller.
    pub caller: String,
    pub requested_at: DateTime<Utc>,
    /// Progress and the answer; the API holds the receivers.
    progress: watch::Sender<JobView>,
    /// Outcomes settled by a backup of the same policy that ran while the job waited.
    pub(super) reused: Vec<Outcome>,
    /// Per policy: the running backup the job waited for (prefixed to its outcome).
    pub(super) waited: BTreeMap<String, String>,
}

impl Job {
    pub fn new(id: u64, kind: JobKind, caller: String) -> (Job, watch::Receiver<JobView>) {
        let requested_at = Utc::now();
        let (progress, rx) = watch::channel(JobView {
            id,
            kind: kind.clone(),
            state: JobState::Queued,
            requested_at,
            version: 0,
            waiting_for: None,
            messages: Vec::new(),
            answer: None,
        });
        let job = Job {
            kind,
            caller,
            requested_at,
            progress,
            reused: Vec::new(),
            waited: BTreeMap::new(),
        };
        (job, rx)
    }

    /// The job's id on the `Board`.
    pub fn progress_id(&self) -> u64 {
        self.progress.borrow().id
    }

    fn update(&self, f: impl FnOnce(&mut JobView)) {
        self.progress.send_modify(|v| {
            f(v);
            v.version += 1;
        });
    }

    pub(super) fn waiting(&self, message: &str) {
        tracing::info!(job = self.progress_id(), "{message}");
        self.update(|v| {
            v.state = JobState::Waiting;
            v.waiting_for = Some(message.to_string());
            v.messages.push(message.to_string());
        });
    }

    pub(super) fn note(&self, message: &str, state: JobState) {
        self.update(|v| {
            v.state = state;
            v.waiting_for = None;
            v.messages.push(message.to_string());
        });
    }

    pub(super) fn answer(self, answer: JobAnswer) {
        self.update(|v| {
            v.state = JobState::Done;
            v.waiting_for = None;
            v.answer = Some(answer);
        });
    }
}

/// The jobs the API knows, for `GET /api/v1/jobs/{id}`: the newest
/// `Board::KEEP`, finished or not.
#[derive(Debug, Default)]
pub struct Board {
    inner: Mutex<(u64, BTreeMap<u64, watch::Receiver<JobView>>)>,
}

impl Board {
    pub const KEEP: usize = 1000;

    /// A new job with the next id, remembered on the board.
    pub fn create(&self, kind: JobKind, caller: String) -> (Job, watch::Receiver<JobView>) {
        let Ok(mut inner) = self.inner.lock() else {
            return Job::new(0, kind, caller);
        };
        let (next, jobs) = &mut *inner;
        *next += 1;
        let (job, rx) = Job::new(*next, kind, caller);
        jobs.insert(*next, rx.clone());
        while jobs.len() > Board::KEEP {
            jobs.pop_first();
        }
        (job, rx)
    }

    pub fn get(&self, id: u64) -> Option<watch::Receiver<JobView>> {
        self.inner.lock().ok()?.1.get(&id).cloned()
    }
}
