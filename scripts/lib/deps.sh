#!/usr/bin/env bash
# Finds Postgres and Redis for tests and local runs, or starts private ones.
# Source after common.sh. Sets DATABASE_URL (an admin URL: tests create databases on it)
# and REDIS_URL, and registers cleanup of anything it started via deps_cleanup.
# shellcheck shell=bash

DEPS_DIR=""
DEPS_PIDS=()

deps_cleanup() {
  local pid
  for pid in "${DEPS_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${DEPS_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "$DEPS_DIR" ] && rm -rf "$DEPS_DIR"
  DEPS_PIDS=()
}

pg_bin_dir() {
  local d
  d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && printf '%s' "$d"
}

# The server binaries (initdb, postgres) are needed by the failure tests even when a shared
# server is running; psql/pg_dump by the scripts.
ensure_postgres_binaries() {
  if [ -z "$(pg_bin_dir)" ] || ! command -v psql >/dev/null 2>&1; then
    ensure_apt_force postgresql postgresql-client
  fi
}

ensure_redis_binaries() { ensure_apt redis-server:redis-server redis-tools:redis-cli; }

# ensure_apt_force PKG... installs packages regardless of which commands exist (root only).
ensure_apt_force() {
  [ "$(id -u)" -eq 0 ] || die "missing packages: $* (install them: sudo apt-get install $*)"
  log "apt-get install $*"
  mkdir -p "$BALLAST_TOOLS_DIR"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 && touch "$BALLAST_TOOLS_DIR/.apt-updated"
  # Debian's postinst would start a system cluster on 5432: tests start their own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
  rm -f /usr/sbin/policy-rc.d
}

deps_tmp() {
  [ -n "$DEPS_DIR" ] || DEPS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ballast-deps.XXXXXX")
  chmod 755 "$DEPS_DIR"
}

ensure_postgres() {
  ensure_postgres_binaries
  local url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
  if psql "$url" -qAtc 'SELECT 1' >/dev/null 2>&1; then
    export DATABASE_URL="$url"
    log "postgres: using $(printf '%s' "$url" | sed -E 's#//([^:@/]+):[^@]*@#//\1:***@#')"
    return 0
  fi
  deps_tmp
  local bin port data runas=()
  bin=$(pg_bin_dir)
  port=$(free_port)
  data="$DEPS_DIR/pg"
  mkdir -p "$data"
  if [ "$(id -u)" -eq 0 ]; then
    chown -R postgres: "$DEPS_DIR"
    runas=(runuser -u postgres --)
  fi
  log "postgres: none reachable; starting a private one on 127.0.0.1:$port"
  "${runas[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
  "${runas[@]}" "$bin/postgres" -D "$data" -p "$port" -k "$DEPS_DIR" -c listen_addresses=127.0.0.1 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
    >"$DEPS_DIR/pg.log" 2>&1 &
  DEPS_PIDS+=("$!")
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  local i
  for i in $(seq 1 100); do
    psql "$DATABASE_URL" -qAtc 'SELECT 1' >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$DEPS_DIR/pg.log" >&2
  die "private postgres did not start (after ${i} tries)"
}

ensure_redis() {
  ensure_redis_binaries
  local url="${REDIS_URL:-redis://127.0.0.1:6379/0}"
  if redis-cli -u "$url" ping 2>/dev/null | grep -q PONG; then
    export REDIS_URL="$url"
    log "redis: using $(printf '%s' "$url" | sed -E 's#//:?[^@]*@#//***@#')"
    return 0
  fi
  deps_tmp
  local port
  port=$(free_port)
  log "redis: none reachable; starting a private one on 127.0.0.1:$port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >"$DEPS_DIR/redis.log" 2>&1 &
  DEPS_PIDS+=("$!")
  export REDIS_URL="redis://127.0.0.1:$port/0"
  local i
  for i in $(seq 1 100); do
    redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.05
  done
  die "private redis did not start (after ${i} tries)"
}
