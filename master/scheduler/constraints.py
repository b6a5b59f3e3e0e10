"""Titus v3 placement constraints: the names, their validation and a parsed form the engine evaluates.

Names match case-insensitively, as in Titus. Besides Titus's named constraints, `attribute.<name>`
requires (or, soft, prefers) agents whose attribute `<name>` equals the value, so operators can steer
work by any label an agent reports without a new constraint name per label. Values compare
case-insensitively because Titus lowercases zone and instance type names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

UNIQUE_HOST: Final = "uniquehost"
EXCLUSIVE_HOST: Final = "exclusivehost"
ZONE_BALANCE: Final = "zonebalance"
AVAILABILITY_ZONE: Final = "availabilityzone"
MACHINE_TYPE: Final = "machinetype"
MACHINE_ID: Final = "machineid"
ATTRIBUTE_PREFIX: Final = "attribute."

_BOOLEAN: Final = frozenset({UNIQUE_HOST, EXCLUSIVE_HOST, ZONE_BALANCE})
_VALUED: Final = frozenset({AVAILABILITY_ZONE, MACHINE_TYPE, MACHINE_ID})

#: The constraint names the API accepts, in Titus's spelling; plus any `attribute.<name>`.
KNOWN_CONSTRAINTS: Final = frozenset(
    {"uniqueHost", "exclusiveHost", "zoneBalance", "availabilityZone", "machineType", "machineId"}
)

#: Display names, so reasons say "zoneBalance" whatever case the user wrote.
DISPLAY: Final = {name.lower(): name for name in KNOWN_CONSTRAINTS}


def validate_constraints(constraints: Mapping[str, str]) -> list[tuple[str, str]]:
    """Every problem with one constraint map, as (key as written, reason) pairs for a 400 response."""
    problems: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for key, value in constraints.items():
        name = key.strip().lower()
        if name in seen:
            problems.append((key, f"duplicates constraint {seen[name]!r} (names are case-insensitive)"))
            continue
        seen[name] = key
        if not isinstance(value, str):
            problems.append((key, "value must be a string"))
        elif name in _BOOLEAN:
            if value.strip().lower() not in ("true", "false"):
                problems.append((key, f"value must be 'true' or 'false', not {value!r}"))
        elif name in _VALUED:
            if not value.strip():
                problems.append((key, "value must not be empty"))
        elif name.startswith(ATTRIBUTE_PREFIX):
            if not name[len(ATTRIBUTE_PREFIX) :].strip():
                problems.append((key, "attribute constraint needs a name: 'attribute.<name>'"))
            elif not value.strip():
                problems.append((key, "value must not be empty"))
        else:
            known = ", ".join(sorted(KNOWN_CONSTRAINTS))
            problems.append((key, f"unknown constraint; known: {known}, attribute.<name>"))
    return problems


@dataclass(frozen=True, slots=True)
class Constraints:
    """One constraint map in the form the engine checks, with "false" booleans dropped."""

    unique_host: bool = False
    exclusive_host: bool = False
    zone_balance: bool = False
    zone: str | None = None
    machine_type: str | None = None
    machine_id: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return self == _EMPTY

    @property
    def job_dependent(self) -> bool:
        """Whether the outcome depends on where the same job's other tasks went."""
        return self.unique_host or self.zone_balance

    def names(self) -> list[str]:
        """Display names of the active constraints, in the order exclusions are attributed."""
        out: list[str] = []
        if self.machine_id is not None:
            out.append("machineId")
        if self.zone is not None:
            out.append("availabilityZone")
        if self.machine_type is not None:
            out.append("machineType")
        out.extend(f"attribute.{name}" for name, _ in self.attributes)
        if self.exclusive_host:
            out.append("exclusiveHost")
        if self.unique_host:
            out.append("uniqueHost")
        if self.zone_balance:
            out.append("zoneBalance")
        return out


_EMPTY: Final = Constraints()


def parse_constraints(constraints: Mapping[str, str]) -> Constraints:
    """The parsed form of a validated map; raises ValueError on what `validate_constraints` rejects."""
    if not constraints:
        return _EMPTY
    problems = validate_constraints(constraints)
    if problems:
        raise ValueError("; ".join(f"{key}: {reason}" for key, reason in problems))
    flags: dict[str, bool] = {}
    values: dict[str, str] = {}
    attributes: list[tuple[str, str]] = []
    for key, value in constraints.items():
        name = key.strip().lower()
        if name in _BOOLEAN:
            flags[name] = value.strip().lower() == "true"
        elif name in _VALUED:
            values[name] = value.strip().lower()
        else:
            attributes.append((name[len(ATTRIBUTE_PREFIX) :].strip(), value.strip().lower()))
    return Constraints(
        unique_host=flags.get(UNIQUE_HOST, False),
        exclusive_host=flags.get(EXCLUSIVE_HOST, False),
        zone_balance=flags.get(ZONE_BALANCE, False),
        zone=values.get(AVAILABILITY_ZONE),
        machine_type=values.get(MACHINE_TYPE),
        machine_id=values.get(MACHINE_ID),
        attributes=tuple(sorted(attributes)),
    )


def merge(hard: Constraints, soft: Constraints) -> Constraints | None:
    """Hard and soft together, as the first, all-preferences-met attempt; None if they contradict."""
    if soft.empty:
        return hard
    picked: dict[str, str | None] = {}
    for name in ("zone", "machine_type", "machine_id"):
        h, s = getattr(hard, name), getattr(soft, name)
        if h is not None and s is not None and h != s:
            return None
        picked[name] = h if h is not None else s
    attrs = dict(hard.attributes)
    for name, value in soft.attributes:
        if attrs.get(name, value) != value:
            return None
        attrs[name] = value
    return Constraints(
        unique_host=hard.unique_host or soft.unique_host,
        exclusive_host=hard.exclusive_host or soft.exclusive_host,
        zone_balance=hard.zone_balance or soft.zone_balance,
        zone=picked["zone"],
        machine_type=picked["machine_type"],
        machine_id=picked["machine_id"],
        attributes=tuple(sorted(attrs.items())),
    )
