-- safepoint catalog (SQLite). The catalog is a cache of what storage holds
-- plus the history of runs and policy revisions; `catalog rebuild` and the
-- daemon re-import manifests found in storage.

CREATE TABLE revisions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    commit_id    TEXT    NOT NULL,
    branch       TEXT    NOT NULL,
    author       TEXT    NOT NULL,
    summary      TEXT    NOT NULL,
    attempted_at TEXT    NOT NULL,
    valid        INTEGER NOT NULL,
    diagnostics  TEXT    NOT NULL DEFAULT '[]'
);
CREATE INDEX revisions_valid ON revisions (valid, id);

CREATE TABLE backups (
    id          TEXT    PRIMARY KEY,
    policy      TEXT    NOT NULL,
    storage     TEXT    NOT NULL,
    trigger     TEXT    NOT NULL,
    release     TEXT,
    commit_id   TEXT,
    started_at  TEXT    NOT NULL,
    finished_at TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    checksum    TEXT    NOT NULL,
    health      TEXT    NOT NULL,
    checked_at  TEXT,
    problem     TEXT,
    pinned      TEXT,
    manifest    TEXT    NOT NULL,
    deleted_at  TEXT
);
CREATE INDEX backups_policy ON backups (policy, started_at DESC);

CREATE TABLE runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    policy       TEXT NOT NULL,
    backup_id    TEXT NOT NULL,
    storage      TEXT NOT NULL,
    trigger      TEXT NOT NULL,
    release      TEXT,
    requested_by TEXT,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    outcome      TEXT NOT NULL,   -- running | succeeded | failed | interrupted
    error_kind   TEXT,
    error        TEXT
);
CREATE INDEX runs_policy ON runs (policy, id);
CREATE INDEX runs_outcome ON runs (outcome);

CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    policy  TEXT,
    message TEXT NOT NULL
);
