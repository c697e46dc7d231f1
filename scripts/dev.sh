#!/usr/bin/env bash
# Runs ballast locally against local Postgres/Redis (found, or started privately and stopped
# on exit), with development settings. Then: curl localhost:8080/health/ready
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh
# shellcheck source=scripts/lib/deps.sh
source scripts/lib/deps.sh
trap deps_cleanup EXIT

ensure_postgres
ensure_redis
admin="$DATABASE_URL"
db="${BALLAST_DEV_DB:-ballast_dev}"
if ! psql "$admin" -qAtc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
  psql "$admin" -qc "CREATE DATABASE \"$db\""
  log "created database $db"
fi
mkdir -p .dev/storage

export APP_ENV=development
export DATABASE_URL; DATABASE_URL="$(pg_url_for "$db")"
export REDIS_URL
export JWT_SECRET="${JWT_SECRET:-dev-only-secret-0123456789abcdef-0123456789}"
export STORAGE_URL="file://$PWD/.dev/storage"
export HTTP_ADDR="${HTTP_ADDR:-127.0.0.1:8080}"
export MANAGEMENT_ADDR="${MANAGEMENT_ADDR:-127.0.0.1:8081}"
log "token for local calls: cargo run -q -- token --sub dev"
cargo run --locked -- "${@:-serve}"
