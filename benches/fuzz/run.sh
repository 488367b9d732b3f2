#!/usr/bin/env bash
# Runs every fuzz target of tests/it/fuzz.rs for SECONDS each (default 60)
# with fresh random seeds and prints how many inputs each executed. A failing
# input is shrunk and saved under tests/fuzz/corpus/<target>/, then replayed by
# the test suite forever. Optional second argument: one target name
# (policy, permissions, manifest, pin, webhook-signature, expectation).
#   bash benches/fuzz/run.sh 300          # 5 minutes per target
#   bash benches/fuzz/run.sh 600 policy   # 10 minutes on the policy loader
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
target=${2:-}
export SAFEPOINT_FUZZ_SECONDS=$seconds
if [ -n "$target" ]; then export SAFEPOINT_FUZZ_TARGET=$target; fi
# Release profile: more inputs per second; the test runs the same code.
cargo test --release --test it fuzz::fuzz_targets_answer -- --nocapture --test-threads 1 2>&1 |
  grep -oE 'fuzz [a-z-]+: .*|panicked.*|test result.*|saved as.*'
