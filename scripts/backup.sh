#!/usr/bin/env bash
# backup.sh — consistent Postgres dump (+ file-storage archive) with checksum,
# verification, optional S3 upload and daily/weekly/monthly retention.
#
# Usage: backup.sh [--dry-run] [--prune-only] [--no-prune] [--no-files] [--help]
#
#   --dry-run     check the connection and print what would be written/deleted; change nothing
#   --prune-only  apply retention to BACKUP_DIR and exit (no dump)
#   --no-prune    write the backup but skip retention (same as BACKUP_PRUNE=0)
#   --no-files    skip the file-storage archive (same as BACKUP_FILES=0)
#
# Database (first match wins; the password never appears on a command line, it is
# handed to pg_dump/psql only through the child's environment as PGPASSWORD):
#   DATABASE_URL       postgres://user:pass@host:port/db?sslmode=require
#   DATABASE_URL_FILE  file holding that URL (Docker/Kubernetes secret)
#   PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGPASSFILE PGSSLMODE ...  (libpq defaults)
#
# Output (BACKUP_DIR, default /backups), one timestamp per run (UTC):
#   ballast-YYYYmmddTHHMMSSZ.dump              pg_dump -Fc (custom format, compressed)
#   ballast-YYYYmmddTHHMMSSZ.dump.sha256       "<sha256>  <file name>" (sha256sum -c compatible)
#   ballast-files-YYYYmmddTHHMMSSZ.tar.gz(.sha256)  local file storage, when STORAGE_URL=file://…
#   last_success                               timestamp of the last good run
# stdout: the paths written (one a line); everything else is logged to stderr.
#
# Environment:
#   BACKUP_DIR=/backups          where dumps live (created 0700)
#   BACKUP_PREFIX=ballast        file name prefix
#   BACKUP_KEEP_DAILY=7 BACKUP_KEEP_WEEKLY=4 BACKUP_KEEP_MONTHLY=12
#                                GFS retention relative to "now" (UTC): the newest backup of each
#                                of the last N days / ISO weeks / calendar months is kept; the
#                                newest backup overall and anything newer than "now" are always kept.
#   BACKUP_NOW=YYYYmmddTHHMMSSZ  injectable "now" (tests); default: the current UTC time
#   BACKUP_PRUNE=1 BACKUP_FILES=1
#   BACKUP_TIMEOUT_SECS=3600     upper bound for pg_dump (uses timeout(1) when present)
#   STORAGE_DIR | STORAGE_URL    file storage to archive; s3:// storage is not copied (logged)
#   BACKUP_S3_URL=s3://bucket/prefix   upload dump, archive and checksums after writing them
#   BACKUP_S3_ENDPOINT           S3-compatible endpoint (MinIO, …); BACKUP_S3_REGION (us-east-1)
#   BACKUP_S3_TOOL=auto|aws|boto3      auto: aws CLI when present, else python3 + boto3
#   AWS_ACCESS_KEY_ID(_FILE) AWS_SECRET_ACCESS_KEY(_FILE)  credentials (standard AWS chain)
#   BACKUP_METRICS_FILE          optional node-exporter textfile (.prom) to write success metrics to
#
# Exit codes:
#   0 success            1 unexpected error        2 usage
#   3 configuration (no database, BACKUP_DIR not writable, bad BACKUP_NOW)
#   4 tools missing or pg_dump older than the server     5 pg_dump failed / database unreachable
#   6 verification failed (pg_restore --list or checksum)  7 file-storage archive failed
#   8 upload failed       9 retention failed       10 another backup holds the lock
#
# The same file is a function library: restore.sh sources it for the connection helpers.
set -euo pipefail

BK_SELF="${BASH_SOURCE[0]}"
BK_DIR_SELF="$(cd "$(dirname "$BK_SELF")" && pwd)"

readonly BK_EX_USAGE=2 BK_EX_CONFIG=3 BK_EX_TOOL=4 BK_EX_DUMP=5 BK_EX_VERIFY=6 \
  BK_EX_FILES=7 BK_EX_UPLOAD=8 BK_EX_PRUNE=9 BK_EX_LOCKED=10

bk_log() { printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${BK_LOG_TAG:-backup}" "$*" >&2; }
bk_die() { local code="$1"; shift; bk_log "error: $*"; exit "$code"; }

# ---------------------------------------------------------------- connection helpers

PGC_URI=""       # connection URI without the password (safe for argv), "" = libpq environment
PGC_PASSWORD=""  # handed to children as PGPASSWORD only
PGC_DBNAME=""
PGC_DESC=""      # human description, no secret

# pct_decode STRING: %XX-decoding as libpq does for URIs.
pct_decode() {
  local s="$1"
  s="${s//\\/\\\\}"
  printf '%b' "${s//%/\\x}"
}

# pct_encode STRING: encodes everything but unreserved characters.
pct_encode() {
  local LC_ALL=C s="$1" out="" c i
  for (( i = 0; i < ${#s}; i++ )); do
    c="${s:i:1}"
    case "$c" in
      [A-Za-z0-9._~-]) out+="$c" ;;
      *) out+="$(printf '%%%02X' "'$c")" ;;
    esac
  done
  printf '%s' "$out"
}

# libpq understands these URI parameters; anything else (sqlx extras such as
# statement-cache-capacity) is dropped so pg_dump does not refuse the URI.
PGC_LIBPQ_PARAMS=" host hostaddr port dbname user passfile channel_binding connect_timeout client_encoding options application_name fallback_application_name keepalives keepalives_idle keepalives_interval keepalives_count tcp_user_timeout gssencmode sslmode requiressl sslcompression sslcert sslkey sslpassword sslcertmode sslrootcert sslcrl sslcrldir sslsni requirepeer ssl_min_protocol_version ssl_max_protocol_version krbsrvname gsslib gssdelegation service target_session_attrs load_balance_hosts "

# pgc_init: resolve the database from DATABASE_URL / DATABASE_URL_FILE / PG* variables.
pgc_init() {
  local url="${DATABASE_URL:-}"
  if [ -z "$url" ] && [ -n "${DATABASE_URL_FILE:-}" ]; then
    [ -r "$DATABASE_URL_FILE" ] || bk_die "$BK_EX_CONFIG" "DATABASE_URL_FILE=$DATABASE_URL_FILE is not readable"
    url="$(tr -d '\r\n' <"$DATABASE_URL_FILE")"
    url="${url#"${url%%[![:space:]]*}"}"; url="${url%"${url##*[![:space:]]}"}"
  fi
  if [ -z "$url" ]; then
    if [ -z "${PGDATABASE:-}${PGHOST:-}${PGSERVICE:-}" ]; then
      bk_die "$BK_EX_CONFIG" "no database configured: set DATABASE_URL, DATABASE_URL_FILE or PGHOST/PGDATABASE"
    fi
    PGC_URI=""
    PGC_PASSWORD=""
    PGC_DBNAME="${PGDATABASE:-${PGUSER:-$(id -un)}}"
    PGC_DESC="libpq environment (PGHOST=${PGHOST:-local socket} PGDATABASE=$PGC_DBNAME)"
    return 0
  fi
  case "$url" in
    postgres://*|postgresql://*) ;;
    *) bk_die "$BK_EX_CONFIG" "DATABASE_URL must start with postgres:// or postgresql://" ;;
  esac
  local scheme="${url%%://*}" rest="${url#*://}" authority path query="" userinfo="" hostpart user="" pass=""
  if [[ "$rest" == *\?* ]]; then query="${rest#*\?}"; rest="${rest%%\?*}"; fi
  authority="${rest%%/*}"
  if [[ "$rest" == */* ]]; then path="${rest#*/}"; else path=""; fi
  if [[ "$authority" == *@* ]]; then userinfo="${authority%@*}"; hostpart="${authority##*@}"; else hostpart="$authority"; fi
  if [ -n "$userinfo" ]; then
    user="${userinfo%%:*}"
    if [[ "$userinfo" == *:* ]]; then pass="$(pct_decode "${userinfo#*:}")"; fi
  fi
  local kept=() kv k v
  if [ -n "$query" ]; then
    local IFS='&'
    for kv in $query; do
      k="${kv%%=*}"; v="${kv#*=}"
      if [ "$k" = "password" ]; then pass="$(pct_decode "$v")"; continue; fi
      if [[ "$PGC_LIBPQ_PARAMS" == *" $k "* ]]; then kept+=("$kv"); else bk_log "note: ignoring URL parameter '$k' (not a libpq parameter)"; fi
    done
  fi
  PGC_URI="${scheme}://"
  [ -n "$user" ] && PGC_URI+="${user}@"
  PGC_URI+="${hostpart}/${path}"
  if [ ${#kept[@]} -gt 0 ]; then
    local IFS='&'
    PGC_URI+="?${kept[*]}"
  fi
  PGC_PASSWORD="$pass"
  PGC_DBNAME="$(pct_decode "$path")"
  [ -n "$PGC_DBNAME" ] || PGC_DBNAME="$(pct_decode "${user:-$(id -un)}")"
  PGC_DESC="${scheme}://${user:+$user@}${hostpart}/${path}"
}

# pgc_uri_for DB: a connection string for database DB on the same server (no password).
pgc_uri_for() {
  local db="$1"
  if [ -z "$PGC_URI" ]; then
    # libpq keyword form; other settings come from the PG* environment.
    local v="${db//\\/\\\\}"
    v="${v//\'/\\\'}"
    printf "dbname='%s'" "$v"
    return 0
  fi
  local base="${PGC_URI%%\?*}" q=""
  [[ "$PGC_URI" == *\?* ]] && q="?${PGC_URI#*\?}"
  local scheme="${base%%://*}" rest="${base#*://}"
  printf '%s://%s/%s%s' "$scheme" "${rest%%/*}" "$(pct_encode "$db")" "$q"
}

# pgc_target: connection string of the configured database.
pgc_target() {
  if [ -n "$PGC_URI" ]; then printf '%s' "$PGC_URI"; else pgc_uri_for "$PGC_DBNAME"; fi
}

# pgc CMD ARGS...: runs a libpq client with the password in its environment only.
pgc() {
  if [ -n "$PGC_PASSWORD" ]; then
    PGPASSWORD="$PGC_PASSWORD" PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-10}" "$@"
  else
    PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-10}" "$@"
  fi
}

# pgc_sql CONN [psql -v assignments...]: runs the SQL read from stdin, prints unaligned tuples.
pgc_sql() {
  local conn="$1"; shift
  pgc "$PSQL" -X -w -q -A -t -v ON_ERROR_STOP=1 "$@" -d "$conn" -f -
}

# pgc_pick_tools: the newest pg_dump/pg_restore/psql available (PATH or /usr/lib/postgresql/*/bin).
pgc_pick_tools() {
  local cand best="" best_major=0 major dir
  local candidates=()
  if command -v pg_dump >/dev/null 2>&1; then candidates+=("$(command -v pg_dump)"); fi
  for cand in /usr/lib/postgresql/*/bin/pg_dump /usr/local/bin/pg_dump /usr/local/pgsql/bin/pg_dump; do
    [ -x "$cand" ] && candidates+=("$cand")
  done
  if [ ${#candidates[@]} -eq 0 ] && [ "$(id -u)" -eq 0 ] && [ -f "$BK_DIR_SELF/lib/common.sh" ]; then
    # shellcheck source=scripts/lib/common.sh
    . "$BK_DIR_SELF/lib/common.sh"
    ensure_apt postgresql-client:pg_dump || true
    command -v pg_dump >/dev/null 2>&1 && candidates+=("$(command -v pg_dump)")
  fi
  [ ${#candidates[@]} -gt 0 ] || bk_die "$BK_EX_TOOL" "pg_dump not found (install postgresql-client)"
  for cand in "${candidates[@]}"; do
    major="$("$cand" --version 2>/dev/null | sed -n 's/.* \([0-9][0-9]*\)\.[0-9].*/\1/p' | head -n1)"
    [ -n "$major" ] || continue
    if [ "$major" -gt "$best_major" ]; then best="$cand"; best_major="$major"; fi
  done
  [ -n "$best" ] || bk_die "$BK_EX_TOOL" "no working pg_dump among: ${candidates[*]}"
  dir="$(dirname "$best")"
  PG_DUMP="$best"
  PG_RESTORE="$dir/pg_restore"; [ -x "$PG_RESTORE" ] || PG_RESTORE="$(command -v pg_restore || true)"
  PSQL="$dir/psql";             [ -x "$PSQL" ] || PSQL="$(command -v psql || true)"
  { [ -n "$PG_RESTORE" ] && [ -n "$PSQL" ]; } || bk_die "$BK_EX_TOOL" "pg_restore/psql not found next to $PG_DUMP"
  PG_TOOLS_MAJOR="$best_major"
}

# pgc_check_server: the server answers and pg_dump is at least its major version.
pgc_check_server() {
  local num
  if ! num="$(printf 'SHOW server_version_num;\n' | pgc_sql "$(pgc_target)" 2>&1)"; then
    bk_log "cannot connect to $PGC_DESC: $num"
    return 1
  fi
  PG_SERVER_MAJOR=$(( num / 10000 ))
  if [ "$PG_TOOLS_MAJOR" -lt "$PG_SERVER_MAJOR" ]; then
    bk_die "$BK_EX_TOOL" "pg_dump $PG_TOOLS_MAJOR is older than the server ($PG_SERVER_MAJOR): install postgresql-client-$PG_SERVER_MAJOR"
  fi
}

# ---------------------------------------------------------------- small utilities

bk_sha256() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
  else openssl dgst -sha256 -r "$1" | cut -d' ' -f1
  fi
}

# bk_write_checksum FILE: FILE.sha256 in sha256sum format with the bare file name.
bk_write_checksum() {
  local f="$1" sum
  sum="$(bk_sha256 "$f")"
  printf '%s  %s\n' "$sum" "$(basename "$f")" >"$f.sha256.partial"
  mv -f "$f.sha256.partial" "$f.sha256"
}

# bk_verify_checksum FILE: 0 when FILE.sha256 exists and matches.
bk_verify_checksum() {
  local f="$1" want have
  [ -f "$f.sha256" ] || { bk_log "checksum file $f.sha256 is missing"; return 1; }
  want="$(cut -d' ' -f1 <"$f.sha256")"
  have="$(bk_sha256 "$f")"
  if [ "$want" != "$have" ]; then
    bk_log "checksum mismatch for $f: expected $want, got $have"
    return 1
  fi
}

bk_size() { wc -c <"$1" | tr -d ' '; }

# days_from_civil Y M D → days since 1970-01-01 (proleptic Gregorian; pure bash, no date(1) quirks).
days_from_civil() {
  local y=$((10#$1)) m=$((10#$2)) d=$((10#$3)) era yoe doy doe mp
  (( m <= 2 )) && y=$(( y - 1 ))
  if (( y >= 0 )); then era=$(( y / 400 )); else era=$(( (y - 399) / 400 )); fi
  yoe=$(( y - era * 400 ))
  if (( m > 2 )); then mp=$(( m - 3 )); else mp=$(( m + 9 )); fi
  doy=$(( (153 * mp + 2) / 5 + d - 1 ))
  doe=$(( yoe * 365 + yoe / 4 - yoe / 100 + doy ))
  echo $(( era * 146097 + doe - 719468 ))
}

BK_TS_RE='^[0-9]{8}T[0-9]{6}Z$'

# bk_ts_keys TS → "DAY WEEK MONTH" period numbers for a YYYYmmddTHHMMSSZ stamp.
bk_ts_keys() {
  local ts="$1" y m d days
  y="${ts:0:4}"; m="${ts:4:2}"; d="${ts:6:2}"
  days="$(days_from_civil "$y" "$m" "$d")"
  # ISO weeks start on Monday; 1970-01-05 (day 4) was a Monday.
  echo "$days $(( (days + 3) / 7 )) $(( 10#$y * 12 + 10#$m - 1 ))"
}

bk_now_ts() {
  if [ -n "${BACKUP_NOW:-}" ]; then
    [[ "$BACKUP_NOW" =~ $BK_TS_RE ]] || bk_die "$BK_EX_CONFIG" "BACKUP_NOW must look like 20260131T020000Z, got '$BACKUP_NOW'"
    printf '%s' "$BACKUP_NOW"
  else
    date -u +%Y%m%dT%H%M%SZ
  fi
}

# ---------------------------------------------------------------- retention

# bk_prune DIR NOW_TS DRY_RUN: GFS retention over every timestamp that has a dump or an archive.
bk_prune() {
  local dir="$1" now="$2" dry="$3" prefix="${BACKUP_PREFIX:-ballast}"
  local keep_d="${BACKUP_KEEP_DAILY:-7}" keep_w="${BACKUP_KEEP_WEEKLY:-4}" keep_m="${BACKUP_KEEP_MONTHLY:-12}"
  local n
  for n in "$keep_d" "$keep_w" "$keep_m"; do
    [[ "$n" =~ ^[0-9]+$ ]] || bk_die "$BK_EX_CONFIG" "BACKUP_KEEP_* must be non-negative integers"
  done
  local now_d now_w now_m
  read -r now_d now_w now_m <<<"$(bk_ts_keys "$now")"

  local f base ts stamps=()
  shopt -s nullglob
  for f in "$dir/$prefix"-*.dump "$dir/$prefix"-files-*.tar.gz; do
    base="$(basename "$f")"
    ts="${base%.dump}"; ts="${ts%.tar.gz}"; ts="${ts##*-}"
    [[ "$ts" =~ $BK_TS_RE ]] || continue
    stamps+=("$ts")
  done
  shopt -u nullglob
  if [ ${#stamps[@]} -eq 0 ]; then bk_log "retention: nothing to prune in $dir"; return 0; fi
  mapfile -t stamps < <(printf '%s\n' "${stamps[@]}" | sort -ru)

  declare -A keepers=() seen_d=() seen_w=() seen_m=()
  local d w m why newest_done=0
  for ts in "${stamps[@]}"; do
    why=""
    if [[ "$ts" > "$now" ]]; then
      why="newer than now"
    else
      read -r d w m <<<"$(bk_ts_keys "$ts")"
      [ "$newest_done" -eq 0 ] && why="newest"
      newest_done=1
      if (( now_d - d < keep_d )) && [ -z "${seen_d[$d]:-}" ]; then seen_d[$d]=1; why="${why:+$why,}daily"; fi
      if (( now_w - w < keep_w )) && [ -z "${seen_w[$w]:-}" ]; then seen_w[$w]=1; why="${why:+$why,}weekly"; fi
      if (( now_m - m < keep_m )) && [ -z "${seen_m[$m]:-}" ]; then seen_m[$m]=1; why="${why:+$why,}monthly"; fi
    fi
    [ -n "$why" ] && keepers[$ts]="$why"
  done

  local n_deleted=0 n_kept=0 victim
  for ts in "${stamps[@]}"; do
    if [ -n "${keepers[$ts]:-}" ]; then
      n_kept=$(( n_kept + 1 ))
      [ "${BACKUP_VERBOSE:-0}" = 1 ] && bk_log "retention: keep $ts (${keepers[$ts]})"
      continue
    fi
    for victim in "$dir/$prefix-$ts.dump" "$dir/$prefix-$ts.dump.sha256" \
                  "$dir/$prefix-files-$ts.tar.gz" "$dir/$prefix-files-$ts.tar.gz.sha256"; do
      [ -e "$victim" ] || continue
      if [ "$dry" = 1 ]; then
        bk_log "retention: would delete $(basename "$victim")"
      else
        rm -f -- "$victim" || return 1
      fi
    done
    n_deleted=$(( n_deleted + 1 ))
  done
  # Leftovers of interrupted runs.
  if [ "$dry" != 1 ]; then
    find "$dir" -maxdepth 1 -name '.*.partial' -mmin +1440 -exec rm -f {} + 2>/dev/null || true
  fi
  bk_log "retention (daily=$keep_d weekly=$keep_w monthly=$keep_m, now=$now): kept $n_kept, $( [ "$dry" = 1 ] && echo 'would delete' || echo deleted) $n_deleted"
}

# ---------------------------------------------------------------- file storage

# bk_storage_dir: prints the local storage directory, or nothing (with a log line) when there is none.
bk_storage_dir() {
  if [ -n "${STORAGE_DIR:-}" ]; then printf '%s' "$STORAGE_DIR"; return 0; fi
  local url="${STORAGE_URL:-}"
  case "$url" in
    "") bk_log "file storage: STORAGE_URL/STORAGE_DIR not set; no file archive" ;;
    file://*)
      local p="${url#file://}"
      p="${p#localhost}"
      pct_decode "$p"
      ;;
    s3://*) bk_log "file storage: $url is object storage; not archived here (use bucket versioning/replication, see docs/RECOVERY.md)" ;;
    *) bk_log "file storage: unsupported STORAGE_URL scheme '${url%%:*}'; no file archive" ;;
  esac
}

# bk_archive_files DIR TS: writes $BACKUP_DIR/$prefix-files-TS.tar.gz (+ .sha256); prints its path.
bk_archive_files() {
  local src="$1" ts="$2" prefix="${BACKUP_PREFIX:-ballast}"
  local out="$BACKUP_DIR/$prefix-files-$ts.tar.gz" tmp="$BACKUP_DIR/.$prefix-files-$ts.tar.gz.partial"
  if [ ! -d "$src" ]; then
    bk_log "file storage: $src does not exist (nothing uploaded yet?); no file archive"
    return 0
  fi
  tar -C "$src" -czf "$tmp" . || { rm -f "$tmp"; return 1; }
  tar -tzf "$tmp" >/dev/null || { rm -f "$tmp"; return 1; }
  mv -f "$tmp" "$out"
  bk_write_checksum "$out"
  bk_log "file storage: archived $src → $(basename "$out") ($(bk_size "$out") bytes)"
  printf '%s\n' "$out"
}

# ---------------------------------------------------------------- upload

bk_upload() {
  local url="${BACKUP_S3_URL%/}" tool="${BACKUP_S3_TOOL:-auto}" f
  [[ "$url" == s3://* ]] || { bk_log "BACKUP_S3_URL must look like s3://bucket[/prefix]"; return 1; }
  local bucket="${url#s3://}" prefix=""
  if [[ "$bucket" == */* ]]; then prefix="${bucket#*/}/"; bucket="${bucket%%/*}"; fi
  local key_id="${AWS_ACCESS_KEY_ID:-}" secret="${AWS_SECRET_ACCESS_KEY:-}"
  [ -z "$key_id" ] && [ -n "${AWS_ACCESS_KEY_ID_FILE:-}" ] && key_id="$(tr -d '\r\n' <"$AWS_ACCESS_KEY_ID_FILE")"
  [ -z "$secret" ] && [ -n "${AWS_SECRET_ACCESS_KEY_FILE:-}" ] && secret="$(tr -d '\r\n' <"$AWS_SECRET_ACCESS_KEY_FILE")"
  local region="${BACKUP_S3_REGION:-${AWS_DEFAULT_REGION:-${AWS_REGION:-us-east-1}}}"
  if [ "$tool" = auto ]; then
    if command -v aws >/dev/null 2>&1; then tool=aws
    elif command -v python3 >/dev/null 2>&1 && python3 -c 'import boto3' 2>/dev/null; then tool=boto3
    else bk_log "upload: neither the aws CLI nor python3+boto3 is available"; return 1
    fi
  fi
  # Credentials reach the child through its environment only (a subshell's exports).
  (
    [ -n "$key_id" ] && export AWS_ACCESS_KEY_ID="$key_id"
    [ -n "$secret" ] && export AWS_SECRET_ACCESS_KEY="$secret"
    export AWS_DEFAULT_REGION="$region"
    for f in "$@"; do
      case "$tool" in
        aws)
          endpoint=()
          [ -n "${BACKUP_S3_ENDPOINT:-}" ] && endpoint=(--endpoint-url "$BACKUP_S3_ENDPOINT")
          aws "${endpoint[@]}" s3 cp --only-show-errors "$f" "s3://$bucket/$prefix$(basename "$f")" || exit 1
          ;;
        boto3)
          python3 - "$f" "$bucket" "$prefix$(basename "$f")" "${BACKUP_S3_ENDPOINT:-}" <<'PY' || exit 1
import os, sys, boto3
path, bucket, key, endpoint = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint or None)
s3.upload_file(path, bucket, key)
head = s3.head_object(Bucket=bucket, Key=key)
if head["ContentLength"] != os.path.getsize(path):
    sys.exit("size mismatch after upload of %s" % key)
PY
          ;;
        *) bk_log "upload: unknown BACKUP_S3_TOOL=$tool (auto|aws|boto3)"; exit 1 ;;
      esac
      bk_log "upload: $(basename "$f") → s3://$bucket/$prefix ($tool)"
    done
  )
}

# ---------------------------------------------------------------- lock

BK_LOCK=""
bk_lock() {
  local lock="$1/.backup.lock" pid
  if mkdir "$lock" 2>/dev/null; then
    echo $$ >"$lock/pid"; BK_LOCK="$lock"; return 0
  fi
  pid="$(cat "$lock/pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    bk_die "$BK_EX_LOCKED" "another backup (pid $pid) is running in $1"
  fi
  bk_log "removing stale lock of pid ${pid:-unknown}"
  rm -rf "$lock"
  mkdir "$lock" 2>/dev/null || bk_die "$BK_EX_LOCKED" "cannot take the lock $lock"
  echo $$ >"$lock/pid"; BK_LOCK="$lock"
}

bk_cleanup() {
  [ -n "${BK_TMP_DUMP:-}" ] && rm -f "$BK_TMP_DUMP"
  [ -n "$BK_LOCK" ] && rm -rf "$BK_LOCK"
  return 0
}

# ---------------------------------------------------------------- main

bk_usage() { sed -n '2,/^set -euo/p' "$BK_SELF" | sed '$d; s/^# \{0,1\}//'; }

bk_main() {
  local dry=0 prune_only=0 prune="${BACKUP_PRUNE:-1}" files="${BACKUP_FILES:-1}"
  while [ $# -gt 0 ]; do
    case "$1" in
      --dry-run) dry=1 ;;
      --prune-only) prune_only=1 ;;
      --no-prune) prune=0 ;;
      --no-files) files=0 ;;
      -h|--help) bk_usage; exit 0 ;;
      *) bk_log "unknown argument: $1"; bk_usage >&2; exit "$BK_EX_USAGE" ;;
    esac
    shift
  done

  BACKUP_DIR="${BACKUP_DIR:-/backups}"
  local prefix="${BACKUP_PREFIX:-ballast}" now started
  [[ "$prefix" =~ ^[A-Za-z0-9._-]+$ ]] || bk_die "$BK_EX_CONFIG" "BACKUP_PREFIX may only contain letters, digits, . _ -"
  now="$(bk_now_ts)"
  started="$(date +%s)"
  umask 077
  if [ "$dry" = 1 ] && [ ! -d "$BACKUP_DIR" ]; then
    bk_log "dry run: would create $BACKUP_DIR"
  else
    mkdir -p "$BACKUP_DIR" 2>/dev/null || bk_die "$BK_EX_CONFIG" "cannot create BACKUP_DIR=$BACKUP_DIR"
    [ -w "$BACKUP_DIR" ] || bk_die "$BK_EX_CONFIG" "BACKUP_DIR=$BACKUP_DIR is not writable"
  fi

  if [ "$prune_only" = 1 ]; then
    [ "$dry" = 1 ] || bk_lock "$BACKUP_DIR"
    trap bk_cleanup EXIT
    bk_prune "$BACKUP_DIR" "$now" "$dry" || bk_die "$BK_EX_PRUNE" "retention failed"
    return 0
  fi

  pgc_init
  pgc_pick_tools
  pgc_check_server || bk_die "$BK_EX_DUMP" "database unreachable"
  local out="$BACKUP_DIR/$prefix-$now.dump"
  if [ "$dry" = 1 ]; then
    bk_log "dry run: would dump $PGC_DESC (server $PG_SERVER_MAJOR, pg_dump $PG_TOOLS_MAJOR) to $out"
    local sdir; sdir="$(bk_storage_dir)"
    [ "$files" = 1 ] && [ -n "$sdir" ] && bk_log "dry run: would archive $sdir to $BACKUP_DIR/$prefix-files-$now.tar.gz"
    [ -n "${BACKUP_S3_URL:-}" ] && bk_log "dry run: would upload to $BACKUP_S3_URL"
    [ "$prune" = 1 ] && { bk_prune "$BACKUP_DIR" "$now" 1 || bk_die "$BK_EX_PRUNE" "retention failed"; }
    return 0
  fi

  bk_lock "$BACKUP_DIR"
  trap bk_cleanup EXIT
  trap 'bk_log "interrupted"; exit 130' INT TERM
  if [ -e "$out" ] && [ -z "${BACKUP_NOW:-}" ]; then
    # The previous run finished within the same second: take the next second's stamp.
    while [ "$(date -u +%Y%m%dT%H%M%SZ)" = "$now" ]; do sleep 0.1; done
    now="$(bk_now_ts)"; out="$BACKUP_DIR/$prefix-$now.dump"
  fi
  [ -e "$out" ] && bk_die "$BK_EX_DUMP" "$out already exists (BACKUP_NOW=$now reused?)"

  BK_TMP_DUMP="$BACKUP_DIR/.$prefix-$now.dump.partial"
  bk_log "dumping $PGC_DESC (server $PG_SERVER_MAJOR, pg_dump $PG_TOOLS_MAJOR)"
  local to=()
  command -v timeout >/dev/null 2>&1 && to=(timeout "${BACKUP_TIMEOUT_SECS:-3600}")
  if ! pgc "${to[@]}" "$PG_DUMP" -w --format=custom --compress=6 --file="$BK_TMP_DUMP" -d "$(pgc_target)"; then
    bk_die "$BK_EX_DUMP" "pg_dump failed"
  fi
  local entries
  entries="$("$PG_RESTORE" --list "$BK_TMP_DUMP" 2>/dev/null | grep -c '^[0-9]' || true)"
  if ! "$PG_RESTORE" --list "$BK_TMP_DUMP" >/dev/null 2>&1; then
    bk_die "$BK_EX_VERIFY" "verification failed: pg_restore --list cannot read the dump"
  fi
  [ "${entries:-0}" -gt 0 ] || bk_log "note: the database is empty (no objects in the dump)"
  mv -f "$BK_TMP_DUMP" "$out"; BK_TMP_DUMP=""
  bk_write_checksum "$out"
  bk_verify_checksum "$out" || bk_die "$BK_EX_VERIFY" "checksum verification failed for $out"
  bk_log "wrote $(basename "$out") ($(bk_size "$out") bytes, $entries TOC entries, verified)"
  printf '%s\n' "$out"

  local written=("$out" "$out.sha256") archive="" sdir=""
  if [ "$files" = 1 ]; then
    sdir="$(bk_storage_dir)"
    if [ -n "$sdir" ]; then
      archive="$(bk_archive_files "$sdir" "$now")" || bk_die "$BK_EX_FILES" "archiving $sdir failed"
      if [ -n "$archive" ]; then
        printf '%s\n' "$archive"
        written+=("$archive" "$archive.sha256")
      fi
    fi
  fi

  if [ -n "${BACKUP_S3_URL:-}" ]; then
    bk_upload "${written[@]}" || bk_die "$BK_EX_UPLOAD" "upload to $BACKUP_S3_URL failed (local backup kept: $out)"
  fi

  if [ "$prune" = 1 ]; then
    bk_prune "$BACKUP_DIR" "$now" 0 || bk_die "$BK_EX_PRUNE" "retention failed (backup itself succeeded: $out)"
  fi

  local took=$(( $(date +%s) - started ))
  date -u +%Y-%m-%dT%H:%M:%SZ >"$BACKUP_DIR/last_success"
  if [ -n "${BACKUP_METRICS_FILE:-}" ]; then
    mkdir -p "$(dirname "$BACKUP_METRICS_FILE")" 2>/dev/null || true
    if {
      echo '# HELP ballast_backup_last_success_timestamp_seconds Unix time of the last successful backup.'
      echo '# TYPE ballast_backup_last_success_timestamp_seconds gauge'
      echo "ballast_backup_last_success_timestamp_seconds $(date +%s)"
      echo '# HELP ballast_backup_last_size_bytes Size of the last database dump.'
      echo '# TYPE ballast_backup_last_size_bytes gauge'
      echo "ballast_backup_last_size_bytes $(bk_size "$out")"
      echo '# HELP ballast_backup_last_duration_seconds Duration of the last backup run.'
      echo '# TYPE ballast_backup_last_duration_seconds gauge'
      echo "ballast_backup_last_duration_seconds $took"
    } >"$BACKUP_METRICS_FILE.tmp" 2>/dev/null; then
      mv -f "$BACKUP_METRICS_FILE.tmp" "$BACKUP_METRICS_FILE"
    else
      bk_log "warning: could not write $BACKUP_METRICS_FILE"
    fi
  fi
  bk_log "backup complete in ${took}s"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  bk_main "$@"
fi
