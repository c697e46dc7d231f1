#!/usr/bin/env python3
"""Helpers for checking ballast's monitoring assets (stdlib + PyYAML only).

Used by scripts/checks/monitoring.sh (static checks) and scripts/e2e/monitoring-live.sh
(queries against a live Prometheus). Every check command prints one line per check,
"ok  <what>" or "FAIL <what>: <why>", and exits 1 when any failed.

  promassets.py check-alerts      alerts: labels, annotations, runbook anchors, test coverage
  promassets.py check-names       every referenced metric name is known (metrics.txt)
  promassets.py check-contract    metrics.txt [app] == DESIGN 4.3 == src/metrics.rs
  promassets.py check-dashboards  dashboard structure, variables, datasource, generator
  promassets.py check-alertmanager  no inline secrets, inhibit rules name real alerts
  promassets.py check-prometheus  scrape jobs/targets/intervals of prometheus.yml
  promassets.py expr-rules OUT    every dashboard expression as a rule file (for promtool)
  promassets.py live-queries [--exporters postgres,...]  JSON lines: every expression the live
                                  test must query (exporters not listed as running are skipped)
  promassets.py render-config ... prometheus.yml rendered to 127.0.0.1 targets
  promassets.py wait-for --url U EXPR   poll Prometheus until EXPR returns data
  promassets.py live-check ...    query every live item, retrying empty ones until a deadline
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
MON = os.path.dirname(HERE)
ROOT = os.path.dirname(MON)
# metrics.txt sections ballast itself exports (the rest come from exporters).
OWN_SECTIONS = ("app", "app-extra", "process")
SEVERITIES = {"critical", "warning"}
TEMPLATE_SUBST = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan", "atan2", "start", "end"}

FAILED = 0


def result(ok, what, why=""):
    global FAILED
    if ok:
        print(f"ok   {what}")
    else:
        FAILED += 1
        print(f"FAIL {what}: {why}")


def load_yaml(path):
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


# ---------------------------------------------------------------- model

def rule_groups(name):
    return load_yaml(os.path.join(MON, name)).get("groups", [])


def alerts():
    return [r for g in rule_groups("alert_rules.yml") for r in g["rules"] if "alert" in r]


def recordings():
    return [r for g in rule_groups("recording_rules.yml") for r in g["rules"] if "record" in r]


def known_metrics():
    """{name: section} from metrics.txt, histograms expanded."""
    known, section = {}, None
    with open(os.path.join(MON, "metrics.txt"), encoding="utf-8") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            name, kind = line.split()
            known[name] = section
            if kind == "histogram":
                for suffix in ("_bucket", "_sum", "_count"):
                    known[name + suffix] = section
    return known


def app_contract():
    names, section = [], None
    with open(os.path.join(MON, "metrics.txt"), encoding="utf-8") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if line.startswith("["):
                section = line.strip("[]")
            elif line and section == "app":
                names.append(line.split()[0])
    return names


def dashboards():
    out = []
    for path in sorted(glob.glob(os.path.join(MON, "grafana", "dashboards", "*.json"))):
        with open(path, encoding="utf-8") as fh:
            out.append((os.path.basename(path), json.load(fh)))
    return out


def all_panels(dash):
    for panel in dash.get("panels", []):
        yield panel
        for sub in panel.get("panels", []):
            yield sub


def template_vars(dash):
    return [v["name"] for v in dash.get("templating", {}).get("list", [])]


def substitute(expr, variables):
    for key, value in TEMPLATE_SUBST.items():
        expr = expr.replace(key, value)
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", ".*").replace("$" + name, ".*")
    return expr


def metric_names(expr):
    """Metric names referenced by a PromQL expression (a tokenizer, not a parser)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"'(?:[^'\\]|\\.)*'", "''", s)
    s = re.sub(r"`[^`]*`", "``", s)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def dashboard_exprs():
    """(dashboard, panel title, ref, expr with variables substituted, raw expr)."""
    out = []
    for fname, dash in dashboards():
        variables = template_vars(dash)
        for panel in all_panels(dash):
            for tgt in panel.get("targets", []):
                expr = tgt.get("expr", "")
                out.append((fname, panel.get("title", "?"), tgt.get("refId", "?"),
                            substitute(expr, variables), expr))
        for var in dash.get("templating", {}).get("list", []):
            if var.get("type") != "query":
                continue
            query = var.get("definition") or var.get("query", {}).get("query", "")
            m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
            if m:
                expr = f"count by ({m.group(2)}) ({m.group(1)})"
            else:
                m = re.fullmatch(r"\s*query_result\((.*)\)\s*", query)
                expr = m.group(1) if m else query
            out.append((fname, f"variable ${var['name']}", "var", substitute(expr, variables), query))
    return out


# ---------------------------------------------------------------- checks

def github_anchors(path):
    anchors = set()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
            if m:
                text = re.sub(r"`|\*|_(?=\w)|\[|\]\([^)]*\)", "", m.group(1)).lower()
                slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
                anchors.add(slug)
            for a in re.findall(r'<a\s+(?:id|name)="([^"]+)"', line):
                anchors.add(a)
    return anchors


def cmd_check_alerts(_args):
    rules = alerts()
    ops = os.path.join(ROOT, "docs", "OPERATIONS.md")
    anchors = github_anchors(ops) if os.path.exists(ops) else set()
    result(os.path.exists(ops), "docs/OPERATIONS.md exists", "missing")
    if os.path.exists(ops):
        links = set(re.findall(r"\]\(#([^)]+)\)", open(ops, encoding="utf-8").read()))
        broken = sorted(links - anchors)
        result(not broken, f"docs/OPERATIONS.md internal links resolve ({len(links)})", f"broken: {broken}")
    names = sorted({r["alert"] for r in rules})
    result(len(names) >= 12, f"at least 12 alerts ({len(names)} names, {len(rules)} rules)", "too few")
    for r in rules:
        what = f"alert {r['alert']}/{r.get('labels', {}).get('severity', '?')}"
        problems = []
        sev = r.get("labels", {}).get("severity")
        if sev not in SEVERITIES:
            problems.append(f"severity {sev!r} not in {sorted(SEVERITIES)}")
        if not r.get("labels", {}).get("component"):
            problems.append("no component label")
        ann = r.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not str(ann.get(key, "")).strip():
                problems.append(f"no {key}")
        url = ann.get("runbook_url", "")
        m = re.fullmatch(r"docs/OPERATIONS\.md#([\w\-]+)", url)
        if not m:
            problems.append(f"runbook_url {url!r} is not docs/OPERATIONS.md#anchor")
        elif m.group(1) not in anchors:
            problems.append(f"anchor #{m.group(1)} not in docs/OPERATIONS.md")
        result(not problems, what + " has severity/summary/description/runbook", "; ".join(problems))

    # test coverage: each (alert, severity) fires in a test, each alert has a silent case
    fired, silent = set(), set()
    for path in sorted(glob.glob(os.path.join(MON, "tests", "*.yml"))):
        for test in load_yaml(path).get("tests", []):
            for art in test.get("alert_rule_test", []) or []:
                exp = art.get("exp_alerts") or []
                if not exp:
                    silent.add(art["alertname"])
                for alert in exp:
                    fired.add((art["alertname"], alert.get("exp_labels", {}).get("severity")))
    for r in rules:
        key = (r["alert"], r["labels"]["severity"])
        result(key in fired, f"test fires {key[0]}/{key[1]}", "no promtool test expects it to fire")
    for name in names:
        result(name in silent, f"test keeps {name} silent", "no promtool test expects it not to fire")
    return FAILED


def cmd_check_names(_args):
    known = known_metrics()
    recorded = {r["record"] for r in recordings()}
    sources = [(f"recording rule {r['record']}", r["expr"]) for r in recordings()]
    sources += [(f"alert {r['alert']}", r["expr"]) for r in alerts()]
    sources += [(f"{d} / {p} / {ref}", expr) for d, p, ref, expr, _raw in dashboard_exprs()]
    for what, expr in sources:
        unknown = sorted(n for n in metric_names(expr) if n not in known and n not in recorded)
        result(not unknown, f"metric names known: {what}", "unknown " + ", ".join(unknown))
    return FAILED


def cmd_check_contract(_args):
    contract = app_contract()
    design = os.environ.get("BALLAST_DESIGN_DOC") or os.path.join(os.path.dirname(ROOT), "shared", "DESIGN.md")
    if os.path.exists(design):
        text = open(design, encoding="utf-8").read()
        m = re.search(r"\*\*Metrics\*\*(.*?)\n\d+\. \*\*", text, re.S)
        block = m.group(1) if m else ""
        names = set(re.findall(r"[`,]\s*`?([a-z][a-z0-9_]*)(?=[{`])", block))
        names = {n for n in names if not n.startswith("process")}
        missing = sorted(names - set(contract))
        extra = sorted(set(contract) - names)
        result(bool(names) and not missing and not extra,
               f"metrics.txt [app] matches DESIGN 4.3 ({len(names)} names)",
               f"not in metrics.txt: {missing}; not in DESIGN: {extra}")
    else:
        print(f"skip DESIGN.md not found at {design} (set BALLAST_DESIGN_DOC)")
    src = os.path.join(ROOT, "src", "metrics.rs")
    if os.path.exists(src):
        consts = set(re.findall(r'pub const \w+: &str = "([a-z0-9_]+)"', open(src, encoding="utf-8").read()))
        missing = sorted(set(contract) - consts)
        result(not missing, f"every [app] metric is a constant in src/metrics.rs ({len(consts)})",
               f"missing: {missing}")
    else:
        print("skip src/metrics.rs not found")
    return FAILED


def cmd_check_dashboards(args):
    gen = os.path.join(MON, "grafana", "generate_dashboards.py")
    proc = subprocess.run([sys.executable, gen, "--check"], capture_output=True, text=True)
    result(proc.returncode == 0, "dashboards JSON matches generate_dashboards.py", proc.stdout.strip())
    ds = load_yaml(os.path.join(MON, "grafana", "provisioning", "datasources", "ballast.yml"))
    prom = [d for d in ds.get("datasources", []) if d.get("type") == "prometheus"]
    result(len(prom) == 1 and prom[0].get("uid") == "prometheus",
           "provisioned Prometheus datasource has uid 'prometheus'", str(prom))
    prov = load_yaml(os.path.join(MON, "grafana", "provisioning", "dashboards", "ballast.yml"))
    result(bool(prov.get("providers")) and prov["providers"][0].get("options", {}).get("path"),
           "dashboard provider has a path", str(prov))
    uids = set()
    for fname, dash in dashboards():
        problems = []
        for key in ("uid", "title", "panels", "templating", "schemaVersion"):
            if key not in dash:
                problems.append(f"no {key}")
        if dash.get("uid") in uids:
            problems.append("duplicate uid")
        uids.add(dash.get("uid"))
        variables = template_vars(dash)
        for needed in ("datasource", "job", "instance"):
            if needed not in variables:
                problems.append(f"no ${needed} variable")
        ids = [p.get("id") for p in all_panels(dash)]
        if len(ids) != len(set(ids)):
            problems.append("duplicate panel ids")
        n = 0
        for panel in all_panels(dash):
            if panel.get("type") == "row":
                continue
            n += 1
            title = panel.get("title", "?")
            if "gridPos" not in panel:
                problems.append(f"{title}: no gridPos")
            if panel.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{title}: datasource is not ${{datasource}}")
            if not panel.get("targets"):
                problems.append(f"{title}: no targets")
            for tgt in panel.get("targets", []):
                expr = tgt.get("expr", "")
                if not expr.strip():
                    problems.append(f"{title}: empty expr")
                if re.search(r"\[\d+[smh]\]", expr) and "[15m]" not in expr and "[1h]" not in expr:
                    problems.append(f"{title}: fixed range instead of $__rate_interval: {expr}")
                app = [x for x in metric_names(expr) if known_metrics().get(x) in OWN_SECTIONS]
                if app and ('instance=~"$instance"' not in expr or 'job=~"$job"' not in expr):
                    problems.append(f"{title}: app metric without $job/$instance filter")
        result(not problems, f"dashboard {fname}: {n} panels well-formed", "; ".join(problems))
    return FAILED


SECRET_KEYS = {"api_url", "routing_key", "service_key", "smtp_auth_password", "auth_password",
               "smtp_auth_secret", "slack_api_url", "bot_token", "token", "api_key", "password",
               "credentials", "opsgenie_api_key", "victorops_api_key", "webhook_url", "url"}


def walk(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}" if path else k)
            yield (f"{path}.{k}" if path else k, k, v)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def cmd_check_alertmanager(_args):
    cfg = load_yaml(os.path.join(MON, "alertmanager.yml"))
    inline = [p for p, k, v in walk(cfg) if k in SECRET_KEYS and isinstance(v, str) and v]
    result(not inline, "alertmanager.yml has no inline secret (only *_file)", ", ".join(inline))
    files = [v for p, k, v in walk(cfg) if k.endswith("_file")]
    result(bool(files) and all(str(v).startswith("/etc/alertmanager/secrets/") for v in files),
           f"alertmanager secrets read from /etc/alertmanager/secrets ({len(files)} files)", str(files))
    names = {r["alert"] for r in alerts()}
    for i, rule in enumerate(cfg.get("inhibit_rules", [])):
        bad = []
        for matcher in rule.get("source_matchers", []) + rule.get("target_matchers", []):
            m = re.fullmatch(r'alertname(=~|=)"(.*)"', matcher.replace(" ", ""))
            if not m:
                continue
            if m.group(1) == "=":
                if m.group(2) not in names:
                    bad.append(m.group(2))
            else:
                for alt in m.group(2).split("|"):
                    if not any(re.fullmatch(alt, n) for n in names):
                        bad.append(alt)
        result(not bad, f"inhibit rule {i + 1} names existing alerts", f"unknown: {bad}")
    return FAILED


def cmd_check_prometheus(_args):
    cfg = load_yaml(os.path.join(MON, "prometheus.yml"))
    result(cfg.get("global", {}).get("scrape_interval") == "15s", "global scrape_interval is 15s",
           str(cfg.get("global")))
    want = {"ballast-api": "api:8081", "ballast-worker": "worker:8081",
            "postgres-exporter": "postgres-exporter:9187", "redis-exporter": "redis-exporter:9121",
            "nginx-exporter": "nginx-exporter:9113", "node-exporter": "node-exporter:9100",
            "alertmanager": "alertmanager:9093"}
    jobs = {j["job_name"]: j for j in cfg.get("scrape_configs", [])}
    for job, target in want.items():
        found = []
        for sc in jobs.get(job, {}).get("static_configs", []):
            found += sc.get("targets", [])
        for dns in jobs.get(job, {}).get("dns_sd_configs", []):
            found += [f"{n}:{dns.get('port')}" for n in dns.get("names", [])]
        result(target in found, f"scrape job {job} -> {target}", f"found {found}")
    rule_files = cfg.get("rule_files", [])
    result(set(rule_files) >= {"alert_rules.yml", "recording_rules.yml"},
           "rule_files load alert_rules.yml and recording_rules.yml", str(rule_files))
    ams = [t for a in cfg.get("alerting", {}).get("alertmanagers", []) for s in a.get("static_configs", [])
           for t in s.get("targets", [])]
    result("alertmanager:9093" in ams, "alerts go to alertmanager:9093", str(ams))
    return FAILED


def cmd_expr_rules(args):
    rules = []
    for i, (d, p, ref, expr, _raw) in enumerate(dashboard_exprs()):
        rules.append({"record": f"dashboard_expr_{i}", "expr": expr,
                      "labels": {"dashboard": d, "panel": f"{p} {ref}"}})
    with open(args.out, "w", encoding="utf-8") as fh:
        yaml.safe_dump({"groups": [{"name": "dashboard-expressions", "rules": rules}]}, fh, sort_keys=False)
    print(len(rules))
    return 0


def cmd_live_queries(args):
    known = known_metrics()
    running = {e.strip() for e in (args.exporters or "").split(",") if e.strip()}
    recorded = {r["record"]: r["expr"] for r in recordings()}

    def underlying(names, seen=()):
        out = set()
        for n in names:
            if n in recorded and n not in seen:
                out |= underlying(metric_names(recorded[n]), seen + (n,))
            else:
                out.add(n)
        return out

    def skip_reason(expr):
        exporters = sorted({known.get(n) for n in underlying(metric_names(expr))
                            if str(known.get(n, "")).startswith("exporter:")
                            and known[n].split(":", 1)[1] not in running})
        if exporters:
            return "uses " + ", ".join(e.split(":", 1)[1] + "-exporter" for e in exporters) + \
                " metrics (that exporter does not run in this live test)"
        return ""

    items = []
    for d, p, ref, expr, _raw in dashboard_exprs():
        items.append({"kind": "panel", "what": f"{d} / {p} / {ref}", "expr": expr, "want": "data",
                      "skip": skip_reason(expr)})
    for r in recordings():
        items.append({"kind": "recording-expr", "what": r["record"], "expr": r["expr"], "want": "data",
                      "skip": skip_reason(r["expr"])})
        items.append({"kind": "recorded", "what": r["record"], "expr": r["record"], "want": "data",
                      "skip": skip_reason(r["expr"])})
    for r in alerts():
        items.append({"kind": "alert-eval", "what": f"{r['alert']}/{r['labels']['severity']}",
                      "expr": r["expr"], "want": "ok", "skip": ""})
    for item in items:
        print(json.dumps(item))
    return 0


def prom_query(url, expr, timeout=5):
    import urllib.parse
    import urllib.request
    data = urllib.parse.urlencode({"query": expr}).encode()
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/api/v1/query", data=data, timeout=timeout) as resp:
            body = json.load(resp)
    except Exception as exc:  # HTTP 400 carries the PromQL error in its body
        body = None
        if hasattr(exc, "read"):
            try:
                body = json.load(exc)
            except Exception:
                pass
        if body is None:
            return "error", str(exc), []
    if body.get("status") != "success":
        return "error", body.get("error", "?"), []
    res = body["data"]["result"]
    if body["data"]["resultType"] == "scalar":
        res = [res]
    return "success", "", res


def cmd_wait_for(args):
    """Polls until EXPR returns at least one series (filters like `> 0` make it a condition)."""
    import time
    deadline = time.monotonic() + args.timeout
    while True:
        status, err, res = prom_query(args.url, args.expr)
        if status == "success" and res:
            print(f"ok   waited for: {args.expr}")
            return 0
        if time.monotonic() > deadline:
            print(f"FAIL waited {args.timeout}s for: {args.expr} ({err or 'no data'})")
            return 1
        time.sleep(0.25)


def scraped_names(url):
    import urllib.request
    names = set()
    with urllib.request.urlopen(url, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, 1)[0])
    return names


def cmd_live_check(args):
    """Queries every live item against Prometheus; retries empty ones until the deadline."""
    import time
    items = []
    if args.metrics_url:
        exported = set()
        for url in args.metrics_url:
            exported |= scraped_names(url)
        known = known_metrics()
        for name, section in sorted(known.items()):
            if section not in OWN_SECTIONS or name.endswith(("_sum", "_count")):
                continue
            if name + "_bucket" in known:
                continue  # histograms are checked through their _bucket series
            ok = name in exported
            items.append({"kind": "exported", "what": name, "done": True, "skip": "", "ok": ok,
                          "why": "" if ok else "not in the /metrics of the api or worker process"})
    with open(args.queries, encoding="utf-8") as fh:
        for line in fh:
            item = json.loads(line)
            item["done"] = bool(item["skip"])
            items.append(item)
    deadline = time.monotonic() + args.timeout
    while True:
        pending = [i for i in items if not i["done"]]
        for item in pending:
            status, err, res = prom_query(args.url, item["expr"])
            if item["want"] == "ok":
                item["ok"], item["why"], item["done"] = status == "success", err, True
            elif status != "success":
                item["ok"], item["why"], item["done"] = False, f"query error: {err}", True
            elif res:
                item["ok"], item["why"], item["done"] = True, f"{len(res)} series", True
            else:
                item["ok"], item["why"] = False, "empty result"
        if all(i["done"] for i in items) or time.monotonic() > deadline:
            break
        time.sleep(1)
    # every loaded rule evaluated without error (Prometheus' own view, after the retries above)
    if args.rules_health:
        import urllib.request
        with urllib.request.urlopen(args.url.rstrip("/") + "/api/v1/rules", timeout=5) as resp:
            groups = json.load(resp)["data"]["groups"]
        loaded = 0
        for g in groups:
            for r in g["rules"]:
                loaded += 1
                ok = r.get("health") == "ok"
                items.append({"kind": "rule-health", "what": f"{g['name']} / {r['name']}", "skip": "",
                              "ok": ok, "why": "" if ok else f"{r.get('health')}: {r.get('lastError')}",
                              "expr": r.get("query", "")})
        expected = len(alerts()) + len(recordings())
        items.append({"kind": "rules-loaded", "what": f"{loaded} rules loaded by Prometheus", "skip": "",
                      "ok": loaded == expected, "why": f"expected {expected}"})
    passed = failed = skipped = 0
    for item in items:
        label = f"{item['kind']:<14} {item['what']}"
        if item.get("skip"):
            skipped += 1
            print(f"skip {label}: {item['skip']}")
        elif item.get("ok"):
            passed += 1
            print(f"ok   {label}" + (f" ({item['why']})" if item.get("why") else ""))
        else:
            failed += 1
            print(f"FAIL {label}: {item.get('why')}\n       expr: {item.get('expr', '')}")
    with open(args.summary, "w", encoding="utf-8") as fh:
        fh.write(f"{passed} {failed} {skipped}\n")
    return 1 if failed else 0


def cmd_render_config(args):
    cfg = load_yaml(args.src)
    src_dir = os.path.dirname(os.path.abspath(args.src))
    g = cfg.setdefault("global", {})
    g["scrape_interval"] = args.interval
    g["evaluation_interval"] = args.interval
    g["scrape_timeout"] = args.interval
    cfg["rule_files"] = [os.path.join(src_dir, f) if not os.path.isabs(f) else f
                         for f in cfg.get("rule_files", [])]
    mapping = dict(t.split("=", 1) for t in args.target)
    for sc in cfg.get("scrape_configs", []):
        job = sc["job_name"]
        target = mapping.get(job, args.unreachable)
        sc.pop("dns_sd_configs", None)
        sc["static_configs"] = [{"targets": [target]}]
        sc["scrape_interval"] = args.interval
        sc["scrape_timeout"] = args.interval
    for am in cfg.get("alerting", {}).get("alertmanagers", []):
        am.pop("dns_sd_configs", None)
        am["static_configs"] = [{"targets": [mapping.get("alertmanager", args.unreachable)]}]
    text = yaml.safe_dump(cfg, sort_keys=False)
    bad = [h for h in ("api:", "worker:", "postgres-exporter:", "redis-exporter:", "nginx-exporter:",
                       "node-exporter:", "alertmanager:9093", "localhost:") if f"'{h}" in text or f" {h}" in text]
    if bad:
        print(f"render-config: hosts left unrendered: {bad}", file=sys.stderr)
        return 1
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(text)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("check-alerts", "check-names", "check-contract", "check-dashboards",
                 "check-alertmanager", "check-prometheus"):
        sub.add_parser(name)
    p = sub.add_parser("live-queries")
    p.add_argument("--exporters", default="",
                   help="comma-separated exporter sections of metrics.txt that run (postgres,redis,nginx,node)")
    p = sub.add_parser("expr-rules")
    p.add_argument("out")
    p = sub.add_parser("wait-for")
    p.add_argument("--url", required=True)
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("expr")
    p = sub.add_parser("live-check")
    p.add_argument("--url", required=True, help="Prometheus base URL")
    p.add_argument("--queries", required=True, help="output of live-queries")
    p.add_argument("--metrics-url", action="append", default=[], help="/metrics of a ballast process")
    p.add_argument("--timeout", type=float, default=30, help="seconds to keep retrying empty results")
    p.add_argument("--summary", required=True, help="file receiving 'passed failed skipped'")
    p.add_argument("--rules-health", action="store_true", help="also require health=ok for every loaded rule")
    p = sub.add_parser("render-config")
    p.add_argument("--src", default=os.path.join(MON, "prometheus.yml"))
    p.add_argument("--out", required=True)
    p.add_argument("--interval", default="1s")
    p.add_argument("--target", action="append", default=[], help="JOB=HOST:PORT")
    p.add_argument("--unreachable", required=True, help="HOST:PORT for jobs without --target")
    args = ap.parse_args()
    fn = globals()["cmd_" + args.cmd.replace("-", "_")]
    rc = fn(args)
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())
