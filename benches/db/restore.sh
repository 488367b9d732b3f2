#!/usr/bin/env bash
# Restore speed per database shape (docs/performance.md, "Restore speed on
# every shape"), not a test. A throwaway PostgreSQL 15 cluster on a free port
# holds three databases:
#   big     one table of RESTORE_BIG_ROWS (2,000,000) rows with a primary key
#   pgbench pgbench -i -s RESTORE_PGBENCH_SCALE (20)
#   many    RESTORE_MANY_TABLES (300) tables of 1,000 rows, each with a key
# Each is backed up once by safepoint and dumped once with `pg_dump -Fc`; then
# RESTORE_RUNS (3) rounds restore each shape, alternating the order, with:
#   pg_restore      pg_restore --no-owner -d NEW fc.dump        (the reference)
#   pg_restore_j    pg_restore --no-owner -j CORES -d NEW fc.dump
#   safepoint       safepoint restore --policy SHAPE --latest --to NEW
#                   (streams into one transaction, or spools and runs -j)
# and prints the median wall time per tool and shape and the ratio to
# pg_restore. An untimed round warms the cluster first; every restored
# database is dropped, and a CHECKPOINT taken, before the next run.
#
#   bash benches/db/restore.sh [WORK_DIR]     (as root; about 5 minutes here)
#   SAFEPOINT_BIN=target/release/safepoint ...  to measure a given binary
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/../lib.sh"
work=${1:-/tmp/safepoint-bench-restore}
pgbin=/usr/lib/postgresql/15/bin
runs=${RESTORE_RUNS:-3}
big_rows=${RESTORE_BIG_ROWS:-2000000}
scale=${RESTORE_PGBENCH_SCALE:-20}
many=${RESTORE_MANY_TABLES:-300}
cores=$(nproc)
sp=$(bench_bin "$root")

pg_throwaway "$work" "-c shared_buffers=512MB -c max_wal_size=4GB -c checkpoint_timeout=30min"
port=$PGPORT
cleanup() { pg_throwaway_stop "$work"; }
trap cleanup EXIT
psql="psql -X -q -v ON_ERROR_STOP=1"

echo "# building the shapes" >&2
createdb big
$psql big -c "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS a, (g * 7) % 1000 AS n, now() AS ts FROM generate_series(1, $big_rows) g" \
  -c "ALTER TABLE big ADD PRIMARY KEY (id)"
createdb pgbench
"$pgbin/pgbench" -i -q -s "$scale" pgbench 2>/dev/null
createdb many
for i in $(seq 1 "$many"); do
  echo "CREATE TABLE t$i AS SELECT g AS id, md5(g::text) AS a FROM generate_series(1, 1000) g; ALTER TABLE t$i ADD PRIMARY KEY (id);"
done | $psql many
$psql postgres -c CHECKPOINT

mkdir -p "$work/repo/policies"
printf 'apiVersion: safepoint/v1\nkind: Storage\nmetadata: {name: local}\nspec: {type: local, path: %s/store}\n' "$work" \
  >"$work/repo/policies/storage.yaml"
for shape in big pgbench many; do
  printf 'apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata: {name: %s}\nspec:\n  source: {type: postgres, url: "postgres://postgres@127.0.0.1:%s/%s"}\n  storage: local\n' \
    "$shape" "$port" "$shape" >"$work/repo/policies/$shape.yaml"
done
git -C "$work/repo" init -q -b main
commit_all "$work/repo" bench
spa=(--repo "$work/repo" --data-dir "$work/sp-data")
for shape in big pgbench many; do
  pg_dump -Fc -f "$work/out/$shape.dump" "$shape"
  "$sp" "${spa[@]}" backup "$shape" >/dev/null
done

# time_restore TOOL SHAPE: wall seconds of one restore into a new database
time_restore() {
  local tool=$1 shape=$2 db="r_$1_$2" t0 t1
  dropdb --if-exists "$db"
  # Every run starts from the same state: no dirty pages or WAL of an
  # earlier run left for a checkpoint to write during this one.
  $psql postgres -c CHECKPOINT
  sync
  t0=$(now_ms)
  case $tool in
    pg_restore) createdb "$db" && pg_restore --no-owner -d "$db" "$work/out/$shape.dump" ;;
    pg_restore_j) createdb "$db" && pg_restore --no-owner -j "$cores" -d "$db" "$work/out/$shape.dump" ;;
    safepoint) "$sp" "${spa[@]}" restore --policy "$shape" --latest --to "postgres://postgres@127.0.0.1:$port/$db" >/dev/null ;;
  esac
  t1=$(now_ms)
  dropdb "$db"
  echo "$shape $tool $(( t1 - t0 ))" >>"$work/times"
}

tools=(pg_restore safepoint pg_restore_j)
# One untimed round first: the cluster's WAL segments, the page cache and
# the catalogs are then as warm for the first timed run as for the last.
for shape in big pgbench many; do
  for tool in "${tools[@]}"; do time_restore "$tool" "$shape"; done
done
: >"$work/times"
for run in $(seq 1 "$runs"); do
  for shape in big pgbench many; do
    # alternate the order so that no tool always runs on a warmer cache
    if [ $(( run % 2 )) -eq 1 ]; then order=("${tools[@]}"); else order=(pg_restore_j safepoint pg_restore); fi
    for tool in "${order[@]}"; do time_restore "$tool" "$shape"; done
  done
done

echo "restore, median of $runs runs (ms), $cores cores, load $(cut -d' ' -f1 /proc/loadavg)"
echo "| shape | pg_restore | safepoint | pg_restore -j $cores | safepoint / pg_restore |"
echo "|---|---|---|---|---|"
for shape in big pgbench many; do
  med() { awk -v s="$shape" -v t="$1" '$1 == s && $2 == t {print $3}' "$work/times" | pct 50; }
  a=$(med pg_restore) b=$(med safepoint) c=$(med pg_restore_j)
  echo "| $shape | $a | $b | $c | $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", b / a}') |"
done
