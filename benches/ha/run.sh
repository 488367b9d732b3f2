#!/usr/bin/env bash
# Benchmark of several replicas on one PostgreSQL catalog (docs/performance.md,
# section "High availability"). Run from anywhere inside the repository:
#
#   bash benches/ha/run.sh
#
# a. Takeover: 3 replicas (default --lease-ttl 15 s unless HA_TTL), HA_POLICIES
#    (30) directory policies. HA_KILLS (5) times: kill -9 the holder of one
#    policy, time until another live replica holds its lease, restart the
#    killed replica (same --replica-id) and let the leases settle. p50 and max;
#    the bound is ttl + ttl/3.
# b. Gate overhead: HA_GATES (10) `deploy start` POSTs for one policy through
#    its holder and as many through a replica that does not hold it (the job
#    travels through the catalog); median wall time of each, and the difference.
# c. Scale: HA_SCALE (1000) directory policies; time until every policy has
#    a verified backup with 1 replica, then (fresh catalog and storage) with 3;
#    the lease balance; catalog transactions per replica per second when idle;
#    catalog bytes per backup row, scaled to 1 M backups.
#
# Uses the local PostgreSQL (127.0.0.1:5432, user postgres, trust) with
# uniquely named databases, dropped on exit. Loopback only; every wait is
# bounded. Needs: cargo, git, psql, curl, jq, awk.
set -euo pipefail

npol=${HA_POLICIES:-30}
kills=${HA_KILLS:-5}
gates=${HA_GATES:-10}
scale=${HA_SCALE:-1000}
ttl=${HA_TTL:-15}
token=bench-token-0123456789abcdef
pg="psql -h 127.0.0.1 -U postgres -X -q -t -A"

for tool in cargo git psql curl jq; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed" >&2; exit 2; }
done
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
(cd "$root" && cargo build --release --quiet)
bin=$root/target/release/safepoint

tmp=$(mktemp -d "${TMPDIR:-/tmp}/safepoint-ha-bench.XXXXXX")
dbs=()
declare -A pid_of
cleanup() {
  for p in "${pid_of[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for d in "${dbs[@]}"; do $pg -d postgres -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. "$root/benches/lib.sh"   # now_ms, pct, wait_until


# workspace $1 with N directory policies (names p0..), one storage; a db
setup() {
  local ws=$1 n=$2
  mkdir -p "$ws/repo/policies" "$ws/work/src"
  echo data > "$ws/work/src/a.txt"
  printf 'apiVersion: safepoint/v1\nkind: Storage\nmetadata: {name: local}\nspec: {type: local, path: store}\n' \
    > "$ws/repo/policies/storage.yaml"
  for i in $(seq 0 $((n - 1))); do
    printf 'apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata: {name: p%d}\nspec:\n  source: {type: directory, path: src}\n  storage: local\n  schedule: {cron: "0 3 * * *", timezone: UTC}\n  deploy: {before: snapshot}\n  retention: {keepLast: 100}\n' "$i" \
      > "$ws/repo/policies/p$i.yaml"
  done
  git -C "$ws/repo" init -q -b main
  git -C "$ws/repo" -c user.name=bench -c user.email=bench@localhost -c commit.gpgsign=false add -A policies
  git -C "$ws/repo" -c user.name=bench -c user.email=bench@localhost -c commit.gpgsign=false commit -q -m policies
  echo "bench $token" > "$ws/work/tokens"
  local db="sp_ha_bench_$$_$RANDOM"
  $pg -d postgres -c "CREATE DATABASE $db" >/dev/null
  dbs+=("$db")
  echo "$db"
}

# replica NAME in workspace WS on db DB (port file: WS/NAME.addr)
start_replica() {
  local ws=$1 db=$2 name=$3
  (cd "$ws/work" && exec "$bin" --repo "$ws/repo" --data-dir "$ws/work/data-$name" \
    --catalog "postgres://postgres@127.0.0.1:5432/$db" --log-format json \
    daemon --listen 127.0.0.1:0 --api-tokens-file tokens --lease-ttl "$ttl" \
    --replica-id "$name" --concurrency 4 2>>"$ws/$name.log" >/dev/null) &
  pid_of[$name]=$!
  wait_until 60 grep -q '"addr"' "$ws/$name.log"
  grep -m1 '"addr"' "$ws/$name.log" | jq -r '.fields.addr' > "$ws/$name.addr"
}

live_holder() { # db lease
  $pg -d "$1" -c "SELECT holder FROM leases WHERE name = '$2' AND expires_at > (EXTRACT(EPOCH FROM clock_timestamp())*1000)::BIGINT"
}
verified() { $pg -d "$1" -c "SELECT count(DISTINCT policy) FROM backups WHERE health = 'verified'"; }
all_verified() { [ "$(verified "$1")" -ge "$2" ]; }
leases_settled() { # db names
  [ "$($pg -d "$1" -c "SELECT count(*) FROM leases WHERE expires_at > (EXTRACT(EPOCH FROM clock_timestamp())*1000)::BIGINT")" -ge "$2" ]
}

echo "== a. takeover after kill -9 (3 replicas, $npol policies, lease ttl ${ttl}s)"
ws=$tmp/a; db=$(setup "$ws" "$npol")
for r in r1 r2 r3; do start_replica "$ws" "$db" "$r"; done
wait_until 300 all_verified "$db" "$npol"
wait_until 120 leases_settled "$db" $((npol + 1))
takeovers=()
for k in $(seq 1 "$kills"); do
  victim=$(live_holder "$db" p0)
  kill -9 "${pid_of[$victim]}"; wait "${pid_of[$victim]}" 2>/dev/null || true
  t0=$(now_ms)
  changed() { local h; h=$(live_holder "$db" p0); [ -n "$h" ] && [ "$h" != "$victim" ]; }
  wait_until $((ttl * 3)) changed
  takeovers+=($(( $(now_ms) - t0 )))
  echo "  kill $k: $victim -> $(live_holder "$db" p0) in ${takeovers[-1]} ms"
  start_replica "$ws" "$db" "$victim"
  wait_until 120 leases_settled "$db" $((npol + 1))
  sleep $((ttl / 3 + 1))
done
p50=$(printf '%s\n' "${takeovers[@]}" | pct 50)
max=$(printf '%s\n' "${takeovers[@]}" | pct 100)
echo "  takeover p50 ${p50} ms, max ${max} ms (bound: ttl + ttl/3 = $(( ttl * 1000 * 4 / 3 )) ms)"

echo "== b. deploy gate through the holder vs through another replica ($gates each)"
holder=$(live_holder "$db" p1)
other=""
for r in r1 r2 r3; do [ "$r" != "$holder" ] && other=$r && break; done
gate() { # replica release
  local addr; addr=$(cat "$ws/$1.addr")
  curl -sS -o "$ws/gate.json" -w '%{time_total}\n' -X POST \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"wait": true, "policies": ["p1"]}' "http://$addr/api/v1/deploys/$2/start"
  jq -e '.ok == true' "$ws/gate.json" >/dev/null || { echo "error: gate failed: $(cat "$ws/gate.json")" >&2; exit 1; }
}
via_holder=(); via_other=()
for i in $(seq 1 "$gates"); do
  via_holder+=($(gate "$holder" "h$i"))
  via_other+=($(gate "$other" "o$i"))
done
mh=$(printf '%s\n' "${via_holder[@]}" | pct 50)
mo=$(printf '%s\n' "${via_other[@]}" | pct 50)
echo "  median via holder ${mh}s, via another replica ${mo}s, added $(awk -v a="$mo" -v b="$mh" 'BEGIN {printf "%.3f", a - b}')s"
for r in r1 r2 r3; do kill "${pid_of[$r]}" 2>/dev/null || true; done
wait 2>/dev/null || true
unset 'pid_of[r1]' 'pid_of[r2]' 'pid_of[r3]'

echo "== c. $scale policies: first convergence with 1 replica vs 3"
for n in 1 3; do
  ws=$tmp/c$n; db=$(setup "$ws" "$scale")
  t0=$(now_ms)
  for r in $(seq 1 "$n"); do start_replica "$ws" "$db" "s$n-$r"; done
  wait_until 3600 all_verified "$db" "$scale"
  secs=$(awk -v a="$(now_ms)" -v b="$t0" 'BEGIN {print (a - b) / 1000}')
  printf '  %d replica(s): every policy backed up in %.1f s\n' "$n" "$secs"
  if [ "$n" = 3 ]; then
    wait_until 120 leases_settled "$db" $((scale + 1))
    echo "  lease balance (holder count): $($pg -d "$db" -c "SELECT string_agg(holder || '=' || n, ' ') FROM (SELECT holder, count(*) n FROM leases GROUP BY holder ORDER BY holder) x")"
    x0=$($pg -d "$db" -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$db'")
    sleep 30
    x1=$($pg -d "$db" -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$db'")
    echo "  idle catalog transactions: $(awk -v a="$x1" -v b="$x0" 'BEGIN {printf "%.1f", (a - b) / 30 / 3}') per replica per second"
    rows=$($pg -d "$db" -c "SELECT count(*) FROM backups")
    bytes=$($pg -d "$db" -c "SELECT pg_total_relation_size('backups')")
    echo "  catalog: $rows backup rows in $bytes bytes: $(( bytes / rows )) bytes per row, so about $(( bytes / rows )) MB per 1 M backups"
  fi
  for r in $(seq 1 "$n"); do kill "${pid_of[s$n-$r]}" 2>/dev/null || true; unset "pid_of[s$n-$r]"; done
  wait 2>/dev/null || true
done
