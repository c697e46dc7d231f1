#!/usr/bin/env python3
"""The environment docker-compose.prod.yml gives one service, for a native run.

usage: service_env.py --compose FILE --project-dir DIR --service NAME [--what WHAT]
  --project-dir  a directory where scripts/init.sh ran: its .env drives the ${VARIABLE}
                 interpolation (like `docker compose --env-file DIR/.env`) and its
                 secrets/ holds the files the secrets: section points at
  --what env          KEY=VALUE entries, NUL-separated; every *_FILE variable that names
                      a mounted secret (/run/secrets/...) is rewritten to the host file
         healthcheck  the healthcheck test command, NUL-separated (without CMD/CMD-SHELL)
         grace        stop_grace_period in whole seconds
         secrets      NAME=HOSTFILE of the service's secrets, NUL-separated
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import composelib as cl  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compose", required=True)
    ap.add_argument("--project-dir", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--what", default="env", choices=["env", "healthcheck", "grace", "secrets"])
    args = ap.parse_args()

    project = Path(args.project_dir).resolve()
    compose = cl.load(args.compose, cl.parse_dotenv(project / ".env"))
    try:
        svc = compose["services"][args.service]
    except KeyError:
        print(f"no service {args.service!r} in {args.compose}", file=sys.stderr)
        return 2
    files = cl.secret_host_files(compose, svc, project)

    out: list[str] = []
    if args.what == "env":
        for key, value in cl.service_env(svc).items():
            value = value or ""
            if key.endswith("_FILE") and value in files:
                host = files[value]
                if not host.is_file():
                    print(f"{key}: secret file {host} does not exist (run scripts/init.sh)", file=sys.stderr)
                    return 1
                value = str(host)
            out.append(f"{key}={value}")
    elif args.what == "healthcheck":
        test = (svc.get("healthcheck") or {}).get("test") or []
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        out = list(test[1:]) if test and test[0] in ("CMD", "CMD-SHELL") else list(test)
    elif args.what == "grace":
        out = [str(math.floor(cl.duration_seconds(svc.get("stop_grace_period", "10s"))))]
    else:
        for target, host in files.items():
            out.append(f"{target.rsplit('/', 1)[-1]}={host}")
    sys.stdout.write("\0".join(out) + ("\0" if out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
