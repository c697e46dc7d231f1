#!/usr/bin/env bash
# Fault drills (issue 10): each breaks something under load and asserts nothing is lost.
#   rolling   two instances behind nginx, SIGTERM + restart each in turn → no failed request
#   postgres  a private Postgres stopped and restarted under load → readiness 503 while down,
#             fast 503 problems (no hangs), automatic recovery, no accepted job lost
#   redis     a private Redis frozen (SIGSTOP) then killed → bounded latency, fallback
#             limiter, recovery
#   worker    a worker SIGKILLed mid-batch → every job succeeds; re-runs counted
#   diskfull  an 8 MiB tmpfs as the storage dir, a 16 MiB upload → clean 507/500 problem,
#             no partial file, no row
# Every drill uses PRIVATE Postgres/Redis instances started here (never the shared servers
# on 5432/6379), binds 127.0.0.1 only, is bounded in time, and cleans up on exit.
#
#   scripts/chaos.sh [DRILL...]          # default: all, in the order above
# Env: BALLAST_BIN (default: target/release/ballast, built when missing), CHAOS_TIMEOUT_SECS
# (600, whole run). Prints each drill's figures and assertions, then
# "chaos: N passed, M failed, K skipped"; exits 1 when a drill failed.
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

ensure_apt nginx curl python3 redis-server:redis-server redis-tools:redis-cli
ensure_postgres_binaries

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ -n "${BALLAST_BIN:-}" ]; then
  [ -x "$BALLAST_BIN" ] || die "BALLAST_BIN=$BALLAST_BIN is not an executable"
else
  BALLAST_BIN="$TARGET/release/ballast"
  if [ ! -x "$BALLAST_BIN" ]; then
    log "building $BALLAST_BIN"
    (cd "$ROOT" && cargo build --release --locked --bin ballast >&2)
  fi
fi
JWT_SECRET="chaos-secret-0123456789abcdef-0123456789abcdef"
LOAD="$ROOT/scripts/chaos/load.py"
ALL_DRILLS=(rolling postgres redis worker diskfull)
DRILLS=("$@")
[ ${#DRILLS[@]} -gt 0 ] || DRILLS=("${ALL_DRILLS[@]}")

RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/ballast-chaos.XXXXXX")"
chmod 755 "$RUN_DIR"     # the private Postgres runs as `postgres` and nginx workers as nobody
DRILL_PID=""
WATCHDOG_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$DRILL_PID" ] && kill -0 "$DRILL_PID" 2>/dev/null; then
    kill -TERM "$DRILL_PID" 2>/dev/null || true
    wait "$DRILL_PID" 2>/dev/null || true
  fi
  [ -n "$WATCHDOG_PID" ] && kill "$WATCHDOG_PID" 2>/dev/null
  run_cleanup
  if [ -n "${KEEP_WORKDIR:-}" ]; then log "kept $RUN_DIR (KEEP_WORKDIR)"; else rm -rf "$RUN_DIR"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Bounded: whatever hangs, the whole run ends.
(
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  sleep "${CHAOS_TIMEOUT_SECS:-600}" & sleeper=$!
  wait "$sleeper" && { log "chaos timeout after ${CHAOS_TIMEOUT_SECS:-600}s"; kill -TERM $$; }
) 2>/dev/null &
WATCHDOG_PID=$!

# ---------------------------------------------------------------- drill helpers
D_FAIL=0
check() { # check "what" COMMAND...: one assertion
  if "${@:2}"; then printf '    ok   %s\n' "$1"; else printf '    FAIL %s\n' "$1"; D_FAIL=$((D_FAIL + 1)); fi
}
figure() { printf '    %-34s %s\n' "$1" "$2"; }
skip_part() { printf '    skip %s\n' "$1"; }
num_le() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' "$1" "$2"; }
num_ge() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)' "$1" "$2"; }
is() { [ "$1" = "$2" ]; }
# jq_py FILE EXPR: evaluate a Python expression over the JSON document `d` in FILE.
jq_py() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=eval(sys.argv[2]); print(json.dumps(v) if isinstance(v,(dict,list)) else v)' "$1" "$2"; }
since_ms() { echo $(( $(now_ms) - $1 )); }

# drill_pg: a private Postgres for this drill with a migrated database; sets PG_DIR, DB_URL.
drill_pg() {
  local port
  PG_DIR="$D/pg"
  port="$(free_port)"
  pg_start "$PG_DIR" "$port" "" -c fsync=off -c max_connections=200
  psql_q "postgres://postgres@127.0.0.1:$port/postgres" "CREATE DATABASE chaos" >/dev/null
  DB_URL="postgres://postgres@127.0.0.1:$port/chaos"
  env -i PATH=/usr/bin:/bin CONFIG_DIR=/nonexistent "DATABASE_URL=$DB_URL" "$BALLAST_BIN" migrate up >/dev/null
}

# The app's environment in every drill: limiter on with policies far above the drills' load
# (so a 429 would be a bug, not a policy), storage in the drill's directory.
app_vars() {
  APP_VARS=(
    "DATABASE_URL=$DB_URL" "JWT_SECRET=$JWT_SECRET" "STORAGE_URL=file://$D/storage"
    "HTTP_ADDR=127.0.0.1:0" "MANAGEMENT_ADDR=127.0.0.1:0" "RATE_LIMIT_ENABLED=true"
    "RATE_LIMIT_DEFAULT_PER_MINUTE=600000" "RATE_LIMIT_DEFAULT_BURST=10000"
    "RATE_LIMIT_ANONYMOUS_PER_MINUTE=600000" "RATE_LIMIT_ANONYMOUS_BURST=10000"
    "RATE_LIMIT_UPLOADS_PER_MINUTE=6000" "RATE_LIMIT_UPLOADS_BURST=100"
    "RATE_LIMIT_IP_PER_SECOND=10000" "RATE_LIMIT_IP_BURST=10000"
  )
}

# wait_jobs_final SECONDS: until no job is queued or running.
wait_jobs_final() {
  local deadline=$(( $(date +%s) + $1 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    [ "$(psql_q "$DB_URL" "SELECT count(*) FROM jobs WHERE status IN ('queued','running')")" = 0 ] && return 0
    sleep 0.2
  done
  return 1
}

# accepted_job_report LOADFILE: how the jobs the client saw accepted (202) ended.
accepted_job_report() {
  python3 - "$1" "$DB_URL" <<'PY'
import json, subprocess, sys
ids = json.load(open(sys.argv[1]))["accepted_ids"]
out = {"accepted": len(ids), "succeeded": 0, "missing": 0, "other": 0, "reruns": 0}
if ids:
    q = ("SELECT id, status, attempts FROM jobs WHERE id = ANY('{%s}'::uuid[])" % ",".join(ids))
    rows = subprocess.run(["psql", sys.argv[2], "-qAtX", "-F", " ", "-c", q], check=True,
                          capture_output=True, text=True).stdout.split("\n")
    seen = {}
    for r in filter(None, rows):
        i, s, a = r.split(" ")
        seen[i] = (s, int(a))
    for i in ids:
        if i not in seen:
            out["missing"] += 1
        elif seen[i][0] == "succeeded":
            out["succeeded"] += 1
            out["reruns"] += seen[i][1] - 1
        else:
            out["other"] += 1
print(json.dumps(out))
PY
}

# ---------------------------------------------------------------- drill: rolling restart
drill_rolling() {
  drill_pg
  app_vars
  local pa pb ma mb ng conf a_pid b_pid token rc t0 rec_a rec_b exit_a exit_b
  pa="$(free_port)"; pb="$(free_port)"; ma="$(free_port)"; mb="$(free_port)"; ng="$(free_port)"
  # A 1 s readiness delay, as a load balancer with probes would need: meanwhile /health
  # answers 503 (nginx moves on) and the API is still served.
  local inst=("${APP_VARS[@]}" SHUTDOWN_READINESS_DELAY_SECS=1 WORKER_CONCURRENCY=2)
  ballast_start A "" serve "${inst[@]}" "HTTP_ADDR=127.0.0.1:$pa" "MANAGEMENT_ADDR=127.0.0.1:$ma"
  ballast_start B "" serve "${inst[@]}" "HTTP_ADDR=127.0.0.1:$pb" "MANAGEMENT_ADDR=127.0.0.1:$mb"
  a_pid="$A_PID"; b_pid="$B_PID"

  mkdir -p "$D/nginx/tmp"
  chmod -R 777 "$D/nginx/tmp"
  conf="$D/nginx/nginx.conf"
  sed -e "s#@DIR@#$D/nginx#g" -e "s#@LISTEN@#127.0.0.1:$ng#" \
      -e "s#@UPSTREAM_A@#127.0.0.1:$pa#" -e "s#@UPSTREAM_B@#127.0.0.1:$pb#" \
      "$ROOT/scripts/chaos/nginx.conf.in" >"$conf"
  nginx -t -q -c "$conf" -p "$D/nginx" 2>"$D/nginx/t.log" || { cat "$D/nginx/t.log" >&2; return 1; }
  nginx -c "$conf" -p "$D/nginx" -g 'daemon off;' 2>>"$D/nginx/error.log" &
  RUN_PIDS+=("$!")
  wait_for_http "http://127.0.0.1:$ng/health/ready" 20 || return 1
  token="$(mint_token chaos-rolling)"

  python3 "$LOAD" --out "$D/load.json" --rate 20 --duration 15 --timeout 5 \
    --header "Authorization: Bearer $token" \
    --target "GET http://127.0.0.1:$ng/api/v1/jobs?limit=5" --target "GET http://127.0.0.1:$ng/health" &
  local load_pid=$!
  RUN_PIDS+=("$load_pid")

  # restart NAME PID PORT MPORT: SIGTERM, wait for exit 0, start again on the same ports.
  restart() {
    local name="$1" pid="$2" port="$3" mport="$4"
    t0="$(now_ms)"
    kill -TERM "$pid"
    rc=0; wait "$pid" || rc=$?
    printf -v "exit_$name" '%s' "$rc"
    ballast_start "$name" "" serve "${inst[@]}" "HTTP_ADDR=127.0.0.1:$port" "MANAGEMENT_ADDR=127.0.0.1:$mport"
    wait_for_http "http://127.0.0.1:$port/health/ready" 20 || return 1
    printf -v "rec_$name" '%s' "$(since_ms "$t0")"
  }
  sleep 3
  restart a "$a_pid" "$pa" "$ma"
  sleep 3
  restart b "$b_pid" "$pb" "$mb"
  rc=0; wait "$load_pid" || rc=$?
  [ "$rc" = 0 ] || return 1

  local sent failed codes upstreams
  sent="$(jq_py "$D/load.json" 'd["sent"]')"
  failed="$(jq_py "$D/load.json" 'd["failed"]')"
  codes="$(jq_py "$D/load.json" 'd["codes"]')"
  # Which instance answered, and how often nginx had to move a request to the other one.
  upstreams="$(python3 - "$D/nginx/access.log" "$pa" "$pb" <<'PY'
import re, sys
name = {sys.argv[2]: "A", sys.argv[3]: "B"}
served, retried, why = {}, 0, {}
for line in open(sys.argv[1]):
    m = re.search(r'"([^"]*)" "([^"]*)"$', line.strip())
    if not m:
        continue
    addrs = [a.strip().rsplit(":", 1)[-1] for a in m.group(1).split(",")]
    statuses = [s.strip() for s in m.group(2).split(",")]
    served[name.get(addrs[-1], "?")] = served.get(name.get(addrs[-1], "?"), 0) + 1
    if len(addrs) > 1:
        retried += 1
        key = "first try " + (statuses[0] if statuses[0] != "-" else "no answer")
        why[key] = why.get(key, 0) + 1
print(f"served by A {served.get('A', 0)}, B {served.get('B', 0)}; moved to the other instance {retried} {why or ''}")
PY
)"
  figure "requests sent / failed:" "$sent / $failed  codes $codes"
  figure "latency p50 / p99 / max (ms):" "$(jq_py "$D/load.json" 'd["p50_ms"]') / $(jq_py "$D/load.json" 'd["p99_ms"]') / $(jq_py "$D/load.json" 'd["max_ms"]')"
  figure "nginx:" "$upstreams"
  figure "SIGTERM → back and ready (ms):" "A $rec_a, B $rec_b"
  check "the client saw ~20 req/s for 15 s (≥ 280 sent)" num_ge "$sent" 280
  check "zero failed client requests" is "$failed" 0
  check "instance A exited 0 on SIGTERM" is "$exit_a" 0
  check "instance B exited 0 on SIGTERM" is "$exit_b" 0
  [ "$D_FAIL" -eq 0 ]
}

# ---------------------------------------------------------------- drill: postgres restart
drill_postgres() {
  drill_pg
  app_vars
  local token t_down t_up ready_code ready_s rec_ready api_back rc
  # Leases short enough that completions lost in the outage re-run within the drill.
  ballast_start APP "" serve "${APP_VARS[@]}" WORKER_CONCURRENCY=16 JOB_LEASE_SECS=5 \
    JOB_MAINTENANCE_INTERVAL_SECS=1 DATABASE_ACQUIRE_TIMEOUT_MS=1000 HEALTH_CACHE_MS=200
  local url="http://$APP_HTTP"
  wait_for_http "$url/health/ready" 20 || return 1
  token="$(mint_token chaos-pg)"
  python3 "$LOAD" --out "$D/load.json" --rate 20 --duration 16 --timeout 10 \
    --header "Authorization: Bearer $token" \
    --target "GET $url/api/v1/jobs?limit=5" \
    --target "POST $url/api/v1/jobs {\"kind\":\"sleep\",\"payload\":{\"ms\":300}}" &
  local load_pid=$! load_t0
  load_t0="$(now_ms)"
  RUN_PIDS+=("$load_pid")

  sleep 4
  t_down="$(since_ms "$load_t0")"
  pg_stop "$PG_DIR" fast
  sleep 0.5
  # Three probes, the median judged (one slow probe on a busy box is not the service).
  local probes
  probes="$(for _ in 1 2 3; do curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 5 "$url/health/ready" || echo "000 5"; done)"
  ready_code="$(printf '%s\n' "$probes" | awk '{print $1}' | sort | uniq -c | sort -rn | awk 'NR==1 {print $2}')"
  ready_s="$(printf '%s\n' "$probes" | awk '{print $2}' | sort -n | sed -n 2p)"
  local details_code
  details_code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$APP_MGMT/health/details" || true)"
  sleep 4.5
  t_up="$(since_ms "$load_t0")"
  pg_restart_same "$PG_DIR" ""
  local up_at; up_at="$(now_ms)"
  rec_ready="never"
  if wait_for_http "$url/health/ready" 10; then rec_ready="$(since_ms "$up_at")"; fi
  rc=0; wait "$load_pid" || rc=$?
  [ "$rc" = 0 ] || return 1
  wait_jobs_final 60 || true

  api_back="$(python3 - "$D/load.json" "$t_up" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); up = float(sys.argv[2]) / 1000
ok = [r["t"] for r in d["records"] if r["t"] >= up and 200 <= r["status"] < 300]
print(round((min(ok) - up) * 1000) if ok else "never")
PY
)"
  local sent failed not_problem fmax codes jobs
  sent="$(jq_py "$D/load.json" 'd["sent"]')"
  failed="$(jq_py "$D/load.json" 'd["failed"]')"
  codes="$(jq_py "$D/load.json" 'd["codes"]')"
  not_problem="$(jq_py "$D/load.json" 'd["failed_not_problem"]')"
  fmax="$(jq_py "$D/load.json" 'd["failed_max_ms"] or 0')"
  jobs="$(accepted_job_report "$D/load.json")"
  figure "outage (s into the run):" "$(awk "BEGIN{print $t_down/1000}") → $(awk "BEGIN{print $t_up/1000}")"
  figure "requests sent / failed:" "$sent / $failed  codes $codes"
  figure "slowest failed request (ms):" "$fmax  (DATABASE_ACQUIRE_TIMEOUT_MS=1000)"
  figure "failed but not a problem+json:" "$not_problem  $(jq_py "$D/load.json" 'd["errors"]')"
  figure "readiness while down:" "$(printf '%s' "$probes" | tr '\n' ' ')(code, s); /health/details $details_code"
  figure "Postgres back → ready (ms):" "$rec_ready"
  figure "Postgres back → API 2xx (ms):" "$api_back"
  figure "jobs accepted (202):" "$jobs"
  check "readiness answers 503 while Postgres is down" is "$ready_code" 503
  check "readiness answers within 100 ms while Postgres is down (median of 3)" num_le "$ready_s" 0.1
  check "failed requests fail fast (≤ acquire timeout + 1 s)" num_le "$fmax" 2000
  check "every failed request is a 5xx problem+json, none a dropped connection" is "$not_problem" 0
  check "readiness recovers automatically (≤ 10 s)" test "$rec_ready" != never
  check "the API recovers automatically" test "$api_back" != never
  check "no accepted job lost (all succeeded)" python3 -c 'import json,sys; j=json.loads(sys.argv[1]); sys.exit(0 if j["accepted"] > 0 and j["succeeded"] == j["accepted"] else 1)' "$jobs"
  [ "$D_FAIL" -eq 0 ]
}

# ---------------------------------------------------------------- drill: redis freeze / kill
drill_redis() {
  drill_pg
  app_vars
  local rport token rpid fb0 fb1 fb2 limiter=0 rc
  rport="$(free_port)"
  redis_start "$D/redis" "$rport" ""
  rpid="$(cat "$D/redis/pid")"
  ballast_start APP "" serve "${APP_VARS[@]}" "REDIS_URL=redis://127.0.0.1:$rport/0" REDIS_TIMEOUT_MS=50 \
    WORKER_CONCURRENCY=2 HEALTH_CACHE_MS=200
  local url="http://$APP_HTTP" murl="http://$APP_MGMT"
  wait_for_http "$url/health/ready" 20 || return 1
  token="$(mint_token chaos-redis)"
  curl -s -o /dev/null --max-time 5 -H "Authorization: Bearer $token" "$url/api/v1/jobs?limit=1" || true
  fallbacks() { curl -s --max-time 5 "$murl/metrics" | awk '/^rate_limit_decisions_total\{.*decision="fallback"/ {s+=$NF} END {print s+0}'; }
  curl -s --max-time 5 "$murl/metrics" | grep -q '^rate_limit_decisions_total' && limiter=1
  redis_state() { curl -s --max-time 5 "$murl/health/details" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["checks"].get("redis:responseTime",[{}])[0].get("status","absent"))' 2>/dev/null || echo unknown; }
  fb0="$(fallbacks)"

  python3 "$LOAD" --out "$D/load.json" --rate 20 --duration 16 --timeout 5 --strict \
    --header "Authorization: Bearer $token" --target "GET $url/api/v1/jobs?limit=5" --target "GET $url/health/ready" &
  local load_pid=$!
  RUN_PIDS+=("$load_pid")

  sleep 3
  kill -STOP "$rpid"
  sleep 1
  local frozen_state frozen_ready
  frozen_state="$(redis_state)"
  frozen_ready="$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 5 "$url/health/ready" || true)"
  sleep 2
  fb1="$(fallbacks)"
  kill -CONT "$rpid"
  sleep 2
  kill -KILL "$rpid"
  wait "$rpid" 2>/dev/null || true
  sleep 1
  local killed_state killed_ready
  killed_state="$(redis_state)"
  killed_ready="$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 5 "$url/health/ready" || true)"
  sleep 2
  fb2="$(fallbacks)"
  redis_start "$D/redis" "$rport" ""
  local back_at rec="never" i
  back_at="$(now_ms)"
  for i in $(seq 1 100); do
    [ "$(redis_state)" = pass ] && { rec="$(since_ms "$back_at")"; break; }
    sleep 0.1
  done
  rc=0; wait "$load_pid" || rc=$?
  [ "$rc" = 0 ] || return 1

  local sent failed p99 max
  sent="$(jq_py "$D/load.json" 'd["sent"]')"
  failed="$(jq_py "$D/load.json" 'd["failed"]')"
  p99="$(jq_py "$D/load.json" 'd["p99_ms"]')"
  max="$(jq_py "$D/load.json" 'd["max_ms"]')"
  figure "requests sent / failed (incl. 429):" "$sent / $failed  codes $(jq_py "$D/load.json" 'd["codes"]')"
  figure "latency p50 / p99 / max (ms):" "$(jq_py "$D/load.json" 'd["p50_ms"]') / $p99 / $max"
  figure "frozen: redis check / ready:" "$frozen_state / $frozen_ready"
  figure "killed: redis check / ready:" "$killed_state / $killed_ready"
  figure "fallback decisions:" "$([ "$limiter" = 1 ] && echo "start $fb0, after freeze $fb1, after kill $fb2" || echo 'n/a')"
  figure "Redis back → health pass (ms):" "$rec  (after $i checks)"
  check "zero failed requests while Redis is frozen or dead" is "$failed" 0
  check "latency bounded: max ≤ 500 ms (REDIS_TIMEOUT_MS=50)" num_le "$max" 500
  check "redis reported degraded (warn) while frozen" is "$frozen_state" warn
  check "redis reported degraded (warn) while dead" is "$killed_state" warn
  check "still ready while Redis is frozen (REDIS_REQUIRED=false)" is "${frozen_ready%% *}" 200
  check "still ready while Redis is dead" is "${killed_ready%% *}" 200
  if [ "$limiter" = 1 ]; then
    check "fallback limiter used while frozen" test "$fb1" -gt "$fb0"
    check "fallback limiter used while dead" test "$fb2" -gt "$fb1"
  else
    skip_part "fallback limiter assertions: rate limiting not in this build (no rate_limit_decisions_total in /metrics)"
  fi
  check "recovers: redis check passes again after restart" test "$rec" != never
  [ "$D_FAIL" -eq 0 ]
}

# ---------------------------------------------------------------- drill: worker SIGKILL
drill_worker() {
  drill_pg
  app_vars
  local n=300 orphaned kill_at rec="never" stats
  psql_q "$DB_URL" "INSERT INTO jobs (id, tenant, kind, payload, max_attempts)
    SELECT gen_random_uuid(), 'chaos', 'sleep', '{\"ms\": 400}'::jsonb, 5 FROM generate_series(1, $n)" >/dev/null
  local wvars=("${APP_VARS[@]}" WORKER_CONCURRENCY=40 JOB_CLAIM_BATCH=40 JOB_LEASE_SECS=3 JOB_MAINTENANCE_INTERVAL_SECS=1)
  ballast_start W1 "" worker "${wvars[@]}"
  ballast_start W2 "" worker "${wvars[@]}"
  # Kill W1 once it holds a full batch (not after a fixed pause: by then the 300 jobs may be
  # nearly done and W1 empty-handed, and the drill would prove nothing).
  local deadline=$(( $(now_ms) + 20000 ))
  until [ "$(psql_q "$DB_URL" "SELECT count(*) FROM jobs WHERE status = 'running' AND locked_by LIKE '%:$W1_PID:%'")" -ge 40 ]; do
    [ "$(now_ms)" -lt "$deadline" ] || break
    sleep 0.02
  done
  kill -KILL "$W1_PID"
  kill_at="$(now_ms)"
  wait "$W1_PID" 2>/dev/null || true
  # Frozen now: what W1 held when it died (worker ids are host:pid:random).
  orphaned="$(psql_q "$DB_URL" "SELECT count(*) FROM jobs WHERE status = 'running' AND locked_by LIKE '%:$W1_PID:%'")"
  if wait_jobs_final 90; then rec="$(since_ms "$kill_at")"; fi
  stats="$(psql_q "$DB_URL" "SELECT json_build_object('jobs', count(*), 'succeeded', count(*) FILTER (WHERE status='succeeded'),
      'failed', count(*) FILTER (WHERE status='failed'), 'stuck', count(*) FILTER (WHERE status IN ('queued','running')),
      'rerun_jobs', count(*) FILTER (WHERE attempts > 1), 'executions', COALESCE(sum(attempts), 0),
      'max_attempts_seen', max(attempts)) FROM jobs")"
  figure "jobs (sleep 400 ms):" "$n, 2 workers × 40, lease 3 s"
  figure "held by the killed worker:" "$orphaned"
  figure "outcome:" "$stats"
  figure "SIGKILL → queue drained (ms):" "$rec"
  check "the kill landed mid-batch (the worker held jobs)" test "$orphaned" -gt 0
  check "no job lost or stuck: all $n succeeded" python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s["succeeded"] == s["jobs"] == int(sys.argv[2]) and s["stuck"] == 0 else 1)' "$stats" "$n"
  check "re-runs are exactly the killed worker's jobs (at-least-once, counted)" python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s["rerun_jobs"] == int(sys.argv[2]) and s["max_attempts_seen"] <= 2 else 1)' "$stats" "$orphaned"
  check "drained within lease + a few seconds" test "$rec" != never
  [ "$D_FAIL" -eq 0 ]
}

# ---------------------------------------------------------------- drill: disk full
drill_diskfull() {
  [ "$(id -u)" -eq 0 ] || { echo "    skip: mounting a tmpfs needs root"; return 3; }
  drill_pg
  app_vars
  mkdir -p "$D/storage"
  if ! mount -t tmpfs -o size=8m tmpfs "$D/storage" 2>"$D/mount.err"; then
    echo "    skip: cannot mount a tmpfs here ($(cat "$D/mount.err"))"; return 3
  fi
  MOUNTED="$D/storage"
  ballast_start APP "" serve "${APP_VARS[@]}" WORKER_CONCURRENCY=0
  local url="http://$APP_HTTP" token code
  wait_for_http "$url/health/ready" 20 || return 1
  token="$(mint_token chaos-disk)"
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $token" "$url/api/v1/files" || true)"
  if [ "$code" = 404 ] || [ "$code" = 405 ]; then
    echo "    skip: no files API in this build (GET /api/v1/files answered $code)"; return 3
  fi
  local rows0 files0 ctype body status t0 ms rows1 files1 after
  rows0="$(psql_q "$DB_URL" "SELECT count(*) FROM files")"
  files0="$(find "$D/storage" -type f | wc -l)"
  head -c $((16 * 1024 * 1024)) /dev/urandom >"$D/big.bin"
  t0="$(now_ms)"
  read -r status ctype < <(curl -s -o "$D/body.json" -w '%{http_code} %{content_type}\n' --max-time 60 \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/octet-stream' \
    --data-binary @"$D/big.bin" "$url/api/v1/files?name=big.bin" || echo "000 none")
  ms="$(since_ms "$t0")"
  body="$(head -c 300 "$D/body.json" 2>/dev/null || true)"
  rows1="$(psql_q "$DB_URL" "SELECT count(*) FROM files")"
  files1="$(find "$D/storage" -type f | wc -l)"
  after="$(printf 'small' | curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $token" \
    -H 'Content-Type: text/plain' --data-binary @- "$url/api/v1/files?name=small.txt" || true)"
  figure "16 MiB upload into 8 MiB:" "$status $ctype in ${ms} ms: $body"
  figure "files rows before / after:" "$rows0 / $rows1"
  figure "files on disk before / after:" "$files0 / $files1  ($(df -k "$D/storage" | awk 'NR==2 {print $3 " KiB used"}'))"
  figure "small upload afterwards:" "$after"
  check "answered 507 or 500" python3 -c 'import sys; sys.exit(0 if sys.argv[1] in ("507", "500") else 1)' "$status"
  check "as a problem+json" test "${ctype%%;*}" = application/problem+json
  check "no row left behind" is "$rows1" "$rows0"
  check "no partial file left behind" is "$files1" "$files0"
  check "the service keeps working (a small upload afterwards is accepted)" python3 -c 'import sys; sys.exit(0 if sys.argv[1] in ("200", "201") else 1)' "$after"
  [ "$D_FAIL" -eq 0 ]
}

# ---------------------------------------------------------------- run
# drill_cleanup: the EXIT trap of each drill's subshell.
drill_cleanup() {
  run_cleanup
  if [ -n "${MOUNTED:-}" ]; then umount "$MOUNTED" 2>/dev/null || umount -l "$MOUNTED" 2>/dev/null || true; fi
}

PASSED=0 FAILED=0 SKIPPED=0
for name in "${DRILLS[@]}"; do
  case " ${ALL_DRILLS[*]} " in *" $name "*) ;; *) die "unknown drill: $name (known: ${ALL_DRILLS[*]})" ;; esac
  echo "drill $name"
  started="$(now_ms)"
  set +e
  (
    set -e
    D="$RUN_DIR/$name"
    mkdir -p "$D"
    chmod 755 "$D"
    MOUNTED=""
    RUN_PIDS=() RUN_PG_DIRS=()
    trap drill_cleanup EXIT
    trap 'exit 143' TERM INT
    "drill_$name"
  ) &
  DRILL_PID=$!
  wait "$DRILL_PID"
  rc=$?
  DRILL_PID=""
  set -e
  secs="$(awk "BEGIN{printf \"%.1f\", ($(now_ms) - $started)/1000}")"
  case "$rc" in
    0) PASSED=$((PASSED + 1)); echo "PASS $name (${secs}s)" ;;
    3) SKIPPED=$((SKIPPED + 1)); echo "SKIP $name (${secs}s)" ;;
    *) FAILED=$((FAILED + 1)); echo "FAIL $name (${secs}s, rc $rc)" ;;
  esac
done
echo "chaos: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
