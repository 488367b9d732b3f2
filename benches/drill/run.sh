#!/usr/bin/env bash
# Recovery drill benchmark (issue 5), not a test. Builds a throwaway
# PostgreSQL 15 cluster on a free port holding pgbench scale 50, takes a
# `safepoint backup` of it (release build), then measures side by side, once
# each, under /usr/bin/time:
#   safepoint drill bench        (restore into a scratch database on the same
#                                 server, checksum, completeness: exact, one
#                                 SQL check, drop the scratch database)
#   baseline                     pg_restore of a pg_dump -Fc file of the same
#                                 database into a fresh database, then
#                                 count(*) of every table
# Target: drill wall <= 1.15x the baseline. Results: $WORK/results.tsv and a
# Markdown table on stdout; the load average is printed before and after.
#
# Usage (as root, from anywhere):  benches/drill/run.sh [WORK_DIR]
# Needs about 3 GB free in WORK_DIR (default /tmp/safepoint-bench-drill).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${1:-/tmp/safepoint-bench-drill}
PGBIN=/usr/lib/postgresql/15/bin

export DEBIAN_FRONTEND=noninteractive
for p in time postgresql-15 git; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
    apt-get update -qq && apt-get install -y -qq --no-install-recommends time postgresql-15 git
    break
  }
done
rm -rf "$WORK"
mkdir -p "$WORK/out"
chmod 755 "$WORK"
chown postgres:postgres "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pg" -A trust -U postgres --no-sync >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -o \
  "-p $PORT -k $WORK -c listen_addresses=127.0.0.1 -c shared_buffers=512MB -c max_wal_size=4GB -c checkpoint_timeout=30min" start >/dev/null
cleanup() {
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$WORK/pg" "$WORK/store" "$WORK/out"
}
trap cleanup EXIT

echo "# building data: pgbench -s 50" >&2
createdb bench
"$PGBIN/pgbench" -i -q -s 50 bench 2>/dev/null
psql -X -q bench -c "VACUUM ANALYZE" -c "CHECKPOINT"
# built after the data so the two overlap; nothing is measured before this
(cd "$ROOT" && cargo build --release -q)
SP="$ROOT/target/release/safepoint"

mkdir -p "$WORK/repo/policies"
cat > "$WORK/repo/policies/bench.yaml" <<YAML
apiVersion: safepoint/v1
kind: Storage
metadata: {name: local}
spec: {type: local, path: $WORK/store}
---
apiVersion: safepoint/v1
kind: BackupPolicy
metadata: {name: bench}
spec:
  source: {type: postgres, url: "postgres://postgres@127.0.0.1:$PORT/bench"}
  storage: local
  retention: {keepLast: 5}
  drill:
    target: {type: postgres, url: "postgres://postgres@127.0.0.1:$PORT/postgres"}
    verify:
      completeness: exact
      checks:
        - {name: accounts, sql: "select count(*) from pgbench_accounts", expect: "= 5000000"}
    maxDuration: 30m
YAML
git -C "$WORK/repo" init -q -b main
git -C "$WORK/repo" add -A
git -C "$WORK/repo" -c user.name=bench -c user.email=bench@localhost commit -qm bench
SPA=(--repo "$WORK/repo" --data-dir "$WORK/sp-data")

echo "# safepoint backup and pg_dump -Fc (setup, not measured)" >&2
"$SP" "${SPA[@]}" backup bench >/dev/null
pg_dump -Fc -f "$WORK/out/fc.dump" bench

# The baseline a person would script: restore the dump into a fresh
# database, count every table, drop it.
cat > "$WORK/baseline.sh" <<'SH'
set -euo pipefail
createdb r_baseline
pg_restore --no-owner --single-transaction -d r_baseline "$1"
for t in $(psql -X -At r_baseline -c "select quote_ident(schemaname)||'.'||quote_ident(tablename) from pg_tables where schemaname not in ('pg_catalog','information_schema')"); do
  psql -X -At r_baseline -c "select count(*) from $t" >/dev/null
done
dropdb r_baseline
SH

RESULTS="$WORK/results.tsv"
printf 'name\twall_s\tcpu_s\tpeak_rss_kb\n' > "$RESULTS"
measure() {
  local name=$1; shift
  sync
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.$name" "$@"
  read -r wall user sys rss < "$WORK/time.$name"
  printf '%s\t%s\t%s\t%s\n' "$name" "$wall" "$(awk "BEGIN { printf \"%.2f\", $user + $sys }")" "$rss" | tee -a "$RESULTS" >&2
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
measure pg_restore_plus_counts bash "$WORK/baseline.sh" "$WORK/out/fc.dump"
measure safepoint_drill "$SP" "${SPA[@]}" drill bench --output json
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
LEFT=$(psql -X -At postgres -c "select count(*) from pg_database where datname like 'safepoint_drill_%'")

python3 - "$RESULTS" "$LOAD_BEFORE" "$LOAD_AFTER" "$LEFT" <<'PY'
import csv, sys
rows = {r["name"]: r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t")}
base = float(rows["pg_restore_plus_counts"]["wall_s"])
print(f"Load average before: {sys.argv[2]}; after: {sys.argv[3]}; scratch databases left: {sys.argv[4]}\n")
print("| run | wall s | CPU s (client tree) | peak RSS MB | wall vs baseline |")
print("|---|---|---|---|---|")
for n in ["pg_restore_plus_counts", "safepoint_drill"]:
    r = rows[n]
    print(f"| {n} | {r['wall_s']} | {r['cpu_s']} | {int(r['peak_rss_kb']) / 1024:.0f} | {float(r['wall_s']) / base:.2f} |")
PY
