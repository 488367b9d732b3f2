-- Recovery drills: one row per drill, with every named check as JSON.
CREATE TABLE drills (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    policy          TEXT NOT NULL,
    backup_id       TEXT NOT NULL,
    target          TEXT NOT NULL,   -- where the scratch copy went (no secrets)
    scratch         TEXT NOT NULL,   -- the scratch name safepoint generated
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    verdict         TEXT NOT NULL,   -- running | passed | failed
    restore_seconds REAL,
    checks          TEXT NOT NULL DEFAULT '[]',
    requested_by    TEXT
);
CREATE INDEX drills_policy ON drills (policy, id);
