"""Loads the Terraform package with python-hcl2 into plain, unquoted Python data for the tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
MODULES = TERRAFORM / "modules"
EXAMPLE = TERRAFORM / "examples" / "complete"


def unquote(value: Any) -> Any:
    """python-hcl2 >= 5 keeps string quotes and block markers; strip both so tests read plain values."""
    if isinstance(value, str):
        if len(value) >= 2 and value[0] == value[-1] == '"':
            return value[1:-1]
        return value
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items() if k != "__is_block__"}
    return value


@dataclass(frozen=True)
class Resource:
    directory: Path
    type: str
    name: str
    body: dict[str, Any]

    @property
    def address(self) -> str:
        return f"{self.directory.relative_to(TERRAFORM)}:{self.type}.{self.name}"


@cache
def load_dir(directory: Path) -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open() as handle:
            for key, blocks in unquote(hcl2.load(handle)).items():
                merged.setdefault(key, []).extend(blocks)
    return merged


def root_dirs() -> list[Path]:
    return [*sorted(p for p in MODULES.iterdir() if p.is_dir()), EXAMPLE]


def resources(directory: Path) -> Iterator[Resource]:
    for block in load_dir(directory).get("resource", []):
        for rtype, named in block.items():
            for name, body in named.items():
                yield Resource(directory, rtype, name, body)


def all_resources() -> list[Resource]:
    return [r for d in root_dirs() for r in resources(d)]


def variables(directory: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for block in load_dir(directory).get("variable", []):
        out.update(block)
    return out


def locals_of(directory: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for block in load_dir(directory).get("locals", []):
        out.update(block)
    return out


def modules_of(directory: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for block in load_dir(directory).get("module", []):
        out.update(block)
    return out


def first(block: Any) -> dict[str, Any]:
    """Nested blocks parse as lists of dicts; most appear once."""
    return block[0] if isinstance(block, list) else block
