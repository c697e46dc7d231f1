#!/usr/bin/env python3
"""Spawn-to-ready time: starts the command given after `--` (its environment is this
process's), polls URL every millisecond until it answers 200, prints the milliseconds,
then stops the process with SIGTERM. Usage: startup.py URL TIMEOUT_S -- CMD ARGS..."""
import http.client
import signal
import subprocess
import sys
import time
import urllib.parse


def main() -> int:
    url, timeout = sys.argv[1], float(sys.argv[2])
    cmd = sys.argv[sys.argv.index("--") + 1:]
    u = urllib.parse.urlsplit(url)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ready_ms = None
    try:
        while time.monotonic() - started < timeout:
            if proc.poll() is not None:
                print(f"process exited with {proc.returncode} before ready", file=sys.stderr)
                return 1
            try:
                c = http.client.HTTPConnection(u.hostname, u.port, timeout=0.5)
                c.request("GET", u.path)
                if c.getresponse().status == 200:
                    ready_ms = (time.monotonic() - started) * 1000
                    break
            except OSError:
                pass
            time.sleep(0.001)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    if ready_ms is None:
        print(f"not ready within {timeout}s", file=sys.stderr)
        return 1
    print(f"{ready_ms:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
