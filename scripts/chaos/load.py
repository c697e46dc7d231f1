#!/usr/bin/env python3
"""Steady open-loop client for the chaos drills: sends RATE requests per second for DURATION
seconds, cycling through the targets, each request on its own thread (a hung request never
delays the schedule) with its own connection and a hard timeout. Writes a JSON summary
(and every request) to OUT when done.

  load.py --out FILE --rate 20 --duration 15 --timeout 5 [--header 'K: V']...
          --target 'GET http://127.0.0.1:8080/health/live' [--target 'POST URL {"json":1}']...

A request "fails" when it gets no HTTP answer or a status >= 500 (or 429 with --strict).
Bodies of 202/201 answers are parsed for an `id` (accepted jobs/files) so the drill can
check each one reached its end state.
"""
import argparse
import http.client
import json
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor


def one(method, url, body, headers, timeout, t0):
    u = urllib.parse.urlsplit(url)
    path = u.path + (("?" + u.query) if u.query else "")
    started = time.monotonic()
    rec = {"t": round(started - t0, 3), "method": method, "path": u.path, "status": 0}
    try:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        h = dict(headers)
        if body is not None:
            h["Content-Type"] = "application/json"
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        rec["status"] = r.status
        rec["content_type"] = r.getheader("Content-Type", "")
        if r.status in (200, 201, 202) and method == "POST":
            try:
                rec["id"] = json.loads(data).get("id")
            except ValueError:
                pass
        c.close()
    except Exception as e:  # noqa: BLE001 — any failure is a data point
        rec["error"] = f"{type(e).__name__}: {e}"
    rec["ms"] = round((time.monotonic() - started) * 1000, 2)
    return rec


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--rate", type=float, default=20)
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--timeout", type=float, default=5)
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--target", action="append", required=True)
    ap.add_argument("--strict", action="store_true", help="count 429 as a failure")
    a = ap.parse_args()
    headers = {}
    for h in a.header:
        k, v = h.split(":", 1)
        headers[k.strip()] = v.strip()
    targets = []
    for t in a.target:
        parts = t.split(" ", 2)
        targets.append((parts[0], parts[1], parts[2] if len(parts) > 2 else None))

    records, lock = [], threading.Lock()
    t0 = time.monotonic()
    n = int(a.rate * a.duration)
    with ThreadPoolExecutor(max_workers=128) as pool:
        futures = []
        for i in range(n):
            due = t0 + i / a.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            m, url, body = targets[i % len(targets)]
            futures.append(pool.submit(one, m, url, body, headers, a.timeout, t0))
        for f in futures:
            r = f.result()
            with lock:
                records.append(r)

    def failed(r):
        return r["status"] == 0 or r["status"] >= 500 or (a.strict and r["status"] == 429)

    bad = [r for r in records if failed(r)]
    codes = {}
    for r in records:
        codes[str(r["status"])] = codes.get(str(r["status"]), 0) + 1
    lat = [r["ms"] for r in records]
    summary = {
        "sent": len(records),
        "ok": sum(1 for r in records if 200 <= r["status"] < 400),
        "failed": len(bad),
        "codes": codes,
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "max_ms": max(lat) if lat else None,
        "failed_first_t": min((r["t"] for r in bad), default=None),
        "failed_last_t": max((r["t"] for r in bad), default=None),
        "failed_max_ms": max((r["ms"] for r in bad), default=None),
        "failed_not_problem": sum(
            1 for r in bad if r["status"] == 0 or "application/problem+json" not in r.get("content_type", "")
        ),
        "errors": sorted({r.get("error", "") for r in bad if r.get("error")})[:5],
        "accepted_ids": [r["id"] for r in records if r.get("id")],
        "records": sorted(records, key=lambda r: r["t"]),
    }
    with open(a.out, "w") as f:
        json.dump(summary, f)


if __name__ == "__main__":
    main()
