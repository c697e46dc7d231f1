#!/usr/bin/env bash
# smoke.sh — post-deploy checks against a running ballast.
#
# Usage: smoke.sh BASE_URL [--mgmt MGMT_URL] [-k|--insecure] [--skip-api] [--job-timeout SECS]
#
#   BASE_URL        public URL (https://api.example.com, http://127.0.0.1:8080, or nginx in front)
#   --mgmt URL      management listener (http://127.0.0.1:8081): also checks its /health/ready
#                   and /metrics (never reachable through nginx; leave it out there)
#   -k, --insecure  accept self-signed TLS certificates (fresh compose install with gen-certs.sh)
#   --skip-api      skip the authenticated job round trip (only when no token can be had)
#   --job-timeout   seconds to wait for the noop job to succeed (default 30)
#
# Checks, one line each ("ok - …" / "FAIL - …"), then "smoke: N passed, M failed":
#   GET /health/live → 200;  GET /health/ready → 200 with "status":"pass";
#   X-Content-Type-Options: nosniff and X-Frame-Options on health and API responses;
#   GET /api/v1/jobs without a token → 401;
#   POST /api/v1/jobs {"kind":"noop","payload":{}} with a bearer token → 202 with an id,
#   GET /api/v1/jobs/{id} until "succeeded" (bounded; failed/cancelled ends it early).
# Token: SMOKE_TOKEN, else minted with `ballast token --sub smoke` by SMOKE_BALLAST_BIN
# (or BALLAST_BIN, or target/debug/ballast) when that binary and JWT_SECRET(_FILE) are available,
# else minted (HS256, 10 min) with python3 from JWT_SECRET, JWT_SECRET_FILE, SMOKE_JWT_SECRET_FILE
# or ./secrets/jwt_secret (what scripts/init.sh generates), honouring JWT_ISSUER/JWT_AUDIENCE.
#
# Exit codes: 0 every check passed, 1 at least one check failed, 2 usage, 3 curl missing.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="" MGMT="" INSECURE=0 SKIP_API=0 JOB_TIMEOUT="${SMOKE_JOB_TIMEOUT_SECS:-30}"
while [ $# -gt 0 ]; do
  case "$1" in
    --mgmt) [ $# -ge 2 ] || { usage >&2; exit 2; }; MGMT="$2"; shift ;;
    --mgmt=*) MGMT="${1#--mgmt=}" ;;
    -k|--insecure) INSECURE=1 ;;
    --skip-api) SKIP_API=1 ;;
    --job-timeout) [ $# -ge 2 ] || { usage >&2; exit 2; }; JOB_TIMEOUT="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "smoke: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) [ -z "$BASE" ] || { echo "smoke: one BASE_URL only" >&2; exit 2; }; BASE="$1" ;;
  esac
  shift
done
[ -n "$BASE" ] || { usage >&2; exit 2; }
[[ "$JOB_TIMEOUT" =~ ^[0-9]+$ ]] || { echo "smoke: --job-timeout needs seconds" >&2; exit 2; }
command -v curl >/dev/null 2>&1 || { echo "smoke: curl is required" >&2; exit 3; }
BASE="${BASE%/}"; MGMT="${MGMT%/}"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

passed=0 failed=0
ok()   { passed=$((passed + 1)); printf 'ok   - %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL - %s\n' "$*"; }

CURL=(curl -sS --max-time "${SMOKE_HTTP_TIMEOUT_SECS:-5}" --connect-timeout 3)
[ "$INSECURE" = 1 ] && CURL+=(-k)

# req NAME METHOD URL [curl args...]: response in $TMP/NAME.{h,b}; prints the status code (000 = no answer).
req() {
  local name="$1" method="$2" url="$3"; shift 3
  local code
  code="$("${CURL[@]}" -X "$method" -D "$TMP/$name.h" -o "$TMP/$name.b" -w '%{http_code}' "$@" "$url" 2>"$TMP/$name.err")" || true
  [ -f "$TMP/$name.b" ] || : >"$TMP/$name.b"
  [ -f "$TMP/$name.h" ] || : >"$TMP/$name.h"
  printf '%s' "${code:-000}" | tee "$TMP/$name.code"
}
why() { # short reason for a failed request
  local name="$1" code="$2"
  if [ "$code" = 000 ]; then printf 'no answer (%s)' "$(tr '\n' ' ' <"$TMP/$name.err" | cut -c1-160)"
  else printf 'HTTP %s: %s' "$code" "$(tr '\n' ' ' <"$TMP/$name.b" | cut -c1-200)"; fi
}
header() { grep -i "^$2:" "$TMP/$1.h" | tail -n1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//'; }

# json_field FILE FIELD: a top-level string field of a JSON document.
json_field() {
  if command -v jq >/dev/null 2>&1; then
    jq -r --arg f "$2" '.[$f] // empty | tostring' "$1" 2>/dev/null
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import json,sys
try:
    v = json.load(open(sys.argv[1])).get(sys.argv[2])
    print("" if v is None else v)
except Exception:
    pass' "$1" "$2"
  else
    grep -o "\"$2\"[[:space:]]*:[[:space:]]*\"[^\"]*\"" "$1" | head -n1 | sed 's/.*:[[:space:]]*"\(.*\)"/\1/'
  fi
}

# mint_hs256: a short-lived HS256 token from JWT_SECRET / JWT_SECRET_FILE (or SMOKE_JWT_SECRET_FILE)
# without a ballast binary. The secret travels through the environment only, never argv.
mint_hs256() {
  local secret="${JWT_SECRET:-}" file="${SMOKE_JWT_SECRET_FILE:-${JWT_SECRET_FILE:-}}"
  if [ -z "$secret" ] && [ -z "$file" ] && [ -r "$ROOT/secrets/jwt_secret" ]; then file="$ROOT/secrets/jwt_secret"; fi
  if [ -z "$secret" ] && [ -n "$file" ] && [ -r "$file" ]; then secret="$(tr -d '\r\n' <"$file")"; fi
  [ -n "$secret" ] && command -v python3 >/dev/null 2>&1 || return 0
  SMOKE_SECRET="$secret" python3 - <<'PY'
import base64, hashlib, hmac, json, os, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
claims = {"sub": "smoke", "iat": now, "nbf": now - 5, "exp": now + 600}
if os.environ.get("JWT_ISSUER"): claims["iss"] = os.environ["JWT_ISSUER"]
if os.environ.get("JWT_AUDIENCE"): claims["aud"] = os.environ["JWT_AUDIENCE"]
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
body = b64(json.dumps(claims, separators=(",", ":")).encode())
sig = hmac.new(os.environ["SMOKE_SECRET"].strip().encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
print(f"{head}.{body}.{b64(sig)}")
PY
}

check_security_headers() { # NAME WHAT
  local nosniff frame
  nosniff="$(header "$1" X-Content-Type-Options)"; frame="$(header "$1" X-Frame-Options)"
  if [ "${nosniff,,}" = nosniff ] && [ -n "$frame" ]; then
    ok "security headers on $2 (X-Content-Type-Options: $nosniff, X-Frame-Options: $frame)"
  else
    fail "security headers on $2: X-Content-Type-Options='${nosniff}' X-Frame-Options='${frame}' (want nosniff and DENY/SAMEORIGIN)"
  fi
}

echo "smoke: $BASE${MGMT:+ (management $MGMT)}"

# 1. liveness
code="$(req live GET "$BASE/health/live")"
if [ "$code" = 200 ]; then ok "GET /health/live → 200"; else fail "GET /health/live: $(why live "$code")"; fi

# 2. readiness
code="$(req ready GET "$BASE/health/ready")"
status="$(json_field "$TMP/ready.b" status)"
if [ "$code" = 200 ] && [ "$status" = pass ]; then ok "GET /health/ready → 200, status pass"
else fail "GET /health/ready: want 200 with status pass, got $(why ready "$code")"; fi
if [ "$code" != 000 ]; then check_security_headers ready "/health/ready"; else fail "security headers: no response to inspect"; fi

# 3. management listener
if [ -n "$MGMT" ]; then
  code="$(req mready GET "$MGMT/health/ready")"
  if [ "$code" = 200 ]; then ok "management GET /health/ready → 200"; else fail "management /health/ready: $(why mready "$code")"; fi
  code="$(req metrics GET "$MGMT/metrics")"
  if [ "$code" = 200 ] && grep -q '^# TYPE ' "$TMP/metrics.b"; then ok "management GET /metrics → 200, Prometheus text ($(grep -c '^# TYPE ' "$TMP/metrics.b") series families)"
  else fail "management /metrics: $(why metrics "$code")"; fi
fi

# 4. the API
if [ "$(cat "$TMP/live.code" 2>/dev/null)" = 000 ] && [ "$(cat "$TMP/ready.code" 2>/dev/null)" = 000 ]; then
  fail "API checks not attempted: $BASE does not answer"
elif [ "$SKIP_API" = 1 ]; then
  echo "skip - API round trip (--skip-api)"
else
  code="$(req anon GET "$BASE/api/v1/jobs")"
  if [ "$code" = 401 ]; then ok "GET /api/v1/jobs without a token → 401"; else fail "GET /api/v1/jobs without a token: want 401, got $(why anon "$code")"; fi

  token="${SMOKE_TOKEN:-}"
  if [ -z "$token" ]; then
    bin="${SMOKE_BALLAST_BIN:-${BALLAST_BIN:-$ROOT/target/debug/ballast}}"
    if [ -x "$bin" ] && [ -n "${JWT_SECRET:-}${JWT_SECRET_FILE:-}" ]; then
      token="$("$bin" token --sub smoke --ttl 10m 2>"$TMP/token.err" | tail -n1)" || token=""
      [ -n "$token" ] || echo "smoke: minting a token with $bin failed: $(tr '\n' ' ' <"$TMP/token.err" | cut -c1-200)" >&2
    fi
  fi
  [ -n "$token" ] || token="$(mint_hs256)"
  if [ -z "$token" ]; then
    fail "no API token: set SMOKE_TOKEN, or JWT_SECRET/JWT_SECRET_FILE (with a ballast binary in SMOKE_BALLAST_BIN, or python3) to mint one, or pass --skip-api"
  else
    auth=(-H "Authorization: Bearer $token")
    code="$(req enqueue POST "$BASE/api/v1/jobs" "${auth[@]}" -H 'Content-Type: application/json' \
      -H "X-Request-Id: smoke-$$-$(date +%s)" --data '{"kind":"noop","payload":{}}')"
    id="$(json_field "$TMP/enqueue.b" id)"
    if [ "$code" = 202 ] && [ -n "$id" ]; then
      ok "POST /api/v1/jobs (noop) → 202, id $id"
      check_security_headers enqueue "the API response"
      deadline=$(( $(date +%s) + JOB_TIMEOUT )); state="" polls=0
      while :; do
        polls=$((polls + 1))
        code="$(req job GET "$BASE/api/v1/jobs/$id" "${auth[@]}")"
        state="$(json_field "$TMP/job.b" status)"
        case "$state" in succeeded|failed|cancelled) break ;; esac
        [ "$(date +%s)" -lt "$deadline" ] || break
        sleep 0.2
      done
      if [ "$code" = 200 ] && [ "$state" = succeeded ]; then ok "GET /api/v1/jobs/$id → succeeded ($polls poll(s))"
      else fail "job $id did not succeed within ${JOB_TIMEOUT}s: last HTTP $code, status '${state:-?}' ($(tr '\n' ' ' <"$TMP/job.b" | cut -c1-200))"; fi
    else
      fail "POST /api/v1/jobs: want 202 with an id, got $(why enqueue "$code")"
    fi
  fi
fi

echo "smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
