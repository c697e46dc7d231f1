#!/usr/bin/env bash
# Generates a private CA and the TLS server certificates the compose deployment needs:
#
#   secrets/ca/ca.crt, ca.key            private CA (key 0600, never mounted anywhere)
#   secrets/tls/server.crt, server.key   nginx (public HTTPS), SANs: $DOMAIN + TLS_EXTRA_SANS
#   secrets/postgres/server.crt, .key    PostgreSQL (TLS on the internal network), SANs: postgres
#
# Idempotent: existing files are kept unless --force is given (then the CA and both
# certificates are generated again). Replace secrets/tls/* with a certificate from a public
# CA (Let's Encrypt) for real traffic; the Postgres certificate can stay self-signed
# (clients use sslmode=require, or verify-full with secrets/ca/ca.crt).
#
# usage: scripts/gen-certs.sh [--force] [--dir SECRETS_DIR] [--domain NAME] [--san SAN]...
#                             [--days N]
#   --dir      where to write (default: $SECRETS_DIR or <repo>/secrets)
#   --domain   public host name of the nginx certificate (default: $DOMAIN or localhost)
#   --san      extra subjectAltName for the nginx certificate, e.g. DNS:www.example.org or
#              IP:203.0.113.7 (repeatable; also TLS_EXTRA_SANS, comma-separated)
#   --pg-san   extra subjectAltName for the Postgres certificate (also PG_TLS_EXTRA_SANS)
#   --days     validity of the server certificates (default: $TLS_DAYS or 397)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BALLAST_ROOT="$ROOT"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"

force=0
dir="${SECRETS_DIR:-$ROOT/secrets}"
domain="${DOMAIN:-localhost}"
days="${TLS_DAYS:-397}"
ca_days="${TLS_CA_DAYS:-3650}"
web_sans=()
pg_sans=()
IFS=',' read -r -a _extra <<< "${TLS_EXTRA_SANS:-}"
for s in "${_extra[@]}"; do [ -n "${s// /}" ] && web_sans+=("${s// /}"); done
IFS=',' read -r -a _extra <<< "${PG_TLS_EXTRA_SANS:-}"
for s in "${_extra[@]}"; do [ -n "${s// /}" ] && pg_sans+=("${s// /}"); done

while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1 ;;
    --dir) dir="$2"; shift ;;
    --domain) domain="$2"; shift ;;
    --san) web_sans+=("$2"); shift ;;
    --pg-san) pg_sans+=("$2"); shift ;;
    --days) days="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

ensure_apt openssl
[[ "$days" =~ ^[0-9]+$ ]] || die "--days must be a number of days"
case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac

umask 077
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

say() { printf 'gen-certs: %s\n' "$*"; }

# san_list DEFAULT... EXTRA... → "DNS:a,DNS:b,IP:1.2.3.4" without duplicates. Bare names
# become DNS:, bare IPv4/IPv6 addresses become IP:.
san_list() {
  local out=() s seen=","
  for s in "$@"; do
    [ -n "$s" ] || continue
    case "$s" in
      DNS:*|IP:*|email:*|URI:*) ;;
      *[!0-9.]*) if [[ "$s" == *:* ]]; then s="IP:$s"; else s="DNS:$s"; fi ;;
      *) s="IP:$s" ;;
    esac
    case "$seen" in *",$s,"*) continue ;; esac
    seen="$seen$s,"
    out+=("$s")
  done
  local IFS=,
  printf '%s' "${out[*]}"
}

# expiring FILE → true when the certificate expires within 30 days.
expiring() { ! openssl x509 -checkend $((30 * 86400)) -noout -in "$1" >/dev/null 2>&1; }

mkdir -p "$dir/ca" "$dir/tls" "$dir/postgres"
chmod 0700 "$dir" "$dir/ca" "$dir/tls" "$dir/postgres"
dir="$(cd "$dir" && pwd)"

ca_crt="$dir/ca/ca.crt" ca_key="$dir/ca/ca.key"
ca_new=0
if [ "$force" -eq 1 ] || [ ! -s "$ca_crt" ] || [ ! -s "$ca_key" ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ca.key" 2>/dev/null
  openssl req -x509 -new -sha256 -days "$ca_days" -key "$tmp/ca.key" -out "$tmp/ca.crt" \
    -subj "/O=ballast/CN=ballast private CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null
  install -m 0600 "$tmp/ca.key" "$ca_key"
  install -m 0644 "$tmp/ca.crt" "$ca_crt"
  ca_new=1
  say "created $ca_crt (valid ${ca_days} days)"
else
  say "kept    $ca_crt"
fi

# issue NAME CN SANS CRT KEY: a server certificate signed by the CA.
issue() {
  local name="$1" cn="$2" sans="$3" crt="$4" key="$5"
  if [ "$force" -eq 0 ] && [ "$ca_new" -eq 0 ] && [ -s "$crt" ] && [ -s "$key" ]; then
    say "kept    $crt"
    if expiring "$crt"; then
      log "warning: $crt expires within 30 days; renew it with: scripts/gen-certs.sh --force"
    fi
    return 0
  fi
  openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/$name.key" 2>/dev/null
  openssl req -new -sha256 -key "$tmp/$name.key" -out "$tmp/$name.csr" -subj "/O=ballast/CN=$cn" 2>/dev/null
  cat > "$tmp/$name.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$sans
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
  openssl x509 -req -sha256 -days "$days" -in "$tmp/$name.csr" -CA "$ca_crt" -CAkey "$ca_key" \
    -CAcreateserial -CAserial "$tmp/ca.srl" -extfile "$tmp/$name.ext" -out "$tmp/$name.crt" 2>/dev/null
  openssl verify -CAfile "$ca_crt" "$tmp/$name.crt" >/dev/null || die "generated $name certificate does not verify"
  install -m 0600 "$tmp/$name.key" "$key"
  # The chain (leaf + CA) so clients that trust the CA can verify without extra files.
  cat "$tmp/$name.crt" "$ca_crt" > "$tmp/$name.chain"
  install -m 0644 "$tmp/$name.chain" "$crt"
  say "created $crt (CN=$cn, $sans, valid ${days} days)"
}

web_sans_s="$(san_list "$domain" localhost 127.0.0.1 "${web_sans[@]+"${web_sans[@]}"}")"
pg_sans_s="$(san_list postgres localhost 127.0.0.1 "${pg_sans[@]+"${pg_sans[@]}"}")"
issue nginx "$domain" "$web_sans_s" "$dir/tls/server.crt" "$dir/tls/server.key"
issue postgres postgres "$pg_sans_s" "$dir/postgres/server.crt" "$dir/postgres/server.key"
# Clients that want verify-full against Postgres, and browsers/tests that want to trust
# the self-signed nginx certificate, use this copy of the CA.
if [ ! -s "$dir/tls/ca.crt" ] || ! cmp -s "$ca_crt" "$dir/tls/ca.crt"; then
  install -m 0644 "$ca_crt" "$dir/tls/ca.crt"
fi
