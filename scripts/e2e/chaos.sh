#!/usr/bin/env bash
# The fault drills of scripts/chaos.sh on every test run: all five take ~80 s with the debug
# binary (rolling restart behind nginx, Postgres restart, Redis freeze/kill, worker SIGKILL,
# disk full), each on private Postgres/Redis instances, loopback only. Bounded at 180 s.
# BALLAST_BIN: the binary under test (scripts/test.sh sets it; default target/debug/ballast).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export BALLAST_BIN="${BALLAST_BIN:-$PWD/target/debug/ballast}"
CHAOS_TIMEOUT_SECS="${CHAOS_TIMEOUT_SECS:-180}" exec bash scripts/chaos.sh "$@"
