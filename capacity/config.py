"""Controller configuration from a TOML (or JSON) file; validated once here, trusted afterwards."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from capacity.model import Resources, Tier, TierConfig


class ConfigError(ValueError):
    """A config problem; the message names the field."""


@dataclass(frozen=True)
class ControllerConfig:
    cluster: str
    region: str = "us-east-1"
    endpoint_url: str | None = None
    master_url: str = "http://127.0.0.1:7001"
    token_env: str = "TITUS_API_TOKEN"
    interval_s: float = 10.0
    min_interval_s: float = 1.0
    dry_run: bool = False
    status_port: int = 7105
    zookeeper: str | None = None
    zookeeper_path: str = ""
    tiers: dict[Tier, TierConfig] = field(default_factory=dict)
    instance_resources: dict[str, Resources] = field(default_factory=dict)


_TIER_FIELDS = {f.name for f in fields(TierConfig)} - {"tier"}
_TOP = {f.name for f in fields(ControllerConfig)}


def load_config(path: str | Path) -> ControllerConfig:
    p = Path(path)
    text = p.read_text()
    try:
        raw: dict[str, Any] = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: {exc}") from exc
    return parse_config(raw)


def parse_config(raw: dict[str, Any]) -> ControllerConfig:
    unknown = set(raw) - _TOP
    if unknown:
        raise ConfigError(f"unknown config keys: {sorted(unknown)}")
    if not raw.get("cluster"):
        raise ConfigError("cluster: required (the value of the titus:cluster tag on the agent ASGs)")
    tiers: dict[Tier, TierConfig] = {}
    for tier in Tier:
        section = dict((raw.get("tiers") or {}).get(str(tier), {}))
        bad = set(section) - _TIER_FIELDS
        if bad:
            raise ConfigError(f"tiers.{tier}: unknown keys {sorted(bad)}")
        base = TierConfig.default(tier)
        values = {f.name: getattr(base, f.name) for f in fields(TierConfig)}
        for key, value in section.items():
            expected = type(values[key])
            if expected is bool and not isinstance(value, bool):
                raise ConfigError(f"tiers.{tier}.{key}: expected true/false")
            if expected in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ConfigError(f"tiers.{tier}.{key}: expected a number")
            if isinstance(value, int | float) and value < 0:
                raise ConfigError(f"tiers.{tier}.{key}: must not be negative")
            values[key] = expected(value)
        tiers[tier] = TierConfig(**values)
    resources = {
        name: Resources(
            cpu=float(spec.get("cpu", 0)),
            memory_mb=float(spec.get("memory_mb", 0)),
            disk_mb=float(spec.get("disk_mb", 0)),
            network_mbps=float(spec.get("network_mbps", 0)),
        )
        for name, spec in (raw.get("instance_resources") or {}).items()
    }
    scalars = {k: v for k, v in raw.items() if k not in ("tiers", "instance_resources")}
    if scalars.get("endpoint_url") == "":
        scalars["endpoint_url"] = None
    if scalars.get("zookeeper") == "":
        scalars["zookeeper"] = None
    try:
        cfg = ControllerConfig(**scalars, tiers=tiers, instance_resources=resources)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
    if not 0 <= cfg.status_port < 65536:
        raise ConfigError("status_port: must be 0..65535")
    if cfg.interval_s <= 0:
        raise ConfigError("interval_s: must be positive")
    return cfg
