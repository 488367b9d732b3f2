#!/usr/bin/env bash
# S3 upload benchmark (docs/performance.md, "S3 storage"): 1 GiB artifact to a
# loopback S3 server (s3s-fs, in process). Builds in release mode (several
# minutes the first time); needs git and /usr/bin/time (Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench --bench s3
