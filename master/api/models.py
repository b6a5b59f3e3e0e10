"""Wire models: the JSON mapping of Titus's v3 job API (titus_job_api.proto), validated once at the edge.

Field names are the proto's camelCase names, so existing Titus v3 clients work unchanged. Every model
forbids unknown fields: a field Titus does not define is a 400 naming its path. 64-bit integers are
accepted as JSON numbers or as decimal strings, because the canonical proto3 JSON mapping writes uint64
as strings. Limits are documented on each field and in docs/API.md.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from master.core.fault_policy import attribute_errors

# ---------------------------------------------------------------------------------------------- limits
MAX_CPU = 64.0
MAX_MEMORY_MB = 262_144
MAX_DISK_MB = 1_048_576
MAX_NETWORK_MBPS = 100_000
MAX_GPU = 16
MAX_BATCH_SIZE = 1_000
MAX_SERVICE_CAPACITY = 1_000
MAX_RUNTIME_LIMIT_SEC = 30 * 24 * 3600
DEFAULT_RUNTIME_LIMIT_SEC = 5 * 24 * 3600
MAX_RETRIES = 1_000
MAX_DELAY_MS = 24 * 3600 * 1000
MAX_ARGS = 256
MAX_ARG_LEN = 8_192
MAX_ENV = 512
MAX_ATTRIBUTES = 128
MAX_NAME_LEN = 256
MAX_VALUE_LEN = 4_096
DEFAULT_DISK_MB = 10_000
DEFAULT_NETWORK_MBPS = 128
DEFAULT_CAPACITY_GROUP = "DEFAULT"

_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IMAGE_NAME = re.compile(r"^[a-z0-9]+(?:[._\-/:][a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


def _uint64(value: Any) -> Any:
    """proto3 JSON writes uint64 as a string; accept both forms and hand pydantic an int to range-check."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


UInt64 = Annotated[StrictInt, BeforeValidator(_uint64)]


def _number(value: Any) -> Any:
    """JSON numbers only: no numeric strings, no booleans (which Python counts as ints)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    return float(value)


Number = Annotated[float, BeforeValidator(_number)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=MAX_NAME_LEN)]
Value = Annotated[StrictStr, Field(max_length=MAX_VALUE_LEN)]
StringMap = Annotated[dict[Name, Value], Field(max_length=MAX_ATTRIBUTES)]


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False, frozen=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# ------------------------------------------------------------------------------------------- container
class Owner(Wire):
    teamEmail: Annotated[StrictStr, Field(min_length=3, max_length=MAX_NAME_LEN, pattern=_EMAIL.pattern)]


class JobGroupInfo(Wire):
    stack: Annotated[StrictStr, Field(max_length=64)] = ""
    detail: Annotated[StrictStr, Field(max_length=64)] = ""
    sequence: Annotated[StrictStr, Field(max_length=64)] = ""


class EfsMount(Wire):
    efsId: Name
    mountPoint: Name
    mountPerm: Literal["RO", "WO", "RW"] = "RW"
    efsRelativeMountPoint: Value = ""


class ContainerResources(Wire):
    cpu: Annotated[Number, Field(gt=0, le=MAX_CPU)]
    memoryMB: Annotated[StrictInt, Field(gt=0, le=MAX_MEMORY_MB)]
    diskMB: Annotated[StrictInt, Field(gt=0, le=MAX_DISK_MB)] = DEFAULT_DISK_MB
    networkMbps: Annotated[StrictInt, Field(gt=0, le=MAX_NETWORK_MBPS)] = DEFAULT_NETWORK_MBPS
    gpu: Annotated[StrictInt, Field(ge=0, le=MAX_GPU)] = 0
    allocateIP: StrictBool = False
    efsMounts: Annotated[list[EfsMount], Field(max_length=16)] = Field(default_factory=list)
    shmSizeMB: Annotated[StrictInt, Field(ge=0, le=MAX_MEMORY_MB)] = 0

    @model_validator(mode="after")
    def _shm_within_memory(self) -> ContainerResources:
        if self.shmSizeMB > self.memoryMB:
            raise ValueError("@shmSizeMB: shmSizeMB must not exceed memoryMB")
        return self


class SecurityProfile(Wire):
    securityGroups: Annotated[list[Name], Field(max_length=6)] = Field(default_factory=list)
    iamRole: Value = ""
    attributes: StringMap = Field(default_factory=dict)


class Image(Wire):
    name: Annotated[StrictStr, Field(min_length=1, max_length=255, pattern=_IMAGE_NAME.pattern)]
    tag: Annotated[StrictStr, Field(pattern=_TAG.pattern)] | None = None
    digest: Annotated[StrictStr, Field(pattern=_DIGEST.pattern)] | None = None

    @model_validator(mode="after")
    def _tag_xor_digest(self) -> Image:
        if (self.tag is None) == (self.digest is None):
            raise ValueError("@tag|digest: exactly one of tag or digest is required")
        return self

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"


class Constraints(Wire):
    constraints: Annotated[dict[Name, Value], Field(max_length=32)] = Field(default_factory=dict)
    expression: Annotated[StrictStr, Field(max_length=0)] = ""  # Titus: "not supported yet"


class VolumeMount(Wire):
    volumeName: Name
    mountPath: Name
    mountPropagation: Literal[
        "MountPropagationNone", "MountPropagationHostToContainer", "MountPropagationBidirectional"
    ] = "MountPropagationNone"
    readOnly: StrictBool = False
    subPath: Value = ""


Arg = Annotated[StrictStr, Field(max_length=MAX_ARG_LEN)]


class Container(Wire):
    resources: ContainerResources
    securityProfile: SecurityProfile = Field(default_factory=SecurityProfile)
    image: Image
    attributes: StringMap = Field(default_factory=dict)
    entryPoint: Annotated[list[Arg], Field(max_length=MAX_ARGS)] = Field(default_factory=list)
    command: Annotated[list[Arg], Field(max_length=MAX_ARGS)] = Field(default_factory=list)
    env: Annotated[
        dict[Annotated[StrictStr, Field(pattern=_ENV_NAME.pattern, max_length=256)], Value],
        Field(max_length=MAX_ENV),
    ] = Field(default_factory=dict)
    softConstraints: Constraints = Field(default_factory=Constraints)
    hardConstraints: Constraints = Field(default_factory=Constraints)
    volumeMounts: Annotated[list[VolumeMount], Field(max_length=32)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something_to_run(self) -> Container:
        if not self.entryPoint and not self.command:
            # Images always carry a default command in Docker; the process runtime has no image, so
            # an explicit argv is required for it. We insist on one so a job means the same on both.
            raise ValueError("@entryPoint|command: entryPoint or command is required")
        for name, reason in attribute_errors(self.attributes):
            raise ValueError(f"@attributes.{name}: {reason}")
        return self


# ------------------------------------------------------------------------------------------ job specs
class ImmediateRetry(Wire):
    retries: Annotated[StrictInt, Field(ge=0, le=MAX_RETRIES)] = 0


class DelayedRetry(Wire):
    initialDelayMs: Annotated[UInt64, Field(ge=0, le=MAX_DELAY_MS)] = 0
    delayMs: Annotated[UInt64, Field(ge=0, le=MAX_DELAY_MS)]
    retries: Annotated[StrictInt, Field(ge=0, le=MAX_RETRIES)] = 0


class ExponentialBackOffRetry(Wire):
    initialDelayMs: Annotated[UInt64, Field(gt=0, le=MAX_DELAY_MS)]
    maxDelayIntervalMs: Annotated[UInt64, Field(gt=0, le=MAX_DELAY_MS)]
    retries: Annotated[StrictInt, Field(ge=0, le=MAX_RETRIES)] = 0

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> ExponentialBackOffRetry:
        if self.maxDelayIntervalMs < self.initialDelayMs:
            raise ValueError("@maxDelayIntervalMs: maxDelayIntervalMs must be >= initialDelayMs")
        return self


class RetryPolicy(Wire):
    immediate: ImmediateRetry | None = None
    delayed: DelayedRetry | None = None
    exponentialBackOff: ExponentialBackOffRetry | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RetryPolicy:
        chosen = [n for n in ("immediate", "delayed", "exponentialBackOff") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError(
                "@immediate|delayed|exponentialBackOff: "
                "exactly one of immediate, delayed or exponentialBackOff is required"
            )
        return self


DEFAULT_RETRY = RetryPolicy(immediate=ImmediateRetry(retries=0))


class BatchJobSpec(Wire):
    size: Annotated[StrictInt, Field(ge=1, le=MAX_BATCH_SIZE)]
    runtimeLimitSec: Annotated[UInt64, Field(ge=1, le=MAX_RUNTIME_LIMIT_SEC)] = DEFAULT_RUNTIME_LIMIT_SEC
    retryPolicy: RetryPolicy = DEFAULT_RETRY
    retryOnRuntimeLimit: StrictBool = False


class Capacity(Wire):
    min: Annotated[StrictInt, Field(ge=0, le=MAX_SERVICE_CAPACITY)] = 0
    desired: Annotated[StrictInt, Field(ge=0, le=MAX_SERVICE_CAPACITY)]
    max: Annotated[StrictInt, Field(ge=0, le=MAX_SERVICE_CAPACITY)]

    @model_validator(mode="after")
    def _ordered(self) -> Capacity:
        if not self.min <= self.desired <= self.max:
            raise ValueError("@desired: min <= desired <= max must hold")
        return self


class MigrationPolicy(Wire):
    systemDefault: dict[str, Any] | None = None
    selfManaged: dict[str, Any] | None = None


class ServiceJobProcesses(Wire):
    disableIncreaseDesired: StrictBool = False
    disableDecreaseDesired: StrictBool = False


class ServiceJobSpec(Wire):
    capacity: Capacity
    enabled: StrictBool = True
    retryPolicy: RetryPolicy = RetryPolicy(
        exponentialBackOff=ExponentialBackOffRetry(
            initialDelayMs=1_000, maxDelayIntervalMs=60_000, retries=MAX_RETRIES
        )
    )
    migrationPolicy: MigrationPolicy | None = None
    serviceJobProcesses: ServiceJobProcesses = Field(default_factory=ServiceJobProcesses)


# ---------------------------------------------------------------------------------- disruption budget
class _Empty(Wire):
    pass


class SelfManagedBudget(Wire):
    relocationTimeMs: UInt64 = 0


class AvailabilityPercentageLimit(Wire):
    percentageOfHealthyContainers: Annotated[Number, Field(ge=0, le=100)]


class UnhealthyTasksLimit(Wire):
    limitOfUnhealthyContainers: Annotated[StrictInt, Field(ge=0)]


class RelocationLimit(Wire):
    limit: Annotated[StrictInt, Field(ge=0)]


class RatePercentagePerHour(Wire):
    maxPercentageOfContainersRelocatedInHour: Annotated[Number, Field(ge=0, le=100)]


class RatePerInterval(Wire):
    intervalMs: UInt64
    limitPerInterval: Annotated[StrictInt, Field(ge=0)]


class RatePercentagePerInterval(Wire):
    intervalMs: UInt64
    percentageLimitPerInterval: Annotated[Number, Field(ge=0, le=100)]


class TimeWindow(Wire):
    days: list[
        Literal[
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
            "Weekdays",
            "Weekends",
            "All",
        ]
    ] = Field(default_factory=list)
    hourlyTimeWindows: list[
        dict[Literal["startHour", "endHour"], Annotated[StrictInt, Field(ge=0, le=24)]]
    ] = Field(default_factory=list)
    timeZone: Value = ""


class ContainerHealthProvider(Wire):
    name: Name
    attributes: StringMap = Field(default_factory=dict)


class JobDisruptionBudget(Wire):
    selfManaged: SelfManagedBudget | None = None
    availabilityPercentageLimit: AvailabilityPercentageLimit | None = None
    unhealthyTasksLimit: UnhealthyTasksLimit | None = None
    relocationLimit: RelocationLimit | None = None
    rateUnlimited: _Empty | None = None
    ratePercentagePerHour: RatePercentagePerHour | None = None
    ratePerInterval: RatePerInterval | None = None
    ratePercentagePerInterval: RatePercentagePerInterval | None = None
    timeWindows: Annotated[list[TimeWindow], Field(max_length=16)] = Field(default_factory=list)
    containerHealthProviders: Annotated[list[ContainerHealthProvider], Field(max_length=8)] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _one_policy_one_rate(self) -> JobDisruptionBudget:
        policies = ("selfManaged", "availabilityPercentageLimit", "unhealthyTasksLimit", "relocationLimit")
        rates = ("rateUnlimited", "ratePercentagePerHour", "ratePerInterval", "ratePercentagePerInterval")
        if sum(getattr(self, p) is not None for p in policies) > 1:
            raise ValueError(f"at most one policy of {', '.join(policies)}")
        if sum(getattr(self, r) is not None for r in rates) > 1:
            raise ValueError(f"at most one rate of {', '.join(rates)}")
        return self


class NetworkConfiguration(Wire):
    networkMode: Literal[
        "UnknownNetworkMode", "Ipv4Only", "Ipv6AndIpv4", "Ipv6AndIpv4Fallback", "Ipv6Only", "HighScale"
    ] = "UnknownNetworkMode"


class JobDescriptor(Wire):
    owner: Owner
    applicationName: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=_APP_NAME.pattern)]
    capacityGroup: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=_APP_NAME.pattern)] = (
        DEFAULT_CAPACITY_GROUP
    )
    jobGroupInfo: JobGroupInfo = Field(default_factory=JobGroupInfo)
    attributes: StringMap = Field(default_factory=dict)
    container: Container
    batch: BatchJobSpec | None = None
    service: ServiceJobSpec | None = None
    disruptionBudget: JobDisruptionBudget | None = None
    networkConfiguration: NetworkConfiguration | None = None

    @model_validator(mode="after")
    def _exactly_one_spec(self) -> JobDescriptor:
        if (self.batch is None) == (self.service is None):
            raise ValueError("@batch|service: exactly one of batch or service is required")
        for key in self.attributes:
            if key.lower().startswith("titus"):
                raise ValueError(f"@attributes.{key}: attribute names starting with 'titus' are reserved")
        return self

    @property
    def job_type(self) -> str:
        return "BATCH" if self.batch is not None else "SERVICE"

    @property
    def retry_policy(self) -> RetryPolicy:
        spec = self.batch if self.batch is not None else self.service
        assert spec is not None
        return spec.retryPolicy


class CapacityUpdate(Wire):
    """Body of PUT /api/v3/jobs/{id}/instances; each bound is optional, as in Titus's
    JobCapacityWithOptionalAttributes."""

    min: Annotated[StrictInt, Field(ge=0, le=MAX_SERVICE_CAPACITY)] | None = None
    desired: Annotated[StrictInt, Field(ge=0, le=MAX_SERVICE_CAPACITY)] | None = None
    max: Annotated[StrictInt, Field(ge=0, le=MAX_SERVICE_CAPACITY)] | None = None


# -------------------------------------------------------------------------------------- agent channel
class AgentResources(Wire):
    cpu: Annotated[Number, Field(gt=0, le=4096)]
    memoryMB: Annotated[StrictInt, Field(gt=0)]
    diskMB: Annotated[StrictInt, Field(ge=0)] = 0
    networkMbps: Annotated[StrictInt, Field(ge=0)] = 0
    gpu: Annotated[StrictInt, Field(ge=0)] = 0


class AgentRegistration(Wire):
    id: Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")]
    resources: AgentResources
    attributes: StringMap = Field(default_factory=dict)
    runningTaskIds: Annotated[list[Name], Field(max_length=10_000)] = Field(default_factory=list)
    # Tasks that ended while the agent was away and whose end it has yet to report: not lost, the agent
    # reports their real exit status right after registering.
    exitedTaskIds: Annotated[list[Name], Field(max_length=10_000)] = Field(default_factory=list)


class TaskUpdate(Wire):
    taskId: Name
    state: Literal["StartInitiated", "Started", "Finished"]
    reasonCode: Annotated[StrictStr, Field(max_length=64)] = ""
    reasonMessage: Value = ""
    exitCode: StrictInt | None = None
    timestamp: UInt64 | None = None
    stdoutTail: Annotated[StrictStr, Field(max_length=65_536)] | None = None
    stderrTail: Annotated[StrictStr, Field(max_length=65_536)] | None = None


class TaskUsage(Wire):
    cpuPct: Annotated[Number, Field(ge=0)]
    rssMB: Annotated[Number, Field(ge=0)]
    processes: Annotated[StrictInt, Field(ge=0)]


class AgentStatusReport(Wire):
    sessionEpoch: StrictInt
    updates: Annotated[list[TaskUpdate], Field(max_length=10_000)] = Field(default_factory=list)
    runningTaskIds: Annotated[list[Name], Field(max_length=10_000)] = Field(default_factory=list)
    usage: dict[Name, TaskUsage] = Field(default_factory=dict)
    host: dict[Name, Number] = Field(default_factory=dict)
    # Non-empty while the agent refuses new work (e.g. its host is short of memory), saying why.
    unavailableReason: Value = ""


class LogUpload(Wire):
    sessionEpoch: StrictInt
    stdout: StrictStr = ""
    stderr: StrictStr = ""
    found: StrictBool = True


# ---------------------------------------------------------------------------------- capacity management
class ResourceDimension(Wire):
    cpu: Annotated[Number, Field(gt=0, le=MAX_CPU * 16)]
    memoryMB: Annotated[StrictInt, Field(gt=0, le=MAX_MEMORY_MB * 16)]
    diskMB: Annotated[StrictInt, Field(ge=0, le=MAX_DISK_MB * 16)] = 0
    networkMbps: Annotated[StrictInt, Field(ge=0, le=MAX_NETWORK_MBPS * 16)] = 0
    gpu: Annotated[StrictInt, Field(ge=0, le=MAX_GPU * 16)] = 0


def _tier(value: Any) -> Any:
    """Titus spells tiers Critical/Flex; the cluster tags use critical/flex. Accept either."""
    if isinstance(value, str) and value.lower() in ("critical", "flex"):
        return value.lower()
    return value


class ApplicationSla(Wire):
    """Titus's ApplicationSLA: a capacity group reserving instanceCount x resourceDimension in a tier."""

    appName: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=_APP_NAME.pattern)]
    tier: Annotated[Literal["critical", "flex"], BeforeValidator(_tier)]
    resourceDimension: ResourceDimension
    instanceCount: Annotated[StrictInt, Field(ge=0, le=100_000)]
    cellId: Annotated[StrictStr, Field(max_length=64)] = ""
    schedulerName: Annotated[StrictStr, Field(max_length=64)] = ""
    resourcePool: Annotated[StrictStr, Field(max_length=64)] = ""


class LifecycleUpdate(Wire):
    lifecycleState: Literal["Active", "PhasedOut", "Removable"]
    detail: Annotated[StrictStr, Field(max_length=1024)] = ""
    instanceGroupId: Annotated[StrictStr, Field(max_length=128)] | None = None
