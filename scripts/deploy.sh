#!/usr/bin/env bash
# deploy.sh — health-gated rolling deploy of ballast on one host, with automatic rollback.
#
# Usage: deploy.sh [--skip-backup] [--no-smoke] TAG     deploy image TAG
#        deploy.sh --rollback [TAG]                      what rollback.sh runs (default: previous tag)
#        deploy.sh --status                              tags and running instances
#
# Steps of a deploy (the same logic for both runtimes, see below):
#   1. lock ($DEPLOY_STATE_DIR/deploy.lock), read current_tag (none recorded: the running api's tag)
#   2. pull (or build) image TAG                                  → exit 4 on failure, nothing changed
#   3. pre-deploy backup (backup.sh; in compose inside the backup service) → exit 5, nothing changed
#   4. configuration check with the NEW image (`ballast check-config`)     → exit 6, nothing changed
#   5. rolling replace, api then worker, one instance at a time: start one more instance with TAG,
#      wait until its /health/ready answers 200 (DEPLOY_READY_TIMEOUT_SECS), only then stop an old one
#   6. smoke.sh against the new api
#   7. success: previous_tag ← current_tag, current_tag ← TAG (files in $DEPLOY_STATE_DIR)
#   On a failure in 5 or 6 every service is rolled back to current_tag the same way (exit 7), or,
#   if that fails as well or there is no previous tag, exit 8: manual intervention needed.
#
# Runtimes (DEPLOY_RUNTIME):
#   compose (default)  docker compose -f $DEPLOY_COMPOSE_FILE (docker-compose.prod.yml); the image tag
#                      is passed to compose as $DEPLOY_TAG_VAR (BALLAST_TAG), services api/worker are
#                      scaled to n+1 with the new tag, gated on the container's readiness
#                      (`/app/ballast healthcheck --url http://127.0.0.1:8081/health/ready` inside it),
#                      then the old container is stopped (stop_grace_period applies) and removed;
#                      nginx is reloaded so it re-resolves the api upstream.
#   native             no containers: an "image" is a directory $DEPLOY_IMAGES_DIR/<TAG>/ containing a
#                      `ballast` executable; instances are processes started from it with their own
#                      loopback ports (recorded under $DEPLOY_STATE_DIR/native/instances), configured by
#                      the environment deploy.sh runs in (plus DEPLOY_ENV_FILE). Used by the e2e tests
#                      and usable on a VM without Docker (put a reverse proxy on the recorded ports).
#
# Environment:
#   DEPLOY_STATE_DIR (.deploy)  DEPLOY_SERVICES ("api worker")  DEPLOY_READY_TIMEOUT_SECS (180 compose, 60 native)
#   DEPLOY_STOP_TIMEOUT_SECS (45)  DEPLOY_SKIP_BACKUP (0)  DEPLOY_SMOKE (1)  DEPLOY_SMOKE_ARGS ("")
#   DEPLOY_ENV_FILE             env file: compose --env-file, or sourced for native instances
#   compose: DEPLOY_COMPOSE_FILE, DEPLOY_COMPOSE_PROJECT, DEPLOY_TAG_VAR (BALLAST_TAG),
#            DEPLOY_BUILD (auto: pull, build from this checkout when the registry has no such tag; 1: build; 0: pull),
#            DEPLOY_SMOKE_URL (https://localhost, smoke uses -k), DEPLOY_CONTAINER_BIN (/app/ballast),
#            DEPLOY_MGMT_PORT (8081), DEPLOY_BACKUP_SERVICE (backup),
#            DEPLOY_BACKUP_CMD (bash /opt/ballast/scripts/backup.sh), DEPLOY_LB_SERVICE (nginx)
#   native:  DEPLOY_IMAGES_DIR (required), DEPLOY_NATIVE_HOST (127.0.0.1), BACKUP_DIR ($DEPLOY_STATE_DIR/backups)
#
# Exit codes:
#   0 deployed (or already at TAG)     1 unexpected error           2 usage
#   3 another deploy is running / runtime unavailable                4 pull/build failed (nothing changed)
#   5 pre-deploy backup failed (nothing changed)                      6 config check failed (nothing changed)
#   7 new version failed readiness or smoke; rolled back, previous version serving
#   8 failed and rollback failed too (or no previous version): manual intervention required
#   9 rollback requested but there is no previous tag
set -euo pipefail

SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPTS/.." && pwd)"
if [ -f "$SCRIPTS/lib/common.sh" ]; then
  # shellcheck source=scripts/lib/common.sh
  . "$SCRIPTS/lib/common.sh"
fi

readonly EX_USAGE=2 EX_BUSY=3 EX_PULL=4 EX_BACKUP=5 EX_CONFIG=6 EX_ROLLED_BACK=7 EX_BROKEN=8 EX_NO_PREVIOUS=9

RUNTIME="${DEPLOY_RUNTIME:-compose}"
STATE="${DEPLOY_STATE_DIR:-$ROOT/.deploy}"
SERVICES="${DEPLOY_SERVICES:-api worker}"
STOP_TIMEOUT="${DEPLOY_STOP_TIMEOUT_SECS:-45}"
ACTION="deploy"

dlog() { printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$ACTION" "$*" >&2; }
ddie() { local code="$1"; shift; dlog "error: $*"; exit "$code"; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# ---------------------------------------------------------------- state

state_get() { if [ -f "$STATE/$1" ]; then tr -d '\n' <"$STATE/$1"; fi; }
state_set() { printf '%s\n' "$2" >"$STATE/.$1.tmp" && mv -f "$STATE/.$1.tmp" "$STATE/$1"; }
history() { printf '%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$ACTION" "$1" "$2" >>"$STATE/history.log"; }

LOCKED=0
lock() {
  local l="$STATE/deploy.lock" pid
  if ! mkdir "$l" 2>/dev/null; then
    pid="$(cat "$l/pid" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then ddie "$EX_BUSY" "another deploy (pid $pid) is running"; fi
    dlog "removing stale deploy lock of pid ${pid:-unknown}"
    rm -rf "$l"; mkdir "$l" || ddie "$EX_BUSY" "cannot take $l"
  fi
  echo $$ >"$l/pid"; LOCKED=1
}
unlock() { [ "$LOCKED" = 1 ] && rm -rf "$STATE/deploy.lock"; LOCKED=0; }

port_free() {
  if command -v free_port >/dev/null 2>&1; then free_port; return; fi
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
    return
  fi
  local p i
  for i in $(seq 1 50); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    if ! (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    : "$i"
  done
  return 1
}

# pid_alive PID: running and not a zombie.
pid_alive() {
  local st
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
  [ -r "/proc/$1/stat" ] || return 0
  st="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
  [ "$st" != Z ] && [ "$st" != X ]
}

# ================================================================ runtime: native

NATIVE="$STATE/native"

nat_record() { # ID KEY → value
  sed -n "s/^$2=//p" "$NATIVE/instances/$1" 2>/dev/null | head -n1
}
nat_image() { printf '%s/%s/ballast' "${DEPLOY_IMAGES_DIR:?DEPLOY_IMAGES_DIR is required with DEPLOY_RUNTIME=native}" "$1"; }
nat_env() { # runs "$@" with DEPLOY_ENV_FILE loaded
  if [ -n "${DEPLOY_ENV_FILE:-}" ]; then
    ( set -a; # shellcheck disable=SC1090
      . "$DEPLOY_ENV_FILE"; set +a; exec "$@" )
  else
    "$@"
  fi
}

native_init() {
  [ -n "${DEPLOY_IMAGES_DIR:-}" ] || ddie "$EX_BUSY" "DEPLOY_IMAGES_DIR is required with DEPLOY_RUNTIME=native"
  command -v curl >/dev/null 2>&1 || ddie "$EX_BUSY" "curl is required for the native runtime"
  mkdir -p "$NATIVE/instances" "$NATIVE/logs"
}
native_pull() {
  local img; img="$(nat_image "$1")"
  [ -x "$img" ] || { dlog "no executable image $img"; return 1; }
  "$img" --version >/dev/null 2>&1 || { dlog "$img --version fails"; return 1; }
  dlog "image $1: $("$img" --version 2>/dev/null | head -n1)"
}
native_backup() {
  BACKUP_DIR="${BACKUP_DIR:-$STATE/backups}" nat_env "$SCRIPTS/backup.sh" >/dev/null
}
native_check_config() {
  local out
  if out="$(nat_env "$(nat_image "$1")" check-config 2>&1)"; then return 0; fi
  printf '%s\n' "$out" | grep -v '^[A-Z_]*=' | head -n 20 >&2
  return 1
}
native_list() { # SVC → ids of live instances (stale records are dropped)
  local f id
  shopt -s nullglob
  for f in "$NATIVE/instances"/*; do
    id="$(basename "$f")"
    [ "$(nat_record "$id" svc)" = "$1" ] || continue
    if pid_alive "$(nat_record "$id" pid)"; then echo "$id"; else
      dlog "dropping record of dead instance $id"; rm -f "$f"
    fi
  done
  shopt -u nullglob
}
native_tag() { nat_record "$1" tag; }
native_start() { # SVC TAG → id
  local svc="$1" tag="$2" img http mgmt id log pidfile cmd host="${DEPLOY_NATIVE_HOST:-127.0.0.1}" pid="" i
  img="$(nat_image "$tag")"
  case "$svc" in api) cmd=serve ;; worker) cmd=worker ;; *) dlog "unknown service $svc"; return 1 ;; esac
  http="$(port_free)"; mgmt="$(port_free)"
  id="$svc-$(date +%Y%m%d%H%M%S)-$$-$RANDOM"
  log="$NATIVE/logs/$id.log"; pidfile="$NATIVE/logs/$id.pid"
  # A subshell that loads the env file, pins this instance's listeners, then becomes the instance
  # in a new session (so it outlives this script and ignores its terminal's signals).
  (
    if [ -n "${DEPLOY_ENV_FILE:-}" ]; then
      set -a
      # shellcheck disable=SC1090
      . "$DEPLOY_ENV_FILE"
      set +a
    fi
    export HTTP_ADDR="$host:$http" MANAGEMENT_ADDR="$host:$mgmt"
    # shellcheck disable=SC2016
    exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$img" "$cmd"
  ) </dev/null >>"$log" 2>&1 &
  for i in $(seq 1 100); do
    [ -s "$pidfile" ] && pid="$(cat "$pidfile")" && break
    sleep 0.05; : "$i"
  done
  [ -n "$pid" ] || { dlog "instance $id did not start"; return 1; }
  printf 'svc=%s\ntag=%s\npid=%s\nhttp=%s:%s\nmgmt=%s:%s\nlog=%s\nstarted=%s\n' \
    "$svc" "$tag" "$pid" "$host" "$http" "$host" "$mgmt" "$log" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$NATIVE/instances/$id"
  rm -f "$pidfile"
  dlog "started $svc instance $id (tag $tag, pid $pid, http $host:$http, management $host:$mgmt)"
  echo "$id"
}
native_wait_ready() { # SVC ID TIMEOUT
  local id="$2" deadline pid mgmt code
  pid="$(nat_record "$id" pid)"; mgmt="$(nat_record "$id" mgmt)"
  deadline=$(( $(date +%s) + $3 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    pid_alive "$pid" || { dlog "instance $id (pid $pid) exited before becoming ready"; return 1; }
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$mgmt/health/ready" || true)"
    [ "$code" = 200 ] && return 0
    sleep 0.2
  done
  dlog "instance $id not ready after $3s (last answer: ${code:-none})"
  return 1
}
native_stop() { # SVC ID
  local id="$2" pid deadline
  pid="$(nat_record "$id" pid)"
  if [ -n "$pid" ] && pid_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(( $(date +%s) + STOP_TIMEOUT ))
    while pid_alive "$pid" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
    if pid_alive "$pid"; then dlog "instance $id ignored SIGTERM for ${STOP_TIMEOUT}s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
  fi
  rm -f "$NATIVE/instances/$id"
  dlog "stopped $1 instance $id"
}
native_logs() { tail -n "${2:-30}" "$(nat_record "$1" log)" 2>/dev/null | sed "s/^/  [$1] /" >&2 || true; }
native_lb_reload() { # no load balancer: publish the api endpoints for whoever fronts them
  local id urls=""
  for id in $(native_list api); do urls+="http://$(nat_record "$id" http)"$'\n'; done
  printf '%s' "$urls" >"$NATIVE/api.urls"
}
native_smoke() { # TAG
  local id
  id="$(native_list api | tail -n1)"
  [ -n "$id" ] || { dlog "no api instance to smoke-test"; return 1; }
  local extra=()
  [ -n "${DEPLOY_SMOKE_ARGS:-}" ] && read -ra extra <<<"$DEPLOY_SMOKE_ARGS"
  SMOKE_BALLAST_BIN="$(nat_image "$1")" nat_env "$SCRIPTS/smoke.sh" "http://$(nat_record "$id" http)" \
    --mgmt "http://$(nat_record "$id" mgmt)" "${extra[@]}" >&2
}
native_describe() { # ID → one line
  printf '%s tag=%s pid=%s http=%s mgmt=%s' "$1" "$(nat_record "$1" tag)" "$(nat_record "$1" pid)" "$(nat_record "$1" http)" "$(nat_record "$1" mgmt)"
}

# ================================================================ runtime: compose

COMPOSE=()
compose_init() {
  command -v docker >/dev/null 2>&1 || ddie "$EX_BUSY" "docker is not installed (or use DEPLOY_RUNTIME=native)"
  docker compose version >/dev/null 2>&1 || ddie "$EX_BUSY" "the docker compose plugin is not available"
  local file="${DEPLOY_COMPOSE_FILE:-$ROOT/docker-compose.prod.yml}"
  [ -f "$file" ] || ddie "$EX_BUSY" "compose file $file not found"
  COMPOSE=(docker compose -f "$file")
  [ -n "${DEPLOY_COMPOSE_PROJECT:-}" ] && COMPOSE+=(-p "$DEPLOY_COMPOSE_PROJECT")
  [ -n "${DEPLOY_ENV_FILE:-}" ] && COMPOSE+=(--env-file "$DEPLOY_ENV_FILE")
  return 0
}
tagged() { env "${DEPLOY_TAG_VAR:-BALLAST_TAG}=$1" "${@:2}"; }   # runs a command with the image tag set
compose_pull() {
  case "${DEPLOY_BUILD:-auto}" in
    1|true) tagged "$1" "${COMPOSE[@]}" build api worker ;;
    0|false) tagged "$1" "${COMPOSE[@]}" pull --quiet api worker ;;
    *)
      tagged "$1" "${COMPOSE[@]}" pull --quiet api worker && return 0
      dlog "no image $1 in the registry: building it from this checkout"
      tagged "$1" "${COMPOSE[@]}" build api worker
      ;;
  esac
}
compose_backup() {
  local cmd=()
  read -ra cmd <<<"${DEPLOY_BACKUP_CMD:-bash /opt/ballast/scripts/backup.sh}"
  # The backup service runs with the database credentials and the backup volume already mounted.
  "${COMPOSE[@]}" exec -T "${DEPLOY_BACKUP_SERVICE:-backup}" "${cmd[@]}" >/dev/null
}
compose_check_config() {
  tagged "$1" "${COMPOSE[@]}" run --rm --no-deps -T api check-config >/dev/null
}
compose_list() { tagged "$(state_get current_tag)" "${COMPOSE[@]}" ps -q --status running "$1" 2>/dev/null || true; }
compose_tag() { local img; img="$(docker inspect -f '{{.Config.Image}}' "$1" 2>/dev/null)"; printf '%s' "${img##*:}"; }
compose_all() { tagged "$(state_get current_tag)" "${COMPOSE[@]}" ps -a -q "$1" 2>/dev/null || true; }
compose_start() { # SVC TAG → new container id
  local svc="$1" tag="$2" before after n new
  # Every container of the service, running or not, so a new one that crashes at once is seen
  # (and then removed by the readiness failure path) instead of lingering in a restart loop.
  before="$(compose_all "$svc" | sort)"
  n="$(grep -c . <<<"$before" || true)"
  tagged "$tag" "${COMPOSE[@]}" up -d --no-deps --no-recreate --scale "$svc=$(( n + 1 ))" "$svc" >&2 || return 1
  after="$(compose_all "$svc" | sort)"
  new="$(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | grep . | head -n1)"
  [ -n "$new" ] || { dlog "compose did not create a new $svc container"; return 1; }
  dlog "started $svc container ${new:0:12} (tag $(compose_tag "$new"))"
  echo "$new"
}
compose_wait_ready() { # SVC ID TIMEOUT
  local id="$2" deadline st health
  deadline=$(( $(date +%s) + $3 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    read -r st health < <(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id" 2>/dev/null || echo "gone none")
    case "$st" in exited|dead|gone) dlog "container ${id:0:12} is $st"; return 1 ;; esac
    if [ "$health" = healthy ] || [ "$health" = none ]; then
      if docker exec "$id" "${DEPLOY_CONTAINER_BIN:-/app/ballast}" healthcheck \
          --url "http://127.0.0.1:${DEPLOY_MGMT_PORT:-8081}/health/ready" >/dev/null 2>&1; then
        return 0
      fi
    fi
    sleep 1
  done
  dlog "container ${id:0:12} not ready after $3s (health: ${health:-?})"
  return 1
}
compose_stop() { # SVC ID
  docker stop -t "$STOP_TIMEOUT" "$2" >/dev/null 2>&1 || true
  docker rm -f "$2" >/dev/null 2>&1 || true
  dlog "stopped and removed $1 container ${2:0:12}"
}
compose_logs() { docker logs --tail "${2:-30}" "$1" 2>&1 | sed "s/^/  [${1:0:12}] /" >&2 || true; }
compose_lb_reload() {
  "${COMPOSE[@]}" exec -T "${DEPLOY_LB_SERVICE:-nginx}" nginx -s reload >/dev/null 2>&1 \
    || dlog "note: could not reload ${DEPLOY_LB_SERVICE:-nginx} (not running?)"
}
compose_smoke() { # TAG
  local token="${SMOKE_TOKEN:-}" extra=()
  if [ -z "$token" ]; then
    token="$(tagged "$1" "${COMPOSE[@]}" run --rm --no-deps -T api token --sub smoke --ttl 10m 2>/dev/null | tail -n1 | tr -d '\r')" || token=""
  fi
  [ -n "${DEPLOY_SMOKE_ARGS:-}" ] && read -ra extra <<<"$DEPLOY_SMOKE_ARGS"
  SMOKE_TOKEN="$token" "$SCRIPTS/smoke.sh" "${DEPLOY_SMOKE_URL:-https://localhost}" -k "${extra[@]}" >&2
}
compose_describe() { printf '%s tag=%s %s' "${1:0:12}" "$(compose_tag "$1")" "$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$1" 2>/dev/null)"; }

# ================================================================ runtime dispatch

rt() { local fn="$1"; shift; "${RUNTIME}_$fn" "$@"; }

# ================================================================ deployment logic (runtime-agnostic)

READY_TIMEOUT=""

# start_ready SVC TAG → id of a new instance that is ready (or nothing and status 1).
start_ready() {
  local id
  id="$(rt start "$1" "$2")" || return 1
  if rt wait_ready "$1" "$id" "$READY_TIMEOUT"; then
    dlog "$1 instance $id is ready"
    echo "$id"
    return 0
  fi
  dlog "$1 instance $id (tag $2) failed readiness; its last log lines:"
  rt logs "$id" 30
  rt stop "$1" "$id"
  return 1
}

# roll_service SVC TAG: replace every instance of SVC by TAG, one at a time, never below the
# current count of ready instances.
roll_service() {
  local svc="$1" tag="$2" olds=() old all_at_tag=1 new
  mapfile -t olds < <(rt list "$svc")
  for old in "${olds[@]}"; do [ "$(rt tag "$old")" = "$tag" ] || all_at_tag=0; done
  if [ ${#olds[@]} -gt 0 ] && [ "$all_at_tag" = 1 ]; then
    local all_ready=1
    for old in "${olds[@]}"; do rt wait_ready "$svc" "$old" 5 || all_ready=0; done
    if [ "$all_ready" = 1 ]; then dlog "$svc: already at $tag and ready (${#olds[@]} instance(s))"; return 0; fi
  fi
  if [ ${#olds[@]} -eq 0 ]; then
    dlog "$svc: no running instance; starting one with $tag"
    new="$(start_ready "$svc" "$tag")" || return 1
    [ "$svc" = api ] && rt lb_reload
    return 0
  fi
  dlog "$svc: rolling ${#olds[@]} instance(s) to $tag"
  for old in "${olds[@]}"; do
    new="$(start_ready "$svc" "$tag")" || return 1
    [ "$svc" = api ] && rt lb_reload
    rt stop "$svc" "$old"
    [ "$svc" = api ] && rt lb_reload
  done
  return 0
}

# release TAG: rolls every service to TAG, then smoke-tests. 0 ok, 1 failed.
release() {
  local tag="$1" svc
  for svc in $SERVICES; do
    roll_service "$svc" "$tag" || { dlog "$svc did not come up with $tag"; return 1; }
  done
  if [ "${DEPLOY_SMOKE:-1}" = 1 ]; then
    dlog "smoke test of $tag"
    rt smoke "$tag" || { dlog "smoke test of $tag failed"; return 1; }
  fi
  return 0
}

# run TARGET MODE: the whole procedure; MODE is deploy or rollback.
run() {
  local target="$1" mode="$2" current
  current="$(state_get current_tag)"
  if [ -z "$current" ]; then
    # First run of deploy.sh on a stack started by hand (e.g. `docker compose up -d`): what runs
    # now is what a failed deploy returns to.
    local first
    first="$(rt list api | head -n1)"
    if [ -n "$first" ]; then
      current="$(rt tag "$first")"
      if [ -n "$current" ]; then
        dlog "no recorded tag; the running api is $current"
        state_set current_tag "$current"
      fi
    fi
  fi
  dlog "runtime $RUNTIME: $mode to $target (current: ${current:-none})"

  rt pull "$target" || { history "$target" "pull-failed"; ddie "$EX_PULL" "cannot pull/build image $target; nothing changed"; }

  local want_backup=1
  [ "$mode" = rollback ] && want_backup="${DEPLOY_ROLLBACK_BACKUP:-0}"
  [ "${DEPLOY_SKIP_BACKUP:-0}" = 1 ] && want_backup=0
  if [ "$want_backup" = 1 ]; then
    dlog "pre-deploy backup"
    rt backup || { history "$target" "backup-failed"; ddie "$EX_BACKUP" "pre-deploy backup failed; nothing changed"; }
  else
    dlog "pre-deploy backup skipped"
  fi

  dlog "configuration check with $target"
  rt check_config "$target" || { history "$target" "config-failed"; ddie "$EX_CONFIG" "check-config failed with $target; nothing changed"; }

  if release "$target"; then
    if [ -n "$current" ] && [ "$current" != "$target" ]; then state_set previous_tag "$current"; fi
    state_set current_tag "$target"
    history "$target" "ok"
    dlog "done: $target is serving (previous: $(state_get previous_tag))"
    return 0
  fi

  if [ -z "$current" ] || [ "$current" = "$target" ]; then
    history "$target" "failed-no-rollback"
    ddie "$EX_BROKEN" "$mode to $target failed and there is no previous version to return to: manual intervention required ($0 --status)"
  fi
  dlog "rolling back to $current"
  local saved_action="$ACTION"; ACTION="auto-rollback"
  if release "$current"; then
    ACTION="$saved_action"
    history "$target" "failed-rolled-back-to-$current"
    ddie "$EX_ROLLED_BACK" "$mode to $target failed; rolled back, $current is serving"
  fi
  ACTION="$saved_action"
  history "$target" "failed-rollback-failed"
  ddie "$EX_BROKEN" "$mode to $target failed AND the rollback to $current failed: manual intervention required ($0 --status)"
}

status() {
  local svc id
  echo "runtime:      $RUNTIME"
  echo "current_tag:  $(state_get current_tag)"
  echo "previous_tag: $(state_get previous_tag)"
  for svc in $SERVICES; do
    for id in $(rt list "$svc"); do echo "$svc: $(rt describe "$id")"; done
  done
}

main() {
  local skip_backup=0 tag="" rollback=0 want_status=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --skip-backup) skip_backup=1 ;;
      --no-smoke) DEPLOY_SMOKE=0 ;;
      --rollback) rollback=1 ;;
      --status) want_status=1 ;;
      -h|--help) usage; exit 0 ;;
      -*) dlog "unknown option $1"; usage >&2; exit "$EX_USAGE" ;;
      *) [ -z "$tag" ] || { dlog "one TAG only"; exit "$EX_USAGE"; }; tag="$1" ;;
    esac
    shift
  done
  [ "$skip_backup" = 1 ] && DEPLOY_SKIP_BACKUP=1
  case "$RUNTIME" in
    compose) READY_TIMEOUT="${DEPLOY_READY_TIMEOUT_SECS:-180}" ;;
    native) READY_TIMEOUT="${DEPLOY_READY_TIMEOUT_SECS:-60}" ;;
    *) dlog "DEPLOY_RUNTIME must be compose or native"; exit "$EX_USAGE" ;;
  esac
  mkdir -p "$STATE"
  rt init

  if [ "$want_status" = 1 ]; then status; return 0; fi

  if [ "$rollback" = 1 ]; then
    ACTION="rollback"
    [ -n "$tag" ] || tag="$(state_get previous_tag)"
    [ -n "$tag" ] || ddie "$EX_NO_PREVIOUS" "no previous tag recorded in $STATE/previous_tag; name one: rollback.sh TAG"
  fi
  [ -n "$tag" ] || { usage >&2; exit "$EX_USAGE"; }
  [[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || ddie "$EX_USAGE" "invalid tag '$tag'"

  lock
  trap unlock EXIT
  trap 'dlog "interrupted: instances may run mixed versions; check $0 --status, then deploy or roll back"; exit 130' INT TERM
  if [ "$rollback" = 1 ]; then run "$tag" rollback; else run "$tag" deploy; fi
}

main "$@"
