#!/usr/bin/env bash
# Benchmark: deploy gate latency while long scheduled backups run
# (docs/performance.md, section "Deploy gate beside long scheduled backups").
# Run from anywhere inside the repository:
#
#   bash benches/gate/lanes.sh
#
# For K = 0, 1 and GATE_CONCURRENCY (the daemon's --concurrency) long
# scheduled backups running (`command` sources that run `sleep 3600`, first
# backup due at start), GATE_RUNS (10) times
# `safepoint --server http://ADDR deploy start --release rN --policy small`
# for a small SQLite policy; reports the gate's wall time, the snapshot's own
# time (its manifest's startedAt..finishedAt) and the difference (the added
# latency; goal < 200 ms in every case). Checks the long backups were still
# running when the last gate returned. Knobs (environment): GATE_RUNS=10,
# GATE_CONCURRENCY=2, GATE_BIN=path of a safepoint binary to use instead of
# building the release one (e.g. target/debug/safepoint). Loopback only; every loop is bounded; the daemons get
# SIGTERM (--shutdown-grace 1: the sleeps are cancelled) and the temp dir is
# removed on exit. Needs: cargo, git, sqlite3, curl, jq.
set -euo pipefail

runs=${GATE_RUNS:-10}
conc=${GATE_CONCURRENCY:-2}
token=bench-token-0123456789abcdef

for tool in cargo git sqlite3 curl jq; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed" >&2; exit 2; }
done
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
if [ -n "${GATE_BIN:-}" ]; then
  bin=$(realpath "$GATE_BIN")
else
  (cd "$root" && cargo build --release --quiet)
  bin=${CARGO_TARGET_DIR:-$root/target}/release/safepoint
fi
echo "binary: $bin"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/safepoint-lanes-bench.XXXXXX")
pid=
stop_daemon() {
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
  fi
}
trap 'stop_daemon; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

. "$root/benches/lib.sh"   # now_ms, pct, wait_until
git_c() { git -C "$1" -c user.name=bench -c user.email=bench@localhost -c commit.gpgsign=false "${@:2}"; }

# setup DIR K: a repo with a small gated SQLite policy and K long scheduled backups
setup() {
  local dir=$1 k=$2
  mkdir -p "$dir/policies"
  printf 'apiVersion: safepoint/v1\nkind: Storage\nmetadata:\n  name: local\nspec:\n  type: local\n  path: store\n' \
    >"$dir/policies/storage.yaml"
  printf 'apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: small\nspec:\n  source: {type: sqlite, path: small.db}\n  storage: local\n  deploy: {before: snapshot}\n  retention: {keepLast: 100}\n' \
    >"$dir/policies/small.yaml"
  for i in $(seq 1 "$k"); do
    printf 'apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: long%s\nspec:\n  source:\n    type: command\n    backupCommand: "touch started-%s && sleep 3600"\n    restoreCommand: "cat > /dev/null"\n  storage: local\n  schedule: {cron: "0 3 * * *", timezone: UTC}\n  retention: {keepLast: 2}\n' \
      "$i" "$i" >"$dir/policies/long$i.yaml"
  done
  sqlite3 "$dir/small.db" "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
    INSERT INTO orders SELECT i, 'customer-' || (i % 97), i * 1.5 FROM n;"
  # `command` sources are opt-in: the operator's permissions file (outside the repo).
  printf 'apiVersion: safepoint/v1\nkind: Permissions\ngrants:\n  - name: bench\n    sourceKinds: [sqlite, command]\n    sourceRoots: ["%s"]\n' \
    "$dir" >"$dir/permissions.yaml"
  git -C "$dir" init -q -b main
  git_c "$dir" add -A policies
  git_c "$dir" commit -q -m policies
}

start_daemon() {
  local dir=$1
  printf 'bench %s\n' "$token" >"$dir/tokens"
  (cd "$dir" && exec "$bin" --permissions "$dir/permissions.yaml" --repo "$dir" --data-dir "$dir/.safepoint" --log-format json \
    daemon --listen 127.0.0.1:0 --api-tokens-file tokens --concurrency "$conc" \
    --shutdown-grace 1 >/dev/null 2>"$dir/daemon.log") &
  pid=$!
  addr=
  for _ in $(seq 600); do # 60 s
    addr=$(jq -r 'select(.fields.addr != null) | .fields.addr' "$dir/daemon.log" 2>/dev/null | head -n1 || true)
    [ -n "$addr" ] && return 0
    sleep 0.1
  done
  echo "error: the daemon did not listen:" >&2
  cat "$dir/daemon.log" >&2
  exit 1
}

# the snapshot's own time in ms, from its manifest
backup_ms() {
  curl -sf "http://$addr/api/v1/backups" | jq -r --arg id "$1" \
    '.[] | select(.record.id == $id) | .manifest
     | def ms(t): (t | sub("\\.[0-9]+"; "") | fromdateiso8601) * 1000
                  + (t | (capture("\\.(?<f>[0-9]{3})") .f // "0") | tonumber);
       ms(.finishedAt // .finished_at) - ms(.startedAt // .started_at)'
}

echo "machine: $(nproc) cores, $(uname -m), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "daemon --concurrency $conc; $runs gates per case"
echo
echo "| long scheduled backups running | gate wall (median / p95) | snapshot itself (median) | added latency (median / p95) | long backups still running at the end |"
echo "|---|---|---|---|---|"
verdict=yes
for k in 0 1 "$conc"; do
  dir=$tmp/k$k
  setup "$dir" "$k"
  start_daemon "$dir"
  for i in $(seq 1 "$k"); do
    for _ in $(seq 600); do [ -e "$dir/started-$i" ] && break; sleep 0.1; done
    [ -e "$dir/started-$i" ] || { echo "error: long backup $i did not start" >&2; cat "$dir/daemon.log" >&2; exit 1; }
  done
  wall=() own=() added=()
  for r in $(seq "$runs"); do
    t0=$(now_ms)
    SAFEPOINT_TOKEN=$token "$bin" --server "http://$addr" --output json \
      deploy start --release "r$r" --policy small >"$tmp/gate.json" 2>/dev/null
    t1=$(now_ms)
    [ "$(jq -r '.ok' "$tmp/gate.json")" = true ] || { cat "$tmp/gate.json" >&2; exit 1; }
    b=$(backup_ms "$(jq -r '.steps[0].backup_id' "$tmp/gate.json")")
    wall+=($((t1 - t0))) own+=("$b") added+=($((t1 - t0 - b)))
  done
  running=$(curl -sf "http://$addr/api/v1/backups" | jq '[.[] | select(.record.policy | startswith("long"))] | length')
  still=yes; [ "$running" = 0 ] || still="no ($running finished)"
  [ "$k" = 0 ] && still="-"
  p95=$(printf '%s\n' "${added[@]}" | pct 95)
  [ "$p95" -lt 200 ] || verdict=no
  printf '| %s | %s / %s ms | %s ms | %s / %s ms | %s |\n' "$k" \
    "$(printf '%s\n' "${wall[@]}" | pct 50)" "$(printf '%s\n' "${wall[@]}" | pct 95)" \
    "$(printf '%s\n' "${own[@]}" | pct 50)" \
    "$(printf '%s\n' "${added[@]}" | pct 50)" "$p95" "$still"
  stop_daemon
done
echo
echo "added latency < 200 ms (p95) in every case: $verdict"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$verdict" = yes ]
