#!/usr/bin/env bash
# Idle daemon memory: runs `safepoint daemon` on the example policies (a copy
# of this repository in a temp dir), lets it take its first backups and go
# idle, then reports VmRSS and VmHWM from /proc. Target: < 30 MB RSS idle.
#   bash benches/idle_rss.sh [path/to/safepoint]   (default: target/release/safepoint)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/safepoint}
[ -x "$bin" ] || { echo "build first: cargo build --release (or pass the binary)"; exit 2; }
tmp=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
git clone -q "$root" "$tmp/repo"
cd "$tmp/repo"
"$bin" daemon --listen 127.0.0.1:0 >"$tmp/log" 2>&1 &
pid=$!
sleep 10   # first backups, then idle
echo "binary: $bin"
grep -E 'VmRSS|VmHWM' "/proc/$pid/status"
