#!/usr/bin/env bash
# How cost grows with the estate: builds a policy repository of N tiny
# directory policies (one 1 KiB file each, local storage) in a temp dir and
# reports, per N:
#   - first convergence: `daemon --once` taking every first backup (wall
#     time and peak RSS from /usr/bin/time -v),
#   - `plan` and `status` latency (wall, --output json to /dev/null),
#   - commit -> applied: one policy changed and committed, the next
#     `daemon --once` (refresh, plan, that policy's backup),
#   - catalog size (catalog.db + WAL) and stored bytes.
#
#   bash benches/scale/run.sh [N ...]          (default: 100 1000)
#   SAFEPOINT_BIN=target/debug/safepoint CONCURRENCY=4 bash benches/scale/run.sh 100 1000 10000
#
# The binary defaults to target/release/safepoint (cargo build --release).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${SAFEPOINT_BIN:-$root/target/release/safepoint}
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
concurrency=${CONCURRENCY:-4}
[ -x "$bin" ] || { echo "build first: cargo build --release (or set SAFEPOINT_BIN)"; exit 2; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)"; exit 2; }
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100 1000)

# Wall seconds of a command (its output discarded, its exit code ignored).
wall() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>&1 || true
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l | xargs printf '%.2f'
}

policy() {
  cat <<EOF
apiVersion: safepoint/v1
kind: BackupPolicy
metadata:
  name: p$1
spec:
  source:
    type: directory
    path: src/p$1
  storage: local
  schedule: {cron: "0 3 * * *", timezone: UTC}
  retention:
    keepLast: ${2:-2}
EOF
}

echo "binary: $bin  concurrency: $concurrency  cores: $(nproc)  load: $(cut -d' ' -f1 /proc/loadavg)"
printf '%8s %12s %12s %9s %9s %14s %12s %12s\n' \
  N first_conv_s peak_rss_mb plan_s status_s commit_apply_s catalog_mb stored_mb
for n in "${sizes[@]}"; do
  tmp=$(mktemp -d)
  mkdir -p "$tmp/repo/policies" "$tmp/work/src"
  (
    cd "$tmp/repo"
    git init -q -b main
    printf 'apiVersion: safepoint/v1\nkind: Storage\nmetadata: {name: local}\nspec: {type: local, path: store}\n' \
      >policies/storage.yaml
    for i in $(seq 1 "$n"); do
      policy "$i" >"policies/p$i.yaml"
      mkdir -p "$tmp/work/src/p$i"
      head -c 1024 /dev/urandom >"$tmp/work/src/p$i/data.bin"
    done
    git add -A
    git -c user.name=bench -c user.email=bench@localhost commit -q -m "$n policies"
  )
  sp=("$bin" --repo "$tmp/repo" --data-dir "$tmp/work/data")
  cd "$tmp/work"
  t0=$(date +%s.%N)
  SAFEPOINT_LOG=error /usr/bin/time -v -o "$tmp/time" \
    "${sp[@]}" daemon --once --concurrency "$concurrency" >/dev/null 2>"$tmp/log"
  t1=$(date +%s.%N)
  first=$(echo "$t1 - $t0" | bc -l | xargs printf '%.2f')
  rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp/time")
  backups=$(find "$tmp/work/store" -name manifest.json | wc -l)
  [ "$backups" -eq "$n" ] || echo "warning: $backups of $n backups stored (see $tmp/log)"
  plan_s=$(wall "${sp[@]}" plan --output json)
  status_s=$(wall "${sp[@]}" status --output json)
  policy 1 3 >"$tmp/repo/policies/p1.yaml"
  git -C "$tmp/repo" -c user.name=bench -c user.email=bench@localhost commit -q -am "keep 3"
  apply_s=$(wall env SAFEPOINT_LOG=error "${sp[@]}" daemon --once --concurrency "$concurrency")
  catalog=$(du -cb "$tmp/work/data"/catalog.db* | tail -1 | cut -f1)
  stored=$(du -sb "$tmp/work/store" | cut -f1)
  printf '%8s %12s %12.1f %9s %9s %14s %12.2f %12.2f\n' "$n" "$first" \
    "$(echo "$rss_kb / 1024" | bc -l)" "$plan_s" "$status_s" "$apply_s" \
    "$(echo "$catalog / 1048576" | bc -l)" "$(echo "$stored / 1048576" | bc -l)"
  cd "$root"
  rm -rf "$tmp"
done
