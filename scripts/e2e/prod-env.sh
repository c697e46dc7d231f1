#!/usr/bin/env bash
# Runs the ballast binary with the environment docker-compose.prod.yml gives its `api`
# and `worker` services, with the secrets scripts/init.sh generates — the configuration a
# fresh production host starts with — and checks that it validates, serves, answers the
# compose/Docker healthchecks and drains cleanly on SIGTERM within stop_grace_period.
#
#   1. scripts/init.sh runs in a temporary copy of the repository;
#   2. the service's environment is read from docker-compose.prod.yml (interpolated with
#      that copy's .env; *_FILE secrets resolved to the generated files);
#   3. `ballast check-config` with exactly that environment must exit 0 (production rules);
#   4. for the native run against the shared local servers, a few values are substituted
#      (printed): postgres/redis hosts -> 127.0.0.1, a scratch database, no TLS and no Redis
#      password (the local servers have neither: DATABASE_ALLOW_INSECURE=true), loopback
#      listeners on free ports, a temporary storage directory, a private Redis key prefix;
#   5. check-config again, `ballast serve` becomes ready, `ballast healthcheck` and the
#      compose healthcheck command pass, SIGTERM -> readiness 503 -> exit 0 in time;
#   6. the same for `ballast worker`.
#
# Environment: DATABASE_URL (admin URL of a Postgres this script may create a database on;
# default postgres://postgres@127.0.0.1:5432/postgres), REDIS_URL (default
# redis://127.0.0.1:6379), BALLAST_BIN (default target/debug/ballast),
# PROD_ENV_BUILD: `dockerfile` (default) builds with the Dockerfile's cargo command first and
# tests that binary; `skip` tests BALLAST_BIN as it is (a quicker local run).
# Prints `prod-env: N passed, M failed`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export BALLAST_ROOT="$ROOT"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
cd "$ROOT"

passed=0 failed=0
pass() { passed=$((passed + 1)); printf 'PASS %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
summary() { echo "prod-env: $passed passed, $failed failed"; }

BIN="$(ballast_bin)"
# First build the binary natively with the Dockerfile's own build command (its `cargo build`
# line, with the builder's SQLX_OFFLINE=true) and test that binary: what the image would run.
# A release build takes minutes the first time; PROD_ENV_BUILD=skip tests BALLAST_BIN instead.
if [ "${PROD_ENV_BUILD:-dockerfile}" = dockerfile ]; then
  build_cmd="$(sed -n 's/^[[:space:]]*\(cargo build [^&\\]*\).*/\1/p' Dockerfile | head -n 1 | sed 's/[[:space:]]*$//')"
  read -ra build_argv <<<"$build_cmd"
  if [[ "$build_cmd" != *"--release"* ]] || [[ "$build_cmd" != *"--locked"* ]]; then
    fail "the Dockerfile's build command is a --locked --release cargo build (got: '${build_cmd}')"; summary; exit 1
  fi
  build_log="$(mktemp "${TMPDIR:-/tmp}/ballast-prod-env-build.XXXXXX")"
  echo "== building with the Dockerfile's command: SQLX_OFFLINE=true $build_cmd"
  if SQLX_OFFLINE=true "${build_argv[@]}" > "$build_log" 2>&1; then
    pass "the Dockerfile's build command ($build_cmd) produces the binary natively"
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ballast"
  else
    fail "the Dockerfile's build command ($build_cmd)"; tail -n 30 "$build_log" | sed 's/^/    /'
    rm -f "$build_log"; summary; exit 1
  fi
  rm -f "$build_log"
fi
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
if [ ! -x "$BIN" ]; then
  fail "ballast binary at $BIN (build it with: cargo build --bin ballast)"
  summary; exit 1
fi

ensure_apt python3 curl openssl postgresql-client:psql
PY="$BALLAST_TOOLS_DIR/venv/bin/python"
if [ ! -x "$PY" ] || ! "$PY" -c 'import yaml' 2>/dev/null; then
  ensure_pip pyyaml:__pyyaml_has_no_command__
fi

admin_url="$(pg_admin_url)"
redis_url="${REDIS_URL:-redis://127.0.0.1:6379}"
db="ballast_prodenv_$$_$(date +%s)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/ballast-prod-env.XXXXXX")"
pids=()
cleanup() {
  local p
  for p in "${pids[@]+"${pids[@]}"}"; do
    if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
    wait "$p" 2>/dev/null || true
  done
  drop_db "$db"
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- a fresh host: init.sh
host="$tmp/host"
mkdir -p "$host/scripts/lib"
cp scripts/init.sh scripts/gen-certs.sh "$host/scripts/"
cp scripts/lib/common.sh "$host/scripts/lib/"
cp .env.example "$host/"
if (cd "$host" && env -u BALLAST_ROOT timeout 120 ./scripts/init.sh --domain prod-env.test) > "$tmp/init.log" 2>&1; then
  pass "init.sh prepared a fresh host copy"
else
  fail "init.sh prepared a fresh host copy"; sed 's/^/    /' "$tmp/init.log"; summary; exit 1
fi

# service_env SERVICE [WHAT]: NUL-separated output of tests/compose/service_env.py.
service_env() {
  "$PY" tests/compose/service_env.py --compose docker-compose.prod.yml --project-dir "$host" \
    --service "$1" --what "${2:-env}"
}

# A minimal process environment plus the service's: nothing leaks in from this shell.
base_env=(PATH="$PATH" HOME="$tmp" LANG=C.UTF-8)

# pid_exit PID SECONDS: waits for our child PID to exit (polling, bounded) and sets
# exit_code to its status, or to "timeout". Not in a subshell: only the parent can wait.
exit_code=""
pid_exit() {
  local pid="$1" deadline=$(( $(date +%s) + $2 ))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then exit_code=timeout; return 0; fi
    sleep 0.1
  done
  exit_code=0
  wait "$pid" || exit_code=$?
}

# run_service SERVICE COMMAND
run_service() {
  local svc="$1" cmd="$2"
  local -a env_exact=() env_local=() hc=()
  local grace p_http p_mgmt log out code pid
  echo "== $svc ($cmd): environment from docker-compose.prod.yml"

  if ! mapfile -d '' env_exact < <(service_env "$svc") || [ ${#env_exact[@]} -eq 0 ]; then
    fail "$svc: environment parsed from docker-compose.prod.yml"; return 0
  fi
  pass "$svc: environment parsed from docker-compose.prod.yml (${#env_exact[@]} variables)"
  mapfile -d '' hc < <(service_env "$svc" healthcheck)
  grace="$(service_env "$svc" grace | tr -d '\0')"

  # 1. exactly the compose environment, with the generated secrets
  if out="$(env -i "${base_env[@]}" "${env_exact[@]}" "$BIN" check-config 2>&1)"; then
    pass "$svc: check-config exits 0 with the exact compose environment and init.sh's secrets"
  else
    fail "$svc: check-config with the exact compose environment (exit $?)"; printf '%s\n' "$out" | sed 's/^/    /' | head -30
  fi
  if grep -q "APP_ENV=production" <<<"$out"; then
    pass "$svc: the validated configuration is production"
  else
    fail "$svc: the validated configuration is production"
  fi
  local leaked=""
  for f in postgres_password redis_password jwt_secret s3_secret_access_key; do
    if grep -qF -- "$(cat "$host/secrets/$f")" <<<"$out"; then leaked="$leaked $f"; fi
  done
  if [ -z "$leaked" ]; then pass "$svc: check-config output shows no secret"; else fail "$svc: check-config leaks:$leaked"; fi

  # 2. the local substitutions
  p_http="$(free_port)"; p_mgmt="$(free_port)"
  while [ "$p_mgmt" = "$p_http" ]; do p_mgmt="$(free_port)"; done
  local local_db_url local_redis_url storage="$tmp/storage-$svc"
  mkdir -p "$storage"
  local_db_url="$(pg_url_for "$db")"
  case "$local_db_url" in *\?*) local_db_url="$local_db_url&sslmode=disable" ;; *) local_db_url="$local_db_url?sslmode=disable" ;; esac
  local_redis_url="$redis_url"
  printf '%s\n' "$local_db_url" > "$tmp/database_url.$svc"
  printf '%s\n' "$local_redis_url" > "$tmp/redis_url.$svc"
  env_local=()
  local kv key
  for kv in "${env_exact[@]}"; do
    key="${kv%%=*}"
    case "$key" in
      DATABASE_URL_FILE) env_local+=("DATABASE_URL_FILE=$tmp/database_url.$svc") ;;
      REDIS_URL_FILE) env_local+=("REDIS_URL_FILE=$tmp/redis_url.$svc") ;;
      HTTP_ADDR) env_local+=("HTTP_ADDR=127.0.0.1:$p_http") ;;
      MANAGEMENT_ADDR) env_local+=("MANAGEMENT_ADDR=127.0.0.1:$p_mgmt") ;;
      STORAGE_URL) env_local+=("STORAGE_URL=file://$storage") ;;
      *) env_local+=("$kv") ;;
    esac
  done
  env_local+=("DATABASE_ALLOW_INSECURE=true" "REDIS_KEY_PREFIX=prodenv-$$-$svc:")
  echo "   substituted for the native run (everything else is exactly the compose environment):"
  echo "     DATABASE_URL -> scratch database $db on the local server, sslmode=disable"
  echo "                     (the local Postgres has no TLS; production uses sslmode=require),"
  echo "                     DATABASE_ALLOW_INSECURE=true (production validation would refuse it otherwise)"
  echo "     REDIS_URL    -> $local_redis_url (the local Redis has no password)"
  echo "     HTTP_ADDR=127.0.0.1:$p_http MANAGEMENT_ADDR=127.0.0.1:$p_mgmt (free loopback ports)"
  echo "     STORAGE_URL=file://$storage, REDIS_KEY_PREFIX=prodenv-$$-$svc:"

  if out="$(env -i "${base_env[@]}" "${env_local[@]}" "$BIN" check-config 2>&1)"; then
    pass "$svc: check-config exits 0 with the local substitutions"
  else
    fail "$svc: check-config with the local substitutions"; printf '%s\n' "$out" | sed 's/^/    /' | head -30
    return 0
  fi

  # 3. the process itself
  log="$tmp/$svc.log"
  env -i "${base_env[@]}" "${env_local[@]}" "$BIN" "$cmd" > "$log" 2>&1 &
  pid=$!
  pids+=("$pid")
  if wait_for_http "http://127.0.0.1:$p_mgmt/health/ready" 60 200; then
    pass "$svc: \`ballast $cmd\` becomes ready (/health/ready 200 on the management port)"
  else
    fail "$svc: \`ballast $cmd\` becomes ready"; tail -n 30 "$log" | sed 's/^/    /'
    kill -KILL "$pid" 2>/dev/null || true
    return 0
  fi
  if [ "$cmd" = serve ]; then
    if wait_for_http "http://127.0.0.1:$p_http/health/ready" 10 200; then
      pass "$svc: public /health/ready 200"
    else
      fail "$svc: public /health/ready 200"
    fi
  fi
  if env -i "${base_env[@]}" "${env_local[@]}" "$BIN" healthcheck > "$tmp/hc.out" 2>&1; then
    pass "$svc: \`ballast healthcheck\` (the image's HEALTHCHECK) exits 0"
  else
    fail "$svc: \`ballast healthcheck\` exits 0"; sed 's/^/    /' "$tmp/hc.out"
  fi
  if [ ${#hc[@]} -gt 0 ] && [ "${hc[0]}" = /app/ballast ]; then
    local -a hc_cmd=("$BIN")
    local a
    for a in "${hc[@]:1}"; do hc_cmd+=("${a//127.0.0.1:8081/127.0.0.1:$p_mgmt}"); done
    if env -i "${base_env[@]}" "${env_local[@]}" "${hc_cmd[@]}" > "$tmp/hc.out" 2>&1; then
      pass "$svc: the compose healthcheck (${hc[*]:1}) exits 0"
    else
      fail "$svc: the compose healthcheck (${hc[*]:1})"; sed 's/^/    /' "$tmp/hc.out"
    fi
  else
    fail "$svc: compose healthcheck runs /app/ballast (got: ${hc[*]:-none})"
  fi
  if head -n 1 "$log" | "$PY" -c 'import json, sys; json.loads(sys.stdin.readline())' 2>/dev/null; then
    pass "$svc: logs are JSON (LOG_FORMAT=json)"
  else
    fail "$svc: logs are JSON"; head -n 3 "$log" | sed 's/^/    /'
  fi
  if grep -qF -- "$(cat "$host/secrets/jwt_secret")" "$log"; then
    fail "$svc: the JWT secret appears in the logs"
  else
    pass "$svc: the JWT secret never appears in the logs"
  fi
  if [ "$(psql "$(pg_url_for "$db")" -Atc 'select count(*) > 0 from _sqlx_migrations where success' 2>/dev/null)" = t ]; then
    pass "$svc: migrations applied to the database (DATABASE_AUTO_MIGRATE=true)"
  else
    fail "$svc: migrations applied to the database"
  fi

  # 4. SIGTERM: readiness turns 503 during the readiness delay, then a clean exit 0 within
  #    the compose stop_grace_period.
  local t0 t1
  t0=$(date +%s)
  kill -TERM "$pid"
  if wait_for_http "http://127.0.0.1:$p_mgmt/health/ready" 3 503; then
    pass "$svc: after SIGTERM /health/ready answers 503 (draining)"
  else
    fail "$svc: after SIGTERM /health/ready answers 503"
  fi
  pid_exit "$pid" "$grace"
  code="$exit_code"
  t1=$(date +%s)
  if [ "$code" = 0 ]; then
    pass "$svc: SIGTERM -> exit 0 after $((t1 - t0))s (stop_grace_period ${grace}s)"
  else
    fail "$svc: SIGTERM -> exit 0 within ${grace}s (got: $code)"; tail -n 20 "$log" | sed 's/^/    /'
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

if create_db "$db"; then
  pass "scratch database $db created"
else
  fail "scratch database $db created (admin URL: ${admin_url%%@*}@…)"; summary; exit 1
fi
run_service api serve
run_service worker worker

summary
[ "$failed" -eq 0 ]
