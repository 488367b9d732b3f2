-- The append-only, hash-chained audit log replaces the plain events table.
-- safepoint never updates or deletes audit rows; `audit verify` checks the chain.
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    policy    TEXT,
    actor     TEXT NOT NULL,
    message   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_policy ON audit (policy, seq);
DROP TABLE events;
