#!/usr/bin/env bash
# The one test command (README, .ci/run and the CI workflow call it):
#   1. installs what the tests need (idempotent), finds or starts Postgres and Redis;
#   2. cargo fmt --check, cargo clippy -D warnings;
#   3. the Rust suites: unit tests and tests/api (the real binary against real Postgres/Redis);
#   4. scripts/checks/*.sh: static checks of the assets (nginx -t, promtool, hadolint, ...);
#   5. scripts/e2e/*.sh: end-to-end runs of the binary with real nginx, Prometheus, ...
# Environment: DATABASE_URL (admin URL; databases are created on it), REDIS_URL,
# SKIP_E2E=1 / SKIP_CHECKS=1 / SKIP_RUST=1 to narrow a local run, ONLY=<pattern> for scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh
# shellcheck source=scripts/lib/deps.sh
source scripts/lib/deps.sh
trap deps_cleanup EXIT

started=$(date +%s)
passed=0
failed=0
failures=()
step() {
  local name="$1"; shift
  local t0; t0=$(date +%s)
  log "== $name"
  if "$@"; then
    passed=$((passed + 1)); log "== $name: ok ($(( $(date +%s) - t0 ))s)"
  else
    failed=$((failed + 1)); failures+=("$name"); log "== $name: FAILED ($(( $(date +%s) - t0 ))s)"
  fi
}

ensure_apt curl jq openssl python3 git
ensure_postgres
ensure_redis
# The S3 file tests (tests/api/files.rs) run against moto; without it they skip, or fail under CI.
ensure_pip "moto[server]:moto_server" || log "moto unavailable: the S3 file tests will skip (and fail under CI)"
export DATABASE_URL REDIS_URL

if [ -z "${SKIP_RUST:-}" ]; then
  step "cargo fmt --check" cargo fmt --all -- --check
  step "cargo clippy -D warnings" cargo clippy --locked --all-targets -- -D warnings
  step "cargo build" cargo build --locked --bins
  if command -v cargo-nextest >/dev/null 2>&1; then
    step "cargo nextest (unit + integration)" cargo nextest run --locked --no-fail-fast --test-threads 4
  else
    step "cargo test (unit + integration)" cargo test --locked --no-fail-fast -- --test-threads 4
  fi
fi
export BALLAST_BIN="${BALLAST_BIN:-$PWD/target/debug/ballast}"

run_scripts() {
  local dir="$1" s
  for s in "$dir"/*.sh; do
    [ -e "$s" ] || continue
    if [ -n "${ONLY:-}" ] && [[ "$s" != *"$ONLY"* ]]; then continue; fi
    step "$s" bash "$s"
  done
}
[ -n "${SKIP_CHECKS:-}" ] || run_scripts scripts/checks
[ -n "${SKIP_E2E:-}" ] || run_scripts scripts/e2e

log "total $(( $(date +%s) - started ))s"
for f in "${failures[@]}"; do log "failed: $f"; done
echo "test.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
