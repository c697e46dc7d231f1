#!/bin/sh
# ballast — starts redis-server with the password from the compose secret
# (docker-compose.prod.yml). The password never appears on a command line (ps) or in an
# image layer: it is written to a private include file on tmpfs and loaded from there.
set -eu

secret="${REDIS_PASSWORD_FILE:-/run/secrets/redis_password}"
if [ ! -s "$secret" ]; then
  echo "redis-start: $secret is missing or empty; run scripts/init.sh on the host" >&2
  exit 1
fi

umask 077
auth="${REDIS_AUTH_CONF:-/tmp/redis-auth.conf}"
password="$(tr -d '\r\n' < "$secret")"
case "$password" in
  *'"'*|*\\*|*' '*) echo "redis-start: the password may not contain quotes, backslashes or spaces" >&2; exit 1 ;;
esac
printf 'requirepass "%s"\n' "$password" > "$auth"
unset password

# Extra arguments are appended (tests run it natively on a loopback port).
exec redis-server "${REDIS_CONF:-/usr/local/etc/redis/redis.conf}" \
  --include "$auth" \
  --maxmemory "${REDIS_MAXMEMORY:-256mb}" \
  --maxmemory-policy "${REDIS_MAXMEMORY_POLICY:-allkeys-lru}" \
  "$@"
