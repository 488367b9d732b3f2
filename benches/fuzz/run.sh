#!/usr/bin/env bash
# Runs every fuzz target of tests/it/fuzz.rs and tests/it/fuzz_api.rs for
# SECONDS each (default 60) with fresh random seeds and prints how many inputs
# each executed (for the HTTP targets also the statuses answered). A failing
# input is shrunk and saved under tests/fuzz/corpus/<target>/, then replayed by
# the test suite forever. Optional second argument: one target name
# (policy, permissions, manifest, pin, webhook-signature, expectation;
# HTTP against a real daemon: api-deploy-start, api-deploy-finish, api-backup,
# api-drill, api-preview, webhook-push).
#   bash benches/fuzz/run.sh 300          # 5 minutes per target
#   bash benches/fuzz/run.sh 600 policy   # 10 minutes on the policy loader
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
target=${2:-}
export SAFEPOINT_FUZZ_SECONDS=$seconds
if [ -n "$target" ]; then export SAFEPOINT_FUZZ_TARGET=$target; fi
# Release profile: more inputs per second; the tests run the same code.
# `fuzz_targets_answer` names the byte-level test (fuzz::) and the HTTP one
# (fuzz_api::).
cargo test --release --test it fuzz_targets_answer -- --nocapture --test-threads 1 2>&1 |
  grep -oE 'fuzz [a-z-]+( answers \(status: inputs\))?: .*|panicked.*|test result.*|saved as.*'
