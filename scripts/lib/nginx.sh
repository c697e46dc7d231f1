#!/usr/bin/env bash
# The repository's nginx/ templates rendered as the official image renders them (envsubst
# restricted to our variables), for the scripts that run Debian's nginx on them.
# Source after common.sh.
# shellcheck shell=bash

NGINX_DIR="$BALLAST_ROOT/nginx"
# The variables the templates may use; everything else ($host, $remote_addr...) is nginx's.
TEMPLATE_VARS=(BALLAST_UPSTREAM NGINX_SERVER_NAME NGINX_MAX_BODY_SIZE NGINX_HTTP_PORT
  NGINX_HTTPS_PORT NGINX_STATUS_PORT NGINX_CERT_DIR NGINX_ACME_ROOT NGINX_TEMP_DIR NGINX_RESOLVER)

# nginx_render DIR: a complete nginx prefix in DIR — nginx.conf, mime.types, the rendered
# templates in DIR/conf.d, and the certs/, acme/ and temp/ directories they point at.
# The caller exports the template variables first.
nginx_render() {
  local dir="$1" tpl rel out list="" v
  mkdir -p "$dir/conf.d" "$dir/certs" "$dir/acme/.well-known/acme-challenge" "$dir/temp"
  cp "$NGINX_DIR/nginx.conf" "$dir/nginx.conf"
  cp /etc/nginx/mime.types "$dir/mime.types"
  for v in "${TEMPLATE_VARS[@]}"; do list+="\${$v} "; done
  while IFS= read -r tpl; do
    rel="${tpl#"$NGINX_DIR/templates/"}"
    out="$dir/conf.d/${rel%.template}"
    mkdir -p "$(dirname "$out")"
    envsubst "$list" <"$tpl" >"$out"
  done < <(find "$NGINX_DIR/templates" -type f -name '*.template' | sort)
}
