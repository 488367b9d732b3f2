-- Deploy events (pre-deploy gate, outcome) and release tags already handled.
CREATE TABLE deploys (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    release   TEXT NOT NULL,
    policy    TEXT NOT NULL,
    phase     TEXT NOT NULL,      -- start | finish
    status    TEXT NOT NULL,      -- ok | failed | success | failure
    backup_id TEXT,               -- pre-deploy snapshot (start), baseline or forensic (finish)
    caller    TEXT NOT NULL,
    detail    TEXT NOT NULL DEFAULT '',
    at        TEXT NOT NULL
);
CREATE INDEX deploys_release ON deploys (release, policy);

-- A policy's tag pattern is "armed" when first seen: tags that existed then
-- are baseline (no backup); later tags get exactly one release backup.
CREATE TABLE release_policies (
    policy        TEXT PRIMARY KEY,
    first_seen_at TEXT NOT NULL
);
CREATE TABLE release_tags (
    policy    TEXT NOT NULL,
    tag       TEXT NOT NULL,
    state     TEXT NOT NULL,      -- existing | done
    backup_id TEXT,
    at        TEXT NOT NULL,
    PRIMARY KEY (policy, tag)
);
