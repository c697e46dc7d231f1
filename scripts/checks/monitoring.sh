#!/usr/bin/env bash
# Static checks of the monitoring assets (monitoring/, docs/OPERATIONS.md anchors):
#   promtool check config / check rules / test rules, amtool check-config + routing +
#   templates, dashboard JSON and generator, dashboard expressions parse, metric names known
#   (monitoring/metrics.txt, compared with DESIGN 4.3 and src/metrics.rs), alert labels and
#   annotations, runbook anchors, test coverage (every alert fires and stays silent in a test).
# Usage: scripts/checks/monitoring.sh   (from anywhere; needs no running service)
# Ends with "monitoring: N passed, M failed"; exit 1 when anything failed.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib" && pwd)/common.sh"
cd "$BALLAST_ROOT"
export PYTHONDONTWRITEBYTECODE=1

ensure_apt prometheus:promtool prometheus-alertmanager:amtool python3:python3
if ! python3 -c 'import yaml' 2>/dev/null; then
  ensure_pip pyyaml:__pyyaml_probe__ 2>/dev/null || true
  python3 -c 'import yaml' 2>/dev/null || die "python3 cannot import yaml (pip install pyyaml)"
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
PASSED=0
FAILED=0
PA="monitoring/tools/promassets.py"

# check NAME CMD...: runs CMD, counts one pass or one failure, shows its output on failure.
check() {
  local name="$1"; shift
  if "$@" >"$TMP/out" 2>&1; then
    PASSED=$((PASSED + 1)); printf 'ok   %s\n' "$name"
  else
    FAILED=$((FAILED + 1)); printf 'FAIL %s\n' "$name"; sed 's/^/       /' "$TMP/out"
  fi
}

# py_checks CMD: a promassets.py check; each of its ok/FAIL lines counts.
py_checks() {
  local out rc=0 ok fail
  out="$(python3 "$PA" "$1" 2>&1)" || rc=$?
  ok=$(grep -c '^ok ' <<<"$out" || true)
  fail=$(grep -c '^FAIL ' <<<"$out" || true)
  PASSED=$((PASSED + ok)); FAILED=$((FAILED + fail))
  grep -E '^(FAIL|skip) ' <<<"$out" || true
  if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
    FAILED=$((FAILED + 1)); printf 'FAIL %s crashed:\n%s\n' "$1" "$out"
  fi
  printf '     %s: %s ok, %s failed\n' "$1" "$ok" "$fail"
}

# ---- YAML well-formed
for f in monitoring/*.yml monitoring/tests/*.yml monitoring/grafana/provisioning/*/*.yml; do
  check "yaml parses: $f" python3 -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' "$f"
done

# ---- Prometheus
# Rule files are referenced relative to prometheus.yml, so the committed file is checked as it
# is; the copy rendered for the live test (127.0.0.1 targets, absolute rule paths) is checked too.
check "promtool check config monitoring/prometheus.yml" promtool check config monitoring/prometheus.yml
check "render prometheus.yml for 127.0.0.1" python3 "$PA" render-config --out "$TMP/prometheus-live.yml" \
  --target ballast-api=127.0.0.1:18081 --target ballast-worker=127.0.0.1:18082 \
  --target prometheus=127.0.0.1:19090 --unreachable 127.0.0.1:9
check "promtool check config (rendered copy)" promtool check config "$TMP/prometheus-live.yml"
check "promtool check rules" promtool check rules monitoring/recording_rules.yml monitoring/alert_rules.yml
check "promtool test rules monitoring/tests/*.yml" promtool test rules monitoring/tests/*.yml
py_checks check-prometheus
py_checks check-alerts
py_checks check-names
py_checks check-contract

# ---- Alertmanager
sed "s#/etc/alertmanager/templates/\*\.tmpl#$BALLAST_ROOT/monitoring/alertmanager-templates/*.tmpl#" \
  monitoring/alertmanager.yml >"$TMP/alertmanager.yml"
check "amtool check-config monitoring/alertmanager.yml" amtool check-config monitoring/alertmanager.yml
check "amtool check-config (templates resolved)" amtool check-config "$TMP/alertmanager.yml"
route_is() {
  local got
  got="$(amtool config routes test --config.file="$TMP/alertmanager.yml" "${@:2}" 2>/dev/null)"
  [ "$got" = "$1" ] || { echo "labels ${*:2} routed to '$got', want '$1'"; return 1; }
}
check "route critical -> pager + chat" route_is "pager,team-chat" alertname=BallastAPIDown severity=critical
check "route warning -> email + slack" route_is "team-warning" alertname=BallastRedisDown severity=warning
check "route unlabelled -> default email" route_is "team-email" alertname=Something
check "notification templates render" amtool template render \
  --template.glob="monitoring/alertmanager-templates/*.tmpl" \
  --template.text='{{ template "ballast.title" . }}{{ template "ballast.text" . }}'
py_checks check-alertmanager

# ---- Grafana
for f in monitoring/grafana/dashboards/*.json; do
  check "json parses: $f" python3 -m json.tool "$f"
done
py_checks check-dashboards
n_exprs="$(python3 "$PA" expr-rules "$TMP/dashboard-exprs.yml")"
check "all $n_exprs dashboard expressions parse (promtool)" promtool check rules "$TMP/dashboard-exprs.yml"

echo "monitoring: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
