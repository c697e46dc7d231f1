#!/usr/bin/env bash
# Static checks of nginx/: render the templates exactly as the official image does (envsubst,
# but limited to ballast's variables), with a throw-away self-signed certificate, and run
# the real `nginx -t` on the result; then assert the properties the design requires on the
# effective configuration (`nginx -T`). No network, no root needed (root installs nginx).
#
#   scripts/checks/nginx.sh        prints one line per check and "nginx-static: N passed, M failed"
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib" && pwd)/common.sh"

ensure_apt nginx openssl gettext-base:envsubst python3

# shellcheck source=scripts/lib/nginx.sh
source "$BALLAST_ROOT/scripts/lib/nginx.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ballast-nginx-check.XXXXXX")"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

PASSED=0
FAILED=0
ok()  { PASSED=$((PASSED + 1)); printf 'ok   %s\n' "$*"; }
bad() { FAILED=$((FAILED + 1)); printf 'FAIL %s\n' "$*"; }
check() { # check "description" command...
  local what="$1"; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}

selfsigned() { # selfsigned DIR: server.crt + server.key for localhost, valid 2 days
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$1/server.key" -out "$1/server.crt" >/dev/null 2>&1
}

# nginx_cmd DIR ARGS...: nginx confined to DIR (pid, error log at start-up, config).
nginx_cmd() {
  local dir="$1"; shift
  local early=()
  # -e (nginx >= 1.19.5) keeps the start-up error log away from /var/log/nginx.
  if nginx -h 2>&1 | grep -q -- '-e filename'; then early=(-e "$dir/error.log"); fi
  nginx -p "$dir/" -c "$dir/nginx.conf" "${early[@]}" -g "pid $dir/nginx.pid;" "$@"
}

# ---------------------------------------------------------------- 1. templates vs variables
check "nginx/nginx.conf and at least one template exist" \
  test -f "$NGINX_DIR/nginx.conf" -a -n "$(find "$NGINX_DIR/templates" -name '*.template' 2>/dev/null)"

unknown="$(find "$NGINX_DIR/templates" -type f -name '*.template' -exec grep -ohE '[$][{]?[A-Z][A-Z0-9_]*' {} + \
  | tr -cd 'A-Z0-9_\n' | sort -u | grep -vxF -f <(printf '%s\n' "${TEMPLATE_VARS[@]}") || true)"
check "templates use only ballast's variables (unknown: ${unknown:-none})" test -z "$unknown"
unused=""
for v in "${TEMPLATE_VARS[@]}"; do
  grep -rqF --include='*.template' "\${$v}" "$NGINX_DIR/templates" || unused+="$v "
done
check "every documented variable is used (unused: ${unused:-none})" test -z "$unused"
documented() { local v; for v in "${TEMPLATE_VARS[@]}"; do grep -q "\`$v\`" "$NGINX_DIR/README.md" || return 1; done; }
check "nginx/README.md documents every variable" documented
check "no private key or certificate committed under nginx/" \
  test -z "$(find "$NGINX_DIR" -type f \( -name '*.key' -o -name '*.pem' -o -name '*.crt' -o -name '*.p12' \))"

# ---------------------------------------------------------------- 2. render + nginx -t, three profiles
# prod:     one upstream name, a server name, a throw-away RSA certificate;
# list:     an upstream list ("a; server b") and server_name _, as scripts/e2e/nginx.sh uses;
# gencerts: like prod, with the ECDSA leaf + CA chain that scripts/gen-certs.sh produces.
# `nginx -t` binds the listeners for real, so every profile gets free 127.0.0.1 ports
# (never 80/443: a system nginx may hold them, and we stay on loopback).
declare -A PROFILE_UPSTREAM=([prod]="127.0.0.1:8080" [list]="127.0.0.1:18080; server 127.0.0.1:18081" [gencerts]="127.0.0.1:8080")
declare -A PROFILE_NAME=([prod]="api.example.com" [list]="_" [gencerts]="api.example.com")
profiles=(prod list)
[ -x "$BALLAST_ROOT/scripts/gen-certs.sh" ] && profiles+=(gencerts)
for profile in "${profiles[@]}"; do
  dir="$WORK/$profile"
  http="127.0.0.1:$(free_port)" https="127.0.0.1:$(free_port)" status="127.0.0.1:$(free_port)"
  export BALLAST_UPSTREAM="${PROFILE_UPSTREAM[$profile]}" NGINX_SERVER_NAME="${PROFILE_NAME[$profile]}"
  export NGINX_MAX_BODY_SIZE=100m NGINX_HTTP_PORT="$http" NGINX_HTTPS_PORT="$https" NGINX_STATUS_PORT="$status"
  export NGINX_CERT_DIR="$dir/certs" NGINX_ACME_ROOT="$dir/acme" NGINX_TEMP_DIR="$dir/temp" NGINX_RESOLVER=127.0.0.1
  nginx_render "$dir"
  if [ "$profile" = gencerts ]; then
    if "$BALLAST_ROOT/scripts/gen-certs.sh" --dir "$dir/secrets" --domain api.example.com >"$dir/gen-certs.out" 2>&1 \
      && cp "$dir/secrets/tls/server.crt" "$dir/secrets/tls/server.key" "$dir/certs/"; then
      ok "[$profile] scripts/gen-certs.sh wrote secrets/tls/server.crt + server.key"
    else
      bad "[$profile] scripts/gen-certs.sh failed:"; sed 's/^/     /' "$dir/gen-certs.out"; continue
    fi
  else
    selfsigned "$dir/certs"
  fi
  # The official image's 20-envsubst-on-templates.sh substitutes every variable defined in
  # the environment (or those matching NGINX_ENVSUBST_FILTER). Rendering that way must give
  # the same result: no nginx $variable may collide with an environment variable.
  image_list=""
  while IFS= read -r name; do image_list+="\${$name} "; done < <(awk 'END { for (n in ENVIRON) print n }' </dev/null)
  same=yes
  while IFS= read -r tpl; do
    rel="${tpl#"$NGINX_DIR/templates/"}"
    cmp -s <(envsubst "$image_list" <"$tpl") "$dir/conf.d/${rel%.template}" || same="no (${rel})"
  done < <(find "$NGINX_DIR/templates" -type f -name '*.template')
  expect_same() { [ "$same" = yes ]; }
  check "[$profile] image-style rendering (all environment variables) gives the same files: $same" expect_same
  leftover="$(grep -rhoE '\$\{?(BALLAST|NGINX)_[A-Z0-9_]*' "$dir/conf.d" | sort -u | tr '\n' ' ' || true)"
  check "[$profile] templates render completely (left: ${leftover:-none})" test -z "$leftover"

  if nginx_cmd "$dir" -t >"$dir/t.out" 2>&1; then
    ok "[$profile] nginx -t accepts the configuration"
  else
    bad "[$profile] nginx -t rejects the configuration:"; sed 's/^/     /' "$dir/t.out"
  fi
  # Known, harmless warnings: stapling without an issuer or OCSP URL (self-signed or
  # private-CA certificates: "issuer certificate not found", "no OCSP responder URL"), the
  # "listen ... http2" spelling on nginx >= 1.25 (kept so that 1.18-1.24 still parse it).
  warnings="$(grep -E '\[(warn|alert|crit|emerg)\]' "$dir/t.out" \
    | grep -vE '"ssl_stapling" ignored|"listen \.\.\. http2" directive is deprecated' || true)"
  if [ -z "$warnings" ]; then ok "[$profile] no unexpected warnings"; else
    bad "[$profile] unexpected warnings:"; printf '     %s\n' "$warnings"; fi
  nginx_cmd "$dir" -T >"$dir/effective.conf" 2>/dev/null || true
done

# ---------------------------------------------------------------- 3. properties of the effective config
# Directives only (comments are not configuration): the nginx -T dump minus comments.
conf="$WORK/prod/directives.conf"
sed -e 's/[[:space:]]#.*$//' -e '/^[[:space:]]*#/d' "$WORK/prod/effective.conf" >"$conf"
has()   { grep -qE -- "$1" "$conf"; }
hasnt() { ! grep -qE -- "$1" "$conf"; }
all_of() { local re; for re in "$@"; do has "$re" || return 1; done; }
# Patterns are single-quoted on purpose: "\$host" means nginx's literal $host.
# shellcheck disable=SC2016
{
check "TLS: only TLSv1.2 and TLSv1.3"           has '^\s*ssl_protocols\s+TLSv1\.2 TLSv1\.3;'
check "TLS: no legacy protocol enabled"         hasnt 'ssl_protocols[^;]*(SSLv|TLSv1(\.[01])?[ ;])'
check "TLS: ECDHE + AEAD ciphers only"          all_of '^\s*ssl_ciphers\s+ECDHE-'
check "TLS: no CBC/RC4/3DES/static-RSA cipher"  hasnt '^\s*ssl_ciphers.*(CBC|-SHA:|-SHA;|RC4|3DES|[: ]AES(128|256)-)'
check "TLS: session cache + timeout set"        all_of '^\s*ssl_session_cache\s+shared:' '^\s*ssl_session_timeout\s'
check "TLS: session tickets off"                has '^\s*ssl_session_tickets\s+off;'
check "TLS: OCSP stapling on, with a resolver"  all_of '^\s*ssl_stapling\s+on;' '^\s*resolver\s+\S'
check "HTTP: redirect 301 to https"             has 'return 301 https://\$host\$request_uri;'
check "HTTP: ACME webroot exception"            has 'location \^~ /\.well-known/acme-challenge/'
check "headers: HSTS, nosniff, DENY, no-referrer (always)" all_of \
  'add_header +Strict-Transport-Security +"max-age=[0-9]+.*" always;' \
  'add_header +X-Content-Type-Options +"nosniff" always;' \
  'add_header +X-Frame-Options +"DENY" always;' \
  'add_header +Referrer-Policy +"no-referrer" always;'
check "headers: the app's copies hidden (no duplicates)" all_of \
  'proxy_hide_header +X-Request-Id;' 'proxy_hide_header +Strict-Transport-Security;' \
  'proxy_hide_header +X-Content-Type-Options;' 'proxy_hide_header +X-Frame-Options;' \
  'proxy_hide_header +Referrer-Policy;'
check "gzip on"                                 has '^\s*gzip\s+on;'
check "upstream: keepalive pool"                has '^\s*keepalive\s+[0-9]+;'
check "upstream: HTTP/1.1 with Connection \"\"" all_of 'proxy_http_version +1\.1;' 'proxy_set_header +Connection +"";'
check "request id: client's kept, else \$request_id" all_of 'map \$http_x_request_id ' 'default +\$request_id;'
check "request id: sent upstream and returned"  all_of 'proxy_set_header +X-Request-Id +\$' 'add_header +X-Request-Id +\$'
check "forwarding: X-Forwarded-For/Proto/Host + X-Real-IP set" all_of \
  'proxy_set_header +X-Forwarded-For +\$' 'proxy_set_header +X-Forwarded-Proto +\$scheme;' \
  'proxy_set_header +X-Forwarded-Host +\$' 'proxy_set_header +X-Real-IP +\$remote_addr;'
check "forwarding: a client's X-Forwarded-For is replaced, not appended to" \
  hasnt 'X-Forwarded-For +\$proxy_add_x_forwarded_for'
check "limit_req: api and uploads zones, status 429" all_of \
  'limit_req_zone .*zone=ballast_api:' 'limit_req_zone .*zone=ballast_uploads:' '^\s*limit_req_status +429;'
check "client_max_body_size = NGINX_MAX_BODY_SIZE (100m)" has '^\s*client_max_body_size +100m;'
check "retries: error timeout http_502 http_503" has '^\s*proxy_next_upstream +error timeout http_502 http_503;'
check "retries: never non_idempotent"           hasnt '^\s*proxy_next_upstream [^;]*non_idempotent'
check "log: JSON (escape=json) with request id, upstream addr/time, request time, status" all_of \
  'log_format ballast_json escape=json' '"request_id":' '"upstream_addr":' \
  '"upstream_response_time":' '"request_time":' '"status":'
}

# Block-structure checks need a parser, not grep: a tiny one for nginx's brace syntax.
python3 - "$conf" >"$WORK/struct.out" <<'PY' || true
import re, sys
text = open(sys.argv[1]).read()
# quoted strings, comments (incl. the "# configuration file ..." banners of nginx -T), words
tokens = re.findall(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|#[^\n]*|[{};]|[^\s{};'\"#]+", text)
tokens = [t for t in tokens if not t.startswith("#")]
# found: (enclosing blocks outermost first, each "name#n" with n unique, statement words)
stack, stmt, found, n = [], [], [], 0
for t in tokens:
    if t == "{":
        n += 1; stack.append(" ".join(stmt) + f"#{n}"); stmt = []
    elif t == "}":
        stack.pop(); stmt = []
    elif t == ";":
        if stmt: found.append((list(stack), stmt))
        stmt = []
    else:
        stmt.append(t)
def name(block):
    return block.rsplit("#", 1)[0]
res = {}
# 1. no add_header inside a location (it would silently drop every server-level header there)
res["no_location_add_header"] = not [1 for st, s in found if s[0] == "add_header" and any(name(b).startswith("location") and not name(b).startswith("location @") for b in st)]
# 2. proxy_pass only to the upstream group (never a host:port such as the management port)
pp = [s[1] for st, s in found if s[0] == "proxy_pass"]
res["proxy_pass_only_upstream"] = bool(pp) and all(p == "http://ballast_api" for p in pp)
# 3. uploads location streams
up = [s for st, s in found if st and name(st[-1]) == "location = /api/v1/files"]
res["upload_unbuffered"] = ["proxy_request_buffering", "off"] in up
res["upload_timeouts"] = any(s[0] == "client_body_timeout" for s in up) and any(s[0] == "proxy_send_timeout" for s in up)
res["upload_limit"] = any(s[0] == "limit_req" and "zone=ballast_uploads" in s for s in up)
# 4. management paths answered by nginx itself
blk = [name(st[-1]) for st, s in found if st and s == ["return", "404"]]
res["management_paths_404"] = any("metrics" in b and "health/details" in b and "info" in b for b in blk)
# 5. stub_status only in a server that denies all and is not a public listener
ss = [st for st, s in found if s == ["stub_status"]]
ok = bool(ss)
for st in ss:
    server = st[:[name(b) for b in st].index("server") + 1]
    stmts = [s for st2, s in found if st2[:len(server)] == server and len(st2) == len(server)]
    ok &= ["deny", "all"] in stmts and ["allow", "127.0.0.0/8"] in stmts
    ok &= not any(s[0] == "listen" and "ssl" in s for s in stmts)
res["stub_status_internal"] = ok
for k, v in res.items():
    print(f"{k} {'yes' if v else 'no'}")
PY
struct() { grep -qx "$1 yes" "$WORK/struct.out"; }
check "structure: no add_header inside a location (inheritance trap)" struct no_location_add_header
check "structure: proxy_pass only to the ballast_api upstream (management port never proxied)" struct proxy_pass_only_upstream
check "structure: POST /api/v1/files unbuffered (proxy_request_buffering off)" struct upload_unbuffered
check "structure: upload timeouts sized in the upload location" struct upload_timeouts
check "structure: upload location has the uploads limit_req zone" struct upload_limit
check "structure: /metrics, /info, /health/details answered 404 by nginx" struct management_paths_404
check "structure: stub_status on an internal listener (allow private, deny all)" struct stub_status_internal

printf 'nginx-static: %d passed, %d failed\n' "$PASSED" "$FAILED"
[ "$FAILED" -eq 0 ]
