#!/usr/bin/env bash
# Kubernetes manifests (deploy/k8s): render every kustomization, validate each document
# against the Kubernetes OpenAPI schemas (kubernetes-validate, strict, offline) and check the
# project's rules (probes, shutdown budget, hardening, resources, ...).
#
#   scripts/checks/k8s.sh            # from the repository root
#   K8S_VERSION=1.31.0 scripts/checks/k8s.sh
#
# Rendering uses deploy/k8s/render.py (the kustomize subset the manifests use, PyYAML only).
# When a real kustomize is on the machine (`kubectl kustomize` or `kustomize`), every
# kustomization is rendered by it too and the two results must be identical, so the
# renderer cannot drift from kustomize. ServiceMonitor (a CRD) has no bundled schema: it is
# reported as skipped and checked by the rules only.
set -euo pipefail
# shellcheck source=../lib/common.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
cd "$BALLAST_ROOT"

K8S_VERSION="${K8S_VERSION:-1.30.0}"
K8S_DIR=deploy/k8s
ensure_pip kubernetes-validate pyyaml:pip
PY="$BALLAST_TOOLS_DIR/venv/bin/python"
"$PY" -c 'import yaml, kubernetes_validate' 2>/dev/null || "$BALLAST_TOOLS_DIR/venv/bin/pip" install -q pyyaml kubernetes-validate >&2

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); printf 'ok   %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }

# A real kustomize, if there is one that works offline.
kustomize_cmd=()
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize "$K8S_DIR/base" >/dev/null 2>&1; then
  kustomize_cmd=(kubectl kustomize)
elif command -v kustomize >/dev/null 2>&1 && kustomize build "$K8S_DIR/base" >/dev/null 2>&1; then
  kustomize_cmd=(kustomize build)
fi
if [ ${#kustomize_cmd[@]} -eq 0 ]; then
  log "no kustomize/kubectl here: rendering with deploy/k8s/render.py only (no cross-check)"
fi

# 1. Render every kustomization (base, overlays/*).
targets=("$K8S_DIR/base")
for d in "$K8S_DIR"/overlays/*/; do
  targets+=("${d%/}")
done
rendered=()
overlays=()
for t in "${targets[@]}"; do
  name="$(basename "$t")"
  out="$work/$name.yaml"
  if "$PY" "$K8S_DIR/render.py" "$t" >"$out" 2>"$work/$name.err"; then
    pass "render $t ($(grep -c '^kind:' "$out") documents)"
    rendered+=("$out")
    [ "$t" != "$K8S_DIR/base" ] && overlays+=("$out")
  else
    fail "render $t: $(cat "$work/$name.err")"
    continue
  fi
  if [ ${#kustomize_cmd[@]} -gt 0 ]; then
    if "${kustomize_cmd[@]}" "$t" >"$work/$name.kustomize.yaml" 2>"$work/$name.kerr" &&
      "$PY" - "$work/$name.kustomize.yaml" "$out" <<'PY'; then
import sys, yaml
a, b = ([d for d in yaml.safe_load_all(open(p)) if d] for p in sys.argv[1:3])
if a != b:
    ids = lambda ds: [f"{d['kind']}/{d['metadata']['name']}" for d in ds]
    print(f"  differs: kustomize {ids(a)} vs render.py {ids(b)}", file=sys.stderr)
    for x, y in zip(a, b):
        if x != y:
            print(f"  first difference in {x['kind']}/{x['metadata']['name']}", file=sys.stderr)
            break
    sys.exit(1)
PY
      pass "render.py output == ${kustomize_cmd[*]} $t"
    else
      fail "render.py output differs from ${kustomize_cmd[*]} $t ($(tail -n 3 "$work/$name.kerr" 2>/dev/null))"
    fi
  fi
done

# 2. Schemas + rules on every rendered stream; overlays must pin their image.
run_checker() {
  local label="$1"; shift
  local summary
  "$PY" "$K8S_DIR/check_manifests.py" --k8s-version "$K8S_VERSION" --env-example .env.example "$@" \
    >"$work/checker.out" 2>&1 || true
  grep -v '^ok ' "$work/checker.out" | grep -v '^passed=' || true
  summary="$(grep '^passed=' "$work/checker.out" | tail -n 1)"
  if [ -z "$summary" ]; then
    fail "$label: checker crashed: $(tail -n 5 "$work/checker.out")"
    return
  fi
  local p f
  p="$(sed -E 's/^passed=([0-9]+) failed=([0-9]+)$/\1/' <<<"$summary")"
  f="$(sed -E 's/^passed=([0-9]+) failed=([0-9]+)$/\2/' <<<"$summary")"
  passed=$((passed + p))
  failed=$((failed + f))
  printf '%s %s: %s rule/schema checks passed, %s failed\n' "$([ "$f" -eq 0 ] && echo 'ok  ' || echo 'FAIL')" "$label" "$p" "$f"
}
[ -f "$work/base.yaml" ] && run_checker "base (k8s $K8S_VERSION)" "$work/base.yaml"
[ ${#overlays[@]} -gt 0 ] && run_checker "overlays (k8s $K8S_VERSION)" --no-latest "${overlays[@]}"

# 3. The example Secret is valid but never part of a kustomization.
if "$PY" - "$K8S_VERSION" <<'PY'; then
import sys, yaml, kubernetes_validate
doc = yaml.safe_load(open("deploy/k8s/base/secret.example.yaml"))
kubernetes_validate.validate(doc, sys.argv[1], strict=True)
assert doc["kind"] == "Secret" and doc["metadata"]["name"] == "ballast-secrets"
PY
  pass "base/secret.example.yaml is a valid Secret ballast-secrets"
else
  fail "base/secret.example.yaml does not validate"
fi
if "$PY" - <<'PY'; then
import glob, sys, yaml
for path in glob.glob("deploy/k8s/**/kustomization.yaml", recursive=True):
    k = yaml.safe_load(open(path)) or {}
    if any("secret.example" in str(r) for r in (k.get("resources") or []) + (k.get("components") or [])):
        sys.exit(f"{path} lists secret.example.yaml")
PY
  pass "secret.example.yaml is not referenced by any kustomization"
else
  fail "secret.example.yaml is referenced by a kustomization (it must stay out of apply -k)"
fi
for f in "${rendered[@]}"; do
  if grep -q 'CHANGE_ME' "$f"; then fail "$(basename "$f"): placeholder secret rendered"; else pass "$(basename "$f"): no placeholder secret rendered"; fi
done

# 4. The rules bite: deliberately broken copies of the production render must be rejected.
prod="$work/production.yaml"
if [ -f "$prod" ]; then
  # mutation|text the failing rule must mention
  for spec in 'no-readiness|readinessProbe' 'short-grace|terminationGracePeriodSeconds' \
    'root-user|non-root UID' 'writable-root|read-only root' 'unknown-field|schema Deployment/ballast-api' \
    'ingress-management|routes only the http port' 'no-limits|memory limit' \
    'wrong-probe-port|readinessProbe GET /health/ready on the management port' \
    'exec-prestop|preStop' 'latest-image|not :latest'; do
    mutation="${spec%%|*}"
    expect="${spec#*|}"
    "$PY" - "$prod" "$mutation" >"$work/mut-$mutation.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
m = sys.argv[2]
api = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "ballast-api")
pod = api["spec"]["template"]["spec"]
c = pod["containers"][0]
if m == "no-readiness":
    del c["readinessProbe"]
elif m == "short-grace":
    pod["terminationGracePeriodSeconds"] = 30
elif m == "root-user":
    pod["securityContext"]["runAsUser"] = 0
    c["securityContext"]["runAsUser"] = 0
elif m == "writable-root":
    c["securityContext"]["readOnlyRootFilesystem"] = False
elif m == "unknown-field":
    c["livenesProbe"] = c.pop("livenessProbe")
elif m == "ingress-management":
    ing = next(d for d in docs if d["kind"] == "Ingress")
    ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = {"name": "management"}
elif m == "no-limits":
    del c["resources"]["limits"]
elif m == "wrong-probe-port":
    c["readinessProbe"]["httpGet"]["port"] = "http"
elif m == "exec-prestop":
    c["lifecycle"]["preStop"] = {"exec": {"command": ["sleep", "5"]}}
elif m == "latest-image":
    c["image"] = c["image"].rsplit(":", 1)[0] + ":latest"
yaml.safe_dump_all(docs, sys.stdout)
PY
    if "$PY" "$K8S_DIR/check_manifests.py" --k8s-version "$K8S_VERSION" --no-latest --expect-fail \
      "$work/mut-$mutation.yaml" >"$work/mut.out" 2>&1 && grep '^FAIL' "$work/mut.out" | grep -qF "$expect"; then
      pass "broken manifest ($mutation) is rejected by the '$expect' rule"
    else
      fail "broken manifest ($mutation) was not rejected by the '$expect' rule: $(grep '^FAIL' "$work/mut.out" | head -n 3)"
    fi
  done
fi

echo "k8s: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
