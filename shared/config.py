"""Configuration: an env-style file (KEY=VALUE, the same TITUS_* names as the environment) plus env vars.

One set of names serves systemd's EnvironmentFile, the Ansible templates and a shell; real environment
variables override the file so an operator can change one setting without editing it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


class ConfigError(Exception):
    pass


def load_env_file(path: str | Path) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def merged(path: str | Path | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    values = load_env_file(path) if path else {}
    env = os.environ if environ is None else environ
    values.update({k: v for k, v in env.items() if k.startswith("TITUS_")})
    return values


def get_int(values: Mapping[str, str], key: str, default: int) -> int:
    raw = values.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{key} must be an integer, got {raw!r}") from exc


def get_float(values: Mapping[str, str], key: str, default: float) -> float:
    raw = values.get(key)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{key} must be a number, got {raw!r}") from exc
