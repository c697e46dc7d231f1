#!/usr/bin/env python3
"""Production properties of docker-compose.prod.yml (and a few of docker-compose.yml,
the Dockerfile and .dockerignore), asserted on the parsed files.

usage: check_compose.py --repo ROOT [--init-dir DIR]
  --init-dir  a copy of the repository where scripts/init.sh ran: its .env drives the
              interpolation and every secret file the compose file mounts must exist there.

Prints one PASS/FAIL line per check and finally `RESULT <passed> <failed>`.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import composelib as cl  # noqa: E402

ALLOWED_CAPS = {"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "SETGID", "SETUID", "NET_BIND_SERVICE"}
RESTART_OK = re.compile(r"^(always|unless-stopped|on-failure(:\d+)?)$")
SECRETISH_KEY = re.compile(r"(PASSWORD|PASSWD|PASS|SECRET|TOKEN|PRIVATE|CREDENTIAL|API_?KEY|ACCESS_KEY|_KEY_ID|WEBHOOK)", re.I)
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^@\s/]+@", re.I)
# Compose variables that are build metadata, set by CI per build (not host configuration).
BUILD_VARS = {"GIT_SHA", "BUILD_TIME"}


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"PASS {name}")
        else:
            self.failed += 1
            print(f"FAIL {name}{': ' + detail if detail else ''}")
        return ok


def is_oneshot(svc: dict) -> bool:
    labels = svc.get("labels") or {}
    if isinstance(labels, list):
        labels = dict(item.split("=", 1) for item in labels)
    return str(labels.get("com.ballast.oneshot", "")).lower() == "true"


def default_of(expr: str) -> str:
    """`${X:-80}` -> `80` for a raw compose value; plain values unchanged."""
    return cl.interpolate(expr, {})


def check_prod(c: Checks, repo: Path, init_dir: Path | None) -> None:
    path = repo / "docker-compose.prod.yml"
    text = path.read_text(encoding="utf-8")
    env_source = (init_dir / ".env") if init_dir else (repo / ".env.example")
    env = cl.parse_dotenv(env_source)
    raw = cl.load_raw(path)
    compose = cl.interpolate(raw, env)
    services: dict = compose["services"]
    raw_services: dict = raw["services"]
    networks: dict = compose.get("networks") or {}

    expected = {"api", "worker", "postgres", "redis", "nginx", "backup", "minio", "minio-init",
                "prometheus", "alertmanager", "grafana", "postgres-exporter", "redis-exporter",
                "nginx-exporter", "node-exporter"}
    c.check("prod: has every service of DESIGN §10", expected <= set(services),
            f"missing {sorted(expected - set(services))}")

    for name, svc in sorted(services.items()):
        oneshot = is_oneshot(svc)
        hc = svc.get("healthcheck") or {}
        if oneshot:
            c.check(f"prod/{name}: one-shot job restarts on failure only",
                    str(svc.get("restart", "")).startswith("on-failure"), str(svc.get("restart")))
        else:
            c.check(f"prod/{name}: healthcheck with test and start_period",
                    bool(hc.get("test")) and not hc.get("disable") and "start_period" in hc, str(hc))
            c.check(f"prod/{name}: restart policy", bool(RESTART_OK.match(str(svc.get("restart", "")))),
                    str(svc.get("restart")))
        limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        c.check(f"prod/{name}: cpu and memory limits", "cpus" in limits and "memory" in limits, str(limits))
        log = svc.get("logging") or {}
        opts = log.get("options") or {}
        c.check(f"prod/{name}: json-file log rotation",
                log.get("driver") == "json-file" and "max-size" in opts and "max-file" in opts, str(log))
        c.check(f"prod/{name}: no-new-privileges",
                "no-new-privileges:true" in (svc.get("security_opt") or []), str(svc.get("security_opt")))
        c.check(f"prod/{name}: cap_drop ALL", svc.get("cap_drop") == ["ALL"], str(svc.get("cap_drop")))
        extra = set(svc.get("cap_add") or []) - ALLOWED_CAPS
        c.check(f"prod/{name}: cap_add only from the documented minimal set", not extra, str(sorted(extra)))
        if svc.get("cap_add"):
            # the capabilities must be explained in a comment right above cap_add
            block = re.search(rf"\n  {re.escape(name)}:\n(.*?)(?=\n  [a-z][a-z0-9-]*:\n|\nnetworks:)", text, re.S)
            before = block.group(1).split("cap_add:")[0].rstrip().splitlines() if block else []
            c.check(f"prod/{name}: cap_add is commented", bool(before) and before[-1].strip().startswith("#"))
        c.check(f"prod/{name}: read-only root filesystem", svc.get("read_only") is True, str(svc.get("read_only")))
        c.check(f"prod/{name}: stop_grace_period set", "stop_grace_period" in svc)

        # depends_on: long form, healthy dependencies (completed for one-shot jobs)
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            c.check(f"prod/{name}: depends_on uses conditions", False, "short form (no condition)")
        else:
            for dep, spec in deps.items():
                want = "service_completed_successfully" if is_oneshot(services.get(dep, {})) else "service_healthy"
                c.check(f"prod/{name}: depends_on {dep} is {want}", (spec or {}).get("condition") == want,
                        str(spec))
                if want == "service_healthy":
                    dhc = (services.get(dep) or {}).get("healthcheck") or {}
                    c.check(f"prod/{name}: dependency {dep} has a healthcheck", bool(dhc.get("test")))

        # no inline secrets
        senv = cl.service_env(svc)
        mounted = {target for _, target in cl.service_secrets(svc)}
        bad = []
        for key, value in senv.items():
            value = value or ""
            if key.endswith("_FILE"):
                if value.startswith("/run/secrets/") and value not in mounted:
                    bad.append(f"{key} points at unmounted {value}")
                continue
            if SECRETISH_KEY.search(key) and value and not value.startswith(("/run/secrets/", "/etc/")):
                bad.append(f"{key}=<literal>")
            if URL_WITH_PASSWORD.search(value):
                bad.append(f"{key} holds a URL with a password")
        for part in svc.get("command") or []:
            if isinstance(part, str) and (URL_WITH_PASSWORD.search(part.replace("$${", "").replace("${", ""))
                                          and "$" not in part):
                bad.append("command holds a URL with a password")
        c.check(f"prod/{name}: no inline secrets in environment/command", not bad, "; ".join(bad))

    # ports: nginx only, 80/443 only
    publishers = sorted(n for n, s in services.items() if s.get("ports"))
    c.check("prod: only nginx publishes ports", publishers == ["nginx"], str(publishers))
    for i, port in enumerate(raw_services.get("nginx", {}).get("ports") or []):
        spec = str(port) if not isinstance(port, dict) else f"{port.get('published')}:{port.get('target')}"
        parts = default_of(spec).split(":")
        target, published = parts[-1], parts[-2] if len(parts) >= 2 else ""
        c.check(f"prod/nginx: port {i} is 80 or 443 (target) and published on 80/443 by default",
                target in {"80", "443"} and published in {"80", "443"} and target == published, spec)
    c.check("prod/nginx: exposes 80 and 443", {str(default_of(str(p))).split(":")[-1]
                                              for p in raw_services["nginx"].get("ports", [])} == {"80", "443"})
    c.check("prod: no service uses host networking",
            not [n for n, s in services.items() if str(s.get("network_mode", "")).startswith("host")])

    # networks
    back, front = networks.get("back") or {}, networks.get("front")
    c.check("prod: back network is internal", back.get("internal") is True, str(back))
    c.check("prod: front network exists and is not internal",
            front is not None and not (front or {}).get("internal"), str(front))
    on_front = sorted(n for n, s in services.items() if "front" in cl.networks_of(s))
    c.check("prod: only nginx is on the public front network", on_front == ["nginx"], str(on_front))
    for name in ("postgres", "redis"):
        c.check(f"prod/{name}: only on the internal back network", cl.networks_of(services[name]) == ["back"],
                str(cl.networks_of(services[name])))
    for name in ("api", "worker"):
        c.check(f"prod/{name}: on back, never on front", "back" in cl.networks_of(services[name])
                and "front" not in cl.networks_of(services[name]))
    c.check("prod/nginx: on front and back (reaches the app)",
            set(cl.networks_of(services["nginx"])) == {"front", "back"})
    for n, s in services.items():
        for net in cl.networks_of(s):
            if net not in ("front", "back") and net in networks:
                c.check(f"prod/{n}: extra network {net} publishes nothing", not s.get("ports"))

    # the app processes
    delays = {}
    for name, cmd in (("api", "serve"), ("worker", "worker")):
        svc = services[name]
        senv = cl.service_env(svc)
        c.check(f"prod/{name}: runs `{cmd}`", svc.get("command") == [cmd], str(svc.get("command")))
        c.check(f"prod/{name}: APP_ENV=production, LOG_FORMAT=json",
                senv.get("APP_ENV") == "production" and senv.get("LOG_FORMAT") == "json")
        for var in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET"):
            c.check(f"prod/{name}: {var} comes from a secret file",
                    senv.get(f"{var}_FILE", "").startswith("/run/secrets/") and not senv.get(var), str(senv.get(var)))
        c.check(f"prod/{name}: DATABASE_ALLOW_INSECURE not set", senv.get("DATABASE_ALLOW_INSECURE") in (None, "", "false"))
        c.check(f"prod/{name}: rate limiting not disabled", senv.get("RATE_LIMIT_ENABLED") in (None, "", "true"))
        try:
            delay = float(senv["SHUTDOWN_READINESS_DELAY_SECS"])
            shutdown = float(senv["SHUTDOWN_TIMEOUT_SECS"])
            drain = float(senv.get("JOB_DRAIN_TIMEOUT_SECS", "25"))
            grace = cl.duration_seconds(svc["stop_grace_period"])
            delays[name] = (delay, shutdown, drain, grace)
            c.check(f"prod/{name}: stop_grace_period {grace:g}s > readiness delay {delay:g}s + shutdown {shutdown:g}s",
                    grace > delay + shutdown)
            c.check(f"prod/{name}: job drain {drain:g}s < shutdown {shutdown:g}s", drain < shutdown)
        except (KeyError, ValueError) as e:
            c.check(f"prod/{name}: shutdown budget is explicit", False, repr(e))
        hc = " ".join(svc.get("healthcheck", {}).get("test", []))
        c.check(f"prod/{name}: healthcheck uses `ballast healthcheck` (no curl in the image)",
                "/app/ballast healthcheck" in hc, hc)
        c.check(f"prod/{name}: runs as the image's non-root user", str(svc.get("user", "65532")).startswith("65532"))
    api_env = cl.service_env(services["api"])
    c.check("prod/api: WORKER_CONCURRENCY is 0 or small", int(api_env.get("WORKER_CONCURRENCY", "4") or 0) <= 2)
    c.check("prod/api: TRUSTED_PROXIES is nginx's fixed address",
            api_env.get("TRUSTED_PROXIES", "").split("/")[0]
            == ((services["nginx"].get("networks") or {}).get("back") or {}).get("ipv4_address"),
            api_env.get("TRUSTED_PROXIES", ""))

    # postgres
    pg = services["postgres"]
    pg_cmd = " ".join(pg.get("command") or [])
    c.check("prod/postgres: Postgres 15/16 image", bool(re.match(r"postgres:1[56]\b", pg.get("image", ""))), pg.get("image"))
    c.check("prod/postgres: tuned config file selected", "config_file=/etc/postgresql/postgresql.conf" in pg_cmd)
    conf = (repo / "config/postgres/postgresql.conf").read_text()
    hba = (repo / "config/postgres/pg_hba.conf").read_text()
    c.check("prod/postgres: ssl = on", bool(re.search(r"^ssl\s*=\s*on\b", conf, re.M)))
    c.check("prod/postgres: pg_hba rejects non-TLS TCP and uses scram",
            bool(re.search(r"^hostnossl\s+all\s+all\s+0\.0\.0\.0/0\s+reject", hba, re.M))
            and bool(re.search(r"^hostssl\s+all\s+all\s+0\.0\.0\.0/0\s+scram-sha-256", hba, re.M))
            and not re.search(r"^host\s", hba, re.M))
    c.check("prod/postgres: pg_isready healthcheck", "pg_isready" in " ".join(pg["healthcheck"]["test"]))
    c.check("prod/postgres: data on a named volume",
            any(str(v).split(":")[0] in (compose.get("volumes") or {}) and ":/var/lib/postgresql/data" in str(v)
                for v in pg.get("volumes", [])))
    c.check("prod/postgres: password from a secret file",
            cl.service_env(pg).get("POSTGRES_PASSWORD_FILE", "").startswith("/run/secrets/"))

    # redis
    rd = services["redis"]
    rconf = (repo / "config/redis/redis.conf").read_text()
    start = (repo / "config/redis/start.sh").read_text()
    c.check("prod/redis: AOF on", bool(re.search(r"^appendonly yes", rconf, re.M)))
    c.check("prod/redis: maxmemory + LRU eviction",
            bool(re.search(r"^maxmemory \S+", rconf, re.M))
            and bool(re.search(r"^maxmemory-policy (allkeys|volatile)-lru", rconf, re.M))
            and cl.service_env(rd).get("REDIS_MAXMEMORY_POLICY", "allkeys-lru") in ("allkeys-lru", "volatile-lru"))
    c.check("prod/redis: requirepass from the secret file via the wrapper",
            "start.sh" in " ".join(rd.get("command") or []) and "requirepass" in start
            and "/run/secrets/redis_password" in start)
    c.check("prod/redis: healthcheck authenticates without argv password",
            "REDISCLI_AUTH" in " ".join(rd["healthcheck"]["test"]))

    # nginx
    ng = services["nginx"]
    vols = [str(v) for v in ng.get("volumes", [])]
    c.check("prod/nginx: official image", ng.get("image", "").startswith("nginx:"), ng.get("image"))
    c.check("prod/nginx: mounts nginx/templates at /etc/nginx/templates",
            any(v.startswith("./nginx/templates:/etc/nginx/templates") for v in vols))
    c.check("prod/nginx: mounts nginx/nginx.conf", any(v.startswith("./nginx/nginx.conf:/etc/nginx/nginx.conf") for v in vols))
    c.check("prod/nginx: mounts the certificates read-only", any(":/etc/nginx/certs:ro" in v for v in vols))
    nenv = cl.service_env(ng)
    want = {"BALLAST_UPSTREAM": "api:8080", "NGINX_MAX_BODY_SIZE": "100m", "NGINX_HTTP_PORT": "80",
            "NGINX_HTTPS_PORT": "443", "NGINX_CERT_DIR": "/etc/nginx/certs"}
    c.check("prod/nginx: template variables", all(nenv.get(k) == v for k, v in want.items())
            and nenv.get("NGINX_SERVER_NAME") and nenv.get("NGINX_STATUS_PORT"), str(nenv))
    ne = services["nginx-exporter"]
    c.check("prod/nginx-exporter: scrapes nginx stub_status on the status port",
            any(f"http://nginx:{nenv.get('NGINX_STATUS_PORT')}/stub_status" in str(a) for a in ne.get("command", [])))

    # backup
    bk = services["backup"]
    benv = cl.service_env(bk)
    c.check("prod/backup: postgres image runs scripts/backup.sh",
            "postgres:" in bk.get("image", "") and "/opt/ballast/scripts/backup.sh" in " ".join(bk.get("command") or []))
    c.check("prod/backup: scripts mounted read-only", "./scripts:/opt/ballast/scripts:ro" in [str(v) for v in bk["volumes"]])
    c.check("prod/backup: retention and schedule configured",
            all(benv.get(k) for k in ("BACKUP_DIR", "BACKUP_SCHEDULE", "BACKUP_KEEP_DAILY", "BACKUP_KEEP_WEEKLY",
                                      "BACKUP_KEEP_MONTHLY")), str(benv))
    c.check("prod/backup: database from a secret file", benv.get("DATABASE_URL_FILE", "").startswith("/run/secrets/"))

    # profiles
    for n in ("minio", "minio-init"):
        c.check(f"prod/{n}: profile s3", services[n].get("profiles") == ["s3"])
    for n in ("prometheus", "alertmanager", "grafana", "postgres-exporter", "redis-exporter", "nginx-exporter",
              "node-exporter"):
        c.check(f"prod/{n}: profile monitoring", services[n].get("profiles") == ["monitoring"])
    for n in ("api", "worker", "postgres", "redis", "nginx", "backup"):
        c.check(f"prod/{n}: in the default profile", not services[n].get("profiles"))
    c.check("prod/grafana: admin password from a secret file",
            cl.service_env(services["grafana"]).get("GF_SECURITY_ADMIN_PASSWORD__FILE", "").startswith("/run/secrets/"))
    pvols = [str(v) for v in services["prometheus"].get("volumes", [])]
    c.check("prod/prometheus: mounts monitoring/ (prometheus.yml + rules)", "./monitoring:/etc/prometheus:ro" in pvols)
    avols = [str(v) for v in services["alertmanager"].get("volumes", [])]
    c.check("prod/alertmanager: mounts monitoring/alertmanager.yml",
            any(v.startswith("./monitoring/alertmanager.yml:") for v in avols))
    gvols = [str(v) for v in services["grafana"].get("volumes", [])]
    c.check("prod/grafana: mounts provisioning and dashboards",
            any(v.startswith("./monitoring/grafana/provisioning:") for v in gvols)
            and any(v.startswith("./monitoring/grafana/dashboards:") for v in gvols))

    # secrets wiring
    top = compose.get("secrets") or {}
    used = {s for svc in services.values() for s, _ in cl.service_secrets(svc)}
    c.check("prod: every mounted secret is defined", used <= set(top), str(sorted(used - set(top))))
    c.check("prod: every defined secret is used", set(top) <= used, str(sorted(set(top) - used)))
    c.check("prod: secrets are files under the secrets directory",
            all("file" in s and "secrets" in s["file"] for s in top.values()))

    # variables documented
    example = (repo / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, re.M))
    referenced = cl.variables_in(re.sub(r"(?m)^\s*#.*$", "", text)) - BUILD_VARS
    c.check("prod: every ${VARIABLE} of the compose file is documented in .env.example",
            referenced <= documented, str(sorted(referenced - documented)))
    deploy_section = example.split("# ==== deployment", 1)[1] if "# ==== deployment" in example else ""
    lines = deploy_section.splitlines()
    undocumented = [ln.split("=")[0] for i, ln in enumerate(lines)
                    if re.match(r"^[A-Z][A-Z0-9_]*=", ln) and not any(
                        lines[j].startswith("#") for j in range(max(0, i - 3), i))]
    c.check(".env.example: every deployment variable has a comment", not undocumented, str(undocumented))
    kv = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", deploy_section, re.M))
    c.check(".env.example: retention 7/4/12", (kv.get("BACKUP_KEEP_DAILY"), kv.get("BACKUP_KEEP_WEEKLY"),
                                               kv.get("BACKUP_KEEP_MONTHLY")) == ("7", "4", "12"), str(kv))
    for k in ("BALLAST_TAG", "DOMAIN", "BACKUP_DIR", "BACKUP_S3_URL", "BACKUP_SCHEDULE", "POSTGRES_PASSWORD_FILE",
              "REDIS_PASSWORD_FILE", "HTTP_PUBLISH_PORT", "HTTPS_PUBLISH_PORT"):
        c.check(f".env.example: deployment variable {k}", k in kv)

    # the secret files exist where init.sh put them
    if init_dir:
        missing = []
        for name, spec in top.items():
            p = Path(spec["file"])
            p = p if p.is_absolute() else init_dir / p
            if not p.is_file():
                missing.append(f"{name} ({p})")
        c.check("init: every secret file the compose file mounts exists", not missing, ", ".join(missing))
        for dirpath in (services["backup"]["volumes"][1].split(":")[0],
                        str(services["node-exporter"]["volumes"][3]).split(":")[0]):
            c.check(f"init: bind-mounted directory {dirpath} exists", (init_dir / dirpath).is_dir())


def check_dev(c: Checks, repo: Path) -> None:
    raw = cl.load_raw(repo / "docker-compose.yml")
    compose = cl.interpolate(raw, {})
    services = compose["services"]
    c.check("dev: app, postgres, redis, minio", {"app", "postgres", "redis", "minio"} <= set(services))
    app = services["app"]
    c.check("dev/app: built from this checkout, runs serve",
            app.get("build") is not None and app.get("command") == ["serve"])
    env = cl.service_env(app)
    c.check("dev/app: debug-friendly settings",
            env.get("APP_ENV") == "development" and env.get("LOG_FORMAT") == "pretty"
            and env.get("SHUTDOWN_READINESS_DELAY_SECS") == "0", str(env))
    c.check("dev/postgres: Postgres 15/16", bool(re.match(r"postgres:1[56]\b", services["postgres"]["image"])))
    c.check("dev/redis: Redis 7", services["redis"]["image"].startswith("redis:7"))
    c.check("dev/minio: optional (profile s3)", services["minio"].get("profiles") == ["s3"])
    for name, svc in services.items():
        for port in svc.get("ports") or []:
            c.check(f"dev/{name}: port {port} bound to 127.0.0.1", str(port).startswith("127.0.0.1:"))
        deps = svc.get("depends_on") or {}
        c.check(f"dev/{name}: depends_on waits for health",
                isinstance(deps, dict) and all(d.get("condition") in ("service_healthy",) for d in deps.values()))


def check_dockerfile(c: Checks, repo: Path) -> None:
    text = (repo / "Dockerfile").read_text()
    body = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    stages = re.split(r"(?m)^FROM ", body)[1:]
    final = stages[-1] if stages else ""
    c.check("Dockerfile: multi-stage", len(stages) >= 3, f"{len(stages)} stages")
    c.check("Dockerfile: cargo-chef planner and cook", "cargo chef prepare" in body and "cargo chef cook" in body)
    cook, build, copy_src = body.find("cargo chef cook"), body.find("cargo build"), body.rfind("COPY . .")
    c.check("Dockerfile: dependencies cooked before the sources are copied", -1 < cook < copy_src < build)
    c.check("Dockerfile: cargo build --release --locked --bin ballast",
            bool(re.search(r"cargo build --release --locked --bin ballast", body)))
    c.check("Dockerfile: VERSION, GIT_SHA, BUILD_TIME build args",
            all(re.search(rf"(?m)^ARG {a}\b", body) for a in ("VERSION", "GIT_SHA", "BUILD_TIME")))
    c.check("Dockerfile: BALLAST_GIT_SHA/BALLAST_BUILD_TIME passed to the compiler",
            "BALLAST_GIT_SHA=" in body and "BALLAST_BUILD_TIME=" in body)
    c.check("Dockerfile: build args declared after the dependency layer (no cache bust per commit)",
            body.find("ARG GIT_SHA") > cook)
    c.check("Dockerfile: distroless cc nonroot runtime", final.startswith("gcr.io/distroless/cc-debian12:nonroot"))
    c.check("Dockerfile: runtime runs as 65532", bool(re.search(r"(?m)^USER 65532", final)))
    for needle in ('HEALTHCHECK', '"/app/ballast", "healthcheck"', 'ENTRYPOINT ["/app/ballast"]', 'CMD ["serve"]',
                   "STOPSIGNAL SIGTERM", "EXPOSE 8080 8081", "WORKDIR /app", "/app/migrations", "/app/config",
                   "/var/lib/ballast"):
        c.check(f"Dockerfile: runtime has {needle}", needle in final)
    for label in ("version", "revision", "source", "created", "title", "licenses"):
        c.check(f"Dockerfile: OCI label {label}", f"org.opencontainers.image.{label}=" in final)
    copies = re.findall(r"(?m)^COPY .*$", final)
    c.check("Dockerfile: final stage copies no sources, no toolchain",
            all(("/src" not in ln or "--from=builder /out" in ln) and "COPY . " not in ln
                and "cargo" not in ln for ln in copies), str(copies))
    c.check("Dockerfile: storage directory owned by the non-root user", "--chown=65532:65532" in final)


def check_dockerignore(c: Checks, repo: Path) -> None:
    lines = {ln.strip() for ln in (repo / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")}
    for pattern in ("target/", ".git/", ".env*", "!.env.example", "secrets/", "bench/results/"):
        c.check(f".dockerignore: {pattern}", pattern in lines)
    c.check(".dockerignore: keeps the build inputs",
            not ({"src/", "migrations/", "Cargo.toml", "Cargo.lock", "config/"} & lines))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--init-dir")
    args = ap.parse_args()
    repo = Path(args.repo).resolve()
    init_dir = Path(args.init_dir).resolve() if args.init_dir else None
    c = Checks()
    for fn in (lambda: check_prod(c, repo, init_dir), lambda: check_dev(c, repo),
               lambda: check_dockerfile(c, repo), lambda: check_dockerignore(c, repo)):
        try:
            fn()
        except Exception as e:  # a crash is a failure with its reason, not a traceback
            c.check("checks ran without error", False, f"{type(e).__name__}: {e}")
    print(f"RESULT {c.passed} {c.failed}")
    return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
