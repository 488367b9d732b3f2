# Shared helpers of the bench scripts (sourced: `. "$(dirname "$0")/../lib.sh"`).

# Milliseconds since the epoch.
now_ms() { date +%s%3N; }

# The P-th percentile (nearest rank) of the numbers on stdin, one per line.
pct() { sort -n | awk -v p="$1" '{v[NR]=$1} END {i=int((p/100)*NR+0.999999); if (i<1) i=1; print v[i]}'; }

# wait_until SECS CMD...: until CMD succeeds, at most SECS seconds (then 1).
wait_until() {
  local secs=$1; shift
  local end=$(( $(date +%s) + secs ))
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || { echo "error: timed out after ${secs}s waiting for: $*" >&2; return 1; }
    sleep 0.1
  done
}

# bench_bin ROOT: the safepoint binary to measure: $SAFEPOINT_BIN, else a
# fresh release build of the repository at ROOT.
bench_bin() {
  if [ -n "${SAFEPOINT_BIN:-}" ]; then
    (cd "$(dirname "$SAFEPOINT_BIN")" && echo "$(pwd)/$(basename "$SAFEPOINT_BIN")")
  else
    (cd "$1" && cargo build --release --quiet) >&2
    echo "$1/target/release/safepoint"
  fi
}

# commit_all REPO MESSAGE: commits every file of a bench policy repository.
commit_all() {
  git -C "$1" add -A
  git -C "$1" -c user.name=bench -c user.email=bench@localhost -c commit.gpgsign=false commit -q -m "$2"
}

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# pg_throwaway DIR "SERVER OPTIONS": a fresh PostgreSQL 15 cluster in DIR/pg
# (DIR emptied and made readable to the postgres user), started on a free
# port with its socket in DIR; exports PGHOST, PGPORT and PGUSER. Stop it
# with pg_throwaway_stop DIR (e.g. from an EXIT trap).
pg_throwaway() {
  local dir=$1 opts=$2 bin=/usr/lib/postgresql/15/bin
  rm -rf "$dir"
  mkdir -p "$dir/out"
  chmod 755 "$dir"
  chown postgres:postgres "$dir"
  PGPORT=$(free_port)
  export PGHOST=127.0.0.1 PGPORT PGUSER=postgres
  runuser -u postgres -- "$bin/initdb" -D "$dir/pg" -A trust -U postgres --no-sync >/dev/null
  runuser -u postgres -- "$bin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w -o \
    "-p $PGPORT -k $dir -c listen_addresses=127.0.0.1 $opts" start >/dev/null
}

pg_throwaway_stop() {
  runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$1/pg" -m fast stop >/dev/null 2>&1 || true
}
