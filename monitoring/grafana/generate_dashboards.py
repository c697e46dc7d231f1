#!/usr/bin/env python3
"""Generates the Grafana dashboards of ballast (monitoring/grafana/dashboards/*.json).

The JSON files are committed (Grafana provisions them as they are); this script is their
source. Edit it, then run:

    python3 monitoring/grafana/generate_dashboards.py            # rewrite the JSON files
    python3 monitoring/grafana/generate_dashboards.py --check    # fail if they are stale

Rules the checks rely on (scripts/checks/monitoring.sh, scripts/e2e/monitoring-live.sh):
- only metric names from DESIGN section 4.3, exporters, and monitoring/recording_rules.yml;
- app panels filter with job=~"$job",instance=~"$instance" and use $__rate_interval;
- panels on rare events use `X or (total * 0)` / `or vector(0)` so they read 0, not
  "No data", when the event did not happen (the live test asserts every panel has data).
"""
import json
import os
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
F = 'job=~"$job",instance=~"$instance"'
RI = "$__rate_interval"
FS = 'fstype!~"tmpfs|ramfs|overlay|squashfs|nsfs|fuse.*"'
S5 = 'status=~"5.."'
S4 = 'status=~"4.."'
S429 = 'status="429"'
LIMITED = 'decision="limited"'
FALLBACK = 'decision="fallback"'


class Dash:
    def __init__(self, uid, title, description, extra_vars=()):
        self.uid, self.title, self.description = uid, title, description
        self.extra_vars = list(extra_vars)
        self.panels, self.x, self.y, self.row_h, self.next_id = [], 0, 0, 0, 1

    def _id(self):
        self.next_id += 1
        return self.next_id - 1

    def row(self, title):
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        self.panels.append({
            "id": self._id(), "type": "row", "title": title, "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": [],
        })
        self.y += 1

    def _place(self, w, h):
        if self.x + w > 24:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    @staticmethod
    def _targets(targets, instant=False, fmt=None):
        out = []
        for i, t in enumerate(targets):
            expr, legend = (t, "__auto") if isinstance(t, str) else t
            tgt = {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr,
                   "legendFormat": legend, "range": not instant, "instant": instant}
            if fmt:
                tgt["format"] = fmt
            out.append(tgt)
        return out

    def ts(self, title, desc, targets, unit="short", w=12, h=8, stack=False, minv=0, maxv=None):
        defaults = {
            "unit": unit,
            "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if not stack else 40,
                       "showPoints": "never", "spanNulls": False,
                       "stacking": {"mode": "normal" if stack else "none", "group": "A"}},
        }
        if minv is not None:
            defaults["min"] = minv
        if maxv is not None:
            defaults["max"] = maxv
        self.panels.append({
            "id": self._id(), "type": "timeseries", "title": title, "description": desc,
            "datasource": DS, "gridPos": self._place(w, h),
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom",
                                   "calcs": ["mean", "max", "lastNotNull"], "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "targets": self._targets(targets),
        })

    def stat(self, title, desc, expr, unit="short", w=4, h=4, thresholds=None, decimals=None):
        steps = [{"color": "green", "value": None}]
        for value, color in thresholds or []:
            steps.append({"color": color, "value": value})
        defaults = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps},
                    "color": {"mode": "thresholds"}}
        if decimals is not None:
            defaults["decimals"] = decimals
        self.panels.append({
            "id": self._id(), "type": "stat", "title": title, "description": desc,
            "datasource": DS, "gridPos": self._place(w, h),
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area", "justifyMode": "auto",
                        "orientation": "auto", "textMode": "auto"},
            "targets": self._targets([(expr, "")]),
        })

    def table(self, title, desc, expr, w=12, h=6):
        self.panels.append({
            "id": self._id(), "type": "table", "title": title, "description": desc,
            "datasource": DS, "gridPos": self._place(w, h),
            "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {"showHeader": True},
            "transformations": [{"id": "organize", "options": {
                "excludeByName": {"Time": True, "Value": True, "__name__": True}}}],
            "targets": self._targets([(expr, "")], instant=True, fmt="table"),
        })

    def to_json(self):
        def query_var(name, label, query, hide=0):
            return {
                "name": name, "label": label, "type": "query", "datasource": DS,
                "definition": query, "query": {"query": query, "refId": f"{name}-query"},
                "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "options": [], "hide": hide, "regex": "", "skipUrlSync": False,
            }

        variables = [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {"text": "Prometheus", "value": "prometheus"},
             "hide": 0, "options": [], "refresh": 1, "regex": "", "skipUrlSync": False},
            query_var("job", "Job", "label_values(app_build_info, job)"),
            query_var("instance", "Instance", 'label_values(app_build_info{job=~"$job"}, instance)'),
        ]
        for name, label, query in self.extra_vars:
            variables.append(query_var(name, label, query))
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": ["ballast"], "editable": False, "graphTooltip": 1,
            "schemaVersion": 39, "version": 1, "timezone": "browser", "refresh": "30s",
            "time": {"from": "now-3h", "to": "now"}, "fiscalYearStartMonth": 0,
            "liveNow": False, "weekStart": "",
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts", "type": "dashboard"}]},
            "links": [{"title": "ballast dashboards", "type": "dashboards", "tags": ["ballast"],
                       "asDropdown": True, "includeVars": True, "keepTime": True,
                       "icon": "external link", "targetBlank": False, "tooltip": "", "url": ""}],
            "templating": {"list": variables},
            "panels": self.panels,
        }


def rate(metric, extra="", window=RI):
    sel = F + ("," + extra if extra else "")
    return f"rate({metric}{{{sel}}}[{window}])"


def overview():
    d = Dash("ballast-overview", "ballast / Service overview",
             "RED per route, latency percentiles, error ratio, in-flight requests, instances, draining.")
    d.row("Service")
    d.stat("Instances up", "Scrape targets of the selected jobs that answer (up == 1).",
           f"sum(up{{{F}}})", thresholds=None)
    d.stat("Requests/s", "All HTTP requests, all routes.",
           f"sum({rate('http_requests_total')})", unit="reqps")
    d.stat("5xx ratio", "Share of requests answered with 5xx.",
           f'(sum({rate("http_requests_total", S5)}) or vector(0))'
           f" / sum({rate('http_requests_total')})",
           unit="percentunit", thresholds=[(0.01, "orange"), (0.05, "red")], decimals=2)
    d.stat("p95 latency", "95th percentile of request duration, all routes.",
           f"histogram_quantile(0.95, sum by (le) ({rate('http_request_duration_seconds_bucket')}))",
           unit="s", thresholds=[(0.5, "orange"), (1, "red")])
    d.stat("In flight", "Requests being served right now.",
           f"sum(http_requests_in_flight{{{F}}})")
    d.stat("Draining", "Instances draining for shutdown (app_draining = 1).",
           f"sum(app_draining{{{F}}})", thresholds=[(1, "orange")])

    d.row("Traffic and errors per route")
    d.ts("Requests per route", "Request rate by method and matched route template.",
         [(f"sum by (method, route) ({rate('http_requests_total')})", "{{method}} {{route}}")],
         unit="reqps")
    d.ts("Responses by status", "Request rate by HTTP status.",
         [(f"sum by (status) ({rate('http_requests_total')})", "{{status}}")], unit="reqps", stack=True)
    d.ts("5xx ratio per route", "Share of each route's requests answered with 5xx (0 when none).",
         [(f'(sum by (route) ({rate("http_requests_total", S5)})'
           f" or sum by (route) ({rate('http_requests_total')}) * 0)"
           f" / sum by (route) ({rate('http_requests_total')})", "{{route}}")],
         unit="percentunit")
    d.ts("4xx per route", "Client errors by route and status (401 auth, 404, 422 validation, 429 rate limited).",
         [(f'sum by (route, status) ({rate("http_requests_total", S4)})',
           "{{status}} {{route}}")], unit="reqps")

    d.row("Latency")
    d.ts("Latency percentiles", "p50 / p95 / p99 of request duration over all routes.",
         [(f"histogram_quantile({q}, sum by (le) ({rate('http_request_duration_seconds_bucket')}))", f"p{n}")
          for q, n in (("0.50", "50"), ("0.95", "95"), ("0.99", "99"))], unit="s")
    d.ts("p95 per route", "95th percentile of request duration by route.",
         [(f"histogram_quantile(0.95, sum by (route, le) ({rate('http_request_duration_seconds_bucket')}))",
           "{{route}}")], unit="s")
    d.ts("p99 per route", "99th percentile of request duration by route.",
         [(f"histogram_quantile(0.99, sum by (route, le) ({rate('http_request_duration_seconds_bucket')}))",
           "{{route}}")], unit="s")
    d.ts("p95 and error ratio per instance (alerting view)",
         "The recording rules the alerts use (5 minute windows): p95 latency and 5xx ratio per instance.",
         [(f"instance:http_request_duration_seconds:p95_5m{{{F}}}", "p95 {{instance}}"),
          (f"instance:http_requests_errors:ratio_rate5m{{{F}}}", "5xx ratio {{instance}}")])

    d.row("Instances")
    d.ts("In-flight requests", "Requests being served, per instance.",
         [(f"sum by (instance) (http_requests_in_flight{{{F}}})", "{{instance}}")])
    d.ts("Draining", "1 while an instance drains for shutdown.",
         [(f"app_draining{{{F}}}", "{{instance}}")], maxv=1)
    d.ts("Uptime", "Seconds since each process started.",
         [(f"time() - app_start_time_seconds{{{F}}}", "{{instance}}")], unit="s")
    d.table("Build info", "Version and git sha of every scraped process.",
            f"max by (job, instance, version, git_sha) (app_build_info{{{F}}})")
    d.ts("Request and response size p95", "95th percentile of declared body sizes by route.",
         [(f"histogram_quantile(0.95, sum by (route, le) ({rate('http_request_size_bytes_bucket')}))",
           "request {{route}}"),
          (f"histogram_quantile(0.95, sum by (route, le) ({rate('http_response_size_bytes_bucket')}))",
           "response {{route}}")], unit="bytes", w=24)
    return d


def dependencies():
    d = Dash("ballast-dependencies", "ballast / Dependencies",
             "Connection pools as the app sees them, and Postgres, Redis, nginx and host health from the exporters.")
    d.row("Application pools")
    d.ts("DB pool connections by state", "Postgres pool of each process: idle, in_use and the max size.",
         [(f"sum by (instance, state) (db_pool_connections{{{F}}})", "{{instance}} {{state}}")])
    d.ts("DB pool utilization", "in_use / max per process (alert: > 90% for 10 min).",
         [(f"instance:db_pool_utilization:ratio{{{F}}}", "{{instance}}")], unit="percentunit", maxv=1)
    d.ts("Redis pool connections by state", "Redis pool of each process: idle, in_use and the max size.",
         [(f"sum by (instance, state) (redis_pool_connections{{{F}}})", "{{instance}} {{state}}")])
    d.ts("Redis pool utilization", "in_use / max per process.",
         [(f"instance:redis_pool_utilization:ratio{{{F}}}", "{{instance}}")], unit="percentunit", maxv=1)
    d.ts("Scrape targets up", "Targets up per scrape job (app, exporters, Alertmanager, Prometheus).",
         [("sum by (job) (up)", "{{job}}")], w=12, h=6)
    d.ts("Dependency response time", "Round trips measured by the exporters: postgres-exporter running "
         "its statistics queries, redis-exporter connecting and reading INFO. The app's own view is "
         "postgres:responseTime and redis:responseTime in /health/details.",
         [("max by (instance) (pg_exporter_last_scrape_duration_seconds)", "postgres queries {{instance}}"),
          ("max by (instance) (redis_exporter_last_scrape_connect_time_seconds)", "redis connect {{instance}}"),
          ("max by (instance) (redis_exporter_last_scrape_duration_seconds)", "redis scrape {{instance}}")],
         unit="s", w=12, h=6)

    d.row("PostgreSQL (postgres-exporter)")
    d.stat("Postgres up", "pg_up from postgres-exporter (1 = connected).", "min(pg_up)",
           thresholds=None)
    d.stat("Connections used", "Server connections / max_connections.",
           "sum(pg_stat_activity_count) / max(pg_settings_max_connections)",
           unit="percentunit", thresholds=[(0.7, "orange"), (0.8, "red")])
    d.stat("Database size", "Size of the ballast databases.", "sum(pg_database_size_bytes)", unit="bytes")
    d.ts("Server connections by state", "pg_stat_activity by state, and max_connections.",
         [("sum by (state) (pg_stat_activity_count)", "{{state}}"),
          ("max(pg_settings_max_connections)", "max_connections")], w=12)
    d.ts("Transactions", "Commits and rollbacks per second by database.",
         [(f"sum by (datname) (rate(pg_stat_database_xact_commit[{RI}]))", "commit {{datname}}"),
          (f"sum by (datname) (rate(pg_stat_database_xact_rollback[{RI}]))", "rollback {{datname}}")],
         unit="ops")
    d.ts("Deadlocks", "Deadlocks per second.",
         [(f"sum by (datname) (rate(pg_stat_database_deadlocks[{RI}]))", "{{datname}}")], unit="ops")

    d.row("Redis (redis-exporter)")
    d.stat("Redis up", "redis_up from redis-exporter (1 = reachable).", "min(redis_up)")
    d.ts("Redis memory", "Used memory and maxmemory.",
         [("redis_memory_used_bytes", "used {{instance}}"),
          ("redis_memory_max_bytes", "max {{instance}}")], unit="bytes", w=10)
    d.ts("Redis clients and commands", "Connected clients and commands per second.",
         [("redis_connected_clients", "clients {{instance}}"),
          (f"rate(redis_commands_processed_total[{RI}])", "commands/s {{instance}}")], w=10)

    d.row("nginx and host (nginx-exporter, node-exporter)")
    d.stat("nginx up", "nginx_up from nginx-exporter (1 = stub_status answers).", "min(nginx_up)")
    d.ts("nginx", "Requests per second and active connections at the edge.",
         [(f"sum(rate(nginx_http_requests_total[{RI}]))", "requests/s"),
          ("sum(nginx_connections_active)", "active connections")], w=10)
    d.ts("Disk free", "Free share of each real filesystem (alert: < 15% warning, < 5% critical).",
         [(f"node_filesystem_avail_bytes{{{FS}}} / node_filesystem_size_bytes{{{FS}}}",
           "{{instance}} {{mountpoint}}")], unit="percentunit", maxv=1, w=10)
    d.ts("Host CPU and memory", "CPU busy share and memory available share per host.",
         [(f'1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle"}}[{RI}]))', "cpu busy {{instance}}"),
          ("node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes", "memory available {{instance}}")],
         unit="percentunit", maxv=1, w=14)
    return d


def jobs():
    d = Dash("ballast-jobs", "ballast / Jobs",
             "Durable job queue: throughput by kind and outcome, queue depth, oldest due job, workers, durations.",
             extra_vars=[("kind", "Kind", "label_values(jobs_enqueued_total, kind)")])
    K = 'kind=~"$kind"'
    d.row("Now")
    d.stat("Queued", "Jobs waiting (the queue is shared: max over instances).",
           f'max(jobs_queue_depth{{{F},status="queued"}})', thresholds=[(1000, "orange")])
    d.stat("Running", "Jobs being run.", f'max(jobs_queue_depth{{{F},status="running"}})')
    d.stat("Oldest due job", "Age of the oldest queued job that is due (alert: > 5 min).",
           f"max(jobs_oldest_queued_age_seconds{{{F}}})", unit="s", thresholds=[(300, "orange"), (1800, "red")])
    d.stat("Worker utilization", "Busy worker slots / all slots of the selected processes.",
           f"sum(worker_pool_busy{{{F}}}) / clamp_min(sum(worker_pool_size{{{F}}}), 1)",
           unit="percentunit", thresholds=[(0.9, "orange")])
    d.stat("Worker slots", "Sum of worker_pool_size.", f"sum(worker_pool_size{{{F}}})")
    d.stat("Failure ratio (15m)", "Jobs that failed for good / jobs that ended.",
           f'(sum(rate(jobs_finished_total{{{F},{K},outcome="failed"}}[15m])) or vector(0))'
           f' / sum(rate(jobs_finished_total{{{F},{K},outcome=~"succeeded|failed"}}[15m]))',
           unit="percentunit", thresholds=[(0.1, "orange")], decimals=2)

    d.row("Throughput")
    d.ts("Enqueued by kind", "Jobs accepted by the API per second.",
         [(f"sum by (kind) ({rate('jobs_enqueued_total', K)})", "{{kind}}")], unit="ops")
    d.ts("Finished by kind and outcome", "Job attempts finished per second (succeeded, failed, retried, cancelled, released).",
         [(f"sum by (kind, outcome) ({rate('jobs_finished_total', K)})", "{{kind}} {{outcome}}")], unit="ops")
    d.ts("Failure ratio by kind (15m, alerting view)", "Recorded kind:jobs_failed:ratio_rate15m (alert: > 10%).",
         [(f"kind:jobs_failed:ratio_rate15m{{{K}}}", "{{kind}}")], unit="percentunit", maxv=1)
    d.ts("Job duration", "p50 and p95 of job attempt duration by kind.",
         [(f"histogram_quantile(0.50, sum by (kind, le) ({rate('job_duration_seconds_bucket', K)}))", "p50 {{kind}}"),
          (f"histogram_quantile(0.95, sum by (kind, le) ({rate('job_duration_seconds_bucket', K)}))", "p95 {{kind}}")],
         unit="s")

    d.row("Queue and workers")
    d.ts("Queue depth by status", "Jobs per status (max over instances: they all read the same table).",
         [(f"max by (status) (jobs_queue_depth{{{F}}})", "{{status}}")])
    d.ts("Oldest due job", "Age of the oldest due queued job (recorded, all instances).",
         [("ballast:jobs_oldest_queued_age_seconds:max", "oldest")], unit="s")
    d.ts("Workers busy and pool size", "Busy slots and pool size per process.",
         [(f"worker_pool_busy{{{F}}}", "busy {{instance}}"),
          (f"worker_pool_size{{{F}}}", "size {{instance}}")])
    d.ts("Worker utilization (alerting view)", "Recorded ballast:worker_pool_utilization:ratio over all processes.",
         [("ballast:worker_pool_utilization:ratio", "utilization")], unit="percentunit", maxv=1)
    return d


def rate_limiting():
    d = Dash("ballast-rate-limiting", "ballast / Rate limiting",
             "Limiter decisions by policy, limited share, Redis fallback, 429 responses.")
    d.row("Decisions")
    d.stat("Limited share", "Share of limiter decisions that refused the request.",
           f'(sum({rate("rate_limit_decisions_total", LIMITED)}) or vector(0))'
           f" / sum({rate('rate_limit_decisions_total')})", unit="percentunit", decimals=2, w=8)
    d.stat("Fallback decisions/s", "Decisions made by the in-process fallback (Redis unreachable or slow).",
           f'sum({rate("rate_limit_decisions_total", FALLBACK)}) or vector(0)',
           unit="ops", thresholds=[(0.001, "orange")], w=8)
    d.stat("429/s", "Requests answered 429 Too Many Requests.",
           f'sum({rate("http_requests_total", S429)}) or vector(0)',
           unit="reqps", w=8)
    d.ts("Decisions by policy and decision", "allowed / limited / fallback per policy (default, uploads, anonymous).",
         [(f"sum by (policy, decision) ({rate('rate_limit_decisions_total')})", "{{policy}} {{decision}}")],
         unit="ops")
    d.ts("Limited share by policy", "Share of each policy's decisions that refused the request (0 when none).",
         [(f'(sum by (policy) ({rate("rate_limit_decisions_total", LIMITED)})'
           f" or sum by (policy) ({rate('rate_limit_decisions_total')}) * 0)"
           f" / sum by (policy) ({rate('rate_limit_decisions_total')})", "{{policy}}")],
         unit="percentunit", maxv=1)

    d.row("Fallback and responses")
    d.ts("Fallback per instance (alerting view)", "Recorded instance:rate_limit_fallback:rate5m (alert: > 0 for 5 min).",
         [(f"instance:rate_limit_fallback:rate5m{{{F}}}", "{{instance}}")], unit="ops")
    d.ts("Decisions per instance", "Recorded decision rates per instance (5 minute window).",
         [(f"sum by (instance, decision) (instance_policy_decision:rate_limit_decisions:rate5m{{{F}}})",
           "{{instance}} {{decision}}")], unit="ops")
    d.ts("429 responses per route", "Rate-limited requests by route.",
         [(f'sum by (route) ({rate("http_requests_total", S429)})'
           f" or sum by (route) ({rate('http_requests_total')}) * 0", "{{route}}")], unit="reqps")
    d.ts("Redis pool in use", "Health checks use this pool; limiter decisions share one multiplexed connection.",
         [(f'redis_pool_connections{{{F},state="in_use"}}', "{{instance}}")])
    return d


def process():
    d = Dash("ballast-process", "ballast / Process",
             "Resident memory, CPU, file descriptors, threads and restarts of every ballast process.")
    d.row("Resources")
    d.ts("Resident memory", "RSS per process (alert: > 400 MiB, 80% of the 512M container limit, for 15 min).",
         [(f"process_resident_memory_bytes{{{F}}}", "{{instance}}")], unit="bytes")
    d.ts("CPU", "CPU seconds per second (1 = one core busy).",
         [(f"rate(process_cpu_seconds_total{{{F}}}[{RI}])", "{{instance}}")], unit="short")
    d.ts("Open file descriptors", "Open fds and the limit.",
         [(f"process_open_fds{{{F}}}", "open {{instance}}"),
          (f"process_max_fds{{{F}}}", "max {{instance}}")])
    d.ts("File descriptor usage", "open / max (alert: > 80% for 10 min).",
         [(f"process_open_fds{{{F}}} / process_max_fds{{{F}}}", "{{instance}}")], unit="percentunit", maxv=1)
    d.ts("Threads", "OS threads per process.", [(f"process_threads{{{F}}}", "{{instance}}")])
    d.ts("Virtual memory", "Virtual memory size per process.",
         [(f"process_virtual_memory_bytes{{{F}}}", "{{instance}}")], unit="bytes")

    d.row("Lifecycle")
    d.ts("Restarts (1h)", "Changes of app_start_time_seconds in the last hour (alert: > 2 in 30 min).",
         [(f"changes(app_start_time_seconds{{{F}}}[1h])", "{{instance}}")])
    d.ts("Scrape duration", "How long a scrape of /metrics takes.",
         [(f"scrape_duration_seconds{{{F}}}", "{{instance}}")], unit="s")
    return d


DASHBOARDS = {
    "ballast-overview.json": overview,
    "ballast-dependencies.json": dependencies,
    "ballast-jobs.json": jobs,
    "ballast-rate-limiting.json": rate_limiting,
    "ballast-process.json": process,
}


def render(build):
    return json.dumps(build().to_json(), indent=2) + "\n"


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboards")
    args = sys.argv[1:]
    if args[:1] == ["--out"]:
        out_dir, args = args[1], args[2:]
    check = "--check" in args
    stale = []
    os.makedirs(out_dir, exist_ok=True)
    for name, build in DASHBOARDS.items():
        path = os.path.join(out_dir, name)
        text = render(build)
        if check:
            try:
                with open(path, encoding="utf-8") as fh:
                    if fh.read() != text:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
    if stale:
        print("stale dashboards (run monitoring/grafana/generate_dashboards.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
