#!/usr/bin/env python3
"""Validate rendered ballast manifests: Kubernetes schemas plus the project's own rules.

    check_manifests.py [--k8s-version 1.30.0] [--env-example .env.example] [--no-latest]
                       [--expect-fail] FILE...

Each FILE is one rendered kustomization (a YAML stream). Prints one line per check
("ok   ..." / "FAIL ...") and a final "passed=N failed=M" line; exits 1 when a check failed.
With --expect-fail the meaning is inverted for a single file: it must produce at least one
failure (used to prove that the rules actually catch broken manifests).

Schemas: kubernetes-validate's bundled, strict (unknown fields rejected) schemas for the
given version. Custom resources (ServiceMonitor: monitoring.coreos.com) have no bundled
schema; they are reported as skipped and checked only by the rules below.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

import yaml

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover
    sys.exit("check_manifests.py needs kubernetes-validate (pip install kubernetes-validate)")

CRD_GROUPS = {"monitoring.coreos.com"}


class Checker:
    def __init__(self, label: str):
        self.label = label
        self.passed = 0
        self.failed = 0
        self.skipped = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok   [{self.label}] {what}")
        else:
            self.failed += 1
            print(f"FAIL [{self.label}] {what}" + (f": {detail}" if detail else ""))
        return ok

    def skip(self, what: str) -> None:
        self.skipped += 1
        print(f"skip [{self.label}] {what}")


def env_example_vars(path: str) -> set[str]:
    names = set()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            m = re.match(r"^([A-Z][A-Z0-9_]*)=", line)
            if m:
                names.add(m.group(1))
    return names


def parse_size(value: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([KMG]i?B?|[kmg])?", str(value).strip())
    if not m:
        raise ValueError(value)
    n, unit = int(m.group(1)), (m.group(2) or "").lower().rstrip("b")
    return n * {"": 1, "k": 1024, "ki": 1024, "m": 1024 ** 2, "mi": 1024 ** 2,
                "g": 1024 ** 3, "gi": 1024 ** 3}[unit]


def secs(value, default: int) -> int:
    if value in (None, ""):
        return default
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(value))
    if not m:
        raise ValueError(value)
    n, unit = int(m.group(1)), m.group(2) or "s"
    return {"ms": n / 1000, "s": n, "m": n * 60, "h": n * 3600}[unit]


def named_port(container: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []) or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def check_file(path: str, k8s_version: str, env_vars: set[str] | None, no_latest: bool = False) -> Checker:
    c = Checker(os.path.basename(path))
    with open(path, encoding="utf-8") as fh:
        docs = [d for d in yaml.safe_load_all(fh) if d]
    c.check(len(docs) > 0, "renders at least one document")
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    # --- schemas
    for d in docs:
        rid = f"{d['kind']}/{d['metadata']['name']}"
        group = d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else ""
        if group in CRD_GROUPS:
            c.skip(f"schema {rid}: custom resource ({group}), no bundled schema")
            continue
        try:
            kubernetes_validate.validate(d, k8s_version, strict=True)
            c.check(True, f"schema {rid} (k8s {k8s_version}, strict)")
        except kubernetes_validate.SchemaNotFoundError as e:
            c.check(False, f"schema {rid}", f"no schema: {e}")
        except kubernetes_validate.ValidationError as e:
            where = "/".join(str(p) for p in e.path) or "(root)"
            c.check(False, f"schema {rid}", f"{where}: {e.message}")

    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind.get("ConfigMap", [])}
    cfg = configmaps.get("ballast-config", {})
    c.check(bool(cfg), "ConfigMap ballast-config present")
    if env_vars is not None:
        unknown = sorted(set(cfg) - env_vars)
        c.check(not unknown, "ConfigMap keys are variables of .env.example", ", ".join(unknown))
    c.check(cfg.get("APP_ENV") == "production" and cfg.get("LOG_FORMAT") == "json",
            "ConfigMap: APP_ENV=production, LOG_FORMAT=json")
    c.check(cfg.get("RATE_LIMIT_ENABLED", "true") == "true", "ConfigMap: rate limiting on")
    secret_keys = {"DATABASE_URL", "REDIS_URL", "JWT_SECRET", "STORAGE_S3_ACCESS_KEY_ID",
                   "STORAGE_S3_SECRET_ACCESS_KEY", "JWT_SECRET_FILE", "DATABASE_URL_FILE"}
    leaked = sorted(secret_keys & set(cfg))
    c.check(not leaked, "ConfigMap holds no secrets", ", ".join(leaked))
    c.check(not by_kind.get("Secret"), "no Secret rendered (secrets are created out of band)")

    readiness_delay = secs(cfg.get("SHUTDOWN_READINESS_DELAY_SECS"), 5)
    shutdown = secs(cfg.get("SHUTDOWN_TIMEOUT_SECS"), 30)
    drain = secs(cfg.get("JOB_DRAIN_TIMEOUT_SECS"), 25)
    c.check(drain < shutdown, "JOB_DRAIN_TIMEOUT_SECS < SHUTDOWN_TIMEOUT_SECS", f"{drain} >= {shutdown}")

    # --- workloads
    deployments = by_kind.get("Deployment", [])
    c.check({d["metadata"]["name"] for d in deployments} >= {"ballast-api", "ballast-worker"},
            "Deployments ballast-api and ballast-worker present")
    for dep in deployments:
        name = dep["metadata"]["name"]
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        psc = pod.get("securityContext", {}) or {}
        sel = (spec.get("selector") or {}).get("matchLabels", {})
        tmpl_labels = spec["template"].get("metadata", {}).get("labels", {})
        c.check(sel and all(tmpl_labels.get(k) == v for k, v in sel.items()),
                f"{name}: selector matches the pod template labels")
        c.check("replicas" not in spec or not any(
            h["spec"]["scaleTargetRef"]["name"] == name for h in by_kind.get("HorizontalPodAutoscaler", [])),
            f"{name}: replicas left to the HPA")
        c.check(pod.get("automountServiceAccountToken") is False, f"{name}: no service account token mounted")
        c.check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 65532,
                f"{name}: pod runs as non-root UID 65532")
        c.check((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
                f"{name}: seccomp RuntimeDefault")
        spread = pod.get("topologySpreadConstraints") or []
        c.check(bool(spread), f"{name}: topologySpreadConstraints set")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        containers = pod.get("containers", [])
        c.check(len(containers) >= 1, f"{name}: has containers")
        for ct in containers:
            cn = f"{name}/{ct['name']}"
            image = ct.get("image", "")
            c.check(re.search(r"(:[\w][\w.-]*|@sha256:[0-9a-f]{64})$", image.split("/")[-1]) is not None,
                    f"{cn}: image has an explicit tag or digest", image)
            if no_latest:
                c.check(not image.endswith(":latest"), f"{cn}: image pinned (not :latest)", image)
            ports = {p.get("name"): p.get("containerPort") for p in ct.get("ports", []) or []}
            c.check(ports.get("management") == 8081, f"{cn}: port management=8081", str(ports))
            if "http" in ports:
                c.check(ports["http"] == 8080, f"{cn}: port http=8080", str(ports))
            probes = {
                "startupProbe": "/health/live",
                "livenessProbe": "/health/live",
                "readinessProbe": "/health/ready",
            }
            for probe, want_path in probes.items():
                get = (ct.get(probe) or {}).get("httpGet") or {}
                c.check(get.get("path") == want_path and named_port(ct, get.get("port")) == 8081,
                        f"{cn}: {probe} GET {want_path} on the management port (8081)",
                        f"got {get.get('path')} port {get.get('port')}")
            startup = ct.get("startupProbe") or {}
            budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
            c.check(budget >= 60, f"{cn}: startupProbe allows >= 60s (dependency retries + migrations)",
                    f"{budget}s")
            prestop = ((ct.get("lifecycle") or {}).get("preStop") or {})
            prestop_secs = (prestop.get("sleep") or {}).get("seconds", 0)
            if "http" in ports:
                c.check(prestop_secs > 0, f"{cn}: preStop sleep lets endpoint removal propagate")
                c.check("exec" not in prestop, f"{cn}: preStop uses no exec (distroless has no shell)")
            total = prestop_secs + readiness_delay + shutdown
            c.check(grace > total and grace > 35,
                    f"{cn}: terminationGracePeriodSeconds {grace} > preStop {prestop_secs} + readiness delay "
                    f"{readiness_delay} + shutdown {shutdown}")
            sc = ct.get("securityContext", {}) or {}
            c.check(sc.get("allowPrivilegeEscalation") is False, f"{cn}: allowPrivilegeEscalation false")
            c.check(sc.get("readOnlyRootFilesystem") is True, f"{cn}: read-only root filesystem")
            c.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), f"{cn}: capabilities drop ALL")
            c.check(sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{cn}: runAsNonRoot")
            res = ct.get("resources") or {}
            req, lim = res.get("requests") or {}, res.get("limits") or {}
            c.check({"cpu", "memory"} <= set(req) and "memory" in lim,
                    f"{cn}: resource requests (cpu, memory) and a memory limit", str(res))
            mounts = {m["mountPath"]: m for m in ct.get("volumeMounts", []) or []}
            c.check("/tmp" in mounts, f"{cn}: writable /tmp (emptyDir) next to the read-only root")
            if cfg.get("STORAGE_URL", "").startswith("file://"):
                path = cfg["STORAGE_URL"][len("file://"):]
                c.check(path in mounts, f"{cn}: file storage {path} is a mounted volume")
            envs = {e["name"]: e for e in ct.get("env", []) or []}
            refs = {e.get("configMapRef", {}).get("name") for e in ct.get("envFrom", []) or []}
            c.check("ballast-config" in refs, f"{cn}: env from ConfigMap ballast-config")
            for secret in ("DATABASE_URL", "JWT_SECRET"):
                c.check(f"{secret}_FILE" in envs or secret in envs, f"{cn}: {secret} provided (as a file)")
            for ename, e in envs.items():
                if "value" in e and ename.endswith("_FILE"):
                    c.check(any(e["value"].startswith(m.rstrip("/") + "/") for m in mounts),
                            f"{cn}: {ename} points into a mounted volume", e["value"])
                if env_vars is not None:
                    base = ename[:-5] if ename.endswith("_FILE") else ename
                    c.check(base in env_vars, f"{cn}: env {ename} is documented in .env.example")
            for secret in ("DATABASE_URL", "JWT_SECRET", "REDIS_URL"):
                c.check("value" not in envs.get(secret, {}), f"{cn}: {secret} not inlined in the pod spec")

    # --- services, ingress, autoscaling, disruption, network, monitoring
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    api_svc = services.get("ballast-api")
    if c.check(api_svc is not None, "Service ballast-api present"):
        sp = {p["name"]: p for p in api_svc["spec"]["ports"]}
        c.check(sp.get("http", {}).get("port") == 8080 and sp.get("management", {}).get("port") == 8081,
                "Service ballast-api: http 8080, management 8081")
    for ing in by_kind.get("Ingress", []):
        n = ing["metadata"]["name"]
        ann = ing["metadata"].get("annotations", {}) or {}
        c.check(bool(ing["spec"].get("tls")), f"Ingress {n}: TLS configured")
        body = ann.get("nginx.ingress.kubernetes.io/proxy-body-size", "1m")
        upload = cfg.get("MAX_UPLOAD_BYTES") or "100MiB"
        c.check(parse_size(body) == parse_size(upload),
                f"Ingress {n}: proxy-body-size {body} == MAX_UPLOAD_BYTES {upload}")
        c.check(any(k.startswith("nginx.ingress.kubernetes.io/limit-") for k in ann),
                f"Ingress {n}: rate-limit annotations")
        backends = [p["backend"]["service"] for r in ing["spec"].get("rules", [])
                    for p in r.get("http", {}).get("paths", [])]
        c.check(backends and all(b["port"].get("name") == "http" or b["port"].get("number") == 8080
                                 for b in backends),
                f"Ingress {n}: routes only the http port (never management)", str(backends))
    deploy_names = {d["metadata"]["name"] for d in deployments}
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        n = h["metadata"]["name"]
        metrics = {m["resource"]["name"] for m in h["spec"].get("metrics", []) if m["type"] == "Resource"}
        c.check(h["spec"]["scaleTargetRef"]["name"] in deploy_names, f"HPA {n}: target exists")
        c.check(metrics >= {"cpu", "memory"}, f"HPA {n}: scales on cpu and memory")
        c.check(h["spec"].get("minReplicas", 1) >= 2, f"HPA {n}: minReplicas >= 2 (PDB can be honoured)")
    for dn in ("ballast-api", "ballast-worker"):
        dep = next((d for d in deployments if d["metadata"]["name"] == dn), None)
        if dep is None:
            continue
        labels = dep["spec"]["template"]["metadata"]["labels"]

        def selects(sel: dict) -> bool:
            ml = (sel or {}).get("matchLabels", {})
            return bool(ml) and all(labels.get(k) == v for k, v in ml.items())

        c.check(any(selects(p["spec"].get("selector")) for p in by_kind.get("PodDisruptionBudget", [])),
                f"{dn}: covered by a PodDisruptionBudget")
        c.check(any(h["spec"]["scaleTargetRef"]["name"] == dn for h in by_kind.get("HorizontalPodAutoscaler", [])),
                f"{dn}: covered by a HorizontalPodAutoscaler")
        nps = [p for p in by_kind.get("NetworkPolicy", []) if selects(p["spec"].get("podSelector"))]
        c.check(bool(nps), f"{dn}: covered by a NetworkPolicy")
        for p in nps:
            c.check(set(p["spec"].get("policyTypes", [])) >= {"Ingress", "Egress"},
                    f"{dn}: NetworkPolicy {p['metadata']['name']} restricts ingress and egress")
            egress_ports = {pt.get("port") for r in p["spec"].get("egress", []) for pt in r.get("ports", [])}
            c.check({53, 5432, 6379} <= egress_ports, f"{dn}: egress to DNS, Postgres, Redis allowed")
    for p in by_kind.get("PodDisruptionBudget", []):
        c.check("minAvailable" in p["spec"] or "maxUnavailable" in p["spec"],
                f"PDB {p['metadata']['name']}: has a budget")
    sms = by_kind.get("ServiceMonitor", [])
    c.check(bool(sms), "ServiceMonitor present")
    for sm in sms:
        eps = sm["spec"].get("endpoints", [])
        c.check(eps and all(e.get("port") == "management" and e.get("path") == "/metrics" for e in eps),
                f"ServiceMonitor {sm['metadata']['name']}: management port, /metrics")
    for ns in by_kind.get("Namespace", []):
        c.check(ns["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") == "restricted",
                f"Namespace {ns['metadata']['name']}: Pod Security 'restricted' enforced")
    return c


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k8s-version", default="1.30.0")
    ap.add_argument("--env-example")
    ap.add_argument("--expect-fail", action="store_true")
    ap.add_argument("--no-latest", action="store_true", help="refuse :latest images (overlays)")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    env_vars = env_example_vars(args.env_example) if args.env_example else None
    passed = failed = 0
    for f in args.files:
        c = check_file(f, args.k8s_version, env_vars, args.no_latest)
        if args.expect_fail:
            ok = c.failed > 0
            print(("ok   " if ok else "FAIL ") + f"[{os.path.basename(f)}] broken manifest is rejected "
                  f"({c.failed} rule(s) fired)")
            passed, failed = passed + ok, failed + (not ok)
        else:
            passed, failed = passed + c.passed, failed + c.failed
            if c.skipped:
                print(f"note [{os.path.basename(f)}] {c.skipped} custom resource(s) not schema-validated")
    print(f"passed={passed} failed={failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
