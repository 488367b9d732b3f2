#!/usr/bin/env bash
# Benchmark of the deploy gate through the daemon's HTTP API (docs/performance.md,
# section "Deploy gate (API)"). Run from anywhere inside the repository:
#
#   bash benches/gate/run.sh
#
# a. Gate overhead for a small SQLite database: GATE_RUNS (20) times
#    `safepoint --server http://ADDR deploy start --release rN --policy small`
#    against a running daemon; its wall time versus the backup itself (the
#    manifest's startedAt..finishedAt of the snapshot it took, and the wall
#    time of an in-process `safepoint backup small`), and the same gate as a
#    plain `curl` POST.
# b. GATE_POLICIES (100) `deploy start` requests for as many different
#    policies fired at once (curl, xargs -P); every answer must be 200 with
#    ok=true and exactly one pre-deploy backup per policy must exist afterwards.
#
# Knobs (environment): GATE_RUNS=20, GATE_POLICIES=100, GATE_CONCURRENCY=2
# (the daemon's --concurrency; 2 is its default). Loopback only; every loop is
# bounded; the temp dir and the daemons are removed on exit. Needs: cargo,
# git, sqlite3, curl, jq.
set -euo pipefail

runs=${GATE_RUNS:-20}
npol=${GATE_POLICIES:-100}
conc=${GATE_CONCURRENCY:-2}
token=bench-token-0123456789abcdef

for tool in cargo git sqlite3 curl jq; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed" >&2; exit 2; }
done
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
(cd "$root" && cargo build --release --quiet)
bin=$root/target/release/safepoint

tmp=$(mktemp -d "${TMPDIR:-/tmp}/safepoint-gate-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. "$root/benches/lib.sh"   # now_ms, pct, wait_until


# git repo $1 with the files already written under $1/policies
commit_repo() {
  git -C "$1" init -q -b main
  git -C "$1" -c user.name=bench -c user.email=bench@localhost -c commit.gpgsign=false \
    add -A policies
  git -C "$1" -c user.name=bench -c user.email=bench@localhost -c commit.gpgsign=false \
    commit -q -m policies
}

storage_yaml='apiVersion: safepoint/v1
kind: Storage
metadata:
  name: local
spec:
  type: local
  path: store'

# policy NAME DBFILE: a SQLite source gated before deploys, no schedule (on demand only)
policy_yaml() {
  printf 'apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: %s\nspec:\n  source: {type: sqlite, path: %s}\n  storage: local\n  deploy: {before: snapshot}\n  retention: {keepLast: 100}\n' "$1" "$2"
}

# small_db FILE ROWS
small_db() {
  sqlite3 "$1" "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL, at TEXT);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2)
    INSERT INTO orders SELECT i, 'customer-' || (i % 97), i * 1.5, datetime('now') FROM n;"
}

# start_daemon DIR: starts the daemon in DIR, sets $addr
start_daemon() {
  local dir=$1
  printf 'bench %s\n' "$token" >"$dir/tokens"
  (cd "$dir" && exec "$bin" --repo "$dir" --data-dir "$dir/.safepoint" --log-format json \
    daemon --listen 127.0.0.1:0 --api-tokens-file tokens --concurrency "$conc" \
    >/dev/null 2>"$dir/daemon.log") &
  pids+=($!)
  addr=
  for _ in $(seq 600); do # 60 s
    addr=$(jq -r 'select(.fields.addr != null) | .fields.addr' "$dir/daemon.log" 2>/dev/null | head -n1 || true)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "error: the daemon did not listen:" >&2; cat "$dir/daemon.log" >&2; exit 1; }
  for _ in $(seq 600); do # 60 s
    curl -sf "http://$addr/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "error: the daemon did not become ready:" >&2
  cat "$dir/daemon.log" >&2
  exit 1
}

echo "machine: $(nproc) cores, $(uname -m), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "daemon --concurrency $conc; runs $runs; concurrent policies $npol"

# ---------------------------------------------------------------- a. overhead
a=$tmp/a
mkdir -p "$a/policies"
small_db "$a/small.db" 2000
printf '%s\n' "$storage_yaml" >"$a/policies/storage.yaml"
policy_yaml small small.db >"$a/policies/small.yaml"
commit_repo "$a"
start_daemon "$a"
db_kib=$(( $(stat -c %s "$a/small.db") / 1024 ))

gate_ms=() backup_ms=() overhead_ms=() inproc_ms=() curl_ms=()
for i in $(seq "$runs"); do
  t0=$(now_ms)
  SAFEPOINT_TOKEN=$token "$bin" --server "http://$addr" --output json \
    deploy start --release "r$i" --policy small >"$tmp/gate.json"
  t1=$(now_ms)
  id=$(jq -r '.steps[0].backup_id' "$tmp/gate.json")
  [ "$(jq -r '.ok' "$tmp/gate.json")" = true ] || { cat "$tmp/gate.json" >&2; exit 1; }
  # The backup itself: startedAt..finishedAt of its manifest (read+compress+store+verify).
  b=$(curl -sf "http://$addr/api/v1/backups" | jq -r --arg id "$id" \
    '.[] | select(.record.id == $id) | .manifest
     | (((.finishedAt // .finished_at) | sub("\\.[0-9]+"; "") | fromdateiso8601) * 1000
        + ((.finishedAt // .finished_at) | (capture("\\.(?<f>[0-9]{3})") .f // "0") | tonumber))
       - (((.startedAt // .started_at) | sub("\\.[0-9]+"; "") | fromdateiso8601) * 1000
        + ((.startedAt // .started_at) | (capture("\\.(?<f>[0-9]{3})") .f // "0") | tonumber))')
  gate_ms+=($((t1 - t0)))
  backup_ms+=("$b")
  overhead_ms+=($((t1 - t0 - b)))
done
# The same gate as a plain HTTP call (no CLI process start).
for i in $(seq "$runs"); do
  t0=$(now_ms)
  curl -sf -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"policies": ["small"], "wait": true}' \
    "http://$addr/api/v1/deploys/c$i/start" >"$tmp/gate.json"
  t1=$(now_ms)
  [ "$(jq -r '.ok' "$tmp/gate.json")" = true ] || { cat "$tmp/gate.json" >&2; exit 1; }
  curl_ms+=($((t1 - t0)))
done
for _ in $(seq "$runs"); do
  t0=$(now_ms)
  (cd "$a" && "$bin" --repo "$a" --data-dir "$a/.safepoint" backup small >/dev/null)
  t1=$(now_ms)
  inproc_ms+=($((t1 - t0)))
done

stats() { # name values...
  local name=$1; shift
  local med p95
  med=$(printf '%s\n' "$@" | pct 50)
  p95=$(printf '%s\n' "$@" | pct 95)
  printf '| %s | %s ms | %s ms |\n' "$name" "$med" "$p95"
}
over_p95=$(printf '%s\n' "${overhead_ms[@]}" | pct 95)
over_med=$(printf '%s\n' "${overhead_ms[@]}" | pct 50)
gate_med=$(printf '%s\n' "${gate_ms[@]}" | pct 50)
inproc_med=$(printf '%s\n' "${inproc_ms[@]}" | pct 50)

# ------------------------------------------------------ b. 100 at once
bdir=$tmp/b
mkdir -p "$bdir/policies" "$bdir/db" "$bdir/out"
printf '%s\n' "$storage_yaml" >"$bdir/policies/storage.yaml"
small_db "$bdir/db/template.db" 200
for i in $(seq -w 1 "$npol"); do
  cp "$bdir/db/template.db" "$bdir/db/svc$i.db"
  policy_yaml "svc$i" "db/svc$i.db" >"$bdir/policies/svc$i.yaml"
done
commit_repo "$bdir"
start_daemon "$bdir"
export addr token bdir
fire() { # one pipeline's gate for service $1
  curl -s -o "$bdir/out/$1.json" -w '%{http_code} %{time_total}\n' --max-time 600 \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "{\"policies\": [\"svc$1\"], \"wait\": true}" \
    "http://$addr/api/v1/deploys/svc$1-v1.0.0/start" >"$bdir/out/$1.code"
}
export -f fire
cycles() { curl -sf "http://$addr/metrics" | awk '$1 ~ /reconcile_duration_seconds_count$/ {print $2}'; }
c0=$(cycles)
t0=$(now_ms)
seq -w 1 "$npol" | xargs -P "$npol" -I{} bash -c 'fire {}'
t1=$(now_ms)
c1=$(cycles)
b_total=$((t1 - t0))
codes=$(cat "$bdir"/out/*.code | cut -d' ' -f1 | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')
n200=$(cat "$bdir"/out/*.code | awk '$1 == 200' | wc -l)
nok=$(jq -s '[.[] | select(.ok == true and (.steps | length) == 1 and .steps[0].ok)] | length' "$bdir"/out/*.json)
slowest=$(cat "$bdir"/out/*.code | awk '{print $2}' | sort -n | tail -n1)
answered_ids=$(jq -r '.steps[0].backup_id // empty' "$bdir"/out/*.json | sort)
(cd "$bdir" && "$bin" --repo "$bdir" --data-dir "$bdir/.safepoint" --output json list) >"$tmp/list.json"
npre=$(jq '[.[] | select(.backup.trigger == "pre-deploy")] | length' "$tmp/list.json")
npol_with=$(jq '[.[] | select(.backup.trigger == "pre-deploy") | .backup.policy] | unique | length' "$tmp/list.json")
listed_ids=$(jq -r '.[] | select(.backup.trigger == "pre-deploy") | .backup.id' "$tmp/list.json" | sort)
same_ids=no
[ "$answered_ids" = "$listed_ids" ] && same_ids=yes

verdict_a=no; [ "$over_p95" -lt 200 ] && verdict_a=yes
verdict_b=no
[ "$n200" = "$npol" ] && [ "$nok" = "$npol" ] && [ "$npre" = "$npol" ] && [ "$npol_with" = "$npol" ] \
  && [ "$same_ids" = yes ] && verdict_b=yes

echo
echo "## a. gate overhead, small SQLite database ($db_kib KiB, 2000 rows), $runs runs"
echo
echo "| measure | median | p95 |"
echo "|---|---|---|"
stats "\`--server … deploy start\` wall time" "${gate_ms[@]}"
stats "the backup itself (manifest startedAt..finishedAt)" "${backup_ms[@]}"
stats "**overhead** (gate − backup)" "${overhead_ms[@]}"
stats "the same gate as one \`curl\` POST (no CLI start-up)" "${curl_ms[@]}"
stats "in-process \`safepoint backup small\` wall time" "${inproc_ms[@]}"
echo
echo "overhead < 200 ms (p95): $verdict_a (median $over_med ms; gate median $gate_med ms vs in-process backup $inproc_med ms)"
echo
echo "## b. $npol concurrent deploy start requests, $npol policies, daemon --concurrency $conc"
echo
echo "| measure | value |"
echo "|---|---|"
echo "| total wall time (all answered) | $b_total ms |"
echo "| slowest single answer | ${slowest}s |"
echo "| reconcile cycles run meanwhile | $(awk -v a="$c0" -v b="$c1" 'BEGIN {print b - a}') |"
echo "| HTTP status codes | $codes|"
echo "| answers with ok=true and one verified step | $nok / $npol |"
echo "| pre-deploy backups in \`safepoint list\` | $npre (for $npol_with distinct policies) |"
echo "| answered backup ids = listed ids | $same_ids |"
echo
echo "all answered correctly, none lost or duplicated: $verdict_b"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$verdict_b" = yes ]
