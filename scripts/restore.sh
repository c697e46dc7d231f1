#!/usr/bin/env bash
# restore.sh — restore a ballast database dump written by backup.sh, safely.
#
# Usage: restore.sh [--yes] [--mode recreate|clean] [--target-db NAME] [--files ARCHIVE]
#                   [--keep-old] [--no-safety-backup] [--skip-checksum] DUMP_FILE
#
#   --yes               do it (without it, and without a terminal to confirm on, nothing happens)
#   --mode recreate     (default) restore into a staging database on the same server, verify it,
#                       then swap it in by renaming (connections to the target are terminated
#                       only for the swap). Objects created after the backup disappear.
#                       Needs CREATEDB and ownership of the target database.
#   --mode clean        pg_restore --clean --if-exists into the target itself (for users without
#                       CREATEDB); objects absent from the dump are left in place.
#   --target-db NAME    restore into database NAME on the same server with the same credentials
#                       instead of the configured one (restore drills: a scratch database)
#   --files ARCHIVE     also restore a ballast-files-*.tar.gz into the local file storage
#                       (STORAGE_DIR or STORAGE_URL=file://…); the current content is archived first
#   --keep-old          keep the replaced database as <db>_old_<stamp> instead of dropping it
#   --no-safety-backup  skip the pre-restore backup of the current database (not recommended)
#   --skip-checksum     accept a dump without a matching .sha256 file (e.g. copied from elsewhere)
#
# Steps: verify checksum → pg_restore --list → confirm → safety backup (backup.sh into
# $RESTORE_SAFETY_DIR, default $BACKUP_DIR/pre-restore) → terminate connections → restore →
# verify (migration version from _sqlx_migrations, row counts of jobs and files) → print how to
# undo it (restore the safety backup).
#
# Database selection is the same as backup.sh: DATABASE_URL | DATABASE_URL_FILE | PG* variables;
# the password only ever travels in the child's environment. RESTORE_MAINTENANCE_DB (postgres)
# is the database used for CREATE/RENAME/DROP DATABASE in recreate mode.
#
# Exit codes:
#   0 restored and verified      1 unexpected error          2 usage
#   3 not confirmed (no --yes)   4 tools missing             5 dump unusable (missing, checksum, unreadable)
#   6 safety backup failed       7 restore failed (target unchanged in recreate mode)
#   8 verification failed after restore                      9 file-storage restore failed
set -euo pipefail

RS_DIR_SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/backup.sh
. "$RS_DIR_SELF/backup.sh"
BK_LOG_TAG=restore

readonly RS_EX_USAGE=2 RS_EX_UNCONFIRMED=3 RS_EX_DUMP=5 RS_EX_SAFETY=6 \
  RS_EX_RESTORE=7 RS_EX_VERIFY=8 RS_EX_FILES=9

rs_usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

RS_STAGING=""      # staging database to drop on failure
RS_MAINT=""
rs_cleanup() {
  local rc=$?
  if [ -n "$RS_STAGING" ] && [ -n "$RS_MAINT" ]; then
    bk_log "dropping staging database $RS_STAGING"
    printf 'DROP DATABASE IF EXISTS :"staging" WITH (FORCE);\n' \
      | pgc_sql "$RS_MAINT" -v staging="$RS_STAGING" >/dev/null 2>&1 || true
  fi
  return "$rc"
}

# rs_report CONN LABEL: prints migration version and row counts; fails when the queries fail.
rs_report() {
  local conn="$1" label="$2" present out="" t n
  # Which tables exist (a missing table is reported, not an error).
  present="$(pgc_sql "$conn" <<'SQL'
SELECT 'tables=' || count(*) FROM information_schema.tables
 WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE';
SELECT t FROM unnest(ARRAY['_sqlx_migrations', 'jobs', 'files']) AS t WHERE to_regclass('public.' || t) IS NOT NULL;
SQL
)" || return 1
  if grep -qx '_sqlx_migrations' <<<"$present"; then
    n="$(printf "SELECT COALESCE(max(version)::text, 'none') FROM public._sqlx_migrations WHERE success;\n" | pgc_sql "$conn")" || return 1
    out+="migration_version=$n"$'\n'
  else
    out+="migration_version=none"$'\n'
  fi
  out+="$(grep '^tables=' <<<"$present")"$'\n'
  for t in jobs files; do
    if grep -qx "$t" <<<"$present"; then
      n="$(printf 'SELECT count(*) FROM public.%s;\n' "$t" | pgc_sql "$conn")" || return 1
      out+="$t=$n"$'\n'
    else
      out+="$t=absent"$'\n'
    fi
  done
  out="${out%$'\n'}"
  bk_log "$label: $(tr '\n' ' ' <<<"$out")"
  printf '%s\n' "$out"
}

rs_storage_restore() {
  local archive="$1" safety_dir="$2" stamp="$3" dir
  dir="$(bk_storage_dir)"
  [ -n "$dir" ] || { bk_log "--files given but no local file storage is configured (STORAGE_DIR/STORAGE_URL=file://)"; return 1; }
  mkdir -p "$dir"
  if [ -n "$(find "$dir" -mindepth 1 -maxdepth 1 -print -quit)" ]; then
    mkdir -p "$safety_dir"
    local keep="$safety_dir/${BACKUP_PREFIX:-ballast}-files-pre-restore-$stamp.tar.gz"
    tar -C "$dir" -czf "$keep" . || return 1
    bk_write_checksum "$keep"
    bk_log "current file storage archived to $keep"
    find "$dir" -mindepth 1 -maxdepth 1 -exec rm -rf {} + || return 1
  fi
  tar -C "$dir" -xzf "$archive" || return 1
  bk_log "file storage restored into $dir from $(basename "$archive")"
}

rs_main() {
  local yes=0 mode="${RESTORE_MODE:-recreate}" files="" target_db="${RESTORE_TARGET_DB:-}" keep_old="${RESTORE_KEEP_OLD:-0}" safety=1 skip_sum=0 dump=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --yes|-y) yes=1 ;;
      --mode) [ $# -ge 2 ] || { rs_usage >&2; exit "$RS_EX_USAGE"; }; mode="$2"; shift ;;
      --mode=*) mode="${1#--mode=}" ;;
      --files) [ $# -ge 2 ] || { rs_usage >&2; exit "$RS_EX_USAGE"; }; files="$2"; shift ;;
      --target-db) [ $# -ge 2 ] || { rs_usage >&2; exit "$RS_EX_USAGE"; }; target_db="$2"; shift ;;
      --target-db=*) target_db="${1#--target-db=}" ;;
      --keep-old) keep_old=1 ;;
      --no-safety-backup) safety=0 ;;
      --skip-checksum) skip_sum=1 ;;
      -h|--help) rs_usage; exit 0 ;;
      -*) bk_log "unknown option: $1"; rs_usage >&2; exit "$RS_EX_USAGE" ;;
      *) [ -z "$dump" ] || { bk_log "only one dump file, please"; exit "$RS_EX_USAGE"; }; dump="$1" ;;
    esac
    shift
  done
  [ -n "$dump" ] || { rs_usage >&2; exit "$RS_EX_USAGE"; }
  case "$mode" in recreate|clean) ;; *) bk_log "--mode must be recreate or clean"; exit "$RS_EX_USAGE" ;; esac

  # 1. The dump (and archive) must be intact before anything else happens.
  [ -f "$dump" ] || bk_die "$RS_EX_DUMP" "no such file: $dump"
  dump="$(cd "$(dirname "$dump")" && pwd)/$(basename "$dump")"
  if [ "$skip_sum" = 1 ]; then
    bk_log "checksum verification skipped (--skip-checksum)"
  else
    bk_verify_checksum "$dump" || bk_die "$RS_EX_DUMP" "refusing to restore $dump: checksum missing or wrong"
    bk_log "checksum ok: $(basename "$dump")"
  fi
  if [ -n "$files" ]; then
    [ -f "$files" ] || bk_die "$RS_EX_DUMP" "no such file: $files"
    if [ "$skip_sum" != 1 ]; then
      bk_verify_checksum "$files" || bk_die "$RS_EX_DUMP" "refusing to restore $files: checksum missing or wrong"
    fi
    tar -tzf "$files" >/dev/null || bk_die "$RS_EX_DUMP" "$files is not a readable tar.gz"
  fi
  pgc_pick_tools
  local toc
  toc="$("$PG_RESTORE" --list "$dump" 2>/dev/null)" || bk_die "$RS_EX_DUMP" "pg_restore cannot read $dump (not a pg_dump -Fc archive?)"
  bk_log "dump has $(grep -c '^[0-9]' <<<"$toc" || true) TOC entries"

  pgc_init
  if [ -n "$target_db" ]; then
    PGC_DBNAME="$target_db"
    if [ -n "$PGC_URI" ]; then PGC_URI="$(pgc_uri_for "$target_db")"; fi
    PGC_DESC="$PGC_DESC (target database overridden: $target_db)"
  fi
  local db="$PGC_DBNAME" target
  target="$(pgc_target)"
  RS_MAINT="$(pgc_uri_for "${RESTORE_MAINTENANCE_DB:-postgres}")"
  local admin_conn="$RS_MAINT"
  [ "$mode" = clean ] && admin_conn="$target"

  # Does the target exist? (In clean mode it must; recreate can build it from nothing.)
  local exists
  if ! exists="$(printf "SELECT count(*) FROM pg_database WHERE datname = :'db';\n" | pgc_sql "$admin_conn" -v db="$db" 2>&1)"; then
    bk_die "$RS_EX_RESTORE" "cannot connect to the server ($PGC_DESC via ${RESTORE_MAINTENANCE_DB:-postgres}): $exists"
  fi
  [ "$mode" = clean ] && [ "$exists" != 1 ] && bk_die "$RS_EX_RESTORE" "database $db does not exist (use --mode recreate)"

  # 2. Confirmation.
  if [ "$yes" != 1 ]; then
    if [ -t 0 ] && [ -t 2 ]; then
      printf 'This replaces database "%s" (%s) with %s.\nType the database name to continue: ' "$db" "$PGC_DESC" "$(basename "$dump")" >&2
      local answer=""
      read -r answer || true
      [ "$answer" = "$db" ] || bk_die "$RS_EX_UNCONFIRMED" "not confirmed; nothing changed"
    else
      bk_die "$RS_EX_UNCONFIRMED" "refusing to restore over $db without --yes (no terminal to confirm on); nothing changed"
    fi
  fi

  local stamp safety_dir safety_path=""
  stamp="$(date -u +%Y%m%dT%H%M%SZ)"
  safety_dir="${RESTORE_SAFETY_DIR:-${BACKUP_DIR:-/backups}/pre-restore}"

  # 3. Safety backup of what is there now.
  if [ "$exists" = 1 ] && [ "$safety" = 1 ]; then
    bk_log "safety backup of $db into $safety_dir"
    local out
    # The child gets the target explicitly (the password, if any, through its environment only).
    local child_env=(BACKUP_DIR="$safety_dir" BACKUP_PRUNE=0 BACKUP_FILES=0 BACKUP_S3_URL="" BACKUP_NOW=""
                     BACKUP_METRICS_FILE="" BK_LOG_TAG=restore/safety-backup)
    if [ -n "$PGC_URI" ]; then child_env+=(DATABASE_URL="$PGC_URI" DATABASE_URL_FILE="")
    else child_env+=(DATABASE_URL="" DATABASE_URL_FILE="" PGDATABASE="$db"); fi
    if ! out="$(export "${child_env[@]}"; if [ -n "$PGC_PASSWORD" ]; then export PGPASSWORD="$PGC_PASSWORD"; fi
                bash "$RS_DIR_SELF/backup.sh")"; then
      bk_die "$RS_EX_SAFETY" "safety backup failed; nothing changed"
    fi
    safety_path="$(head -n1 <<<"$out")"
  elif [ "$exists" = 1 ]; then
    bk_log "WARNING: no safety backup (--no-safety-backup): this restore cannot be undone from a dump"
  else
    bk_log "database $db does not exist yet: restoring into a new database"
  fi

  trap rs_cleanup EXIT
  local before=""
  if [ "$exists" = 1 ]; then before="$(rs_report "$target" "before")" || true; fi

  # 4. Restore.
  local report
  if [ "$mode" = recreate ]; then
    local short="${db:0:40}" owner="" enc="" collate="" ctype=""
    RS_STAGING="${short}_rst_${stamp,,}"
    local old="${short}_old_${stamp,,}"
    if [ "$exists" = 1 ]; then
      IFS='|' read -r owner enc collate ctype < <(printf "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = :'db';\n" \
        | pgc_sql "$admin_conn" -v db="$db")
    fi
    bk_log "creating staging database $RS_STAGING"
    local create='CREATE DATABASE :"staging" TEMPLATE template0'
    [ -n "$enc" ] && create+=" ENCODING :'enc' LC_COLLATE :'collate' LC_CTYPE :'ctype'"
    [ -n "$owner" ] && create+=' OWNER :"owner"'
    printf '%s;\n' "$create" | pgc_sql "$RS_MAINT" -v staging="$RS_STAGING" -v enc="$enc" -v collate="$collate" \
        -v ctype="$ctype" -v owner="$owner" >/dev/null \
      || { RS_STAGING=""; bk_die "$RS_EX_RESTORE" "cannot create the staging database (needs CREATEDB; or use --mode clean); nothing changed"; }
    bk_log "pg_restore into $RS_STAGING"
    if ! pgc "$PG_RESTORE" -w --no-owner --exit-on-error --single-transaction -d "$(pgc_uri_for "$RS_STAGING")" "$dump"; then
      bk_die "$RS_EX_RESTORE" "pg_restore failed; $db is unchanged"
    fi
    report="$(rs_report "$(pgc_uri_for "$RS_STAGING")" "restored (staging)")" \
      || bk_die "$RS_EX_VERIFY" "verification queries failed on the staging database; $db is unchanged"
    grep -q '^migration_version=none' <<<"$report" \
      && bk_log "WARNING: the dump has no applied _sqlx_migrations: not a ballast database?"

    # Swap: terminate sessions on the target and rename, in one transaction, retried a few times
    # because clients may reconnect between termination and rename.
    local try swapped=0 err=""
    for try in 1 2 3 4 5; do
      if [ "$exists" = 1 ]; then
        err="$(pgc_sql "$RS_MAINT" -v db="$db" -v old="$old" -v staging="$RS_STAGING" 2>&1 <<'SQL'
BEGIN;
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :'db' AND pid <> pg_backend_pid();
ALTER DATABASE :"db" RENAME TO :"old";
ALTER DATABASE :"staging" RENAME TO :"db";
COMMIT;
SQL
)" && { swapped=1; break; }
      else
        err="$(printf 'ALTER DATABASE :"staging" RENAME TO :"db";\n' | pgc_sql "$RS_MAINT" -v db="$db" -v staging="$RS_STAGING" 2>&1)" \
          && { swapped=1; break; }
      fi
      bk_log "swap attempt $try failed: $err"
    done
    [ "$swapped" = 1 ] || bk_die "$RS_EX_RESTORE" "could not swap the restored database in; $db is unchanged"
    RS_STAGING=""
    bk_log "swapped: $db is now the restored database"
    if [ "$exists" = 1 ]; then
      if [ "$keep_old" = 1 ]; then
        bk_log "previous database kept as $old (drop it when satisfied: DROP DATABASE \"$old\")"
      else
        printf 'DROP DATABASE IF EXISTS :"old" WITH (FORCE);\n' | pgc_sql "$RS_MAINT" -v old="$old" >/dev/null \
          || bk_log "WARNING: could not drop the previous database $old; drop it by hand"
      fi
    fi
  else
    bk_log "terminating other sessions on $db"
    printf "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :'db' AND pid <> pg_backend_pid();\n" \
      | pgc_sql "$target" -v db="$db" >/dev/null || true
    bk_log "pg_restore --clean --if-exists into $db"
    if ! pgc "$PG_RESTORE" -w --clean --if-exists --no-owner --exit-on-error --single-transaction -d "$target" "$dump"; then
      bk_die "$RS_EX_RESTORE" "pg_restore failed (single transaction: $db is unchanged)"
    fi
  fi

  # 5. Verify the live database.
  report="$(rs_report "$target" "restored")" || bk_die "$RS_EX_VERIFY" "verification queries failed on $db after the restore"
  if [ -n "$files" ]; then
    rs_storage_restore "$files" "$safety_dir" "$stamp" || bk_die "$RS_EX_FILES" "file-storage restore failed (database restore succeeded)"
  fi

  {
    echo "restore complete: $db ← $(basename "$dump") (mode $mode)"
    [ -n "$before" ] && echo "before:   $(tr '\n' ' ' <<<"$before")"
    echo "restored: $(tr '\n' ' ' <<<"$report")"
    if [ -n "$safety_path" ]; then
      echo "to undo this restore:  $RS_DIR_SELF/restore.sh --yes $safety_path"
    else
      echo "no safety backup was taken; there is no automatic way back"
    fi
    echo "next: restart or roll the app (deploy.sh/rollback.sh) if it cached connections, then run smoke.sh"
  } >&2
  printf '%s\n' "$report"
}

rs_main "$@"
