-- The restore point `deploy start` created on the server of a PITR policy
-- (pg_create_restore_point), recorded on the release's start row: its name
-- (recovery_target_name of `restore --before-deploy`) and its WAL position.
ALTER TABLE deploys ADD COLUMN restore_point TEXT;
ALTER TABLE deploys ADD COLUMN restore_lsn TEXT;

-- The WAL archive of each PITR policy as its archiver last found it: the
-- recoverable window, missing segments ("first..last", comma-separated)
-- and the lag behind the server (status, metrics, drift); and where its
-- replication slot is (`source`, JSON: url, passwordFrom reference, binDir,
-- slot, storage — never a password), so the slot can be dropped and the
-- archive deleted by `prune --orphans` once the policy is gone from Git.
CREATE TABLE pitr_archives (
    policy       TEXT COLLATE "C" PRIMARY KEY,
    window_start TEXT COLLATE "C",
    window_end   TEXT COLLATE "C",
    end_lsn      TEXT,
    lag_bytes    BIGINT,
    gaps         TEXT NOT NULL DEFAULT '',
    checked_at   TEXT COLLATE "C" NOT NULL,
    source       TEXT
);
