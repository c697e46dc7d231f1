#!/usr/bin/env bash
# Private Postgres/Redis instances and ballast processes for bench/run.sh and scripts/chaos.sh.
# Source after scripts/lib/common.sh and scripts/lib/deps.sh. Everything binds 127.0.0.1 and
# lives under $RUN_DIR; nothing here touches the shared servers on 5432/6379.
# Callers set RUN_DIR (a scratch directory) and call run_cleanup from their EXIT trap.
# shellcheck shell=bash

RUN_PIDS=()       # processes started here (ballast, redis, nginx, clients), killed on cleanup
RUN_PG_DIRS=()    # private Postgres instances, stopped on cleanup

# pin CPU CMD...: exec CMD pinned to CPU (a list like 0 or 0,1) when taskset and the CPU exist.
pin() {
  local cpu="$1"; shift
  if [ -n "$cpu" ] && command -v taskset >/dev/null 2>&1 && taskset -c "$cpu" true 2>/dev/null; then
    exec taskset -c "$cpu" "$@"
  fi
  exec "$@"
}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pg_start DIR PORT CPU [postgres -c options...]: initdb (first time) and start a private
# server, waiting until it accepts connections. Extra arguments are `-c name=value` pairs.
pg_start() {
  local dir="$1" port="$2" cpu="$3"; shift 3
  local bin opts="" a
  bin="$(pg_bin_dir)" || die "no Postgres server binaries under /usr/lib/postgresql"
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_postgres "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
    RUN_PG_DIRS+=("$dir")
  fi
  for a in "$@"; do opts+=" $a"; done
  printf '%s\n' "$port" >"$dir/port.txt"
  printf '%s\n' "$opts" >"$dir/opts.txt"
  local asuser=()
  [ "$(id -u)" -eq 0 ] && asuser=(runuser -u postgres --)
  # pg_ctl -w returns once the server accepts connections; the postmaster inherits the pinning.
  ( pin "$cpu" "${asuser[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1$opts" start >/dev/null ) \
    || { tail -n 20 "$dir/log" >&2; die "private postgres in $dir did not start"; }
}

# pg_stop DIR [MODE]: smart|fast|immediate (immediate = crash, like a killed server).
pg_stop() {
  local dir="$1" mode="${2:-fast}" bin
  bin="$(pg_bin_dir)"
  [ -f "$dir/data/postmaster.pid" ] || return 0
  as_postgres "$bin/pg_ctl" -D "$dir/data" -m "$mode" -w -t 30 stop >/dev/null 2>&1 || true
}

# pg_restart_same DIR CPU: start a stopped instance again on its port with its options.
pg_restart_same() {
  local dir="$1" cpu="$2" port opts
  port="$(cat "$dir/port.txt")"; opts="$(cat "$dir/opts.txt")"
  # shellcheck disable=SC2086 # opts is a list of -c name=value words
  pg_start "$dir" "$port" "$cpu" $opts
}

pg_postmaster_pid() { head -n 1 "$1/data/postmaster.pid" 2>/dev/null; }

# redis_start DIR PORT CPU: a private, non-persistent redis-server; its pid in DIR/pid.
redis_start() {
  local dir="$1" port="$2" cpu="$3" i
  mkdir -p "$dir"
  ( pin "$cpu" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --dir "$dir" >"$dir/log" 2>&1 ) &
  printf '%s\n' "$!" >"$dir/pid"
  RUN_PIDS+=("$!")
  for i in $(seq 1 100); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.05
  done
  die "private redis on $port did not start (after $i tries)"
}

# ballast_env: the environment every ballast process gets (the caller adds to it).
# Nothing is inherited: no DATABASE_URL or REDIS_URL of the caller can leak in.
BALLAST_BASE_ENV=(
  "PATH=/usr/local/bin:/usr/bin:/bin"
  "APP_ENV=development"
  "CONFIG_DIR=/nonexistent"
  "LOG_FORMAT=json"
  "LOG_LEVEL=info"
  "SHUTDOWN_READINESS_DELAY_SECS=0"
  "STARTUP_DEPENDENCY_TIMEOUT_SECS=20"
)

# ballast_start NAME CPU COMMAND VAR=VALUE...: starts `ballast COMMAND` (serve|worker) with
# the base environment plus the given variables, logs to $RUN_DIR/NAME.log, waits for its
# `listening` line and sets <NAME>_PID, <NAME>_HTTP, <NAME>_MGMT (host:port).
ballast_start() {
  local name="$1" cpu="$2" cmd="$3"; shift 3
  local log="$RUN_DIR/$name.log" pid i line
  : >"$log"
  ( pin "$cpu" env -i "${BALLAST_BASE_ENV[@]}" "$@" "$BALLAST_BIN" "$cmd" ) >>"$log" 2>&1 &
  pid=$!
  RUN_PIDS+=("$pid")
  for i in $(seq 1 600); do
    line="$(grep -m 1 '"listening"' "$log" || true)"
    [ -n "$line" ] && break
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$log" >&2; die "ballast $name exited before listening"; }
    sleep 0.05
  done
  [ -n "$line" ] || { tail -n 30 "$log" >&2; die "ballast $name not listening after $i tries"; }
  printf -v "${name}_PID" '%s' "$pid"
  printf -v "${name}_HTTP" '%s' "$(json_field "$line" http_addr)"
  printf -v "${name}_MGMT" '%s' "$(json_field "$line" management_addr)"
}

# json_field JSON KEY: a top-level string field of a one-line JSON object.
json_field() { printf '%s' "$1" | sed -nE "s/.*\"$2\":\"([^\"]*)\".*/\1/p"; }

# stop_pid PID [SIGNAL] [SECONDS]: signal a process we started and wait for it to go.
stop_pid() {
  local pid="$1" sig="${2:-TERM}" secs="${3:-30}" i
  kill -s "$sig" "$pid" 2>/dev/null || return 0
  for i in $(seq 1 $((secs * 20))); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.05
  done
  log "pid $pid still alive ${secs}s after SIG$sig ($i checks): SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# rss_kib PID: resident set size in KiB (0 when gone).
rss_kib() { awk '/^VmRSS:/ {print $2; f=1} END {if (!f) print 0}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kib() { awk '/^VmHWM:/ {print $2; f=1} END {if (!f) print 0}' "/proc/$1/status" 2>/dev/null || echo 0; }

# cpu_ticks PID...: user+system CPU clock ticks used so far by these processes, including
# their reaped children (a Postgres backend that exited is in its postmaster's cutime).
cpu_ticks() {
  local pid total=0 t
  for pid in "$@"; do
    t="$(awk '{sub(/^.*\) /, ""); print $12 + $13 + $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)"
    total=$((total + ${t:-0}))
  done
  echo "$total"
}
# pg_cpu_ticks DIR: the same for a private Postgres: its postmaster and live backends.
pg_cpu_ticks() {
  local pm
  pm="$(pg_postmaster_pid "$1")"
  [ -n "$pm" ] || { echo 0; return; }
  # shellcheck disable=SC2046 # a list of pids
  cpu_ticks "$pm" $(pgrep -P "$pm")
}
CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"
ticks_ms() { echo $(( $1 * 1000 / CLK_TCK )); }

# mint_token SUB: a JWT from the binary's own `token` command.
mint_token() {
  env -i "PATH=/usr/bin:/bin" "CONFIG_DIR=/nonexistent" "JWT_SECRET=$JWT_SECRET" "$BALLAST_BIN" token --sub "$1" --ttl 2h
}

# psql_q URL SQL: one value, unaligned.
psql_q() { psql "$1" -qAtX -v ON_ERROR_STOP=1 -c "$2"; }

now_ms() { date +%s%3N; }

run_cleanup() {
  local pid dir
  for pid in "${RUN_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${RUN_PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  RUN_PIDS=()
  for dir in "${RUN_PG_DIRS[@]}"; do
    # A frozen server must not hang the cleanup.
    [ -f "$dir/data/postmaster.pid" ] && pkill_tree_cont "$(pg_postmaster_pid "$dir")"
    pg_stop "$dir" immediate
  done
  RUN_PG_DIRS=()
}

# pkill_tree_cont PID: SIGCONT a process and its children (undo a freeze).
pkill_tree_cont() {
  local root="$1" p
  [ -n "$root" ] || return 0
  kill -CONT "$root" 2>/dev/null || true
  for p in $(pgrep -P "$root" 2>/dev/null); do kill -CONT "$p" 2>/dev/null || true; done
}
