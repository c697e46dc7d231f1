#!/usr/bin/env bash
# test-migrations.sh — proves every migration is reversible, on a scratch database.
#
#   ballast migrate up                      → pg_dump --schema-only  A
#   ballast migrate down (repeatedly)       → until `migrate status` shows nothing applied;
#                                             then no application object may remain
#   ballast migrate up                      → pg_dump --schema-only  B ;  A must equal B
#
# Also checks that every migrations/*.up.sql has a matching .down.sql.
#
# Environment: DATABASE_URL (admin URL of a server where a scratch database may be created;
# default postgres://postgres@127.0.0.1:5432/postgres), BALLAST_BIN (default target/debug/ballast),
# KEEP_DB=1 keeps the scratch database for inspection.
# Exit: 0 all checks passed, 1 a check failed, 2 setup problem (no binary, no server).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"

ensure_apt postgresql-client:pg_dump postgresql-client:psql

BIN="$(ballast_bin)"
[ -x "$BIN" ] || { log "error: ballast binary not found at $BIN (build it, or set BALLAST_BIN)"; exit 2; }

DB="ballast_migtest_$$_$(date +%s)"
TMP="$(mktemp -d)"
cleanup() {
  if [ "${KEEP_DB:-0}" = 1 ]; then log "kept scratch database $DB"; else drop_db "$DB"; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

create_db "$DB" || { log "error: cannot create a scratch database on $(pg_admin_url | sed 's#//[^@]*@#//#')"; exit 2; }
URL="$(pg_url_for "$DB")"

passed=0 failed=0
ok()   { passed=$((passed + 1)); printf 'ok   - %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL - %s\n' "$*"; }

# Runs a migrate subcommand against the scratch database only (bounded).
migrate() {
  DATABASE_URL="$URL" timeout 120 "$BIN" migrate "$@"
}

# Schema dump without volatile lines (\restrict keys, version banners).
schema() {
  pg_dump --schema-only --no-owner --no-privileges -d "$URL" \
    | grep -v -e '^\\restrict ' -e '^\\unrestrict ' -e '^-- Dumped ' -e '^--$' -e '^$'
}

# Application objects left in the database (everything but sqlx's bookkeeping table).
leftovers() {
  psql -X -qAt -d "$URL" -v ON_ERROR_STOP=1 <<'SQL'
SELECT 'relation ' || n.nspname || '.' || c.relname || ' (' || c.relkind::text || ')'
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
   AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'
   AND c.relname NOT IN ('_sqlx_migrations', '_sqlx_migrations_pkey')
UNION ALL
SELECT 'type ' || n.nspname || '.' || t.typname
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
   AND t.typtype IN ('e', 'd', 'c', 'r', 'm') AND t.typrelid = 0
UNION ALL
SELECT 'function ' || n.nspname || '.' || p.proname
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT 'schema ' || nspname FROM pg_namespace
 WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'public')
   AND nspname NOT LIKE 'pg_temp%' AND nspname NOT LIKE 'pg_toast_temp%'
UNION ALL
SELECT 'extension ' || extname FROM pg_extension WHERE extname <> 'plpgsql';
SQL
}

applied_count() {
  psql -X -qAt -d "$URL" -c "SELECT CASE WHEN to_regclass('public._sqlx_migrations') IS NULL THEN 0 ELSE (SELECT count(*) FROM public._sqlx_migrations WHERE success) END"
}

# 0. Every up migration has a down migration.
shopt -s nullglob
ups=("$ROOT"/migrations/*.up.sql)
missing=()
for f in "${ups[@]}"; do [ -f "${f%.up.sql}.down.sql" ] || missing+=("$(basename "$f")"); done
plain=("$ROOT"/migrations/*.sql)
shopt -u nullglob
if [ ${#ups[@]} -eq 0 ]; then
  fail "migrations/ has no reversible (*.up.sql) migrations (${#plain[@]} .sql files)"
elif [ ${#missing[@]} -eq 0 ]; then
  ok "every up migration has a down migration (${#ups[@]})"
else
  fail "no .down.sql for: ${missing[*]}"
fi

# 1. up → schema A
if migrate up >"$TMP/up1.log" 2>&1; then ok "migrate up on an empty database ($(tail -n1 "$TMP/up1.log"))"
else fail "migrate up failed: $(tail -n5 "$TMP/up1.log")"; fi
schema >"$TMP/schema-a.sql"
total="$(applied_count)"
if [ "$total" -ge 1 ]; then ok "$total migration(s) applied"; else fail "nothing applied after migrate up"; fi

# 2. down until nothing is applied (bounded by the number applied + 1)
steps=0
while [ "$(applied_count)" -gt 0 ] && [ "$steps" -le "$total" ]; do
  steps=$((steps + 1))
  if ! migrate down >"$TMP/down.log" 2>&1; then
    fail "migrate down (step $steps) failed: $(tail -n5 "$TMP/down.log")"
    break
  fi
  log "down step $steps: $(tr '\n' ' ' <"$TMP/down.log")"
done
migrate status >"$TMP/status.log" 2>&1 || true
status_line="$(tail -n1 "$TMP/status.log")"
if [ "$(applied_count)" -eq 0 ] && [[ "$status_line" == "0 applied"* ]]; then
  ok "all $total migration(s) reverted in $steps step(s); status: $status_line"
else
  fail "migrations still applied after $steps down step(s); status: $status_line"
fi
left="$(leftovers 2>&1)" || left="(leftover query failed: $left)"
if [ -z "$left" ]; then ok "no application objects remain after reverting everything"
else fail "objects left after reverting everything: $(tr '\n' ';' <<<"$left")"; fi

# 3. up again → schema B, identical to A
if migrate up >"$TMP/up2.log" 2>&1; then ok "migrate up again after a full revert"
else fail "second migrate up failed: $(tail -n5 "$TMP/up2.log")"; fi
schema >"$TMP/schema-b.sql"
if diff -u "$TMP/schema-a.sql" "$TMP/schema-b.sql" >"$TMP/schema.diff"; then
  ok "schema after up → down* → up is identical ($(wc -l <"$TMP/schema-a.sql") lines)"
else
  fail "schema differs after up → down* → up:"
  head -n 60 "$TMP/schema.diff"
fi

# 4. up is idempotent
if migrate up >"$TMP/up3.log" 2>&1 && [ "$(applied_count)" -eq "$total" ]; then ok "migrate up is idempotent"
else fail "a second migrate up changed something or failed: $(tail -n3 "$TMP/up3.log")"; fi

echo "test-migrations: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
