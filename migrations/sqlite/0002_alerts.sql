-- Alerting (issue 6): the open alerts of the alert state machine, and the
-- outbox of notifications waiting for (or done with) delivery. Both survive
-- restarts, so a restarted daemon neither re-sends nor loses a mail.

CREATE TABLE alerts (
    policy      TEXT NOT NULL,          -- '' = the policy repository itself
    reason      TEXT NOT NULL,          -- a drift kind, e.g. backup-failed
    since       TEXT NOT NULL,
    notified_at TEXT NOT NULL,
    detail      TEXT NOT NULL,
    recipients  TEXT NOT NULL DEFAULT '[]',   -- JSON [{notifier, from, to}]
    PRIMARY KEY (policy, reason)
);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at      TEXT    NOT NULL,
    channel         TEXT    NOT NULL,   -- email
    kind            TEXT    NOT NULL,   -- FIRING | REMINDER | RESOLVED
    policy          TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    notifier        TEXT    NOT NULL,
    sender          TEXT,               -- NULL: the daemon's --smtp-from
    recipients      TEXT    NOT NULL,   -- JSON ["a@example.com"]
    subject         TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    last_error      TEXT,
    state           TEXT    NOT NULL DEFAULT 'pending',   -- pending | sent | failed (permanently)
    done_at         TEXT
);
CREATE INDEX outbox_pending ON outbox (state, next_attempt_at);
