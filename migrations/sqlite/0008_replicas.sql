-- Several replicas on one catalog (in practice PostgreSQL; the tables exist
-- in SQLite too so both backends share one code path and one test suite).
--
-- leases: who may act on a policy (or on `@coordinator`, the replica that
-- applies revisions, evaluates alerts and sends notices). `expires_at` is in
-- milliseconds since the epoch on the catalog's clock; `epoch` grows each time
-- the lease changes hands, so work started under an older epoch is fenced.
CREATE TABLE leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX leases_holder ON leases (holder, expires_at);

-- replicas: heartbeats (catalog clock, ms). A replica is live while its
-- heartbeat is younger than the lease duration.
CREATE TABLE replicas (
    id           TEXT    PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    leases       INTEGER NOT NULL DEFAULT 0
);

-- jobs: API requests for a policy this replica does not hold, executed by
-- the policy's lease holder; the caller's replica polls for `answer`.
-- state: queued -> claimed -> done. `claimed_by` is the replica running it.
CREATE TABLE jobs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    policy     TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    caller     TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    claimed_by TEXT,
    answer     TEXT,
    created_at INTEGER NOT NULL,
    done_at    INTEGER
);
CREATE INDEX jobs_open ON jobs (state, policy);
