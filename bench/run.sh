#!/usr/bin/env bash
# ballast benchmark (DESIGN §11, issue 10): one run on loopback, a table on stdout and JSON in
# bench/results/latest.json. Sections:
#   1. bare axum (examples/bare.rs) vs ballast's full stack on equivalent routes; 1d. the same
#      pair's userland instructions per request under callgrind (independent of host speed);
#   2. limiter cost (RATE_LIMIT_ENABLED true vs false) and Redis's own EVALSHA ceiling;
#   3. jobs: burn-down of pre-inserted noop jobs (1 and 2 processes), and HTTP enqueue →
#      start latency end to end;
#   4. memory (idle, under load, during a 100 MiB upload), spawn-to-ready time, binary size.
# Everything runs against a PRIVATE Postgres and Redis started here (pinned, tuned, deleted
# afterwards); nothing but 127.0.0.1 is loaded. See bench/README.md for what each figure means.
#
# Knobs (environment): BENCH_DURATION (10 s per measurement), BENCH_WARMUP (2 s),
# BENCH_CONNECTIONS (64), BENCH_JOBS (100000), BENCH_WORKER_CONCURRENCY / BENCH_CLAIM_BATCH
# (512 / 256), BENCH_SKIP_BUILD=1 (use the binaries already in the target dir),
# BENCH_OUT (bench/results/latest.json), BENCH_SECTIONS (subset of "http instr limiter jobs
# e2e startup"), BENCH_QUIET_WAIT (seconds to wait for other work on the machine to stop, 0).
# ballast_start sets <NAME>_PID/_HTTP/_MGMT with printf -v, which shellcheck cannot see:
# shellcheck disable=SC2153
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BALLAST_ROOT="$ROOT"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/deps.sh
. "$ROOT/scripts/lib/deps.sh"
# shellcheck source=scripts/chaos/lib.sh
. "$ROOT/scripts/chaos/lib.sh"

DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
CONNS="${BENCH_CONNECTIONS:-64}"
JOBS_N="${BENCH_JOBS:-100000}"
WORKER_CONC="${BENCH_WORKER_CONCURRENCY:-512}"
CLAIM_BATCH="${BENCH_CLAIM_BATCH:-256}"
OUT="${BENCH_OUT:-$ROOT/bench/results/latest.json}"
SECTIONS=" ${BENCH_SECTIONS:-http instr limiter jobs e2e startup} "
want() { [[ "$SECTIONS" == *" $1 "* ]]; }
JWT_SECRET="bench-secret-0123456789abcdef-0123456789abcdef"

# Two cores: the server under test alone on cpu 0; the load generator, Postgres and Redis on
# cpu 1. With one core everything shares it (and the output says so).
if [ "$(nproc)" -ge 2 ]; then SERVER_CPU=0; CLIENT_CPU=1; INFRA_CPU=1; else SERVER_CPU=""; CLIENT_CPU=""; INFRA_CPU=""; fi

ensure_apt wrk redis-tools:redis-benchmark redis-server:redis-server curl
if want instr; then ensure_apt valgrind; fi
ensure_postgres_binaries

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building release binaries (ballast, example bare)"
  (cd "$ROOT" && cargo build --release --locked --bin ballast --example bare >&2)
fi
# BENCH_BALLAST_BIN: measure another build of ballast (e.g. a merged tree's) against this baseline.
BALLAST_BIN="${BENCH_BALLAST_BIN:-$TARGET/release/ballast}"
BARE_BIN="$TARGET/release/examples/bare"
if [ ! -x "$BALLAST_BIN" ] || [ ! -x "$BARE_BIN" ]; then die "release binaries missing in $TARGET/release"; fi

RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/ballast-bench.XXXXXX")"
chmod 755 "$RUN_DIR"
RESULTS="$RUN_DIR/results.jsonl"
: >"$RESULTS"
cleanup() {
  local rc=$?
  run_cleanup
  rm -rf "$RUN_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# record KEY JSON: one measurement (a JSON object) under KEY for the report.
record() { printf '{"key":"%s","value":%s}\n' "$1" "$2" >>"$RESULTS"; }

# ---------------------------------------------------------------- private dependencies
PG_DIR="$RUN_DIR/pg"
PG_PORT="$(free_port)"
# Tuned for throughput, not durability: a benchmark measures the service, not the disk.
PG_OPTS=(-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300
  -c shared_buffers=512MB -c max_wal_size=4GB -c checkpoint_timeout=30min -c wal_level=minimal
  -c max_wal_senders=0 -c jit=off)
log "private postgres on 127.0.0.1:$PG_PORT (cpu ${INFRA_CPU:-any}; ${PG_OPTS[*]})"
pg_start "$PG_DIR" "$PG_PORT" "$INFRA_CPU" "${PG_OPTS[@]}"
ADMIN_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
DB_NAME="ballast_bench"
psql_q "$ADMIN_URL" "CREATE DATABASE $DB_NAME" >/dev/null
DB_URL="postgres://postgres@127.0.0.1:$PG_PORT/$DB_NAME"

REDIS_DIR="$RUN_DIR/redis"
REDIS_PORT="$(free_port)"
log "private redis on 127.0.0.1:$REDIS_PORT (cpu ${INFRA_CPU:-any})"
redis_start "$REDIS_DIR" "$REDIS_PORT" "$INFRA_CPU"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

log "migrating the scratch database"
env -i PATH=/usr/bin:/bin CONFIG_DIR=/nonexistent "DATABASE_URL=$DB_URL" "$BALLAST_BIN" migrate up >/dev/null
TOKEN="$(mint_token bench-user)"
# The row the authenticated DB route reads (tenant = the token's sub); nothing runs it.
JOB_ID="$(psql_q "$DB_URL" "INSERT INTO jobs (id, tenant, kind) VALUES (gen_random_uuid(), 'bench-user', 'noop') RETURNING id" | head -n 1)"

# Environment of every `ballast` process in this run (ballast_start adds BALLAST_BASE_ENV).
APP_ENV_VARS=(
  "DATABASE_URL=$DB_URL" "REDIS_URL=$REDIS_URL" "JWT_SECRET=$JWT_SECRET"
  "HTTP_ADDR=127.0.0.1:0" "MANAGEMENT_ADDR=127.0.0.1:0"
  "STORAGE_URL=file://$RUN_DIR/storage" "MAX_UPLOAD_BYTES=128MiB"
  "DATABASE_MAX_CONNECTIONS=10" "DATABASE_AUTO_MIGRATE=true"
)
# Policies at the maximum validation allows (1e6/min = 16.7k/s sustained, plus a 1e6 burst):
# far above what one run sends, so the limiter decides every request and allows it.
LIMITER_HIGH=(
  "RATE_LIMIT_DEFAULT_PER_MINUTE=1000000" "RATE_LIMIT_DEFAULT_BURST=1000000"
  "RATE_LIMIT_ANONYMOUS_PER_MINUTE=1000000" "RATE_LIMIT_ANONYMOUS_BURST=1000000"
  "RATE_LIMIT_IP_PER_SECOND=1000000" "RATE_LIMIT_IP_BURST=1000000"
)

# ---------------------------------------------------------------- helpers
# CPU accounting per core from /proc/stat, to say what saturated during a measurement.
cpu_snap() { awk '/^cpu[0-9]+ / {printf "%s %d %d\n", $1, $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat >"$1"; }
# cpu_busy BEFORE AFTER: {"cpu0":93.1,"cpu1":54.2} (percent busy of each core in between).
cpu_busy() {
  awk 'NR==FNR {b[$1]=$2; t[$1]=$3; next}
       {d=$3-t[$1]; if (d<=0) d=1; printf "%s\"%s\":%.1f", (n++ ? "," : "{"), $1, 100*($2-b[$1])/d} END {print "}"}' "$1" "$2"
}
# A measurement window: core busy share, and the CPU time the servers under test
# (SERVER_PIDS) and Postgres spent in it. CPU per request/job is what stays meaningful when
# something else shares the machine.
SERVER_PIDS=()
win_start() {
  cpu_snap "$RUN_DIR/cpu.before"
  W_SRV0="$(cpu_ticks "${SERVER_PIDS[@]}")"
  W_PG0="$(pg_cpu_ticks "$PG_DIR")"
}
# win_end JSON ITEMS: JSON plus cpu_busy_pct, server/postgres CPU ms and µs per item.
win_end() {
  local srv pg
  cpu_snap "$RUN_DIR/cpu.after"
  srv="$(ticks_ms $(( $(cpu_ticks "${SERVER_PIDS[@]}") - W_SRV0 )))"
  pg="$(ticks_ms $(( $(pg_cpu_ticks "$PG_DIR") - W_PG0 )))"
  python3 - "$1" "$2" "$srv" "$pg" "$(cpu_busy "$RUN_DIR/cpu.before" "$RUN_DIR/cpu.after")" <<'PY'
import json, sys
d = json.loads(sys.argv[1]); n = max(float(sys.argv[2]), 1); srv, pg = float(sys.argv[3]), float(sys.argv[4])
d.update({"cpu_busy_pct": json.loads(sys.argv[5]), "server_cpu_ms": srv, "postgres_cpu_ms": pg,
          "server_cpu_us_per_item": round(srv * 1000 / n, 1), "postgres_cpu_us_per_item": round(pg * 1000 / n, 1)})
print(json.dumps(d))
PY
}

# wrk_measure URL VAR=VALUE...: warm up, then measure; prints the WRKJSON object.
wrk_measure() {
  local url="$1"; shift
  local envs=("WRK_METHOD=GET" "$@") out
  local conns="${MEASURE_CONNS:-$CONNS}"
  ( pin "$CLIENT_CPU" env "${envs[@]}" wrk -t1 -c"$conns" -d"${WARMUP}s" -s "$ROOT/bench/wrk/report.lua" "$url" ) >/dev/null
  win_start
  out="$( ( pin "$CLIENT_CPU" env "${envs[@]}" wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 10s \
    -s "$ROOT/bench/wrk/report.lua" "$url" ) | sed -n 's/^WRKJSON //p')"
  [ -n "$out" ] || die "wrk printed no summary for $url"
  win_end "$out" "$(printf '%s' "$out" | sed -nE 's/.*"requests":([0-9]+).*/\1/p')"
}

# alternate KEY A_NAME A_PID A_URL B_NAME B_PID B_URL [VAR=VALUE...]: BENCH_ROUNDS short rounds
# (BENCH_ROUND_S each) measuring A then B (B then A in even rounds), recorded under KEY as
# [{A_NAME: .., B_NAME: ..}, ..].
# Both servers stay up, so the host's drift between minutes hits both sides of every round.
alternate() {
  local key="$1" an="$2" ap="$3" au="$4" bn="$5" bp="$6" bu="$7" a b items=()
  shift 7
  local i
  for i in $(seq 1 "${BENCH_ROUNDS:-5}"); do
    # A then B, then B then A: a drift of the host within a round tilts every other round
    # the other way instead of always against B.
    if [ $(( i % 2 )) -eq 1 ]; then
      SERVER_PIDS=("$ap"); a="$(DURATION="${BENCH_ROUND_S:-4}" WARMUP=1 wrk_measure "$au" "$@")"
      SERVER_PIDS=("$bp"); b="$(DURATION="${BENCH_ROUND_S:-4}" WARMUP=1 wrk_measure "$bu" "$@")"
    else
      SERVER_PIDS=("$bp"); b="$(DURATION="${BENCH_ROUND_S:-4}" WARMUP=1 wrk_measure "$bu" "$@")"
      SERVER_PIDS=("$ap"); a="$(DURATION="${BENCH_ROUND_S:-4}" WARMUP=1 wrk_measure "$au" "$@")"
    fi
    items+=("{\"$an\":$a,\"$bn\":$b}")
  done
  local IFS=,
  record "$key" "[${items[*]}]"
}

# together KEY A_NAME A_URL B_NAME B_URL [VAR=VALUE...]: BENCH_ROUNDS rounds in which one wrk
# per server runs at the same time (same connections, same pacing each), recorded under KEY
# as [{A_NAME: .., B_NAME: ..}, ..]. A latency tail here is mostly the host's (a vCPU not
# scheduled for a few ms); measured side by side, both servers live through the same stalls,
# and the difference of their p99s is what one does that the other does not.
together() {
  local key="$1" an="$2" au="$3" bn="$4" bu="$5" items=() _ pa pb
  shift 5
  local envs=("WRK_METHOD=GET" "$@") conns="${MEASURE_CONNS:-$CONNS}" d="${BENCH_ROUND_S:-4}"
  one() {
    ( pin "$CLIENT_CPU" env "${envs[@]}" wrk -t1 -c"$conns" -d1s -s "$ROOT/bench/wrk/report.lua" "$1" ) >/dev/null
    ( pin "$CLIENT_CPU" env "${envs[@]}" wrk -t1 -c"$conns" -d"${d}s" --timeout 10s \
      -s "$ROOT/bench/wrk/report.lua" "$1" ) | sed -n 's/^WRKJSON //p' >"$2"
  }
  for _ in $(seq 1 "${BENCH_ROUNDS:-5}"); do
    one "$au" "$RUN_DIR/together.a" & pa=$!
    one "$bu" "$RUN_DIR/together.b" & pb=$!
    wait "$pa" "$pb" || die "wrk failed in a side-by-side round ($au, $bu)"
    if [ ! -s "$RUN_DIR/together.a" ] || [ ! -s "$RUN_DIR/together.b" ]; then die "wrk printed no summary in a side-by-side round"; fi
    items+=("{\"$an\":$(cat "$RUN_DIR/together.a"),\"$bn\":$(cat "$RUN_DIR/together.b")}")
  done
  local IFS=,
  record "$key" "[${items[*]}]"
}

# peak_rss_start PID FILE … peak_rss_stop: PID's peak RSS in between, into FILE. The kernel
# keeps the peak (VmHWM) and clear_refs mode 5 resets it. No sampling loop: a process spawned
# every 100 ms would be measured as well, on whichever core it lands.
peak_rss_start() {
  PEAK_PID="$1"; PEAK_FILE="$2"
  echo 5 >"/proc/$PEAK_PID/clear_refs" 2>/dev/null || true
}
peak_rss_stop() { hwm_kib "$PEAK_PID" >"$PEAK_FILE"; }

num_lt() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)' "$1" "$2"; }
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }

# ---------------------------------------------------------------- 0. is the machine quiet?
# Other work on the box (a build, a test suite) would be measured as ballast's slowness: take
# the cores' busy share over 2 s before starting, wait up to BENCH_QUIET_WAIT seconds for it
# to fall under 10 %, and put the figure in the report either way.
quiet_deadline=$(( $(date +%s) + ${BENCH_QUIET_WAIT:-0} ))
while :; do
  cpu_snap "$RUN_DIR/cpu.before"; sleep 2; cpu_snap "$RUN_DIR/cpu.after"
  background="$(cpu_busy "$RUN_DIR/cpu.before" "$RUN_DIR/cpu.after")"
  busiest="$(printf '%s' "$background" | python3 -c 'import json,sys; print(max(json.load(sys.stdin).values()))')"
  if num_lt "$busiest" 10 || [ "$(date +%s)" -ge "$quiet_deadline" ]; then break; fi
  log "background load ($background % busy): waiting for a quiet machine"
  sleep 10
done
num_lt "$busiest" 10 || log "WARNING: the machine is busy with other work ($background % busy): figures will be low"
record background "{\"cpu_busy_pct\":$background,\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}"

# ---------------------------------------------------------------- 1. bare axum vs ballast
if want http; then
  log "1. bare axum baseline (server cpu ${SERVER_CPU:-any}, wrk cpu ${CLIENT_CPU:-any}, -t1 -c$CONNS -d${DURATION}s)"
  BARE_PORT="$(free_port)"
  ( pin "$SERVER_CPU" env -i PATH=/usr/bin:/bin "DATABASE_URL=$DB_URL" BARE_DB_MAX_CONNECTIONS=10 \
      "$BARE_BIN" "127.0.0.1:$BARE_PORT" ) >"$RUN_DIR/bare.log" 2>&1 &
  BARE_PID=$!
  SERVER_PIDS=("$BARE_PID")
  RUN_PIDS+=("$BARE_PID")
  wait_for_http "http://127.0.0.1:$BARE_PORT/json" 20 || die "bare did not start"
  sleep 1
  record mem.bare_idle_kib "$(rss_kib "$BARE_PID")"
  peak_rss_start "$BARE_PID" "$RUN_DIR/bare.rss"
  record http.bare_json "$(wrk_measure "http://127.0.0.1:$BARE_PORT/json")"
  record http.bare_db "$(wrk_measure "http://127.0.0.1:$BARE_PORT/db")"
  peak_rss_stop
  record mem.bare_load_kib "$(cat "$RUN_DIR/bare.rss" 2>/dev/null || echo 0)"
  stop_pid "$BARE_PID" TERM 10

  log "1. ballast serve, limiter off (WORKER_CONCURRENCY=0: only HTTP on the server core)"
  ballast_start APP "$SERVER_CPU" serve "${APP_ENV_VARS[@]}" WORKER_CONCURRENCY=0 RATE_LIMIT_ENABLED=false
  SERVER_PIDS=("$APP_PID")
  APP_URL="http://$APP_HTTP"
  wait_for_http "$APP_URL/health/ready" 20 || die "ballast not ready"
  sleep 1
  record mem.ballast_idle_kib "$(rss_kib "$APP_PID")"
  peak_rss_start "$APP_PID" "$RUN_DIR/app.rss"
  record http.ballast_live "$(wrk_measure "$APP_URL/health/live")"
  record http.ballast_job "$(wrk_measure "$APP_URL/api/v1/jobs/$JOB_ID" "WRK_TOKEN=$TOKEN")"
  peak_rss_stop
  record mem.ballast_load_kib "$(cat "$RUN_DIR/app.rss" 2>/dev/null || echo 0)"

  # ---------------------------------------------------------------- 4b. RSS during an upload
  UPLOAD_CODE="$(http_code -H "Authorization: Bearer $TOKEN" "$APP_URL/api/v1/files")"
  if [ "$UPLOAD_CODE" = 404 ] || [ "$UPLOAD_CODE" = 405 ]; then
    record mem.upload "{\"skipped\":\"no files API in this build (GET /api/v1/files answered $UPLOAD_CODE)\"}"
  else
    log "4. RSS during a 100 MiB upload"
    head -c $((100 * 1024 * 1024)) /dev/urandom >"$RUN_DIR/upload.bin"
    peak_rss_start "$APP_PID" "$RUN_DIR/upload.rss"
    before="$(rss_kib "$APP_PID")"
    t0="$(now_ms)"
    code="$(http_code --max-time 120 -X POST -H "Authorization: Bearer $TOKEN" \
      -H 'Content-Type: application/octet-stream' --data-binary @"$RUN_DIR/upload.bin" \
      "$APP_URL/api/v1/files?name=bench.bin")"
    t1="$(now_ms)"
    peak_rss_stop
    rm -f "$RUN_DIR/upload.bin"
    record mem.upload "{\"status\":$code,\"rss_before_kib\":$before,\"rss_peak_kib\":$(cat "$RUN_DIR/upload.rss" 2>/dev/null || echo 0),\"ms\":$((t1 - t0))}"
  fi

  # 1c. The headline ratio once more, in alternating short rounds with both servers up: the
  # host's speed drifts by up to ~25 % between minutes, and two 10 s windows a minute apart
  # measure that drift as much as the stack. The median of the rounds' ratios cancels it.
  log "1c. ${BENCH_ROUNDS:-5} alternating rounds: bare /json, ballast /health/live (${BENCH_ROUND_S:-4} s each)"
  ( pin "$SERVER_CPU" env -i PATH=/usr/bin:/bin "$BARE_BIN" "127.0.0.1:$BARE_PORT" ) >"$RUN_DIR/bare2.log" 2>&1 &
  BARE_PID=$!
  RUN_PIDS+=("$BARE_PID")
  wait_for_http "http://127.0.0.1:$BARE_PORT/json" 20 || die "bare did not start"
  alternate http.rounds bare "$BARE_PID" "http://127.0.0.1:$BARE_PORT/json" ballast "$APP_PID" "$APP_URL/health/live"
  stop_pid "$BARE_PID" TERM 10
  stop_pid "$APP_PID" TERM 30

  # /health/ready with the cache off: readiness runs every check (schema version, queue stats,
  # redis ping, storage) per request. Not the bare /db equivalent: a probe storm's cost.
  log "1. ballast /health/ready with HEALTH_CACHE_MS=0"
  ballast_start READY "$SERVER_CPU" serve "${APP_ENV_VARS[@]}" WORKER_CONCURRENCY=0 RATE_LIMIT_ENABLED=false HEALTH_CACHE_MS=0
  SERVER_PIDS=("$READY_PID")
  wait_for_http "http://$READY_HTTP/health/ready" 20 || die "ballast not ready"
  record http.ballast_ready_nocache "$(wrk_measure "http://$READY_HTTP/health/ready")"
  stop_pid "$READY_PID" TERM 30
fi

# ---------------------------------------------------------------- 1d. instructions per request
# The host's speed drifts by up to ~25 % between minutes (and more between days); the number of
# instructions a request costs does not. callgrind counts them in user space (the kernel's
# share, mostly the same two syscalls for both, is not counted): a regression in the stack
# shows here even when the rps figures drown it.
# instr_per_request URL BIN ARG...: BIN runs under callgrind on the server core, with the
# environment INSTR_ENV (VAR=VALUE list) and nothing else; after a warm-up the counters are
# zeroed, wrk sends INSTR_S seconds of load (8 connections), the counters are dumped.
instr_per_request() {
  local url="$1" pid requests total dump
  shift
  ( pin "$SERVER_CPU" env -i "${INSTR_ENV[@]}" valgrind --tool=callgrind \
      --callgrind-out-file="$RUN_DIR/cg.%p" "$@" ) >"$RUN_DIR/cg.log" 2>&1 &
  pid=$!
  RUN_PIDS+=("$pid")
  wait_for_http "$url" 120 || die "no answer from $url under callgrind (see $RUN_DIR/cg.log)"
  ( pin "$CLIENT_CPU" wrk -t1 -c8 -d3s "$url" ) >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  requests="$( ( pin "$CLIENT_CPU" wrk -t1 -c8 -d"${INSTR_S:-8}s" "$url" ) | awk '/requests in/ {print $1}')"
  callgrind_control -d "$pid" >/dev/null 2>&1
  # The dump after a zeroing is part 1 ("cg.PID.1"); its summary line is the total.
  dump="$RUN_DIR/cg.$pid.1"
  total="$(sed -n 's/^summary: //p' "$dump" 2>/dev/null | head -n 1)"
  stop_pid "$pid" TERM 30
  if [ -z "$total" ] || [ "${requests:-0}" -le 0 ]; then
    die "callgrind gave no count for $url (see $RUN_DIR/cg.log)"
  fi
  printf '{"requests":%s,"instructions":%s,"per_request":%s}' "$requests" "$total" "$((total / requests))"
}

if want instr; then
  log "1d. userland instructions per request under callgrind: bare /json, ballast /health/live"
  port="$(free_port)"
  INSTR_ENV=(PATH=/usr/bin:/bin)
  record instr.bare "$(instr_per_request "http://127.0.0.1:$port/json" "$BARE_BIN" "127.0.0.1:$port")"
  port="$(free_port)"
  INSTR_ENV=("${BALLAST_BASE_ENV[@]}" "${APP_ENV_VARS[@]}" WORKER_CONCURRENCY=0 RATE_LIMIT_ENABLED=false
    "HTTP_ADDR=127.0.0.1:$port" STARTUP_DEPENDENCY_TIMEOUT_SECS=120)
  record instr.ballast "$(instr_per_request "http://127.0.0.1:$port/health/live" "$BALLAST_BIN" serve)"
fi

# ---------------------------------------------------------------- 2. limiter cost
if want limiter; then
  log "2. limiter: ballast with RATE_LIMIT_ENABLED=true (policies far above the load)"
  ballast_start RL "$SERVER_CPU" serve "${APP_ENV_VARS[@]}" WORKER_CONCURRENCY=0 RATE_LIMIT_ENABLED=true "${LIMITER_HIGH[@]}"
  SERVER_PIDS=("$RL_PID")
  RL_URL="http://$RL_HTTP"
  wait_for_http "$RL_URL/health/ready" 20 || die "ballast not ready"
  headers="$(curl -s -D - -o /dev/null --max-time 5 -H "Authorization: Bearer $TOKEN" "$RL_URL/api/v1/jobs/$JOB_ID" | tr -d '\r')"
  if grep -qi '^ratelimit-policy:\|^x-ratelimit-limit:' <<<"$headers" \
     || curl -s --max-time 5 "http://$RL_MGMT/metrics" | grep -q '^rate_limit_decisions_total'; then
    record http.ballast_job_limited "$(wrk_measure "$RL_URL/api/v1/jobs/$JOB_ID" "WRK_TOKEN=$TOKEN")"
    curl -s --max-time 5 "http://$RL_MGMT/metrics" | grep '^rate_limit_decisions_total' >"$RUN_DIR/rl.metrics" || true
    record limiter.decisions "$(python3 - "$RUN_DIR/rl.metrics" <<'PY'
import json, re, sys
d = {}
for line in open(sys.argv[1]):
    m = re.search(r'decision="(\w+)"\}\s+([0-9.e+]+)', line)
    if m: d[m.group(1)] = d.get(m.group(1), 0) + float(m.group(2))
print(json.dumps(d))
PY
  )"
  else
    record http.ballast_job_limited '{"skipped":"rate limiting not in this build (no RateLimit headers, no rate_limit_decisions_total in /metrics)"}'
  fi
  # 2c. What the limiter adds to p99 below saturation: a second server with the limiter off
  # beside it, both at the same paced load (each wrk connection waits before each request:
  # ~3 000 req/s offered, a third of the route's capacity), in alternating rounds and then
  # side by side.
  if [ -s "$RUN_DIR/rl.metrics" ]; then
    log "2c. limiter on vs off at a paced, partial load (${BENCH_ROUNDS:-5} alternating rounds)"
    ballast_start RLOFF "$SERVER_CPU" serve "${APP_ENV_VARS[@]}" WORKER_CONCURRENCY=0 RATE_LIMIT_ENABLED=false
    wait_for_http "http://$RLOFF_HTTP/health/ready" 20 || die "ballast not ready"
    # The floor under any Redis round trip here: redis-cli's idle PING (one every 10 ms, from
    # the server's core), where both sides sleep between pings and each wake-up of a vCPU costs.
    floor="$( (pin "$SERVER_CPU" timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" --latency -i 4 || true) | tail -n 1)"
    record redis.idle_ping "$(python3 - "$floor" <<'PY'
import json, sys
f = sys.argv[1].split()
print(json.dumps({"min_ms": float(f[0]), "max_ms": float(f[1]), "avg_ms": float(f[2]), "samples": int(f[3])} if len(f) == 4 else {"skipped": sys.argv[1]}))
PY
)"
    curl -s --max-time 5 "http://$RL_MGMT/metrics" >"$RUN_DIR/rtt.before" || true
    alternate limiter.paced off "$RLOFF_PID" "http://$RLOFF_HTTP/api/v1/jobs/$JOB_ID" \
      on "$RL_PID" "$RL_URL/api/v1/jobs/$JOB_ID" "WRK_TOKEN=$TOKEN" WRK_DELAY_MS=20
    log "2c. limiter on and off side by side, same paced load each (${BENCH_ROUNDS:-5} rounds)"
    together limiter.paced_together off "http://$RLOFF_HTTP/api/v1/jobs/$JOB_ID" \
      on "$RL_URL/api/v1/jobs/$JOB_ID" "WRK_TOKEN=$TOKEN" WRK_DELAY_MS=20
    # The limiter's own share of those requests' latency: its Redis round trips, as the
    # server timed them (rate_limit_redis_duration_seconds), over the paced rounds only.
    curl -s --max-time 5 "http://$RL_MGMT/metrics" >"$RUN_DIR/rtt.after" || true
    record limiter.redis_rtt "$(python3 - "$RUN_DIR/rtt.before" "$RUN_DIR/rtt.after" <<'PY'
import json, re, sys
def buckets(path):
    out = {}
    for line in open(path):
        m = re.match(r'rate_limit_redis_duration_seconds_bucket\{.*le="([^"]+)".*\}\s+(\S+)', line)
        if m: out[float(m.group(1))] = float(m.group(2))
    return out
a, b = buckets(sys.argv[1]), buckets(sys.argv[2])
cum = sorted((le, b[le] - a.get(le, 0.0)) for le in b)
n = cum[-1][1] if cum else 0.0
def quantile(q):
    prev_le, prev_c = 0.0, 0.0
    for le, c in cum:
        if c >= q * n and le != float("inf"):
            return (prev_le + (le - prev_le) * ((q * n - prev_c) / max(c - prev_c, 1e-9))) * 1000
        if le != float("inf"): prev_le, prev_c = le, c
    return None
le05 = next((c for le, c in cum if le == 0.0005), 0.0)
print(json.dumps({"decisions": n, "within_0_5ms": round(le05 / n, 5) if n else None,
                  "p50_ms": quantile(0.5), "p99_ms": quantile(0.99)}))
PY
)"
    stop_pid "$RLOFF_PID" TERM 30
  fi
  stop_pid "$RL_PID" TERM 30

  # 2b. The limiter alone: a policy of 1/min with burst 1, so after the first request every one
  # is decided in Redis and refused (429) before any database work — JWT verify, one EVALSHA,
  # a problem body. Its rps against Redis's own EVALSHA ceiling says whether the limiter is
  # bound by Redis or by the app (the route above is bound by its database read).
  RLX_PID=""
  if [ -s "$RUN_DIR/rl.metrics" ]; then
    log "2b. limiter only: every request decided and refused by Redis (policy 1/min, burst 1)"
    ballast_start RLX "$SERVER_CPU" serve "${APP_ENV_VARS[@]}" WORKER_CONCURRENCY=0 RATE_LIMIT_ENABLED=true \
      "${LIMITER_HIGH[@]}" RATE_LIMIT_DEFAULT_PER_MINUTE=1 RATE_LIMIT_DEFAULT_BURST=1
    SERVER_PIDS=("$RLX_PID")
    wait_for_http "http://$RLX_HTTP/health/ready" 20 || die "ballast not ready"
    record http.ballast_limiter_only "$(wrk_measure "http://$RLX_HTTP/api/v1/jobs/$JOB_ID" "WRK_TOKEN=$TOKEN")"
    # The same refused request with no Redis at all (no REDIS_URL: the in-process GCRA of
    # RATE_LIMIT_FAIL_MODE=local decides): what the route costs without the round trip, so the
    # ratio above splits into HTTP serving (JWT, 429 body, log line) and the limiter's Redis I/O.
    ballast_start RLL "$SERVER_CPU" serve "${APP_ENV_VARS[@]}" WORKER_CONCURRENCY=0 RATE_LIMIT_ENABLED=true \
      "${LIMITER_HIGH[@]}" RATE_LIMIT_DEFAULT_PER_MINUTE=1 RATE_LIMIT_DEFAULT_BURST=1 REDIS_URL= RATE_LIMIT_FAIL_MODE=local
    SERVER_PIDS=("$RLL_PID")
    wait_for_http "http://$RLL_HTTP/health/ready" 20 || die "ballast (no Redis) not ready"
    record http.ballast_limiter_local "$(wrk_measure "http://$RLL_HTTP/api/v1/jobs/$JOB_ID" "WRK_TOKEN=$TOKEN")"
  fi

  # The project's own limiter script when the tree has one, else the stand-in; one identity,
  # one key, as the wrk run above (a single bearer token) hits one — a key of its own, so the
  # rounds below do not refill the limited server's bucket.
  GCRA_LUA="$ROOT/src/ratelimit/gcra.lua"
  [ -f "$GCRA_LUA" ] || GCRA_LUA="$ROOT/bench/gcra.lua"
  log "2. redis-benchmark: EVALSHA of ${GCRA_LUA#"$ROOT"/} (redis cpu ${INFRA_CPU:-any}, client cpu ${SERVER_CPU:-any})"
  SHA="$(redis-cli -p "$REDIS_PORT" SCRIPT LOAD "$(cat "$GCRA_LUA")")"
  # redis_evalsha N: N calls, as the JSON the report reads. 60 µs interval =
  # RATE_LIMIT_DEFAULT_PER_MINUTE=1000000, burst 1e6: every call allows.
  redis_evalsha() {
    local rb
    rb="$( ( pin "$SERVER_CPU" redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$CONNS" -n "$1" --csv \
      EVALSHA "$SHA" 1 'ballast:rl:default:bench-redis' 60 1000000 ) | tail -n 1)"
    python3 - "$rb" "${GCRA_LUA#"$ROOT"/}" <<'PY'
import csv, json, sys
row = next(csv.reader([sys.argv[1]]))
keys = ["rps", "avg_ms", "min_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"]
d = {k: float(v) for k, v in zip(keys, row[1:])}
d["script"] = sys.argv[2]
print(json.dumps(d))
PY
  }
  evalsha="$(redis_evalsha 200000)"
  record redis.evalsha "$evalsha"

  # 2b once more in alternating rounds, limiter-only wrk then redis-benchmark, both ~4 s: the
  # two are measured a minute apart above, and the host drifts by as much as the gap to close.
  if [ -n "$RLX_PID" ]; then
    log "2b. ${BENCH_ROUNDS:-5} alternating rounds: limiter only (Redis), the same in process, redis-benchmark EVALSHA"
    # Sized from the measurement above: ~BENCH_ROUND_S seconds of calls per round.
    calls="$(python3 -c 'import json,sys; print(int(json.loads(sys.argv[1])["rps"] * float(sys.argv[2])))' \
      "$evalsha" "${BENCH_ROUND_S:-4}")"
    # refused_round PID ADDR: one round of the refused request against one of the two servers.
    refused_round() {
      SERVER_PIDS=("$1")
      DURATION="${BENCH_ROUND_S:-4}" WARMUP=1 wrk_measure "http://$2/api/v1/jobs/$JOB_ID" "WRK_TOKEN=$TOKEN"
    }
    items=()
    for i in $(seq 1 "${BENCH_ROUNDS:-5}"); do
      # Every other round the order is reversed (as in `alternate`); in process stays between.
      if [ $(( i % 2 )) -eq 1 ]; then a="$(refused_round "$RLX_PID" "$RLX_HTTP")"; else b="$(redis_evalsha "$calls")"; fi
      c="$(refused_round "$RLL_PID" "$RLL_HTTP")"
      if [ $(( i % 2 )) -eq 1 ]; then b="$(redis_evalsha "$calls")"; else a="$(refused_round "$RLX_PID" "$RLX_HTTP")"; fi
      items+=("{\"limiter\":$a,\"local\":$c,\"redis\":$b}")
    done
    record limiter.rounds "[$(IFS=,; echo "${items[*]}")]"
    stop_pid "$RLX_PID" TERM 30
    stop_pid "$RLL_PID" TERM 30
  fi
fi

# ---------------------------------------------------------------- 3. jobs: Postgres gets both cores
# Sections 1–2 pin the server apart from the client to compare like with like. The queue has
# no baseline server to compare with, and Postgres *is* its engine: pinned to one core it would
# measure a one-core database. So from here Postgres and ballast float over both cores (new
# backends inherit the postmaster's affinity); wrk (3b) stays on cpu 1.
JOBS_CPU=""
if { want jobs || want e2e; } && [ -n "$INFRA_CPU" ]; then
  pm="$(pg_postmaster_pid "$PG_DIR")"
  # shellcheck disable=SC2046 # a list of pids
  for p in "$pm" $(pgrep -P "$pm"); do taskset -a -p -c 0-$(( $(nproc) - 1 )) "$p" >/dev/null; done
  record env.jobs_pinning '"ballast and Postgres on all cores; wrk on cpu '"$CLIENT_CPU"'"'
fi

# Every jobs process: the bench's pool shape, no rate limiting (it is measured in section 2).
JOB_ENV=("WORKER_CONCURRENCY=$WORKER_CONC" "JOB_CLAIM_BATCH=$CLAIM_BATCH" "RATE_LIMIT_ENABLED=false")
# wait_drained SECONDS: until no job is queued or running (cheap: both are partial indexes).
# One psql session asks every 50 ms and the pause is a read time-out, not a process: a psql
# (and a sleep) spawned per check cost ~18 % of a core, taken from the burn-down it watched.
wait_drained() {
  local deadline=$(( SECONDS + $1 )) ans rc=1 pid wfd
  coproc DRAIN { psql "$DB_URL" -qAtX 2>&1; }
  pid="$DRAIN_PID"; wfd="${DRAIN[1]}"
  while [ "$SECONDS" -lt "$deadline" ]; do
    printf '%s\n' "SELECT EXISTS (SELECT 1 FROM jobs WHERE status IN ('queued','running'));" >&"$wfd"
    IFS= read -r ans <&"${DRAIN[0]}" || break
    if [ "$ans" = f ]; then rc=0; break; fi
    IFS= read -r -t 0.05 ans <&"${DRAIN[0]}" || true
  done
  exec {wfd}>&-
  wait "$pid" 2>/dev/null || true
  return "$rc"
}

# ---------------------------------------------------------------- 3a. burn-down
if want jobs; then
  seed_jobs() {
    psql "$DB_URL" -qAtX -v ON_ERROR_STOP=1 -c "TRUNCATE jobs" \
      -c "INSERT INTO jobs (id, tenant, kind, payload) SELECT gen_random_uuid(), 'bench', 'noop', '{}'::jsonb FROM generate_series(1, $JOBS_N)" \
      -c "VACUUM ANALYZE jobs" >/dev/null
  }
  # burn_stats WALL_MS PROCESSES: what the database says about the run that just drained.
  burn_stats() {
    psql_q "$DB_URL" "SELECT json_build_object(
        'jobs', count(*),
        'succeeded', count(*) FILTER (WHERE status = 'succeeded'),
        'duplicated_attempts', COALESCE(sum(attempts - 1) FILTER (WHERE attempts > 1), 0),
        'span_s', round(EXTRACT(EPOCH FROM max(finished_at) - min(started_at))::numeric, 3),
        'jobs_per_s', round((count(*) FILTER (WHERE status = 'succeeded') / NULLIF(EXTRACT(EPOCH FROM max(finished_at) - min(started_at)), 0))::numeric, 0),
        'wall_ms', $1, 'processes', $2, 'concurrency', $WORKER_CONC, 'claim_batch', $CLAIM_BATCH)
      FROM jobs"
  }

  log "3a. the queue's SQL alone (bench/sql/queue-ceiling.sql, batch $CLAIM_BATCH): Postgres's own ceiling"
  seed_jobs
  SERVER_PIDS=()
  win_start
  t0="$(now_ms)"
  ( psql "$DB_URL" -qAtX -v ON_ERROR_STOP=1 -c "SET bench.batch = $CLAIM_BATCH" \
      -f "$ROOT/bench/sql/queue-ceiling.sql" >/dev/null )
  t1="$(now_ms)"
  record jobs.sql_ceiling "$(win_end "$(burn_stats $((t1 - t0)) 0)" "$JOBS_N")"

  log "3a. burn-down of $JOBS_N noop jobs: one serve process (embedded pool $WORKER_CONC/$CLAIM_BATCH)"
  seed_jobs
  SERVER_PIDS=()
  win_start
  t0="$(now_ms)"
  ballast_start BURN "$JOBS_CPU" serve "${APP_ENV_VARS[@]}" "${JOB_ENV[@]}"
  SERVER_PIDS=("$BURN_PID")
  wait_drained 180 || die "burn-down (1 process) did not drain within 180 s"
  t1="$(now_ms)"
  record jobs.burn_1 "$(win_end "$(burn_stats $((t1 - t0)) 1)" "$JOBS_N")"
  stop_pid "$BURN_PID" TERM 30

  log "3a. burn-down of $JOBS_N noop jobs: two worker processes"
  seed_jobs
  SERVER_PIDS=()
  win_start
  t0="$(now_ms)"
  ballast_start W1 "$JOBS_CPU" worker "${APP_ENV_VARS[@]}" "${JOB_ENV[@]}"
  ballast_start W2 "$JOBS_CPU" worker "${APP_ENV_VARS[@]}" "${JOB_ENV[@]}"
  SERVER_PIDS=("$W1_PID" "$W2_PID")
  wait_drained 180 || die "burn-down (2 processes) did not drain within 180 s"
  t1="$(now_ms)"
  record jobs.burn_2 "$(win_end "$(burn_stats $((t1 - t0)) 2)" "$JOBS_N")"
  stop_pid "$W1_PID" TERM 30
  stop_pid "$W2_PID" TERM 30
fi

# ---------------------------------------------------------------- 3b. end to end
if want e2e; then
  log "3b. end to end: wrk POST /api/v1/jobs (single noop jobs) into serve with the embedded pool"
  # 64 concurrent enqueues each hold a pooled connection for their transaction.
  ballast_start E2E "$JOBS_CPU" serve "${APP_ENV_VARS[@]}" "${JOB_ENV[@]}" DATABASE_MAX_CONNECTIONS=32
  SERVER_PIDS=("$E2E_PID")
  wait_for_http "http://$E2E_HTTP/health/ready" 20 || die "ballast not ready"
  # e2e_stats: what the database says about the enqueued jobs (all of them drained).
  e2e_stats() {
    psql_q "$DB_URL" "SELECT json_build_object(
      'jobs', count(*),
      'succeeded', count(*) FILTER (WHERE status = 'succeeded'),
      'duplicated_attempts', COALESCE(sum(attempts - 1) FILTER (WHERE attempts > 1), 0),
      'completed_per_s', round((count(*) / NULLIF(EXTRACT(EPOCH FROM max(finished_at) - min(created_at)), 0))::numeric, 0),
      'start_p50_ms', round((percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM started_at - created_at)) * 1000)::numeric, 2),
      'start_p99_ms', round((percentile_cont(0.99) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM started_at - created_at)) * 1000)::numeric, 2),
      'finish_p50_ms', round((percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM finished_at - created_at)) * 1000)::numeric, 2),
      'finish_p99_ms', round((percentile_cont(0.99) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM finished_at - created_at)) * 1000)::numeric, 2))
    FROM jobs"
  }
  # e2e_run KEY [VAR=VALUE...]: one wrk run of single-job POSTs into an empty queue (connections
  # from MEASURE_CONNS), drained, recorded as jobs.KEY_http (HTTP side) and jobs.KEY (the jobs).
  e2e_run() {
    local key="$1" out; shift
    psql_q "$DB_URL" "TRUNCATE jobs" >/dev/null
    out="$(wrk_measure "http://$E2E_HTTP/api/v1/jobs" "WRK_TOKEN=$TOKEN" WRK_METHOD=POST \
      'WRK_BODY={"kind":"noop","payload":{}}' "$@")"
    wait_drained 120 || die "end-to-end jobs ($key) did not drain within 120 s"
    record "jobs.${key}_http" "$out"
    record "jobs.$key" "$(e2e_stats)"
  }
  # Paced (the target: a stated rate, ~5 500 offered, latency at that rate), saturated (-c
  # CONNS: capacity; a queue fed faster than it drains grows, so its start latency there
  # measures the backlog, not the wake-up) and light (-c 4: latency with nothing in front).
  MEASURE_CONNS="${BENCH_PACED_CONNS:-144}" e2e_run e2e_paced "WRK_DELAY_MS=${BENCH_PACED_DELAY_MS:-16}"
  e2e_run e2e
  MEASURE_CONNS=4 e2e_run e2e_light
  stop_pid "$E2E_PID" TERM 30
fi

# ---------------------------------------------------------------- 4. startup, sizes
if want startup; then
  log "4. spawn → /health/ready 200, migrations already applied (5 runs, median)"
  starts=()
  for _ in 1 2 3 4 5; do
    port="$(free_port)"
    ms="$(env -i "${BALLAST_BASE_ENV[@]}" "${APP_ENV_VARS[@]}" "HTTP_ADDR=127.0.0.1:$port" WORKER_CONCURRENCY=4 \
      python3 "$ROOT/bench/lib/startup.py" "http://127.0.0.1:$port/health/ready" 20 -- \
      taskset -c "${SERVER_CPU:-0}" "$BALLAST_BIN" serve)" || die "startup measurement failed"
    starts+=("$ms")
  done
  record startup "$(printf '%s\n' "${starts[@]}" | python3 -c 'import json,statistics,sys; v=[float(x) for x in sys.stdin]; print(json.dumps({"median_ms":statistics.median(v),"min_ms":min(v),"max_ms":max(v),"runs":v}))')"
fi
record size "{\"ballast_bytes\":$(stat -c %s "$BALLAST_BIN"),\"bare_bytes\":$(stat -c %s "$BARE_BIN")}"

# ---------------------------------------------------------------- report
record env "$(python3 - "$SERVER_CPU" "$CLIENT_CPU" "$INFRA_CPU" "$CONNS" "$DURATION" "$WARMUP" "${PG_OPTS[*]}" "$(wrk --version 2>&1 | head -n 1 | awk '{print $2}')" "$(psql_q "$ADMIN_URL" 'SHOW server_version')" "$(redis-server --version | awk '{print $3}')" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'PY'
import json, os, platform, sys
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
a = sys.argv[1:]
import datetime
print(json.dumps({
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem / 1048576, 1), "kernel": platform.release(),
    "server_cpu": a[0] or "any", "client_cpu": a[1] or "any", "infra_cpu": a[2] or "any",
    "connections": int(a[3]), "duration_s": int(a[4]), "warmup_s": int(a[5]), "postgres_opts": a[6],
    "wrk": a[7], "postgres": a[8], "redis": a[9], "git": a[10],
}))
PY
)"
mkdir -p "$(dirname "$OUT")"
cp "$RESULTS" "${OUT%.json}.raw.jsonl"     # the measurements as taken (report.py re-renders them)
python3 "$ROOT/bench/lib/report.py" "$RESULTS" "$OUT"
