#!/usr/bin/env bash
# Live test of the monitoring assets: a real Prometheus, configured from the repository's
# monitoring/prometheus.yml (rendered to 127.0.0.1 ports, 1 s scrape/evaluation) and its rule
# files, scrapes a running `ballast serve` and `ballast worker` while curl drives mixed traffic
# (2xx, 401, 404, 422, 429, jobs). Then every dashboard panel expression, every dashboard
# variable query and every recording rule (expression and recorded series) must return data,
# every alert expression must evaluate without error, every rule loaded by Prometheus must
# report health "ok", and every app/process metric of monitoring/metrics.txt must be exported.
# The exporters the dashboards and alerts read (pg_*, redis_*, nginx_*, node_*) run too, from
# Debian's packages: postgres-exporter and redis-exporter on the same Postgres and Redis
# (read-only), nginx-exporter on the stub_status listener of an nginx running the repository's
# nginx/ templates in front of the API, node-exporter on this host.
#
# Env: BALLAST_BIN (default target/debug/ballast), DATABASE_URL (admin URL; a private database
# is created and dropped; postgres-exporter reads the server's statistics through it),
# REDIS_URL (a private key prefix is used).
# Ends with "monitoring-live: N passed, M failed, K skipped"; exit 1 when anything failed.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib" && pwd)/common.sh"
# shellcheck source=scripts/lib/nginx.sh
source "$BALLAST_ROOT/scripts/lib/nginx.sh"
cd "$BALLAST_ROOT"
export PYTHONDONTWRITEBYTECODE=1

ensure_apt prometheus:prometheus curl:curl postgresql-client:psql python3:python3 \
  prometheus-postgres-exporter prometheus-redis-exporter prometheus-nginx-exporter \
  prometheus-node-exporter nginx openssl gettext-base:envsubst
if ! python3 -c 'import yaml' 2>/dev/null; then
  ensure_pip pyyaml:__pyyaml_probe__ 2>/dev/null || true
  python3 -c 'import yaml' 2>/dev/null || die "python3 cannot import yaml (pip install pyyaml)"
fi

BIN="$(ballast_bin)"
[ -x "$BIN" ] || die "ballast binary not found at $BIN (build it or set BALLAST_BIN)"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
PA="monitoring/tools/promassets.py"
START=$SECONDS
BUDGET="${MONITORING_LIVE_BUDGET_SECS:-300}"

TMP="$(mktemp -d)"
DB="ballast_monlive_$$_$RANDOM"
PIDS=()

cleanup() {
  local rc=$? pid i
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; [ "$i" -eq 50 ] && kill -KILL "$pid" 2>/dev/null; done
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ] && [ -d "$TMP" ]; then
    for f in api worker prometheus nginx-error postgres-exporter redis-exporter nginx-exporter node-exporter; do
      [ -s "$TMP/$f.log" ] && { log "last lines of $f.log:"; tail -n 15 "$TMP/$f.log" >&2; }
    done
  fi
  drop_db "$DB"
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

budget_left() { echo $(( BUDGET - (SECONDS - START) )); }

# ------------------------------------------------------------------ app
create_db "$DB"
P_API="$(free_port)"; M_API="$(free_port)"; P_WRK="$(free_port)"; M_WRK="$(free_port)"
P_PROM="$(free_port)"; P_DEAD="$(free_port)"
P_PGX="$(free_port)"; P_RDX="$(free_port)"; P_NGX="$(free_port)"; P_NDX="$(free_port)"
P_NG_HTTP="$(free_port)"; P_NG_HTTPS="$(free_port)"; P_NG_STATUS="$(free_port)"
mkdir -p "$TMP/storage"

app_env=(
  APP_ENV=test
  "DATABASE_URL=$(pg_url_for "$DB")"
  "REDIS_URL=$REDIS_URL"
  "REDIS_KEY_PREFIX=e2e-monlive-$$:"
  JWT_SECRET=0123456789abcdef0123456789abcdef-e2e
  "STORAGE_URL=file://$TMP/storage"
  SHUTDOWN_READINESS_DELAY_SECS=0
  LOG_FORMAT=json
  LOG_LEVEL=info
  WORKER_CONCURRENCY=2
  JOB_POLL_INTERVAL_MS=200
)

env "${app_env[@]}" HTTP_ADDR="127.0.0.1:$P_API" MANAGEMENT_ADDR="127.0.0.1:$M_API" \
  "$BIN" serve >"$TMP/api.log" 2>&1 &
PIDS+=("$!")
wait_for_http "http://127.0.0.1:$P_API/health/ready" 60 || die "ballast serve did not become ready"
# the dedicated worker process (management listener only)
env "${app_env[@]}" HTTP_ADDR="127.0.0.1:$P_WRK" MANAGEMENT_ADDR="127.0.0.1:$M_WRK" \
  "$BIN" worker >"$TMP/worker.log" 2>&1 &
PIDS+=("$!")
wait_for_http "http://127.0.0.1:$M_WRK/health/live" 60 || die "ballast worker did not come up"
log "ballast serve on :$P_API (management :$M_API), worker management :$M_WRK"

# ------------------------------------------------------------------ nginx + exporters
# nginx from the repository's templates (as scripts/e2e/nginx.sh runs it), in front of the API;
# only its internal stub_status listener matters here (nginx-exporter reads it).
NG="$TMP/nginx"
chmod 755 "$TMP"
(
  export BALLAST_UPSTREAM="127.0.0.1:$P_API" NGINX_SERVER_NAME=_ NGINX_MAX_BODY_SIZE=100m
  export NGINX_HTTP_PORT="127.0.0.1:$P_NG_HTTP" NGINX_HTTPS_PORT="127.0.0.1:$P_NG_HTTPS"
  export NGINX_STATUS_PORT="127.0.0.1:$P_NG_STATUS" NGINX_CERT_DIR="$NG/certs" NGINX_ACME_ROOT="$NG/acme"
  export NGINX_TEMP_DIR="$NG/temp" NGINX_RESOLVER=127.0.0.1
  nginx_render "$NG"
)
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$NG/certs/server.key" -out "$NG/certs/server.crt" >/dev/null 2>&1
ng_globals="pid $NG/nginx.pid; daemon off;"
if [ "$(id -u)" -eq 0 ]; then ng_globals+=" user nobody $(id -gn nobody);"; fi
ng_args=(-p "$NG/" -c "$NG/nginx.conf" -g "$ng_globals")
if nginx -h 2>&1 | grep -q -- '-e filename'; then ng_args+=(-e "$TMP/nginx-error.log"); fi
nginx "${ng_args[@]}" >/dev/null 2>>"$TMP/nginx-error.log" &
PIDS+=("$!")
wait_for_http "http://127.0.0.1:$P_NG_STATUS/stub_status" 30 || die "nginx (stub_status) did not come up"

# postgres-exporter: lib/pq defaults to sslmode=require, the local server speaks plain TCP.
PG_DSN="$(python3 - "$(pg_admin_url)" <<'PY'
import sys
url = sys.argv[1]
print(url if "sslmode=" in url else url + ("&" if "?" in url else "?") + "sslmode=disable")
PY
)"
DATA_SOURCE_NAME="$PG_DSN" prometheus-postgres-exporter --web.listen-address="127.0.0.1:$P_PGX" \
  >"$TMP/postgres-exporter.log" 2>&1 &
PIDS+=("$!")
prometheus-redis-exporter --redis.addr "$REDIS_URL" --web.listen-address "127.0.0.1:$P_RDX" \
  >"$TMP/redis-exporter.log" 2>&1 &
PIDS+=("$!")
prometheus-nginx-exporter --nginx.scrape-uri "http://127.0.0.1:$P_NG_STATUS/stub_status" \
  --web.listen-address "127.0.0.1:$P_NGX" >"$TMP/nginx-exporter.log" 2>&1 &
PIDS+=("$!")
# node-exporter: only the collectors the assets read (filesystem, cpu, memory).
prometheus-node-exporter --web.listen-address="127.0.0.1:$P_NDX" --collector.disable-defaults \
  --collector.filesystem --collector.cpu --collector.meminfo >"$TMP/node-exporter.log" 2>&1 &
PIDS+=("$!")
for p in "$P_PGX" "$P_RDX" "$P_NGX" "$P_NDX"; do
  wait_for_http "http://127.0.0.1:$p/metrics" 30 || die "exporter on :$p did not come up"
done
log "nginx status :$P_NG_STATUS; exporters: postgres :$P_PGX, redis :$P_RDX, nginx :$P_NGX, node :$P_NDX"

# ------------------------------------------------------------------ prometheus
# Only alertmanager stays unrendered (unreachable): nothing here receives alerts.
python3 "$PA" render-config --out "$TMP/prometheus.yml" --interval 1s \
  --target "ballast-api=127.0.0.1:$M_API" --target "ballast-worker=127.0.0.1:$M_WRK" \
  --target "prometheus=127.0.0.1:$P_PROM" --target "postgres-exporter=127.0.0.1:$P_PGX" \
  --target "redis-exporter=127.0.0.1:$P_RDX" --target "nginx-exporter=127.0.0.1:$P_NGX" \
  --target "node-exporter=127.0.0.1:$P_NDX" --unreachable "127.0.0.1:$P_DEAD"
promtool check config "$TMP/prometheus.yml" >/dev/null || die "rendered prometheus.yml is invalid"
prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/tsdb" \
  --web.listen-address="127.0.0.1:$P_PROM" --log.level=warn >"$TMP/prometheus.log" 2>&1 &
PIDS+=("$!")
PROM="http://127.0.0.1:$P_PROM"
wait_for_http "$PROM/-/ready" 60 || die "prometheus did not become ready"
python3 "$PA" wait-for --url "$PROM" --timeout 30 \
  'count(up{job=~"ballast-api|ballast-worker"} == 1) == 2' || die "prometheus does not scrape both ballast processes"
python3 "$PA" wait-for --url "$PROM" --timeout 30 \
  'count(up{job=~"postgres-exporter|redis-exporter|nginx-exporter|node-exporter"} == 1) == 4' \
  || die "prometheus does not scrape the four exporters"

# ------------------------------------------------------------------ traffic
API="http://127.0.0.1:$P_API"
TOKEN="$(env "${app_env[@]}" "$BIN" token --sub alice --ttl 1h)" || die "ballast token failed"
AUTH=(-H "Authorization: Bearer $TOKEN")
JSON=(-H "Content-Type: application/json")
codes="$TMP/codes"
: >"$codes"
# req ARGS...: one curl request, its status code appended to $codes.
req() { curl -s -o /dev/null -w '%{http_code}\n' --max-time 10 "$@" >>"$codes" || echo 000 >>"$codes"; }
# many N URL [ARGS...]: N requests on one connection.
many() {
  local n="$1" url="$2" i args=(); shift 2
  for i in $(seq "$n"); do args+=(-o /dev/null "$url"); done
  curl -s --max-time 60 -w '%{http_code}\n' "$@" "${args[@]}" >>"$codes" || true
}

many 5 "$API/health"
many 3 "$API/health/live"
many 3 "$API/health/ready"
many 5 "$API/definitely-not-a-route"                                   # 404 unmatched
req "$API/openapi.json"
req -H "Authorization: Bearer not-a-jwt" "$API/api/v1/jobs"           # 401
for _ in $(seq 10); do
  req -X POST "${AUTH[@]}" "${JSON[@]}" -d '{"kind":"noop","payload":{}}' "$API/api/v1/jobs"
done
for i in 1 2 3; do
  req -X POST "${AUTH[@]}" "${JSON[@]}" -d '{"kind":"sleep","payload":{"ms":1500}}' "$API/api/v1/jobs"
done
req -X POST "${AUTH[@]}" "${JSON[@]}" -d '{"kind":"no.such.kind","payload":{}}' "$API/api/v1/jobs"  # 422
job_json="$(curl -s --max-time 10 -X POST "${AUTH[@]}" "${JSON[@]}" -d '{"kind":"noop","payload":{}}' "$API/api/v1/jobs" || true)"
job_id="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("id",""))' "$job_json" 2>/dev/null || true)"
if [ -n "$job_id" ]; then
  req "${AUTH[@]}" "$API/api/v1/jobs/$job_id"
fi
req "${AUTH[@]}" "$API/api/v1/jobs?limit=5"
printf 'hello monitoring\n' >"$TMP/upload.txt"
req -X POST "${AUTH[@]}" -H "Content-Type: text/plain" --data-binary "@$TMP/upload.txt" "$API/api/v1/files?name=hello.txt"
for m in "$M_API" "$M_WRK"; do
  req "http://127.0.0.1:$m/health/details"
  req "http://127.0.0.1:$m/info"
done
# anonymous requests share one per-IP budget (burst 20): most of these get 429
many 80 "$API/api/v1/jobs"
many 5 "https://127.0.0.1:$P_NG_HTTPS/health" -k                        # through nginx
log "traffic sent: $(sort "$codes" | uniq -c | awk '{printf "%s x%s  ", $2, $1}')"

PASS=0
FAIL=0
expect_code() { # expect_code PATTERN WHAT
  if grep -Eq "^($1)$" "$codes"; then PASS=$((PASS + 1)); echo "ok   traffic        $2"
  else FAIL=$((FAIL + 1)); echo "FAIL traffic        $2: no response matched $1"; fi
}
expect_code '200' "2xx responses"
expect_code '202' "jobs accepted (202)"
expect_code '401' "401 unauthorized"
expect_code '404' "404 unmatched route"
expect_code '422' "422 unknown job kind"
expect_code '429' "429 rate limited"

# ------------------------------------------------------------------ wait for the samples
# Synchronise on data, not on time: the counters of the traffic above must be in Prometheus
# and the recording rules must have been evaluated over them.
wait_data() {
  if python3 "$PA" wait-for --url "$PROM" --timeout "$1" "$2"; then PASS=$((PASS + 1)); else FAIL=$((FAIL + 1)); fi
}
wait_data 30 'sum(http_requests_total{job="ballast-api",status="429"}) > 0'
wait_data 30 'sum(jobs_enqueued_total) >= 10'
wait_data 30 'sum(jobs_finished_total{outcome="succeeded"}) >= 10'
wait_data 30 'count(instance_route:http_requests:rate5m{job="ballast-api"}) > 0'

wait_data 30 'sum(nginx_http_requests_total) > 0'
python3 "$PA" live-queries --exporters postgres,redis,nginx,node >"$TMP/queries.jsonl"
left="$(budget_left)"; [ "$left" -lt 20 ] && left=20
retry=$(( left > 60 ? 60 : left ))
rc=0
python3 "$PA" live-check --url "$PROM" --queries "$TMP/queries.jsonl" --timeout "$retry" \
  --metrics-url "http://127.0.0.1:$M_API/metrics" --metrics-url "http://127.0.0.1:$M_WRK/metrics" \
  --rules-health --summary "$TMP/summary" || rc=$?
read -r lp lf ls <"$TMP/summary"
PASS=$((PASS + lp)); FAIL=$((FAIL + lf))
if [ "$rc" -ne 0 ] && [ "$lf" -eq 0 ]; then FAIL=$((FAIL + 1)); echo "FAIL live-check crashed (rc=$rc)"; fi

echo "monitoring-live: $PASS passed, $FAIL failed, $ls skipped"
[ "$FAIL" -eq 0 ]
