#!/bin/sh
# ballast — wrapper around the official postgres entrypoint (docker-compose.prod.yml).
#
# Compose mounts file secrets with the host's owner and mode, but postgres refuses a key
# that is not owned by its own user (or root) with mode 0600. This copies the certificate
# and key from /run/secrets into the tmpfs /var/run/postgresql/tls with the ownership and
# modes postgres requires, then hands over to the image's entrypoint (which initialises the
# cluster on first start and drops to the postgres user with gosu).
#
# Runs as root inside the container; needs CHOWN (chown) and DAC_OVERRIDE (read the key
# whatever its host owner). Nothing is written outside tmpfs.
set -eu

cert="${POSTGRES_TLS_CERT_FILE:-/run/secrets/postgres_tls_cert}"
key="${POSTGRES_TLS_KEY_FILE:-/run/secrets/postgres_tls_key}"
dir=/var/run/postgresql/tls

for f in "$cert" "$key"; do
  if [ ! -s "$f" ]; then
    echo "postgres-tls: $f is missing or empty; run scripts/init.sh (or scripts/gen-certs.sh) on the host" >&2
    exit 1
  fi
done

mkdir -p "$dir"
cp "$cert" "$dir/server.crt"
cp "$key" "$dir/server.key"
chown -R postgres:postgres "$dir"
chmod 0755 "$dir"
chmod 0644 "$dir/server.crt"
chmod 0600 "$dir/server.key"
echo "postgres-tls: certificate installed in $dir" >&2

exec docker-entrypoint.sh "$@"
