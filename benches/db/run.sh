#!/usr/bin/env bash
# Database backup benchmark (issue 9), not a test. Builds a throwaway
# PostgreSQL 15 cluster on a free port holding pgbench scale 50 plus a ~500 MB
# table of random text, then measures side by side, once each, under
# /usr/bin/time (wall, user+sys CPU of the client process tree, peak RSS):
#   pg_dump -Fc to a file, pg_dump -Fc -Z0 to a file, safepoint backup,
#   pg_dump -Fc -Z0 | restic backup --stdin, pg_dump -Fc -Z0 | borg create
#   (default lz4 and zstd,3), and restores: pg_restore of the -Fc file vs
#   safepoint restore. Results: $WORK/results.tsv and a Markdown table on
#   stdout (ratios against pg_dump -Fc and pg_restore).
#
# Usage (as root, from anywhere):  benches/db/run.sh [WORK_DIR]
# Needs about 6 GB free in WORK_DIR (default /tmp/safepoint-bench-db).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${1:-/tmp/safepoint-bench-db}
PGBIN=/usr/lib/postgresql/15/bin

export DEBIAN_FRONTEND=noninteractive
for p in restic borgbackup time postgresql-15 zstd git; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
    apt-get update -qq && apt-get install -y -qq --no-install-recommends restic borgbackup time postgresql-15 zstd git
    break
  }
done
(cd "$ROOT" && cargo build --release -q)
SP="$ROOT/target/release/safepoint"

. "$ROOT/benches/lib.sh"   # pg_throwaway
pg_throwaway "$WORK" "-c shared_buffers=1GB -c max_wal_size=4GB -c checkpoint_timeout=30min"
PORT=$PGPORT
cleanup() { pg_throwaway_stop "$WORK"; }
trap cleanup EXIT

echo "# building data: pgbench -s 50 + random text table" >&2
createdb bench
"$PGBIN/pgbench" -i -q -s 50 bench 2>/dev/null
psql -X -q bench \
  -c "CREATE TABLE rnd AS SELECT g AS id, md5(random()::text) || ' ' || md5(random()::text) AS txt,
        (random()*1e9)::bigint AS n, now() - random() * interval '1000 days' AS ts,
        (random()*100)::numeric(10,2) AS amount FROM generate_series(1, 4000000) g" \
  -c "ALTER TABLE rnd ADD PRIMARY KEY (id)" -c "VACUUM ANALYZE" -c "CHECKPOINT"
LOGICAL=$(pg_dump -Fp bench | wc -c)
echo "# plain SQL size: $LOGICAL bytes; warm-up done" >&2

# safepoint: a policy repository and a local storage in $WORK
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
  source: {type: postgres, url: "postgres://postgres@127.0.0.1:$PORT/bench"}
  storage: local
  retention: {keepLast: 5}
EOF
git -C "$WORK/repo" init -q -b main
git -C "$WORK/repo" add -A
git -C "$WORK/repo" -c user.name=bench -c user.email=bench@localhost commit -qm bench
SPA=(--repo "$WORK/repo" --data-dir "$WORK/sp-data")

export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$WORK/restic" BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
restic init -q >/dev/null
borg init --encryption=none "$WORK/borg"
borg init --encryption=none "$WORK/borg-zstd"

RESULTS="$WORK/results.tsv"
printf 'name\twall_s\tcpu_s\tpeak_rss_kb\tstored_bytes\n' > "$RESULTS"
# measure NAME STORED_PATH COMMAND...: STORED_PATH's size after the run (du -sb), "-" for none
measure() {
  local name=$1 stored=$2; shift 2
  sync
  local before=0
  [ "$stored" != - ] && [ -e "$stored" ] && before=$(du -sb "$stored" | cut -f1)
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.$name" "$@"
  read -r wall user sys rss < "$WORK/time.$name"
  local bytes=-
  [ "$stored" != - ] && bytes=$(( $(du -sb "$stored" | cut -f1) - before ))
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$wall" "$(awk "BEGIN { printf \"%.2f\", $user + $sys }")" "$rss" "$bytes" | tee -a "$RESULTS" >&2
}

measure pg_dump_Fc "$WORK/out/fc.dump" pg_dump -Fc -f "$WORK/out/fc.dump" bench
measure pg_dump_Fc_Z0 "$WORK/out/fc0.dump" pg_dump -Fc -Z0 -f "$WORK/out/fc0.dump" bench
measure safepoint_backup "$WORK/store" "$SP" "${SPA[@]}" backup bench
measure restic_stdin "$WORK/restic" sh -c "pg_dump -Fc -Z0 bench | restic backup -q --stdin --stdin-filename bench.dump"
measure borg_stdin_lz4 "$WORK/borg" sh -c "pg_dump -Fc -Z0 bench | borg create $WORK/borg::one -"
measure borg_stdin_zstd3 "$WORK/borg-zstd" sh -c "pg_dump -Fc -Z0 bench | borg create -C zstd,3 $WORK/borg-zstd::one -"

createdb r_pg_restore
measure pg_restore_Fc - pg_restore --no-owner --single-transaction -d r_pg_restore "$WORK/out/fc.dump"
measure safepoint_restore - "$SP" "${SPA[@]}" restore --policy bench --latest --to "postgres://postgres@127.0.0.1:$PORT/r_safepoint"
createdb r_pg_restore_j2
measure pg_restore_Fc_j2 - pg_restore --no-owner -j 2 -d r_pg_restore_j2 "$WORK/out/fc.dump"

python3 - "$RESULTS" "$LOGICAL" <<'EOF'
import csv, sys
rows = {r["name"]: r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t")}
logical = int(sys.argv[2])
def ratio(a, b):
    try: return f"{float(a) / float(b):.2f}"
    except (ValueError, ZeroDivisionError): return "-"
base, base0 = rows["pg_dump_Fc"], rows["pg_dump_Fc_Z0"]
print(f"Plain SQL size of the database: {logical / 1e6:.0f} MB\n")
print("| backup | wall s | CPU s | peak RSS MB | stored MB | wall vs -Fc | wall vs -Fc -Z0 | stored vs -Fc |")
print("|---|---|---|---|---|---|---|---|")
for n in ["pg_dump_Fc", "pg_dump_Fc_Z0", "safepoint_backup", "restic_stdin", "borg_stdin_lz4", "borg_stdin_zstd3"]:
    r = rows[n]
    print(f"| {n} | {r['wall_s']} | {r['cpu_s']} | {int(r['peak_rss_kb']) / 1024:.0f} | {int(r['stored_bytes']) / 1e6:.1f} | "
          f"{ratio(r['wall_s'], base['wall_s'])} | {ratio(r['wall_s'], base0['wall_s'])} | {ratio(r['stored_bytes'], base['stored_bytes'])} |")
rb = rows["pg_restore_Fc"]
print("\n| restore | wall s | CPU s | peak RSS MB | wall vs pg_restore |")
print("|---|---|---|---|---|")
for n in ["pg_restore_Fc", "safepoint_restore", "pg_restore_Fc_j2"]:
    r = rows[n]
    print(f"| {n} | {r['wall_s']} | {r['cpu_s']} | {int(r['peak_rss_kb']) / 1024:.0f} | {ratio(r['wall_s'], rb['wall_s'])} |")
EOF
