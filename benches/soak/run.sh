#!/usr/bin/env bash
# Soak run (docs/performance.md, "Soak"): the daemon for SOAK_MINUTES (30)
# with SOAK_POLICIES (50) policies of mixed kinds — postgres, mysql (MariaDB),
# sqlite, directory, command, in turn — every one on a one-minute schedule
# with email alerts, while a fault injector runs in cycles of 6 minutes:
#
#   0:00–1:30    every connection of the soak databases killed, twice a second
#                (pg_terminate_backend on PostgreSQL, KILL on MariaDB)
#   2:00–3:30    storage full (a 256 MB tmpfs filled to the last block)
#   3:30–5:10    SMTP server down (the sink stopped, then restarted)
#
# Each window is longer than a minute plus a backup's duration, so every
# fault meets at least one round of the one-minute schedules.
#
# The last SOAK_QUIET_MINUTES (5) run without faults. Every SOAK_SAMPLE
# seconds (15) it records, in samples.csv: the daemon's RSS, open file
# descriptors and threads, catalog and storage size, backups stored, backups
# failed so far, notices queued, mails received, and invariant violations:
#
#   - a manifest whose artifact is missing or has another size;
#   - a backup directory without a manifest older than 3 minutes (a leftover
#     that observation should have removed);
#   - a policy holding more backups than keepLast + 2.
#
# At the end it checks that every fault was visible (failed backups counted in
# safepoint_backups_total{outcome="failed"} during the kill and full phases,
# notices queued while SMTP was down) and recovered from (every policy has a
# backup newer than 3 minutes, no notice left queued, mails received), and
# prints RSS/fds/threads after warm-up (the first 5 minutes) as first, last,
# max and slope per 10 minutes.
#
#   bash benches/soak/run.sh [OUT_DIR]
#   SOAK_MINUTES=10 SAFEPOINT_BIN=target/debug/safepoint bash benches/soak/run.sh
#
# Needs root (mount -t tmpfs for the storage-full fault), the local
# PostgreSQL (127.0.0.1:5432, postgres, trust) and MariaDB (127.0.0.1:3306,
# root, no password), psql, mariadb, sqlite3, curl, python3 with aiosmtpd
# (SOAK_PYTHON, default the CI venv /opt/safepoint-ci/venv/bin/python).
# Databases are uniquely named and dropped on exit; loopback only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/../lib.sh"

minutes=${SOAK_MINUTES:-30}
npol=${SOAK_POLICIES:-50}
sample=${SOAK_SAMPLE:-15}
quiet=${SOAK_QUIET_MINUTES:-5}
python=${SOAK_PYTHON:-/opt/safepoint-ci/venv/bin/python}
pg="psql -h 127.0.0.1 -U postgres -X -q -t -A"
my="mariadb -h 127.0.0.1 -u root -N -B"
for tool in psql mariadb sqlite3 curl git; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed" >&2; exit 2; }
done
"$python" -c 'import aiosmtpd' 2>/dev/null || { echo "error: $python has no aiosmtpd (bash .ci/setup installs it)" >&2; exit 2; }
bin=$(bench_bin "$root")

out=${1:-$(mktemp -d "${TMPDIR:-/tmp}/safepoint-soak.XXXXXX")}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/safepoint-soak-work.XXXXXX")
tag="sp_soak_$$"
daemon_pid="" sink_pid="" injector_pid=""
cleanup() {
  # The injector first (and the sleep it may be in), so that `wait` below
  # does not wait out a fault window.
  if [ -n "$injector_pid" ]; then
    pkill -P "$injector_pid" 2>/dev/null || true
    kill "$injector_pid" 2>/dev/null || true
  fi
  [ -z "$daemon_pid" ] || kill "$daemon_pid" 2>/dev/null || true
  pkill -f "smtp_sink.py $work/mail" 2>/dev/null || true
  wait 2>/dev/null || true
  for db in $($pg -d postgres -c "SELECT datname FROM pg_database WHERE datname LIKE '${tag}%'"); do
    $pg -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  for db in $($my -e "SHOW DATABASES LIKE '${tag}%'" 2>/dev/null); do
    $my -e "DROP DATABASE IF EXISTS \`$db\`" >/dev/null 2>&1 || true
  done
  mountpoint -q "$work/store" && umount "$work/store"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the estate -------------------------------------------------------------
mkdir -p "$work/repo/policies" "$work/src" "$work/store" "$work/mail"
mount -t tmpfs -o size=256m "soak-$$" "$work/store" \
  || { echo "error: mounting a tmpfs for the storage failed (run as root)" >&2; exit 2; }
smtp_port=$(free_port)
api_port=$(free_port)
cat >"$work/repo/policies/base.yaml" <<EOF
apiVersion: safepoint/v1
kind: Storage
metadata: {name: local}
spec: {type: local, path: $work/store}
---
apiVersion: safepoint/v1
kind: Notifier
metadata: {name: oncall}
spec:
  email: {to: [oncall@soak.test], from: safepoint@soak.test}
EOF
# The operator lets these policies run `command` sources (not in the default).
cat >"$work/permissions.yaml" <<EOF
apiVersion: safepoint/v1
kind: Permissions
grants:
  - name: soak
    sourceKinds: [postgres, mysql, sqlite, directory, command]
    sourceRoots: [$work/src]
    hosts: ["127.0.0.1:5432", "127.0.0.1:3306"]
EOF
kinds=(postgres mysql sqlite directory command)
for i in $(seq 0 $((npol - 1))); do
  kind=${kinds[$((i % 5))]}
  name="$kind-$i"
  case $kind in
    postgres)
      $pg -d postgres -c "CREATE DATABASE ${tag}_$i"
      $pg -d "${tag}_$i" -c "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g"
      source="{type: postgres, url: \"postgres://postgres@127.0.0.1:5432/${tag}_$i\"}" ;;
    mysql)
      $my -e "CREATE DATABASE ${tag}_$i"
      $my "${tag}_$i" -e "CREATE TABLE t (id INT PRIMARY KEY, v TEXT);
              INSERT INTO t SELECT seq, md5(seq) FROM seq_1_to_20000;"
      source="{type: mysql, url: \"mysql://root@127.0.0.1:3306/${tag}_$i\"}" ;;
    sqlite)
      sqlite3 "$work/src/$name.db" "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
        WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < 20000)
        INSERT INTO t SELECT g, hex(randomblob(16)) FROM s;"
      source="{type: sqlite, path: $work/src/$name.db}" ;;
    directory)
      mkdir -p "$work/src/$name"
      head -c 300000 /dev/urandom >"$work/src/$name/data.bin"
      source="{type: directory, path: $work/src/$name}" ;;
    command)
      source="{type: command, backupCommand: \"head -c 300000 /dev/urandom\", restoreCommand: \"cat >/dev/null\"}" ;;
  esac
  cat >"$work/repo/policies/$name.yaml" <<EOF
apiVersion: safepoint/v1
kind: BackupPolicy
metadata: {name: $name}
spec:
  source: $source
  storage: local
  schedule: {cron: "* * * * *"}
  retention: {keepLast: 5}
  timeout: 50s
  alerts: {notifiers: [oncall]}
EOF
done
git -C "$work/repo" init -q -b main
commit_all "$work/repo" "soak: $npol policies"

# --- the processes ----------------------------------------------------------
# The sink reads its stdin from a FIFO this shell holds open (read-write, so
# opening it never blocks): it runs until stopped, whichever process
# (this shell or the injector) started it.
mkfifo "$work/sink.in"
exec {sink_in}<>"$work/sink.in"
start_sink() {
  "$python" "$root/tests/fixtures/smtp_sink.py" "$work/mail" "$smtp_port" <"$work/sink.in" >/dev/null &
  sink_pid=$!
}
stop_sink() {
  pkill -f "smtp_sink.py $work/mail" 2>/dev/null || true
}
start_sink
SAFEPOINT_LOG=warn "$bin" --repo "$work/repo" --data-dir "$work/data" --permissions "$work/permissions.yaml" daemon \
  --listen "127.0.0.1:$api_port" --fetch-interval 30 \
  --smtp-host 127.0.0.1 --smtp-port "$smtp_port" --smtp-tls none --smtp-from safepoint@soak.test \
  >"$out/daemon.log" 2>&1 &
daemon_pid=$!
wait_until 60 curl -fs "http://127.0.0.1:$api_port/healthz" -o /dev/null

metric_sum() { # NAME and label filter (regex) -> sum of matching samples
  curl -fs "http://127.0.0.1:$api_port/metrics" | awk -v n="$1" -v f="$2" \
    '$1 ~ "^"n && $1 ~ f {s += $2} END {printf "%d", s}'
}

# Invariant checks over storage: prints violations, one per line.
check_storage() {
  "$python" - "$work/store" <<'PY'
import json, os, sys, time
root = sys.argv[1]
now = time.time()
for policy in sorted(os.listdir(root)):
    pdir = os.path.join(root, policy)
    if policy.startswith("_") or not os.path.isdir(pdir):
        continue
    complete = 0
    for bid in os.listdir(pdir):
        bdir = os.path.join(pdir, bid)
        if not os.path.isdir(bdir):
            continue
        mpath = os.path.join(bdir, "manifest.json")
        if not os.path.exists(mpath):
            if now - os.stat(bdir).st_mtime > 180:
                print(f"leftover {policy}/{bid}: no manifest after 3 minutes")
            continue
        complete += 1
        try:
            m = json.load(open(mpath))
            art = os.path.join(bdir, m["artifact"]["file"])
            if not os.path.exists(art):
                print(f"manifest {policy}/{bid}: artifact missing")
            elif os.path.getsize(art) != m["artifact"]["size"]:
                print(f"manifest {policy}/{bid}: artifact size {os.path.getsize(art)} != {m['artifact']['size']}")
        except (OSError, ValueError, KeyError) as e:
            if os.path.exists(mpath):
                print(f"manifest {policy}/{bid}: unreadable ({e})")
    if complete > 7:
        print(f"retention {policy}: {complete} backups, keepLast is 5")
PY
}

# --- the fault injector -----------------------------------------------------
kill_connections() { # for SECS seconds
  local end=$(( $(date +%s) + $1 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    $pg -d postgres -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname LIKE '${tag}%' AND pid <> pg_backend_pid()" >/dev/null 2>&1 || true
    for id in $($my -e "SELECT id FROM information_schema.processlist WHERE db LIKE '${tag}%'" 2>/dev/null); do
      $my -e "KILL $id" >/dev/null 2>&1 || true
    done
    sleep 0.5
  done
}
fill_storage() { # for SECS seconds
  fallocate -l "$(df -B1 --output=avail "$work/store" | tail -1)" "$work/store/_fill" 2>/dev/null \
    || dd if=/dev/zero of="$work/store/_fill" bs=1M status=none 2>/dev/null || true
  sleep "$1"
  rm -f "$work/store/_fill"
}
injector() {
  local cycle=360 t0=$1 stop_at=$2 at
  while :; do
    at=$(( $(date +%s) - t0 ))
    [ "$at" -lt "$stop_at" ] || return 0
    case $(( at % cycle / 60 )) in
      0) echo "$at kill-connections" >>"$out/faults.log"; kill_connections 90 ;;
      2) echo "$at storage-full" >>"$out/faults.log"; fill_storage 90 ;;
      3|4) echo "$at smtp-down" >>"$out/faults.log"; stop_sink; sleep 100; start_sink; echo "$(( $(date +%s) - t0 )) smtp-up" >>"$out/faults.log" ;;
      *) sleep 5 ;;
    esac
  done
}

# --- the run ----------------------------------------------------------------
t0=$(date +%s)
end=$(( t0 + minutes * 60 ))
: >"$out/faults.log"
injector "$t0" $(( (minutes - quiet) * 60 )) &
injector_pid=$!
echo "second,rss_mb,fds,threads,catalog_mb,store_mb,backups,failed_total,queued,mails,violations" >"$out/samples.csv"
violations=0 max_queued=0 failed_in_faults=0
while [ "$(date +%s)" -lt "$end" ]; do
  sleep "$sample"
  kill -0 "$daemon_pid" 2>/dev/null || { echo "error: the daemon died (see $out/daemon.log)" >&2; exit 1; }
  rss=$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$daemon_pid/status")
  threads=$(awk '/Threads/ {print $2}' "/proc/$daemon_pid/status")
  fds=$(ls "/proc/$daemon_pid/fd" | wc -l)
  catalog=$(du -cb "$work/data"/catalog.db* 2>/dev/null | tail -1 | awk '{printf "%.2f", $1 / 1048576}')
  store=$(du -sb --exclude=_fill "$work/store" | awk '{printf "%.2f", $1 / 1048576}')
  backups=$(find "$work/store" -name manifest.json | wc -l)
  failed=$(metric_sum safepoint_backups_total 'outcome="failed"' || echo 0)
  queued=$(metric_sum safepoint_notifications_queued '' || echo 0)
  mails=$(ls "$work/mail" | grep -c '\.eml$' || true)
  found=$(check_storage)
  if [ -n "$found" ]; then
    echo "$found" | sed "s/^/$(( $(date +%s) - t0 )) /" >>"$out/violations.log"
    violations=$(( violations + $(echo "$found" | wc -l) ))
  fi
  [ "$queued" -le "$max_queued" ] || max_queued=$queued
  echo "$(( $(date +%s) - t0 )),$rss,$fds,$threads,$catalog,$store,$backups,$failed,$queued,$mails,$violations" >>"$out/samples.csv"
done
wait "$injector_pid" 2>/dev/null || true

# --- the verdict ------------------------------------------------------------
problems=()
failed=$(metric_sum safepoint_backups_total 'outcome="failed"')
[ "$failed" -gt 0 ] || problems+=("no failed backup was counted: the faults were not visible in metrics")
# Killed connections are retried (up to 3 attempts): visible as retries in
# the log, and as failed runs only when every attempt failed.
retried=$(grep -c "transient failure, retrying" "$out/daemon.log" || true)
[ "$retried" -gt 0 ] || problems+=("no retried attempt was logged: killed connections were not visible")
[ "$max_queued" -gt 0 ] || problems+=("no notice was ever queued while SMTP was down")
[ "$(metric_sum safepoint_notifications_queued '')" -eq 0 ] || problems+=("notices still queued at the end")
[ "$(ls "$work/mail" | grep -c '\.eml$' || true)" -gt 0 ] || problems+=("no mail was received")
stale=$("$python" - "$work/store" <<'PY'
import datetime, json, os, re, sys, time
root, now, stale = sys.argv[1], time.time(), []
for policy in sorted(os.listdir(root)):
    pdir = os.path.join(root, policy)
    if policy.startswith("_") or not os.path.isdir(pdir):
        continue
    newest = 0
    for bid in os.listdir(pdir):
        m = os.path.join(pdir, bid, "manifest.json")
        if os.path.exists(m):
            at = re.sub(r"(\.\d{6})\d+", r"\1", json.load(open(m))["finishedAt"])
            t = datetime.datetime.fromisoformat(at.replace("Z", "+00:00"))
            newest = max(newest, t.timestamp())
    if now - newest > 180:
        stale.append(policy)
print(" ".join(stale))
PY
)
[ -z "$stale" ] || problems+=("no backup in the last 3 minutes: $stale")
[ "$violations" -eq 0 ] || problems+=("$violations invariant violations (violations.log)")

echo "soak: $minutes min, $npol policies, binary $bin, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
echo "faults injected: $(awk '{print $2}' "$out/faults.log" | sort | uniq -c | tr -s ' ' | paste -sd, -)"
awk -F, -v warm=300 'NR > 1 && $1 >= warm {
    n++; t[n] = $1; for (c = 2; c <= 4; c++) { v[c, n] = $c; if ($c > mx[c]) mx[c] = $c }
  }
  END {
    split("rss_mb fds threads", name, " ")
    for (c = 2; c <= 4; c++) {
      sx = sy = sxx = sxy = 0
      for (i = 1; i <= n; i++) { sx += t[i]; sy += v[c, i]; sxx += t[i] * t[i]; sxy += t[i] * v[c, i] }
      slope = (n > 1 && n * sxx - sx * sx) ? (n * sxy - sx * sy) / (n * sxx - sx * sx) * 600 : 0
      printf "%-8s after warm-up: first %s, last %s, max %s, slope %+.2f per 10 min\n", name[c - 1], v[c, 1], v[c, n], mx[c], slope
    }
  }' "$out/samples.csv"
tail -1 "$out/samples.csv" | awk -F, -v r="$retried" '{printf "end: catalog %s MB, storage %s MB, %s backups stored, %s failed runs counted, %s attempts retried, %s mails\n", $5, $6, $7, $8, r, $10}'
echo "samples: $out/samples.csv"
if [ ${#problems[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${problems[@]}"
  exit 1
fi
echo "PASSED: zero invariant violations; every fault visible and recovered from"
