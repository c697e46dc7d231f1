#!/usr/bin/env bash
# Shared helpers for the project's scripts. Source it; it defines functions only.
# shellcheck shell=bash

BALLAST_ROOT="${BALLAST_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
BALLAST_TOOLS_DIR="${BALLAST_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ballast-tools}"

log()  { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { log "error: $*"; exit 1; }

# ensure_apt PKG[:COMMAND]... installs Debian packages whose command is missing (root only).
ensure_apt() {
  local missing=() spec pkg cmd
  for spec in "$@"; do
    pkg="${spec%%:*}"; cmd="${spec#*:}"; [ "$cmd" = "$spec" ] && cmd="$pkg"
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    die "missing packages: ${missing[*]} (install them: sudo apt-get install ${missing[*]})"
  fi
  log "apt-get install ${missing[*]}"
  if [ ! -f "$BALLAST_TOOLS_DIR/.apt-updated" ] || [ -n "$(find "$BALLAST_TOOLS_DIR/.apt-updated" -mmin +720 2>/dev/null)" ]; then
    mkdir -p "$BALLAST_TOOLS_DIR"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 && touch "$BALLAST_TOOLS_DIR/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# ensure_pip PKG[:COMMAND]... installs PyPI tools into the project's tool venv and puts it on PATH.
ensure_pip() {
  local venv="$BALLAST_TOOLS_DIR/venv" missing=() spec pkg cmd
  export PATH="$venv/bin:$PATH"
  for spec in "$@"; do
    pkg="${spec%%:*}"; cmd="${spec#*:}"; [ "$cmd" = "$spec" ] && cmd="$pkg"
    [ -x "$venv/bin/$cmd" ] || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ ! -x "$venv/bin/pip" ]; then
    python3 -m venv "$venv" >&2 || die "python3 -m venv failed (apt-get install python3-venv)"
  fi
  log "pip install ${missing[*]}"
  "$venv/bin/pip" install -q --disable-pip-version-check "${missing[@]}" >&2
}

# free_port prints a TCP port on 127.0.0.1 that is free right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_for_http URL [SECONDS] [EXPECTED_STATUS] waits until URL answers (default 200).
wait_for_http() {
  local url="$1" secs="${2:-30}" want="${3:-200}" deadline code
  deadline=$(( $(date +%s) + secs ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    code=$(curl -ks -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
    [ "$code" = "$want" ] && return 0
    sleep 0.1
  done
  log "timed out after ${secs}s waiting for $url to answer $want (last: ${code:-none})"
  return 1
}

# pg_admin_url: the Postgres server URL tests may create databases on.
pg_admin_url() { printf '%s' "${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"; }

# pg_url_for DB: DATABASE_URL with its database replaced by DB.
pg_url_for() {
  local base; base="$(pg_admin_url)"
  python3 - "$base" "$1" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))
PY
}

# create_db NAME / drop_db NAME on the admin server.
create_db() { psql "$(pg_admin_url)" -qAtc "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" -c "CREATE DATABASE \"$1\"" >/dev/null; }
drop_db()   { psql "$(pg_admin_url)" -qAtc "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null 2>&1 || true; }

# ballast_bin: the binary under test (BALLAST_BIN, else target/debug/ballast).
ballast_bin() { printf '%s' "${BALLAST_BIN:-$BALLAST_ROOT/target/debug/ballast}"; }
