#!/usr/bin/env bash
# Assertions use bash -c '…' _ ARGS: the single-quoted $1… expand in the child, on purpose.
# shellcheck disable=SC2016
# scripts/e2e/ops.sh — end-to-end tests of the operational scripts against real Postgres/Redis:
#   1. backup → damage → restore: identical row counts, schema and file storage; the password
#      never reaches a command line; the safety backup undoes the restore; backup → DROP
#      DATABASE → restore gives the same rows and schema; S3 upload (moto)
#   2. retention keeps exactly the GFS set on ~400 days of fake dumps (fixed BACKUP_NOW)
#   3. restore without --yes (and with a bad checksum) refuses and changes nothing
#   4. scripts/test-migrations.sh passes
#   5. deploy.sh (native runtime): v1 deploys; a v2 failing check-config changes nothing; a v2
#      whose worker never becomes ready is rolled back automatically (v1 serving and ready);
#      v3 deploys; rollback.sh returns to v1; rollback without history exits 9
#   6. smoke.sh passes against the running instance and fails against a dead port
# Creates only its own databases (ballast_ops_<pid>_*) and Redis keys (e2e-ops-<pid>:*), and
# stops only the processes it started. Prints one line per assertion and
# "ops: N passed, M failed[, K skipped]"; exits non-zero when anything failed.
#
# Environment: DATABASE_URL (admin URL, default postgres://postgres@127.0.0.1:5432/postgres),
# REDIS_URL (redis://127.0.0.1:6379), BALLAST_BIN (target/debug/ballast), KEEP_TMP=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
S="$ROOT/scripts"

ensure_apt postgresql-client:pg_dump postgresql-client:psql curl:curl

ADMIN_URL="$(pg_admin_url)"
REDIS="${REDIS_URL:-redis://127.0.0.1:6379}"
PFX="ballast_ops_$$"
KEYPFX="e2e-ops-$$:"
SECRET="0123456789abcdef0123456789abcdef-e2e-ops"
TMP="$(mktemp -d)"
LOGS="$TMP/logs"; mkdir -p "$LOGS"
MOTO_PID=""

passed=0 failed=0 skipped=0
ok()   { passed=$((passed + 1)); printf 'ok   - %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL - %s\n' "$*"; }
skip() { skipped=$((skipped + 1)); printf 'skip - %s\n' "$*"; }
# check DESC CMD...: one assertion from a command's status.
check() { local d="$1"; shift; if "$@"; then ok "$d"; else fail "$d"; fi; }
# show_log FILE: the tail of a log after a failure.
show_log() { [ -f "$1" ] && tail -n "${2:-25}" "$1" | sed 's/^/    | /'; return 0; }
section() { printf '# %s\n' "$*"; }

cleanup() {
  local f pid db
  shopt -s nullglob
  for f in "$TMP"/state*/native/instances/*; do
    pid="$(sed -n 's/^pid=//p' "$f")"
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for f in "$TMP"/state*/native/instances/*; do
    pid="$(sed -n 's/^pid=//p' "$f")"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  shopt -u nullglob
  if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi
  for db in $(psql "$ADMIN_URL" -XAtc "SELECT datname FROM pg_database WHERE left(datname, ${#PFX}) = '$PFX'" 2>/dev/null); do
    drop_db "$db"
  done
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -u "$REDIS" --scan --pattern "${KEYPFX}*" 2>/dev/null | head -n 10000 \
      | xargs -r redis-cli -u "$REDIS" del >/dev/null 2>&1 || true
  fi
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql "$ADMIN_URL" -XAtc 'SELECT 1' >/dev/null 2>&1 || die "Postgres is not reachable at ${ADMIN_URL#*@}"

# The binary under test, copied so a concurrent rebuild cannot change it mid-run.
BIN=""
SRC_BIN="$(ballast_bin)"
if [ -x "$SRC_BIN" ] && "$SRC_BIN" --version >/dev/null 2>&1; then
  mkdir -p "$TMP/bin"; cp "$SRC_BIN" "$TMP/bin/ballast"; BIN="$TMP/bin/ballast"
  log "binary under test: $SRC_BIN ($("$BIN" --version))"
else
  log "no working ballast binary at $SRC_BIN: the tests that need it will fail"
fi

url_for() { pg_url_for "$1"; }
q() { psql -X -qAt -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

# table_counts URL: "schema.table=rows" for every user table, sorted.
table_counts() {
  q "$1" "SELECT table_schema || '.' || table_name || '=' ||
            (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text
          FROM information_schema.tables
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'
         ORDER BY 1"
}
# schema_of URL: schema-only dump without volatile lines.
schema_of() {
  pg_dump --schema-only --no-owner --no-privileges -d "$1" \
    | grep -v -e '^\\restrict ' -e '^\\unrestrict ' -e '^-- Dumped ' -e '^--$' -e '^$'
}
# seed_table URL TABLE N: inserts N rows, generating values for NOT NULL columns without default.
seed_table() {
  local sql
  sql="$(psql -X -qAt -v ON_ERROR_STOP=1 -d "$1" -v t="$2" -v n="$3" <<'SQL'
SELECT COALESCE(
  format('INSERT INTO public.%I (%s) SELECT %s FROM generate_series(1, %s) AS g', :'t',
    string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position),
    string_agg(CASE
      WHEN data_type = 'uuid' THEN 'gen_random_uuid()'
      WHEN column_name = 'sha256' THEN 'encode(sha256(convert_to(g::text, ''UTF8'')), ''hex'')'
      WHEN data_type IN ('text', 'character varying', 'character') THEN quote_literal('ops-e2e-') || ' || g'
      WHEN data_type IN ('integer', 'bigint', 'smallint', 'numeric', 'real', 'double precision') THEN 'g'
      WHEN data_type IN ('jsonb', 'json') THEN quote_literal('{"ops": true}') || '::' || data_type
      WHEN data_type LIKE 'timestamp%' OR data_type = 'date' THEN 'now()'
      WHEN data_type = 'boolean' THEN 'false'
      WHEN data_type = 'bytea' THEN 'convert_to(g::text, ''UTF8'')'
      ELSE 'NULL' END, ', ' ORDER BY ordinal_position), :'n'),
  format('INSERT INTO public.%I SELECT FROM generate_series(1, %s)', :'t', :'n'))
FROM information_schema.columns
WHERE table_schema = 'public' AND table_name = :'t' AND is_nullable = 'NO'
  AND column_default IS NULL AND is_identity = 'NO' AND is_generated = 'NEVER';
SQL
)"
  q "$1" "$sql" >/dev/null
}

# ====================================================================== 1. backup → restore
section "1. backup → damage → restore"
DATA_DB="${PFX}_data"
create_db "$DATA_DB" 2>/dev/null
DATA_URL="$(url_for "$DATA_DB")"
# The same database with a password in the URL (trust auth ignores it): it must never reach argv.
PW="ops-secret-pw-$$"
DATA_URL_PW="$DATA_URL"
_rest="${DATA_URL#*://}"
if [[ "$_rest" == *@* ]] && [[ "${_rest%%@*}" != *:* ]]; then
  DATA_URL_PW="${DATA_URL/@/:$PW@}"
  # Only usable where the server does not check it (trust auth, as on CI): else test without it.
  PGPASSWORD="$PW" psql -XAtqd "${DATA_URL}" -c 'SELECT 1' >/dev/null 2>&1 || DATA_URL_PW="$DATA_URL"
fi
BK="$TMP/backups"
STORE="$TMP/storage"

if [ -n "$BIN" ]; then
  if DATABASE_URL="$DATA_URL" timeout 120 "$BIN" migrate up >"$LOGS/migrate.log" 2>&1; then ok "seed: ballast migrate up"
  else fail "seed: ballast migrate up"; show_log "$LOGS/migrate.log"; fi
else
  fail "seed: ballast migrate up (no binary)"
fi
seeded=()
for t in $(q "$DATA_URL" "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations' ORDER BY 1"); do
  if seed_table "$DATA_URL" "$t" 7 2>"$LOGS/seed-$t.log"; then seeded+=("$t"); else log "note: could not seed $t: $(head -n1 "$LOGS/seed-$t.log")"; fi
done
q "$DATA_URL" "CREATE TABLE ops_probe (id bigserial PRIMARY KEY, note text NOT NULL, at timestamptz NOT NULL DEFAULT now());
               INSERT INTO ops_probe (note) SELECT 'row ' || g FROM generate_series(1, 25) g;" >/dev/null
check "seeded app tables (${seeded[*]:-none}) and ops_probe" test "$(q "$DATA_URL" "SELECT count(*) FROM ops_probe")" = 25
if [[ " ${seeded[*]:-} " == *" jobs "* ]]; then ok "jobs table seeded ($(q "$DATA_URL" "SELECT count(*) FROM jobs") rows)"
elif [ -n "$BIN" ]; then fail "jobs table missing after migrate up"; fi
if [[ " ${seeded[*]:-} " == *" files "* ]]; then ok "files table seeded ($(q "$DATA_URL" "SELECT count(*) FROM files") rows)"
elif [ -n "$BIN" ]; then fail "files table not seeded (see the note above)"; fi
mkdir -p "$STORE/ab/cd"
head -c 100000 /dev/urandom >"$STORE/ab/cd/object-1"
printf 'hello ballast\n' >"$STORE/ab/object-2"
COUNTS_BEFORE="$(table_counts "$DATA_URL")"
schema_of "$DATA_URL" >"$TMP/schema-before.sql"
VERSION_BEFORE="$(q "$DATA_URL" "SELECT COALESCE((SELECT max(version)::text FROM _sqlx_migrations), 'none')" 2>/dev/null || echo none)"

# A PATH shim records how the Postgres clients are called.
SHIM="$TMP/shim"; mkdir -p "$SHIM"
for tool in pg_dump pg_restore psql; do
  real="$(command -v "$tool")"
  cat >"$SHIM/$tool" <<EOF
#!/usr/bin/env bash
printf '%s argv=[%s] pgpassword=%s\n' "$tool" "\$*" "\${PGPASSWORD:+set}" >>"$TMP/argv.log"
exec "$real" "\$@"
EOF
  chmod +x "$SHIM/$tool"
done

rc=0
PATH="$SHIM:$PATH" DATABASE_URL="$DATA_URL_PW" BACKUP_DIR="$BK" STORAGE_URL="file://$STORE" \
  timeout 300 "$S/backup.sh" >"$TMP/backup.out" 2>"$LOGS/backup.log" || rc=$?
if [ "$rc" = 0 ]; then ok "backup.sh exits 0"; else fail "backup.sh exits 0 (got $rc)"; show_log "$LOGS/backup.log"; fi
DUMP="$(grep '\.dump$' "$TMP/backup.out" | head -n1 || true)"
ARCHIVE="$(grep '\.tar\.gz$' "$TMP/backup.out" | head -n1 || true)"
check "dump named ballast-YYYYmmddTHHMMSSZ.dump in BACKUP_DIR" \
  bash -c '[[ "$(basename "$1")" =~ ^ballast-[0-9]{8}T[0-9]{6}Z\.dump$ ]] && [ -s "$1" ]' _ "$DUMP"
check "checksums verify with sha256sum -c" bash -c 'cd "$1" && sha256sum -c --quiet ./*.sha256' _ "$BK"
check "pg_restore --list reads the dump" bash -c 'pg_restore --list "$1" >/dev/null' _ "$DUMP"
check "dump is private (mode 600)" test "$(stat -c %a "$DUMP" 2>/dev/null)" = 600
check "file storage archived (ballast-files-*.tar.gz with both objects)" \
  bash -c 'tar -tzf "$1" | grep -q "ab/cd/object-1" && tar -tzf "$1" | grep -q "ab/object-2"' _ "$ARCHIVE"
if [ "$DATA_URL_PW" != "$DATA_URL" ]; then
  if [ -s "$TMP/argv.log" ] && ! grep -qF "$PW" "$TMP/argv.log" && grep -q 'pg_dump .*pgpassword=set' "$TMP/argv.log"; then
    ok "password never on a command line (passed as PGPASSWORD in the child's environment)"
  else
    fail "password handling: $(grep -cF "$PW" "$TMP/argv.log" 2>/dev/null || echo '?') argv line(s) contain it"
  fi
fi
rc=0; DATABASE_URL="$DATA_URL" BACKUP_DIR="$BK" "$S/backup.sh" --dry-run >"$TMP/dry.out" 2>"$LOGS/dry.log" || rc=$?
check "backup.sh --dry-run exits 0 and writes nothing" \
  bash -c '[ "$1" = 0 ] && [ "$(ls "$2"/*.dump | wc -l)" = 1 ]' _ "$rc" "$BK"
# The way the compose `backup` service runs it: the URL from a secret file (DATABASE_URL_FILE),
# the storage volume as STORAGE_DIR, metrics for node-exporter's textfile collector.
BKC="$TMP/bk-compose"; mkdir -p "$TMP/run-secrets"
printf '%s\n' "$DATA_URL_PW" >"$TMP/run-secrets/database_url"; chmod 600 "$TMP/run-secrets/database_url"
: >"$TMP/argv.log"
rc=0
env -u DATABASE_URL PATH="$SHIM:$PATH" DATABASE_URL_FILE="$TMP/run-secrets/database_url" BACKUP_DIR="$BKC" \
  STORAGE_DIR="$STORE" BACKUP_METRICS_FILE="$BKC/metrics/ballast_backup.prom" \
  timeout 300 "$S/backup.sh" >"$TMP/backup-compose.out" 2>"$LOGS/backup-compose.log" || rc=$?
if [ "$rc" = 0 ] && ls "$BKC"/ballast-*.dump >/dev/null 2>&1 && ls "$BKC"/ballast-files-*.tar.gz >/dev/null 2>&1 \
   && [ -s "$BKC/last_success" ] && grep -q '^ballast_backup_last_success_timestamp_seconds [0-9]' "$BKC/metrics/ballast_backup.prom" \
   && grep -q '^ballast_backup_last_size_bytes [1-9]' "$BKC/metrics/ballast_backup.prom" \
   && ! grep -qF "$PW" "$TMP/argv.log"; then
  ok "backup.sh with the compose service's environment (DATABASE_URL_FILE, STORAGE_DIR, BACKUP_METRICS_FILE)"
else
  fail "backup.sh with the compose service's environment (rc $rc)"; show_log "$LOGS/backup-compose.log"
fi
rc=0; env -u DATABASE_URL -u PGHOST -u PGDATABASE BACKUP_DIR="$BK" "$S/backup.sh" >/dev/null 2>&1 || rc=$?
check "backup.sh without a database configured exits 3 (got $rc)" test "$rc" = 3
rc=0; DATABASE_URL="$(url_for "${PFX}_nosuchdb")" BACKUP_DIR="$TMP/bk-none" "$S/backup.sh" >/dev/null 2>&1 || rc=$?
check "backup.sh against a missing database exits 5 (got $rc)" test "$rc" = 5

# Damage: delete rows, add an object the backup does not have, lose files.
q "$DATA_URL" "DELETE FROM ops_probe WHERE id % 2 = 0; CREATE TABLE ops_intruder (x int);" >/dev/null
for t in "${seeded[@]}"; do q "$DATA_URL" "DELETE FROM public.\"$t\"" >/dev/null 2>&1 || true; done
rm -f "$STORE/ab/cd/object-1"; printf 'stray\n' >"$STORE/stray"
check "damage applied (counts differ)" test "$(table_counts "$DATA_URL")" != "$COUNTS_BEFORE"
cp "$TMP/schema-before.sql" "$TMP/schema-keep.sql"

rc=0
DATABASE_URL="$DATA_URL_PW" BACKUP_DIR="$BK" STORAGE_URL="file://$STORE" \
  timeout 300 "$S/restore.sh" --yes --files "$ARCHIVE" "$DUMP" </dev/null >"$TMP/restore.out" 2>"$LOGS/restore.log" || rc=$?
if [ "$rc" = 0 ]; then ok "restore.sh --yes exits 0"; else fail "restore.sh --yes exits 0 (got $rc)"; show_log "$LOGS/restore.log" 40; fi
COUNTS_AFTER="$(table_counts "$DATA_URL")"
if [ "$COUNTS_AFTER" = "$COUNTS_BEFORE" ]; then ok "row counts identical after restore ($(tr '\n' ' ' <<<"$COUNTS_AFTER"))"
else fail "row counts after restore: before [$(tr '\n' ' ' <<<"$COUNTS_BEFORE")] after [$(tr '\n' ' ' <<<"$COUNTS_AFTER")]"; fi
schema_of "$DATA_URL" >"$TMP/schema-after.sql"
if diff -u "$TMP/schema-before.sql" "$TMP/schema-after.sql" >"$TMP/schema.diff"; then ok "pg_dump --schema-only identical after restore (object added after the backup is gone)"
else fail "schema differs after restore"; head -n 30 "$TMP/schema.diff" | sed 's/^/    | /'; fi
JOBS_BEFORE="$(sed -n 's/^public\.jobs=//p' <<<"$COUNTS_BEFORE")"; FILES_BEFORE="$(sed -n 's/^public\.files=//p' <<<"$COUNTS_BEFORE")"
check "restore verified migration version ($VERSION_BEFORE) and the backup's counts (jobs=${JOBS_BEFORE:-?} files=${FILES_BEFORE:-?})" \
  bash -c 'grep -q "^migration_version=$1$" "$2" && grep -qx "jobs=$3" "$2" && grep -qx "files=$4" "$2"' _ \
  "$VERSION_BEFORE" "$TMP/restore.out" "${JOBS_BEFORE:-absent}" "${FILES_BEFORE:-absent}"
check "file storage restored (objects back, stray file gone)" \
  bash -c '[ -s "$1/ab/cd/object-1" ] && [ -f "$1/ab/object-2" ] && [ ! -e "$1/stray" ]' _ "$STORE"
SAFETY="$(sed -n 's/^to undo this restore: *.*restore.sh --yes //p' "$LOGS/restore.log" | head -n1)"
check "safety backup taken before the restore and its undo command printed" \
  bash -c '[ -n "$1" ] && [ -s "$1" ] && [ -s "$1.sha256" ]' _ "$SAFETY"
leftover_dbs="$(q "$ADMIN_URL" "SELECT count(*) FROM pg_database WHERE datname LIKE '${DATA_DB}\\_rst\\_%' OR datname LIKE '${DATA_DB}\\_old\\_%'")"
check "no staging/old databases left behind" test "$leftover_dbs" = 0
# Drill: restore into a scratch database next to the live one; the live one is untouched.
live_counts="$(table_counts "$DATA_URL")"
rc=0
DATABASE_URL="$DATA_URL_PW" BACKUP_DIR="$BK" timeout 300 "$S/restore.sh" --yes --target-db "${PFX}_drill" "$DUMP" \
  </dev/null >/dev/null 2>"$LOGS/drill.log" || rc=$?
check "restore drill into a scratch database (--target-db): same row counts, live database untouched (rc $rc)" \
  bash -c '[ "$1" = 0 ] && [ "$2" = "$3" ] && [ "$4" = "$3" ]' _ "$rc" "$(table_counts "$(url_for "${PFX}_drill")" 2>/dev/null)" "$COUNTS_BEFORE" "$(table_counts "$DATA_URL")"
[ "$live_counts" = "$(table_counts "$DATA_URL")" ] || fail "live database changed during the drill"
# Undo: restoring the safety backup brings back the damaged state (incl. the intruder table).
rc=0
DATABASE_URL="$DATA_URL" BACKUP_DIR="$BK" timeout 300 "$S/restore.sh" --yes --no-safety-backup "$SAFETY" </dev/null >/dev/null 2>"$LOGS/undo.log" || rc=$?
check "undo (restore of the safety backup) brings the pre-restore state back" \
  bash -c '[ "$1" = 0 ] && [ "$(psql -XAtd "$2" -c "SELECT to_regclass($3) IS NOT NULL")" = t ]' _ "$rc" "$DATA_URL" "'public.ops_intruder'"
# backup → DROP DATABASE → restore: the database is gone entirely; restore.sh builds it again
# from the dump (no safety backup of nothing). This also puts the good data back for section 3.
drop_db "$DATA_DB"
rc=0
DATABASE_URL="$DATA_URL" BACKUP_DIR="$BK" timeout 300 "$S/restore.sh" --yes "$DUMP" </dev/null >/dev/null 2>"$LOGS/redo.log" || rc=$?
schema_of "$DATA_URL" >"$TMP/schema-redo.sql" 2>/dev/null || true
if [ "$rc" = 0 ] && [ "$(table_counts "$DATA_URL" 2>/dev/null)" = "$COUNTS_BEFORE" ] \
   && diff -q "$TMP/schema-before.sql" "$TMP/schema-redo.sql" >/dev/null; then
  ok "backup → DROP DATABASE → restore: exit 0, identical row counts and schema"
else
  fail "backup → DROP DATABASE → restore (rc $rc): row counts or schema differ"; show_log "$LOGS/redo.log" 40
fi
check "… restore.sh noticed the missing database (restored into a new one, no safety backup)" \
  grep -q 'does not exist yet' "$LOGS/redo.log"

section "1b. upload to S3-compatible storage (moto)"
S3_OK=0
if ensure_pip "moto[server]:moto_server" >/dev/null 2>&1 && python3 -c 'import boto3' 2>/dev/null; then
  MOTO_PORT="$(free_port)"
  moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$LOGS/moto.log" 2>&1 &
  MOTO_PID=$!
  if wait_for_http "http://127.0.0.1:$MOTO_PORT/moto-api/" 30 200 2>/dev/null || wait_for_http "http://127.0.0.1:$MOTO_PORT/" 5 200; then S3_OK=1; fi
fi
if [ "$S3_OK" = 1 ]; then
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
  s3py() { python3 - "$@" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
if sys.argv[2] == "mk":
    s3.create_bucket(Bucket=sys.argv[3])
else:
    for o in s3.list_objects_v2(Bucket=sys.argv[3], Prefix=sys.argv[4]).get("Contents", []):
        print(o["Key"], o["Size"])
PY
  }
  EP="http://127.0.0.1:$MOTO_PORT"
  s3py "$EP" mk ops-e2e
  for tool in boto3 aws; do
    if [ "$tool" = aws ] && ! command -v aws >/dev/null 2>&1; then skip "S3 upload with the aws CLI (not installed)"; continue; fi
    rc=0
    DATABASE_URL="$DATA_URL" BACKUP_DIR="$TMP/bk-s3-$tool" STORAGE_URL="file://$STORE" BACKUP_S3_URL="s3://ops-e2e/$tool/" \
      BACKUP_S3_ENDPOINT="$EP" BACKUP_S3_TOOL="$tool" timeout 120 "$S/backup.sh" >"$TMP/s3-$tool.out" 2>"$LOGS/s3-$tool.log" || rc=$?
    listing="$(s3py "$EP" ls ops-e2e "$tool/" 2>/dev/null || true)"
    local_dump="$(grep '\.dump$' "$TMP/s3-$tool.out" | head -n1 || true)"
    if [ "$rc" = 0 ] && [ -n "$local_dump" ] \
       && grep -q "^$tool/$(basename "$local_dump") $(stat -c %s "$local_dump")$" <<<"$listing" \
       && grep -q "^$tool/$(basename "$local_dump").sha256 " <<<"$listing" \
       && grep -q "^$tool/ballast-files-.*\.tar\.gz " <<<"$listing"; then
      ok "S3 upload with $tool: dump, checksum and file archive in the bucket"
    else
      fail "S3 upload with $tool (rc $rc; bucket: $(tr '\n' ' ' <<<"$listing"))"; show_log "$LOGS/s3-$tool.log"
    fi
  done
  rc=0
  DATABASE_URL="$DATA_URL" BACKUP_DIR="$TMP/bk-s3-missing" BACKUP_S3_URL="s3://no-such-bucket-ops/x" BACKUP_S3_ENDPOINT="$EP" \
    BACKUP_S3_TOOL=boto3 BACKUP_FILES=0 timeout 120 "$S/backup.sh" >/dev/null 2>"$LOGS/s3-missing.log" || rc=$?
  check "upload failure exits 8 and keeps the local dump (got $rc)" \
    bash -c '[ "$1" = 8 ] && ls "$2"/ballast-*.dump >/dev/null 2>&1' _ "$rc" "$TMP/bk-s3-missing"
  unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION
else
  skip "S3 upload (moto server could not be installed or started)"
fi

# ====================================================================== 2. retention
section "2. retention (7 daily / 4 weekly / 12 monthly, BACKUP_NOW=20261115T030000Z, a Sunday)"
RD="$TMP/retention"; mkdir -p "$RD"
python3 - "$RD" <<'PY'
import datetime as d, pathlib, sys
root = pathlib.Path(sys.argv[1])
now = d.datetime(2026, 11, 15, 2)
stamps = [now - d.timedelta(days=i) for i in range(400)]           # 2025-10-12 … 2026-11-15, 02:00
stamps += [d.datetime(2026, 11, 14, 20), d.datetime(2026, 11, 16, 1)]  # 2nd backup on one day; one "from the future"
for t in stamps:
    s = t.strftime("%Y%m%dT%H%M%SZ")
    (root / f"ballast-{s}.dump").touch()
    (root / f"ballast-{s}.dump.sha256").write_text(f"0  ballast-{s}.dump\n")
    if t.day in (1, 15, 30):
        (root / f"ballast-files-{s}.tar.gz").touch()
(root / "notes.txt").write_text("not a backup\n")
(root / "ballast-manual.dump").touch()
PY
EXPECTED="20251231T020000Z 20260131T020000Z 20260228T020000Z 20260331T020000Z 20260430T020000Z 20260531T020000Z
20260630T020000Z 20260731T020000Z 20260831T020000Z 20260930T020000Z 20261025T020000Z 20261031T020000Z
20261101T020000Z 20261108T020000Z 20261109T020000Z 20261110T020000Z 20261111T020000Z 20261112T020000Z
20261113T020000Z 20261114T200000Z 20261115T020000Z 20261116T010000Z"
EXPECTED="$(tr ' ' '\n' <<<"$EXPECTED" | grep . | sort)"
stamps_in() { find "$1" -maxdepth 1 -name 'ballast-*.dump' | sed -n 's/.*ballast-\([0-9]\{8\}T[0-9]\{6\}Z\)\.dump$/\1/p' | sort; }
before_n="$(stamps_in "$RD" | wc -l)"
rc=0; BACKUP_DIR="$RD" BACKUP_NOW=20261115T030000Z "$S/backup.sh" --prune-only --dry-run 2>"$LOGS/prune-dry.log" || rc=$?
check "prune --dry-run deletes nothing ($before_n dumps stay)" bash -c '[ "$1" = 0 ] && [ "$2" = "$3" ]' _ "$rc" "$(stamps_in "$RD" | wc -l)" "$before_n"
rc=0; BACKUP_DIR="$RD" BACKUP_NOW=20261115T030000Z "$S/backup.sh" --prune-only 2>"$LOGS/prune.log" || rc=$?
check "backup.sh --prune-only exits 0" test "$rc" = 0
KEPT="$(stamps_in "$RD")"
if [ "$KEPT" = "$EXPECTED" ]; then ok "retention kept exactly the expected $(wc -l <<<"$KEPT") of $before_n backups"
else fail "retention kept the wrong set"; diff <(echo "$EXPECTED") <(echo "$KEPT") | sed 's/^/    | /' || true; fi
check "checksum files follow their dumps (one .sha256 per kept dump)" \
  test "$(find "$RD" -name 'ballast-*.dump.sha256' | wc -l)" = "$(wc -l <<<"$KEPT")"
# Archives were made on days 1, 15 and 30: of the kept set that is 0430 0630 0930 1101 1115.
check "file archives follow their dumps (exactly the 5 archives of kept backups remain)" \
  bash -c '[ "$(find "$1" -name "ballast-files-*.tar.gz" | wc -l)" = 5 ] && [ -e "$1/ballast-files-20261101T020000Z.tar.gz" ] && [ ! -e "$1/ballast-files-20261015T020000Z.tar.gz" ]' _ "$RD"
check "unrelated files untouched (notes.txt, ballast-manual.dump)" test -e "$RD/notes.txt" -a -e "$RD/ballast-manual.dump"
rc=0; BACKUP_DIR="$RD" BACKUP_NOW=20261115T030000Z BACKUP_KEEP_DAILY=0 BACKUP_KEEP_WEEKLY=0 BACKUP_KEEP_MONTHLY=0 \
  "$S/backup.sh" --prune-only 2>/dev/null || rc=$?
check "with every tier at 0 only the newest (and future) backups remain" \
  test "$(stamps_in "$RD" | tr '\n' ' ')" = "20261115T020000Z 20261116T010000Z "
rc=0; BACKUP_DIR="$RD" BACKUP_NOW=yesterday "$S/backup.sh" --prune-only 2>/dev/null || rc=$?
check "a malformed BACKUP_NOW exits 3 (got $rc)" test "$rc" = 3

# ====================================================================== 3. refusals
section "3. restore refuses without --yes or with a bad checksum"
counts0="$(table_counts "$DATA_URL")"; schema_of "$DATA_URL" >"$TMP/schema-r0.sql"
safety_n0="$(find "$BK/pre-restore" -name '*.dump' 2>/dev/null | wc -l)"
q "$DATA_URL" "INSERT INTO ops_probe (note) VALUES ('after the backup')" >/dev/null
counts1="$(table_counts "$DATA_URL")"
rc=0; DATABASE_URL="$DATA_URL" BACKUP_DIR="$BK" timeout 60 "$S/restore.sh" "$DUMP" </dev/null >/dev/null 2>"$LOGS/refuse.log" || rc=$?
check "restore.sh without --yes exits 3 (got $rc)" test "$rc" = 3
check "… and says why" grep -q 'without --yes' "$LOGS/refuse.log"
schema_of "$DATA_URL" >"$TMP/schema-r1.sql"
check "… and changed nothing (row counts, schema, no safety backup taken)" \
  bash -c '[ "$1" = "$2" ] && diff -q "$3" "$4" >/dev/null && [ "$(find "$5/pre-restore" -name "*.dump" 2>/dev/null | wc -l)" = "$6" ]' \
  _ "$(table_counts "$DATA_URL")" "$counts1" "$TMP/schema-r0.sql" "$TMP/schema-r1.sql" "$BK" "$safety_n0"
[ "$counts0" != "$counts1" ] || fail "test setup: the extra row did not change the counts"
cp "$DUMP" "$TMP/tampered.dump"; cp "$DUMP.sha256" "$TMP/tampered.dump.sha256"
printf 'X' | dd of="$TMP/tampered.dump" bs=1 seek=200 conv=notrunc status=none
rc=0; DATABASE_URL="$DATA_URL" BACKUP_DIR="$BK" timeout 60 "$S/restore.sh" --yes "$TMP/tampered.dump" </dev/null >/dev/null 2>"$LOGS/tampered.log" || rc=$?
check "restore.sh --yes with a checksum mismatch exits 5 and changes nothing (got $rc)" \
  bash -c '[ "$1" = 5 ] && [ "$2" = "$3" ]' _ "$rc" "$(table_counts "$DATA_URL")" "$counts1"
rc=0; DATABASE_URL="$DATA_URL" "$S/restore.sh" --yes "$TMP/does-not-exist.dump" </dev/null >/dev/null 2>&1 || rc=$?
check "restore.sh of a missing file exits 5 (got $rc)" test "$rc" = 5
rc=0; "$S/restore.sh" </dev/null >/dev/null 2>&1 || rc=$?
check "restore.sh without a file exits 2 (got $rc)" test "$rc" = 2

# ====================================================================== 4. migrations
section "4. test-migrations.sh"
if [ -n "$BIN" ]; then
  rc=0; BALLAST_BIN="$BIN" DATABASE_URL="$ADMIN_URL" timeout 300 "$S/test-migrations.sh" >"$LOGS/migrations.log" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then ok "test-migrations.sh passes ($(tail -n1 "$LOGS/migrations.log"))"
  else fail "test-migrations.sh (rc $rc)"; grep -E '^(FAIL|ok)' "$LOGS/migrations.log" | sed 's/^/    | /'; fi
else
  fail "test-migrations.sh: no ballast binary"
fi

# ====================================================================== 5. deploy / rollback
section "5. deploy.sh / rollback.sh (native runtime)"
DEP_DB="${PFX}_deploy"
IMAGES="$TMP/images"; STATE="$TMP/state"
inst_of() { # SVC → instance record files of live instances
  local f
  for f in "$STATE"/native/instances/*; do
    [ -f "$f" ] && grep -qx "svc=$1" "$f" && echo "$f"
  done
  return 0
}
rec() { sed -n "s/^$2=//p" "$1"; }
# serving SVC TAG: exactly one instance of SVC, running the binary of TAG, ready on its management port.
serving() {
  local files f pid exe
  mapfile -t files < <(inst_of "$1")
  [ "${#files[@]}" = 1 ] || { echo "    | $1: ${#files[@]} instances" >&2; return 1; }
  f="${files[0]}"; pid="$(rec "$f" pid)"
  [ "$(rec "$f" tag)" = "$2" ] || { echo "    | $1 record says tag $(rec "$f" tag)" >&2; return 1; }
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
  [[ "$exe" == "$IMAGES/$2/"* ]] || { echo "    | $1 pid $pid runs '$exe'" >&2; return 1; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$(rec "$f" mgmt)/health/ready")" = 200 ] \
    || { echo "    | $1 not ready" >&2; return 1; }
}
api_pid() { local f; f="$(inst_of api | head -n1)"; [ -n "$f" ] && rec "$f" pid; }
deploy_env() {
  env APP_ENV=test DATABASE_URL="$(url_for "$DEP_DB")" REDIS_URL="$REDIS" REDIS_KEY_PREFIX="$KEYPFX" \
    JWT_SECRET="$SECRET" STORAGE_URL="file://$TMP/deploy-storage" SHUTDOWN_READINESS_DELAY_SECS=0 \
    LOG_FORMAT=json LOG_LEVEL=warn WORKER_CONCURRENCY=2 \
    DEPLOY_RUNTIME=native DEPLOY_IMAGES_DIR="$IMAGES" DEPLOY_STATE_DIR="$STATE" BACKUP_DIR="$TMP/deploy-backups" \
    DEPLOY_READY_TIMEOUT_SECS=30 DEPLOY_STOP_TIMEOUT_SECS=20 "$@"
}
if [ -z "$BIN" ]; then
  fail "deploy tests: no ballast binary"
else
  create_db "$DEP_DB" 2>/dev/null
  mkdir -p "$IMAGES/v1" "$IMAGES/v2-badconfig" "$IMAGES/v2-broken" "$IMAGES/v3"
  cp "$BIN" "$IMAGES/v1/ballast"; cp "$BIN" "$IMAGES/v3/ballast"
  for v in v2-badconfig v2-broken; do cp "$BIN" "$IMAGES/$v/ballast.real"; done
  cat >"$IMAGES/v2-badconfig/ballast" <<'EOF'
#!/usr/bin/env bash
# A release whose configuration is invalid: check-config must stop it before anything changes.
export JWT_SECRET=too-short
exec "$(dirname "$0")/ballast.real" "$@"
EOF
  cat >"$IMAGES/v2-broken/ballast" <<EOF
#!/usr/bin/env bash
# A release whose api comes up but whose worker never becomes ready (its database does not exist).
if [ "\${1:-}" = worker ]; then
  export DATABASE_URL="$(url_for "${PFX}_missing")" STARTUP_DEPENDENCY_TIMEOUT_SECS=2
fi
exec "\$(dirname "\$0")/ballast.real" "\$@"
EOF
  chmod +x "$IMAGES"/*/ballast

  rc=0; deploy_env timeout 300 "$S/deploy.sh" v1 >"$LOGS/deploy-v1.log" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then ok "deploy.sh v1 (first deploy) exits 0"; else fail "deploy.sh v1 exits 0 (got $rc)"; show_log "$LOGS/deploy-v1.log" 40; fi
  check "v1: api serving and ready" serving api v1
  check "v1: worker running and ready" serving worker v1
  check "v1: current_tag recorded" test "$(cat "$STATE/current_tag" 2>/dev/null)" = v1
  check "v1: pre-deploy backup written" bash -c 'ls "$1"/ballast-*.dump >/dev/null 2>&1' _ "$TMP/deploy-backups"
  check "v1: smoke test ran inside the deploy" grep -q 'smoke: [0-9]* passed, 0 failed' "$LOGS/deploy-v1.log"
  pid_v1="$(api_pid)"

  rc=0; deploy_env timeout 300 "$S/deploy.sh" v2-badconfig >"$LOGS/deploy-v2-badconfig.log" 2>&1 || rc=$?
  check "deploy.sh v2-badconfig exits 6 (config check) (got $rc)" test "$rc" = 6
  check "v2-badconfig: nothing changed (same api process, v1 serving and ready)" \
    bash -c '[ "$1" = "$2" ] && [ "$(cat "$3/current_tag")" = v1 ]' _ "$(api_pid)" "$pid_v1" "$STATE"
  check "v2-badconfig: api still v1 and ready" serving api v1

  rc=0; deploy_env timeout 300 "$S/deploy.sh" v2-broken >"$LOGS/deploy-v2-broken.log" 2>&1 || rc=$?
  if [ "$rc" = 7 ]; then ok "deploy.sh v2-broken fails and reports an automatic rollback (exit 7)"
  else fail "deploy.sh v2-broken exits 7 (got $rc)"; show_log "$LOGS/deploy-v2-broken.log" 40; fi
  check "v2-broken: the api had been switched to v2-broken before the worker failed" \
    grep -q 'api instance .* is ready' "$LOGS/deploy-v2-broken.log"
  check "v2-broken: rollback restarted the api on v1" grep -q 'auto-rollback: started api instance .*tag v1' "$LOGS/deploy-v2-broken.log"
  check "after rollback: api v1 serving and ready" serving api v1
  check "after rollback: worker v1 running and ready" serving worker v1
  check "after rollback: current_tag still v1" test "$(cat "$STATE/current_tag")" = v1
  check "after rollback: no v2-broken process left" bash -c '! grep -rqx "tag=v2-broken" "$1"/native/instances/' _ "$STATE"
  check "history records the rolled-back deploy" grep -q $'v2-broken\tfailed-rolled-back-to-v1' "$STATE/history.log"

  rc=0; deploy_env timeout 300 "$S/deploy.sh" v3 >"$LOGS/deploy-v3.log" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then ok "deploy.sh v3 exits 0"; else fail "deploy.sh v3 exits 0 (got $rc)"; show_log "$LOGS/deploy-v3.log" 40; fi
  check "v3: api serving and ready" serving api v3
  check "v3: worker running and ready" serving worker v3
  check "v3: current_tag=v3 previous_tag=v1" \
    bash -c '[ "$(cat "$1/current_tag")" = v3 ] && [ "$(cat "$1/previous_tag")" = v1 ]' _ "$STATE"
  check "v3: the v1 api process is gone" bash -c '! kill -0 "$1" 2>/dev/null' _ "$pid_v1"
  check "v3: new api started before the old one stopped (rolling order)" \
    bash -c 'awk "/started api instance/{s=NR} /stopped api instance/{t=NR} END{exit !(s && t && s < t)}" "$1"' _ "$LOGS/deploy-v3.log"

  rc=0; deploy_env timeout 300 "$S/rollback.sh" >"$LOGS/rollback.log" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then ok "rollback.sh exits 0"; else fail "rollback.sh exits 0 (got $rc)"; show_log "$LOGS/rollback.log" 40; fi
  check "rollback: api v1 serving and ready" serving api v1
  check "rollback: worker v1 running and ready" serving worker v1
  check "rollback: current_tag=v1 previous_tag=v3" \
    bash -c '[ "$(cat "$1/current_tag")" = v1 ] && [ "$(cat "$1/previous_tag")" = v3 ]' _ "$STATE"
  rc=0; deploy_env env DEPLOY_STATE_DIR="$TMP/state-empty" "$S/rollback.sh" >/dev/null 2>&1 || rc=$?
  check "rollback.sh without a previous tag exits 9 (got $rc)" test "$rc" = 9
  rc=0; deploy_env "$S/deploy.sh" 'bad tag!' >/dev/null 2>&1 || rc=$?
  check "deploy.sh refuses a malformed tag with exit 2 (got $rc)" test "$rc" = 2
  rc=0; deploy_env "$S/deploy.sh" v9-missing >/dev/null 2>&1 || rc=$?
  check "deploy.sh of an image that does not exist exits 4 (got $rc)" test "$rc" = 4
fi

# ====================================================================== 5b. compose runtime (fake docker)
section "5b. deploy.sh compose runtime against a fake docker CLI (call sequence; no engine here)"
FD="$TMP/fake-docker"; mkdir -p "$FD/bin"
ln -s "$S/e2e/ops/fake-docker" "$FD/bin/docker"
: >"$FD/docker-compose.prod.yml"
api_rec="$(inst_of api 2>/dev/null | head -n1 || true)"
fd_token=""
[ -n "$BIN" ] && fd_token="$(JWT_SECRET="$SECRET" "$BIN" token --sub smoke-compose 2>/dev/null || true)"
compose_env() {
  env PATH="$FD/bin:$PATH" FAKE_DOCKER_STATE="$FD/state" FAKE_DOCKER_TOKEN="$fd_token" \
    DEPLOY_RUNTIME=compose DEPLOY_COMPOSE_FILE="$FD/docker-compose.prod.yml" DEPLOY_STATE_DIR="$FD/deploy-state" \
    DEPLOY_READY_TIMEOUT_SECS=10 DEPLOY_SMOKE_URL="http://$( [ -n "$api_rec" ] && rec "$api_rec" http)" "$@"
}
# fd_running SVC TAG: exactly one running fake container of SVC, with image tag TAG.
fd_running() {
  local n=0 f
  for f in "$FD/state/containers"/*; do
    if ! { [ -f "$f" ] && grep -qx "svc=$1" "$f" && grep -qx 'status=running' "$f"; }; then continue; fi
    grep -qx "image=ballast:$2" "$f" || return 1
    n=$((n + 1))
  done
  [ "$n" = 1 ]
}
fd_both() { fd_running api "$1" && fd_running worker "$1"; }
if [ -z "$api_rec" ] || [ -z "$fd_token" ]; then
  fail "compose runtime tests need the running native api (section 5) for the smoke test"
else
  # A stack started by hand (docker compose up) at c0: no recorded tag yet.
  for svc in api worker; do
    compose_env env BALLAST_TAG=c0 docker compose -f "$FD/docker-compose.prod.yml" up -d --no-deps --scale "$svc=1" "$svc"
  done
  rc=0; compose_env timeout 120 "$S/deploy.sh" c3-broken >"$LOGS/compose-c0.log" 2>&1 || rc=$?
  check "compose: first deploy.sh on a hand-started stack learns the running tag and rolls back to it (exit 7, got $rc)" \
    bash -c '[ "$1" = 7 ] && [ "$(cat "$2/current_tag")" = c0 ]' _ "$rc" "$FD/deploy-state"
  check "compose: … api and worker back on c0" fd_both c0
  for t in c1 c2; do
    rc=0; compose_env timeout 120 "$S/deploy.sh" "$t" >"$LOGS/compose-$t.log" 2>&1 || rc=$?
    if [ "$rc" = 0 ]; then ok "compose: deploy.sh $t exits 0"; else fail "compose: deploy.sh $t (rc $rc)"; show_log "$LOGS/compose-$t.log" 30; fi
  done
  check "compose: backup ran in the backup service, nginx reloaded, smoke passed" \
    bash -c 'grep -q "^backup via backup bash /opt/ballast/scripts/backup.sh" "$1/events.log" && grep -q "^nginx reload" "$1/events.log" && grep -q "smoke: [0-9]* passed, 0 failed" "$2"' _ "$FD/state" "$LOGS/compose-c2.log"
  check "compose: config checked with the new image (run --rm --no-deps -T api check-config)" \
    grep -q -- '-T api check-config' "$FD/state/calls.log"
  check "compose: c2 api created (scale 2) before the c1 api was stopped" \
    bash -c 'awk "/^created api .*:c2\$/{c=NR} /^stopped api /{if (c && !s && NR > c) s=NR} END{exit !(c && s)}" "$1/events.log" && grep -q -- "--scale api=2 api" "$1/calls.log"' _ "$FD/state"
  check "compose: api and worker on c2, previous_tag c1" \
    bash -c '[ "$(cat "$1/current_tag")" = c2 ] && [ "$(cat "$1/previous_tag")" = c1 ]' _ "$FD/deploy-state"
  check "compose: exactly one running api and one worker container, both c2" fd_both c2
  rc=0; compose_env timeout 120 "$S/deploy.sh" c3-broken >"$LOGS/compose-c3.log" 2>&1 || rc=$?
  check "compose: a release whose worker exits at once is rolled back (exit 7, got $rc)" test "$rc" = 7
  check "compose: after the rollback api and worker are c2 again, no c3 container left" \
    bash -c '! grep -rqx "image=ballast:c3-broken" "$1"/containers/' _ "$FD/state"
  check "compose: exactly one running api and one worker container after the rollback, both c2" fd_both c2
  n_events="$(wc -l <"$FD/state/events.log")"
  rc=0; compose_env timeout 120 "$S/deploy.sh" c4-badconfig >"$LOGS/compose-c4.log" 2>&1 || rc=$?
  check "compose: invalid config exits 6 before any container is created (got $rc)" \
    bash -c '[ "$1" = 6 ] && ! tail -n +"$(( $2 + 1 ))" "$3" | grep -q "^created"' _ "$rc" "$n_events" "$FD/state/events.log"
  rc=0; compose_env timeout 120 "$S/deploy.sh" c5-missing >"$LOGS/compose-c5.log" 2>&1 || rc=$?
  check "compose: an image that can be neither pulled nor built exits 4 (got $rc)" test "$rc" = 4
  rc=0; compose_env timeout 120 "$S/rollback.sh" >"$LOGS/compose-rollback.log" 2>&1 || rc=$?
  check "compose: rollback.sh returns to c1 (got $rc)" \
    bash -c '[ "$1" = 0 ] && [ "$(cat "$2/current_tag")" = c1 ]' _ "$rc" "$FD/deploy-state"
  check "compose: exactly one running api and one worker container after rollback.sh, both c1" fd_both c1
fi

# ====================================================================== 6. smoke
section "6. smoke.sh"
api_rec="$(inst_of api 2>/dev/null | head -n1 || true)"
if [ -n "$api_rec" ]; then
  rc=0
  JWT_SECRET="$SECRET" SMOKE_BALLAST_BIN="$IMAGES/v1/ballast" timeout 120 "$S/smoke.sh" "http://$(rec "$api_rec" http)" \
    --mgmt "http://$(rec "$api_rec" mgmt)" >"$LOGS/smoke.log" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then ok "smoke.sh passes against the running instance ($(tail -n1 "$LOGS/smoke.log"))"
  else fail "smoke.sh against the running instance (rc $rc)"; show_log "$LOGS/smoke.log"; fi
  rc=0
  env -u JWT_SECRET SMOKE_TOKEN="$(JWT_SECRET="$SECRET" "$IMAGES/v1/ballast" token --sub smoke-e2e 2>/dev/null)" \
    timeout 120 "$S/smoke.sh" "http://$(rec "$api_rec" http)" >"$LOGS/smoke-token.log" 2>&1 || rc=$?
  check "smoke.sh with SMOKE_TOKEN passes (got $rc)" test "$rc" = 0
  rc=0
  env -u JWT_SECRET SMOKE_TOKEN=not-a-valid-token timeout 120 "$S/smoke.sh" "http://$(rec "$api_rec" http)" >"$LOGS/smoke-badtoken.log" 2>&1 || rc=$?
  check "smoke.sh with an invalid token fails on the API round trip (got $rc)" \
    bash -c '[ "$1" = 1 ] && grep -q "FAIL - POST /api/v1/jobs" "$2"' _ "$rc" "$LOGS/smoke-badtoken.log"
else
  fail "smoke.sh against a running instance: none is running (deploy tests failed?)"
fi
DEAD="$(free_port)"
rc=0; timeout 60 "$S/smoke.sh" "http://127.0.0.1:$DEAD" >"$LOGS/smoke-dead.log" 2>&1 || rc=$?
check "smoke.sh against a dead port exits non-zero with a clear message (got $rc)" \
  bash -c '[ "$1" != 0 ] && grep -q "FAIL - GET /health/live: no answer" "$2"' _ "$rc" "$LOGS/smoke-dead.log"

echo "ops: $passed passed, $failed failed$([ "$skipped" -gt 0 ] && echo ", $skipped skipped")"
[ "$failed" -eq 0 ]
