#!/usr/bin/env bash
# First run on a new host: everything docker-compose.prod.yml needs that must not live in
# git. Safe to run again at any time: nothing that exists is overwritten.
#
#   secrets/postgres_password, redis_password       48 random hex characters
#   secrets/jwt_secret                              64 random base64 characters
#   secrets/grafana_admin_password                  48 random hex characters
#   secrets/minio_root_user, minio_root_password    MinIO root account (profile s3)
#   secrets/s3_access_key_id, s3_secret_access_key  the app's own MinIO account
#   secrets/database_url    postgres://USER:PASSWORD@postgres:5432/DB?sslmode=require
#   secrets/redis_url       redis://:PASSWORD@redis:6379/0
#   secrets/redis_exporter_auth.json                {"redis://redis:6379": PASSWORD}
#   secrets/alertmanager/*  empty: fill in the receivers' credentials you use
#   secrets/ca, secrets/tls, secrets/postgres       scripts/gen-certs.sh
#   backups/, backups/metrics/                      where the backup service writes
#   .env                    from .env.example, with production values
#
# Permissions: secrets/ is 0700 (secrets/alertmanager 0750: it is mounted as a directory);
# secret files are 0640 with group SECRETS_GID (containers
# that run as non-root users read them through group_add, see docker-compose.prod.yml);
# private keys are 0600; .env is 0600.
#
# usage: scripts/init.sh [--domain NAME] [--san SAN]... [--secrets-gid GID]
#   --domain       public host name (default: DOMAIN from .env, else localhost)
#   --san          extra subjectAltName for the nginx certificate (repeatable)
#   --secrets-gid  group of the secret files (default: SECRETS_GID from .env; else 10001
#                  when run as root, the caller's primary group otherwise)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BALLAST_ROOT="$ROOT"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"

domain="" secrets_gid="" sans=()
while [ $# -gt 0 ]; do
  case "$1" in
    --domain) domain="$2"; shift ;;
    --san) sans+=("$2"); shift ;;
    --secrets-gid) secrets_gid="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

ensure_apt openssl python3

cd "$ROOT"
umask 077
changed=0
say() { printf 'init: %s\n' "$*"; }

# env_value KEY FILE: the last KEY=value of a dotenv file (empty when absent).
env_value() {
  [ -f "$2" ] || return 0
  sed -n "s/^$1=//p" "$2" | tail -n 1 | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'\$/\1/"
}
# setting KEY DEFAULT: from the environment, else .env, else .env.example, else DEFAULT.
setting() {
  local v="${!1:-}"
  [ -n "$v" ] || v="$(env_value "$1" .env)"
  [ -n "$v" ] || v="$(env_value "$1" .env.example)"
  printf '%s' "${v:-$2}"
}

[ -f .env.example ] || die "$ROOT/.env.example is missing"
secrets_dir="$(setting SECRETS_DIR ./secrets)"
backup_dir="$(setting BACKUP_DIR ./backups)"
pg_user="$(setting POSTGRES_USER ballast)"
pg_db="$(setting POSTGRES_DB ballast)"
[ -n "$domain" ] || domain="$(setting DOMAIN localhost)"
if [ -z "$secrets_gid" ]; then
  secrets_gid="${SECRETS_GID:-$(env_value SECRETS_GID .env)}"
fi
if [ -z "$secrets_gid" ]; then
  if [ "$(id -u)" -eq 0 ]; then secrets_gid=10001; else secrets_gid="$(id -g)"; fi
fi
[[ "$secrets_gid" =~ ^[0-9]+$ ]] || die "SECRETS_GID must be a numeric group id, got '$secrets_gid'"
[[ "$pg_user" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "POSTGRES_USER may contain letters, digits and _ only"
[[ "$pg_db" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "POSTGRES_DB may contain letters, digits and _ only"

mkdir -p "$secrets_dir" "$secrets_dir/alertmanager"
chmod 0700 "$secrets_dir" "$secrets_dir/alertmanager"

# put FILE CONTENT: writes a new secret atomically (never over an existing one).
put() {
  local file="$1" content="$2" tmp
  tmp="$(mktemp "$file.XXXXXX")"
  printf '%s\n' "$content" > "$tmp"
  chmod 0640 "$tmp"
  mv -f "$tmp" "$file"
  changed=1
}

# secret NAME GENERATOR...: creates secrets/NAME from the generator's output unless it
# exists and is non-empty.
secret() {
  local name="$1" file="$secrets_dir/$1"; shift
  if [ -s "$file" ]; then
    say "kept    $file"
    return 0
  fi
  local value
  value="$("$@")"
  [ -n "$value" ] || die "could not generate $name"
  put "$file" "$value"
  say "created $file (${#value} characters)"
}

hex() { openssl rand -hex "$1"; }
b64() { openssl rand -base64 "$1" | tr -d '\n'; }
prefixed() { printf '%s%s' "$1" "$(openssl rand -hex "$2")"; }
read_secret() { tr -d '\r\n' < "$secrets_dir/$1"; }

secret postgres_password hex 24
secret redis_password hex 24
secret jwt_secret b64 48
secret grafana_admin_password hex 24
# MinIO limits: access keys 3-20 characters, secret keys 8-40.
secret minio_root_user prefixed root- 7
secret minio_root_password hex 20
secret s3_access_key_id prefixed app- 8
secret s3_secret_access_key hex 20

# derived NAME CONTENT: a file composed from other secrets. Kept when it exists; a stale
# one (its password no longer matches) is reported, not rewritten: it may be deliberate
# (an external database), and rotating a password is an operator's decision.
derived() {
  local name="$1" want="$2" file="$secrets_dir/$1"
  if [ -s "$file" ]; then
    if [ "$(tr -d '\r\n' < "$file")" != "$want" ]; then
      log "warning: $file differs from what the current passwords give; delete it and rerun to regenerate"
    fi
    say "kept    $file"
    return 0
  fi
  put "$file" "$want"
  say "created $file"
}

pg_password="$(read_secret postgres_password)"
redis_password="$(read_secret redis_password)"
derived database_url "postgres://${pg_user}:${pg_password}@postgres:5432/${pg_db}?sslmode=require"
derived redis_url "redis://:${redis_password}@redis:6379/0"
derived redis_exporter_auth.json "$(python3 -c 'import json,sys; print(json.dumps({"redis://redis:6379": sys.argv[1]}))' "$redis_password")"
unset pg_password redis_password

# Alertmanager receivers: credentials only the operator has. Empty until filled in.
for f in smtp_password slack_webhook_url pagerduty_routing_key; do
  if [ ! -e "$secrets_dir/alertmanager/$f" ]; then
    : > "$secrets_dir/alertmanager/$f"
    changed=1
    say "created $secrets_dir/alertmanager/$f (empty: fill in if the receiver is used)"
  fi
done

# TLS: private CA, nginx and Postgres certificates.
san_args=()
for s in "${sans[@]+"${sans[@]}"}"; do san_args+=(--san "$s"); done
cert_state() {
  local d
  for d in ca tls postgres; do
    if [ -d "$secrets_dir/$d" ]; then find "$secrets_dir/$d" -type f; fi
  done | sort | xargs -r sha256sum
}
before="$(cert_state)"
"$ROOT/scripts/gen-certs.sh" --dir "$secrets_dir" --domain "$domain" "${san_args[@]+"${san_args[@]}"}" | sed 's/^gen-certs: /init: /'
after="$(cert_state)"
[ "$before" = "$after" ] || changed=1

# Backups: written by the backup container (uid 999) through the group.
for d in "$backup_dir" "$backup_dir/metrics"; do
  if [ ! -d "$d" ]; then
    mkdir -p "$d"
    changed=1
    say "created $d/"
  fi
done

# .env: the compose interpolation values, production settings for the app section.
if [ -f .env ]; then
  say "kept    .env"
else
  tmp="$(mktemp .env.XXXXXX)"
  python3 - .env.example "$tmp" "$domain" "$secrets_gid" <<'PY'
import re, sys
src, dst, domain, gid = sys.argv[1:5]
from_file = "comes from secrets/{0} (compose passes {1}_FILE); keep it empty here"
values = {
    "APP_ENV": ("production", None),
    "LOG_FORMAT": ("json", None),
    "RATE_LIMIT_ENABLED": ("true", None),
    "DATABASE_URL": ("", from_file.format("database_url", "DATABASE_URL")),
    "REDIS_URL": ("", from_file.format("redis_url", "REDIS_URL")),
    "JWT_SECRET": ("", from_file.format("jwt_secret", "JWT_SECRET")),
    "DOMAIN": (domain, None),
    "SECRETS_GID": (gid, None),
}
out = []
for line in open(src, encoding="utf-8"):
    m = re.match(r"^([A-Z0-9_]+)=", line)
    if m and m.group(1) in values:
        value, note = values[m.group(1)]
        if note:
            out.append(f"# init.sh: {note}.\n")
        line = f"{m.group(1)}={value}\n"
    out.append(line)
open(dst, "w", encoding="utf-8").write("".join(out))
PY
  chmod 0600 "$tmp"
  mv -f "$tmp" .env
  changed=1
  say "created .env (APP_ENV=production, DOMAIN=$domain, SECRETS_GID=$secrets_gid)"
fi

# Permissions, every run (idempotent): directories 0700, secrets 0640 + group, keys 0600.
find "$secrets_dir" -type d -exec chmod 0700 {} +
find "$secrets_dir" -type f ! -name '*.key' ! -name '*.crt' -exec chmod 0640 {} +
find "$secrets_dir" -type f -name '*.crt' -exec chmod 0644 {} +
find "$secrets_dir" -type f -name '*.key' -exec chmod 0600 {} +
chmod 0600 .env
if ! chgrp -R "$secrets_gid" "$secrets_dir" 2>/dev/null; then
  log "warning: cannot give $secrets_dir to group $secrets_gid (run as root, or pass --secrets-gid $(id -g)); non-root containers will not be able to read their secrets"
fi
chmod 0700 "$secrets_dir"
# Bind-mounted as a directory into alertmanager (uid 65534): the group must traverse it.
chmod 0750 "$secrets_dir/alertmanager"
chmod 2770 "$backup_dir" "$backup_dir/metrics"
chgrp "$secrets_gid" "$backup_dir" "$backup_dir/metrics" 2>/dev/null \
  || log "warning: cannot give $backup_dir to group $secrets_gid; the backup service will not be able to write"

# Self-check: what production validation would refuse.
fail=0
check_len() {
  local name="$1" min="$2" v
  v="$(read_secret "$name")"
  if [ "${#v}" -lt "$min" ]; then
    log "error: $secrets_dir/$name is shorter than $min characters"; fail=1
  fi
  case "$(printf '%s' "$v" | tr '[:upper:]' '[:lower:]')" in
    *change_me*|*changeme*|password|postgres|admin|secret|example|test)
      log "error: $secrets_dir/$name is a placeholder value"; fail=1 ;;
  esac
}
check_len postgres_password 12
check_len redis_password 12
check_len jwt_secret 48
check_len grafana_admin_password 12
check_len minio_root_password 8
check_len s3_secret_access_key 8
grep -q 'sslmode=\(require\|verify-ca\|verify-full\)' "$secrets_dir/database_url" \
  || { log "error: $secrets_dir/database_url has no sslmode=require|verify-ca|verify-full"; fail=1; }
[ "$fail" -eq 0 ] || die "secrets do not pass production validation (see above)"

if [ "$changed" -eq 1 ]; then
  say "done. Next: review .env (DOMAIN, BALLAST_TAG), then"
  say "  docker compose -f docker-compose.prod.yml up -d"
  say "  docker compose -f docker-compose.prod.yml --profile monitoring up -d   # optional"
else
  say "nothing to do: every secret, certificate and .env already exists"
fi
