"""Small, dependency-light reader for the project's compose files (PyYAML only).

It does what `docker compose config` does for the parts the checks need, so they run
where no Docker engine or compose plugin is installed:
  - dotenv parsing (.env) and ${VAR} interpolation with the compose operators
    (${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error},
    ${VAR:+alternative}, ${VAR+alternative}, $VAR, and $$ for a literal $);
  - YAML anchors and merge keys (PyYAML resolves them);
  - the environment of a service (mapping or list form) and its file secrets.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    pass


def parse_dotenv(path: str | os.PathLike) -> dict[str, str]:
    """KEY=VALUE lines; comments, blank lines and `export ` prefixes allowed."""
    values: dict[str, str] = {}
    p = Path(path)
    if not p.exists():
        return values
    for raw in p.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def variables_in(text: str) -> set[str]:
    """Names referenced as ${VAR...} or $VAR in a compose file's text ($$ excluded)."""
    names = set()
    for m in _VAR.finditer(text):
        if m.group("escaped"):
            continue
        names.add(m.group("braced") or m.group("named"))
    return names


def interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, str):
        def repl(m: re.Match) -> str:
            if m.group("escaped"):
                return "$"
            name = m.group("braced") or m.group("named")
            op, arg = m.group("op"), m.group("arg")
            current = env.get(name)
            if op is None:
                return current or ""
            unset_or_empty = current is None or current == ""
            unset = current is None
            if op == ":-":
                return arg if unset_or_empty else current
            if op == "-":
                return arg if unset else current
            if op == ":?":
                if unset_or_empty:
                    raise InterpolationError(f"{name}: {arg or 'required'}")
                return current
            if op == "?":
                if unset:
                    raise InterpolationError(f"{name}: {arg or 'required'}")
                return current
            if op == ":+":
                return "" if unset_or_empty else arg
            if op == "+":
                return "" if unset else arg
            raise InterpolationError(f"unsupported operator {op} for {name}")

        return _VAR.sub(repl, value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {interpolate(k, env) if isinstance(k, str) else k: interpolate(v, env) for k, v in value.items()}
    return value


def load_raw(path: str | os.PathLike) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load(path: str | os.PathLike, env: dict[str, str] | None = None) -> dict:
    """The compose file with anchors/merges resolved and variables interpolated."""
    return interpolate(load_raw(path), env or {})


def service_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            key, sep, value = str(item).partition("=")
            out[key] = value if sep else None
        return out
    return {str(k): ("" if v is None else str(v)) for k, v in env.items()}


def service_secrets(service: dict) -> list[tuple[str, str]]:
    """(source, in-container path) of each secret mounted into the service."""
    out = []
    for item in service.get("secrets") or []:
        if isinstance(item, str):
            out.append((item, f"/run/secrets/{item}"))
        else:
            source = item["source"]
            target = item.get("target", source)
            if not target.startswith("/"):
                target = f"/run/secrets/{target}"
            out.append((source, target))
    return out


def secret_host_files(compose: dict, service: dict, project_dir: str | os.PathLike) -> dict[str, Path]:
    """In-container secret path -> host file, for the file secrets of a service."""
    top = compose.get("secrets") or {}
    files = {}
    for source, target in service_secrets(service):
        spec = top.get(source) or {}
        if "file" in spec:
            p = Path(spec["file"])
            files[target] = p if p.is_absolute() else (Path(project_dir) / p).resolve()
    return files


def networks_of(service: dict) -> list[str]:
    nets = service.get("networks")
    if nets is None:
        return ["default"]
    if isinstance(nets, list):
        return list(nets)
    return list(nets.keys())


def duration_seconds(text: str | int | float) -> float:
    """Compose durations: 45s, 1m30s, 1h, 500ms, or a bare number of seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text):
        if m.start() != pos:
            raise ValueError(f"bad duration {text!r}")
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text):
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return float(text)
        raise ValueError(f"bad duration {text!r}")
    return total
