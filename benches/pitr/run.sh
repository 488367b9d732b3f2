#!/usr/bin/env bash
# PITR benchmark (issue 15), not a test. One throwaway PostgreSQL 15 cluster
# on a free port, archived two ways at once: by pgBackRest 2.45
# (archive_command = archive-push, compress-type zst) and by the safepoint
# daemon (pg_receivewal on a slot, walFlushInterval 1s). Same data, one run
# each, under /usr/bin/time:
#   base backups: safepoint backup (pg_basebackup -Ft -X none -> zstd),
#     pgbackrest backup --type=full --compress-type=zst,
#     pg_basebackup -Ft -z (gzip, its default -X stream: WAL included);
#   restore to a time T (base backup + replay of the WAL written by a
#     pgbench run after it, up to T), each until the restored server is
#     promoted and answers: safepoint restore --to-time T --to-dir --start
#     vs pgbackrest restore --type=time --target=T + pg_ctl start, waited for
#     until pg_is_in_recovery() is false;
#   the deploy gate: safepoint deploy start (restore point + its WAL
#     segment archived) while pgbench writes.
# Results: $WORK/results.tsv and Markdown on stdout (ratios vs pgBackRest).
#
# Usage (as root):  benches/pitr/run.sh [WORK_DIR] [PGBENCH_SCALE]
# Default scale 20 (about 300 MB of data, a few minutes here); it needs
# about 3 GB free in WORK_DIR (default /tmp/safepoint-bench-pitr).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${1:-/tmp/safepoint-bench-pitr}
SCALE=${2:-20}
PGBIN=/usr/lib/postgresql/15/bin
SP=${SAFEPOINT_BIN:-$ROOT/target/release/safepoint}

export DEBIAN_FRONTEND=noninteractive
for p in pgbackrest time postgresql-15 git; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
    apt-get update -qq && apt-get install -y -qq --no-install-recommends pgbackrest time postgresql-15 git
    break
  }
done
[ -n "${SAFEPOINT_BIN:-}" ] || (cd "$ROOT" && cargo build --release -q)

rm -rf "$WORK"
mkdir -p "$WORK"
chmod 755 "$WORK"
chown postgres:postgres "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
as_pg() { runuser -u postgres -- "$@"; }

cat > "$WORK/pgbackrest.conf" <<EOF
[global]
repo1-path=$WORK/pgbr
repo1-retention-full=4
compress-type=zst
start-fast=y
log-path=$WORK/pgbr-log
lock-path=$WORK/pgbr-lock
spool-path=$WORK/pgbr-spool

[bench]
pg1-path=$WORK/pg
pg1-port=$PORT
pg1-socket-path=$WORK
EOF
mkdir -p "$WORK/pgbr-log" "$WORK/pgbr-lock" "$WORK/pgbr-spool"
chown -R postgres:postgres "$WORK/pgbackrest.conf" "$WORK/pgbr-log" "$WORK/pgbr-lock" "$WORK/pgbr-spool"
BR=(runuser -u postgres -- pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench)

as_pg "$PGBIN/initdb" -D "$WORK/pg" -A trust -U postgres --no-sync >/dev/null
PGOPTS="-p $PORT -k $WORK -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c max_wal_size=2GB \
   -c archive_mode=on -c archive_command='pgbackrest --config=$WORK/pgbackrest.conf --stanza=bench archive-push %p'"
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -o "$PGOPTS" start >/dev/null
DAEMON=
cleanup() {
  [ -n "$DAEMON" ] && kill -TERM "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null || true
  for d in pg r/br r/sp; do
    as_pg "$PGBIN/pg_ctl" -D "$WORK/$d" -m immediate stop >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT
"${BR[@]}" stanza-create >/dev/null

# safepoint: a PITR policy and a local storage in $WORK; the daemon streams WAL.
mkdir -p "$WORK/repo/policies"
cat > "$WORK/repo/policies/bench.yaml" <<EOF
apiVersion: safepoint/v1
kind: Storage
metadata: {name: local}
spec: {type: local, path: $WORK/store}
---
apiVersion: safepoint/v1
kind: BackupPolicy
metadata: {name: bench}
spec:
  source:
    type: postgres
    url: "postgres://postgres@127.0.0.1:$PORT/postgres"
    pitr: {walFlushInterval: 1s}
  storage: local
  schedule: {cron: "0 3 * * *"}
  retention: {keepLast: 5}
EOF
git -C "$WORK/repo" init -q -b main
git -C "$WORK/repo" add -A
git -C "$WORK/repo" -c user.name=bench -c user.email=bench@localhost commit -qm bench
SPA=(--repo "$WORK/repo" --data-dir "$WORK/sp-data")

echo "# building data: pgbench -s $SCALE" >&2
"$PGBIN/pgbench" -i -q -s "$SCALE" postgres 2>/dev/null
psql -X -q -c "CHECKPOINT" postgres
DATA=$(psql -X -A -t -c "SELECT pg_database_size('postgres')" postgres)
echo "# database size: $DATA bytes" >&2

"$SP" "${SPA[@]}" daemon --listen 127.0.0.1:0 2>"$WORK/daemon.log" &
DAEMON=$!
until ls "$WORK/store/_wal/bench/" 2>/dev/null | grep -q .; do sleep 0.5; done
# The daemon's first base backup (no backup yet) runs at once: let it finish.
until "$SP" "${SPA[@]}" list --policy bench --output json 2>/dev/null | grep -q '"id"'; do sleep 1; done

RESULTS="$WORK/results.tsv"
printf 'name\twall_s\tcpu_s\tpeak_rss_kb\tstored_bytes\n' > "$RESULTS"
# measure NAME STORED_PATH COMMAND...: growth of STORED_PATH (du -sb), "-" for none
measure() {
  local name=$1 stored=$2; shift 2
  sync
  local before=0
  [ "$stored" != - ] && [ -e "$stored" ] && before=$(du -sb "$stored" | cut -f1)
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.$name" "$@" >/dev/null
  read -r wall user sys rss < "$WORK/time.$name"
  local bytes=-
  [ "$stored" != - ] && bytes=$(( $(du -sb "$stored" | cut -f1) - before ))
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$wall" "$(awk "BEGIN { printf \"%.2f\", $user + $sys }")" "$rss" "$bytes" | tee -a "$RESULTS" >&2
}

# Base backups (pgBackRest's own WAL archive is not counted in its size:
# the backup directory only; safepoint's WAL lives in _wal, not counted).
measure safepoint_base "$WORK/store/bench" "$SP" "${SPA[@]}" backup bench
measure pgbackrest_full "$WORK/pgbr/backup" "${BR[@]}" backup --type=full
mkdir -p "$WORK/pgbb" && chown postgres: "$WORK/pgbb"
measure pg_basebackup_Ft_z "$WORK/pgbb" runuser -u postgres -- "$PGBIN/pg_basebackup" -D "$WORK/pgbb/one" -Ft -z --checkpoint=fast

# WAL to replay: pgbench after both base backups; T in the middle.
echo "# pgbench -c 2 -T 30 (WAL to replay)" >&2
"$PGBIN/pgbench" -c 2 -T 15 postgres >/dev/null 2>&1
NOW=$(date -u +%s.%N)
T=$(date -u -d "@$NOW" +%Y-%m-%dT%H:%M:%S.%3NZ)          # safepoint: RFC 3339
T_BR=$(date -u -d "@$NOW" '+%Y-%m-%d %H:%M:%S.%3N+00')   # pgBackRest: the same instant
sleep 1
"$PGBIN/pgbench" -c 2 -T 15 postgres >/dev/null 2>&1
psql -X -q -c "SELECT pg_switch_wal()" postgres >/dev/null
sleep 5   # both archives: archive-push of the switched segment, one flush
WAL=$(psql -X -A -t -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')" postgres)

# The deploy gate while pgbench writes.
"$PGBIN/pgbench" -c 2 -T 20 postgres >/dev/null 2>&1 &
LOAD=$!
sleep 2
measure safepoint_gate - "$SP" "${SPA[@]}" deploy start --release bench-1 --policy bench
wait "$LOAD"

kill -TERM "$DAEMON"; wait "$DAEMON" || true; DAEMON=
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null

# Restores to T, each until its server is promoted (then stopped).
mkdir -p "$WORK/r" && chown postgres: "$WORK/r"
measure safepoint_restore_time - "$SP" "${SPA[@]}" restore --policy bench --to-time "$T" --to-dir "$WORK/r/sp" --start
SP_ROWS=$(psql -X -A -t -h 127.0.0.1 -p "$(sed -n 4p "$WORK/r/sp/postmaster.pid")" -c 'SELECT count(*) FROM pgbench_history' postgres)
as_pg "$PGBIN/pg_ctl" -D "$WORK/r/sp" -m fast stop >/dev/null
# pgBackRest: restore, start, wait until promoted (a script: /usr/bin/time runs it).
cat > "$WORK/restore_br.sh" <<EOF
set -e
runuser -u postgres -- pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench --pg1-path="$WORK/r/br" \
  restore --type=time --target="$T_BR" --target-action=promote >/dev/null
port=\$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/r/br" -l "$WORK/r/br.log" -w -t 3600 \
  -o "-p \$port -k $WORK/r -c listen_addresses=127.0.0.1 -c archive_mode=off" start >/dev/null
until [ "\$(psql -X -A -t -h 127.0.0.1 -p \$port -c 'SELECT pg_is_in_recovery()' postgres 2>/dev/null)" = f ]; do sleep 0.2; done
psql -X -A -t -h 127.0.0.1 -p \$port -c 'SELECT count(*) FROM pgbench_history' postgres > "$WORK/r/br.rows"
EOF
measure pgbackrest_restore_time - bash "$WORK/restore_br.sh"
as_pg "$PGBIN/pg_ctl" -D "$WORK/r/br" -m fast stop >/dev/null

BR_ROWS=$(cat "$WORK/r/br.rows")
echo "# pgbench_history rows at T: safepoint $SP_ROWS, pgBackRest $BR_ROWS" >&2
[ "$SP_ROWS" = "$BR_ROWS" ] || { echo "the two restores to T differ" >&2; exit 1; }

# Achieved RPO: the primary killed (SIGKILL of the postmaster and its
# backends) under a steady write load; how many seconds of committed data the
# archive lost, for walFlushInterval 1s. A fresh primary start, the daemon
# streaming again, pgbench -R 50 inserting clock_timestamp() rows for 20 s;
# kill -9; the daemon is given the flush interval plus 2 s, then stopped;
# restore --latest and the newest row found.
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -o "$PGOPTS" start >/dev/null
psql -X -q -c "CREATE TABLE rpo (ts timestamptz NOT NULL)" postgres
echo "INSERT INTO rpo VALUES (clock_timestamp());" > "$WORK/rpo.sql"
"$SP" "${SPA[@]}" daemon --listen 127.0.0.1:0 2>>"$WORK/daemon.log" &
DAEMON=$!
sleep 5
"$PGBIN/pgbench" -n -c 1 -R 50 -T 60 -f "$WORK/rpo.sql" postgres >/dev/null 2>&1 &
LOAD=$!
sleep 20
KILLED=$(date -u +%s.%N)
PM=$(head -1 "$WORK/pg/postmaster.pid")
kill -STOP "$PM"; pkill -9 -P "$PM" || true; kill -9 "$PM"
wait "$LOAD" 2>/dev/null || true
sleep 3
kill -TERM "$DAEMON"; wait "$DAEMON" || true; DAEMON=
rm -f "$WORK/pg/postmaster.pid"
measure safepoint_restore_latest - "$SP" "${SPA[@]}" restore --policy bench --latest --to-dir "$WORK/r/rpo" --start
NEWEST=$(psql -X -A -t -h 127.0.0.1 -p "$(sed -n 4p "$WORK/r/rpo/postmaster.pid")" \
  -c "SELECT extract(epoch FROM max(ts)) FROM rpo" postgres)
as_pg "$PGBIN/pg_ctl" -D "$WORK/r/rpo" -m fast stop >/dev/null
RPO=$(awk -v k="$KILLED" -v n="$NEWEST" 'BEGIN {printf "%.2f", k - n}')
echo "# achieved RPO: killed at $KILLED, newest archived row $NEWEST: $RPO s" >&2
printf 'achieved_rpo\t%s\t-\t-\t-\n' "$RPO" >>"$RESULTS"

python3 - "$RESULTS" "$DATA" "$WAL" "$SCALE" "$SP_ROWS" <<'EOF'
import csv, sys
rows = {r["name"]: r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t")}
data, wal, scale = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def ratio(a, b):
    try: return f"{float(a) / float(b):.2f}"
    except (ValueError, ZeroDivisionError): return "-"
print(f"pgbench scale {scale}: database {data / 1e6:.0f} MB; WAL position at the end {wal / 1e6:.0f} MB\n")
br = rows["pgbackrest_full"]
print("| base backup | wall s | CPU s | peak RSS MB | stored MB | wall vs pgBackRest | size vs pgBackRest |")
print("|---|---|---|---|---|---|---|")
for n in ["safepoint_base", "pgbackrest_full", "pg_basebackup_Ft_z"]:
    r = rows[n]
    print(f"| {n} | {r['wall_s']} | {r['cpu_s']} | {int(r['peak_rss_kb']) / 1024:.0f} | {int(r['stored_bytes']) / 1e6:.1f} | "
          f"{ratio(r['wall_s'], br['wall_s'])} | {ratio(r['stored_bytes'], br['stored_bytes'])} |")
rb = rows["pgbackrest_restore_time"]
print("\n| restore to T (until promoted) | wall s | CPU s | peak RSS MB | wall vs pgBackRest |")
print("|---|---|---|---|---|")
for n in ["safepoint_restore_time", "pgbackrest_restore_time"]:
    r = rows[n]
    print(f"| {n} | {r['wall_s']} | {r['cpu_s']} | {int(r['peak_rss_kb']) / 1024:.0f} | {ratio(r['wall_s'], rb['wall_s'])} |")
g = rows["safepoint_gate"]
print(f"\nDeploy gate under pgbench load (restore point + its segment archived): {g['wall_s']} s")
print(f"Both restores hold the same {sys.argv[5]} pgbench_history rows at T.")
print(f"Achieved RPO (primary killed under 50 commits/s, walFlushInterval 1s): {rows['achieved_rpo']['wall_s']} s of commits lost")
EOF
