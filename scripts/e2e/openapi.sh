#!/usr/bin/env bash
# Property-based API test: schemathesis (PyPI) generates requests from /openapi.json and
# checks every response: no 5xx, status codes, content types and bodies as documented.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh
ensure_pip schemathesis

bin="$(ballast_bin)"
[ -x "$bin" ] || die "no binary at $bin (cargo build first)"
db="ballast_openapi_$$"
tmp=$(mktemp -d)
app_pid=""
cleanup() {
  [ -n "$app_pid" ] && kill "$app_pid" 2>/dev/null && wait "$app_pid" 2>/dev/null
  drop_db "$db"
  rm -rf "$tmp"
}
trap cleanup EXIT
create_db "$db"
port=$(free_port); mport=$(free_port)
export APP_ENV=test DATABASE_URL; DATABASE_URL="$(pg_url_for "$db")"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}" REDIS_KEY_PREFIX="openapi-$$:"
export JWT_SECRET="openapi-e2e-secret-0123456789abcdef-0123"
export HTTP_ADDR="127.0.0.1:$port" MANAGEMENT_ADDR="127.0.0.1:$mport" STORAGE_URL="file://$tmp/storage"
# Thousands of generated requests from one identity: the limiter is tested elsewhere.
export RATE_LIMIT_ENABLED=false WORKER_CONCURRENCY=2 SHUTDOWN_READINESS_DELAY_SECS=0
"$bin" serve >"$tmp/app.log" 2>&1 &
app_pid=$!
wait_for_http "http://127.0.0.1:$port/health/ready" 30 || { tail -20 "$tmp/app.log"; die "app not ready"; }
token=$("$bin" token --sub schemathesis --ttl 1h)

log "schemathesis against http://127.0.0.1:$port/openapi.json"
set +e
schemathesis run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all --exclude-checks ignored_auth \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-40}" --max-time "${SCHEMATHESIS_MAX_TIME:-120}" \
  --workers 2 --warnings off >"$tmp/st.log" 2>&1
rc=$?
set -e
if [ "$rc" -eq 0 ]; then tail -25 "$tmp/st.log"; else head -c 20000 "$tmp/st.log"; fi
fivexx=$(grep -c '"status":5' "$tmp/app.log" || true)
if [ "$rc" -eq 0 ] && [ "$fivexx" -eq 0 ]; then
  echo "openapi: 2 passed, 0 failed"
else
  grep '"status":5' "$tmp/app.log" | head -5 >&2 || true
  echo "openapi: $(( (rc == 0) + (fivexx == 0) )) passed, $(( (rc != 0) + (fivexx != 0) )) failed"
  exit 1
fi
