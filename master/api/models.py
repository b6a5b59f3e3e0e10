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
    PlainSerializer,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
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


#: A proto uint64: read from a JSON number or a decimal string, written as a string (proto3 JSON).
UInt64 = Annotated[
    StrictInt, BeforeValidator(_uint64), PlainSerializer(str, return_type=str, when_used="json")
]


def _number(value: Any) -> Any:
    """JSON numbers only: no numeric strings, no booleans (which Python counts as ints)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    return float(value)


Number = Annotated[float, BeforeValidator(_number)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=MAX_NAME_LEN)]
Value = Annotated[StrictStr, Field(max_length=MAX_VALUE_LEN)]
StringMap = Annotated[dict[Name, Value], Field(max_length=MAX_ATTRIBUTES)]


#: Validation context of a descriptor read back from the store (or re-validated after an internal change):
#: what was accepted once stays readable, so "not supported" refusals (newer than some stored jobs) and
#: legacy spellings do not stop a master from loading its state.
STORED = {"stored": True}


def _stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored"))


def not_supported(path: str, what: str) -> ValueError:
    """A field Titus defines whose non-default value asks for a feature this platform lacks: refusing it is
    honest, accepting it would run the task without what it asked for."""
    return ValueError(f"@{path}: not supported: {what}")


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False, frozen=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# ------------------------------------------------------------------------------------------- container
def _unset_if_empty(value: Any) -> Any:
    """proto3 cannot tell an empty string from an unset one: a client printing defaults sends ""."""
    return None if value == "" else value


def _default_if_zero(default: int) -> Any:
    """proto3 sends 0 for an unset uint32; Titus then applies its default, and so do we."""

    def convert(value: Any) -> Any:
        value = _uint64(value)
        return default if value == 0 and not isinstance(value, bool) else value

    return BeforeValidator(convert)


UInt32 = Annotated[StrictInt, BeforeValidator(_uint64), Field(ge=0, le=2**32 - 1)]
#: proto `bytes`: base64 text in proto3 JSON.
Bytes = Annotated[StrictStr, Field(max_length=65_536)]


class Owner(Wire):
    teamEmail: Annotated[StrictStr, Field(min_length=3, max_length=MAX_NAME_LEN, pattern=_EMAIL.pattern)]


class JobGroupInfo(Wire):
    stack: Annotated[StrictStr, Field(max_length=64)] = ""
    detail: Annotated[StrictStr, Field(max_length=64)] = ""
    sequence: Annotated[StrictStr, Field(max_length=64)] = ""


class EfsMount(Wire):
    efsId: StrictStr = ""
    mountPoint: StrictStr = ""
    mountPerm: Literal["RO", "WO", "RW"] = "RO"
    efsRelativeMountPoint: Value = ""


class AddressLocation(Wire):
    region: Value = ""
    availabilityZone: Value = ""
    subnetId: Value = ""


class AddressAllocation(Wire):
    addressLocation: AddressLocation | None = None
    uuid: Value = ""
    address: Value = ""
    ipv6Address: Value = ""


class SignedAddressAllocation(Wire):
    addressAllocation: AddressAllocation | None = None
    signedAddressAllocation: Bytes = ""
    authoritativePublicKey: Bytes = ""
    hostPublicKey: Bytes = ""
    hostPublicKeySignature: Bytes = ""
    message: Bytes = ""
    messageSignature: Bytes = ""


class StaticIPAddressIDs(Wire):
    uuids: Annotated[list[Value], Field(max_length=64)] = Field(default_factory=list)


class ContainerResources(Wire):
    cpu: Annotated[Number, Field(gt=0, le=MAX_CPU)]
    memoryMB: Annotated[StrictInt, BeforeValidator(_uint64), Field(gt=0, le=MAX_MEMORY_MB)]
    diskMB: Annotated[
        StrictInt, _default_if_zero(DEFAULT_DISK_MB), BeforeValidator(_uint64), Field(gt=0, le=MAX_DISK_MB)
    ] = DEFAULT_DISK_MB
    networkMbps: Annotated[
        StrictInt,
        _default_if_zero(DEFAULT_NETWORK_MBPS),
        BeforeValidator(_uint64),
        Field(gt=0, le=MAX_NETWORK_MBPS),
    ] = DEFAULT_NETWORK_MBPS
    gpu: Annotated[StrictInt, BeforeValidator(_uint64), Field(ge=0, le=MAX_GPU)] = 0
    allocateIP: StrictBool = False  # deprecated in Titus ("IP always allocated"): accepted, no effect
    efsMounts: Annotated[list[EfsMount], Field(max_length=16)] = Field(default_factory=list)
    shmSizeMB: Annotated[StrictInt, BeforeValidator(_uint64), Field(ge=0, le=MAX_MEMORY_MB)] = 0
    signedAddressAllocations: Annotated[list[SignedAddressAllocation], Field(max_length=16)] = Field(
        default_factory=list
    )
    # oneof staticIPAddresses
    pool: Value | None = None
    staticIPAddressIDs: StaticIPAddressIDs | None = None

    @model_validator(mode="after")
    def _shm_within_memory(self, info: ValidationInfo) -> ContainerResources:
        if self.shmSizeMB > self.memoryMB:
            raise ValueError("@shmSizeMB: shmSizeMB must not exceed memoryMB")
        if _stored(info):
            return self
        if self.efsMounts:
            raise not_supported("efsMounts", "this platform has no EFS; the task would run without the mount")
        if self.signedAddressAllocations:
            raise not_supported("signedAddressAllocations", "this platform has no Titus VPC IP service")
        if self.pool is not None and self.staticIPAddressIDs is not None:
            raise ValueError("@pool|staticIPAddressIDs: at most one of pool or staticIPAddressIDs")
        if self.pool:
            raise not_supported("pool", "static IP pools need the Titus VPC IP service")
        if self.staticIPAddressIDs is not None and self.staticIPAddressIDs.uuids:
            raise not_supported("staticIPAddressIDs", "static IPs need the Titus VPC IP service")
        return self


class SecurityProfile(Wire):
    """Accepted and stored, not enforced: every Titus client sends security groups and an IAM role, and a
    task here gets neither (there is no VPC or instance-metadata proxy); see docs/ARCHITECTURE.md."""

    securityGroups: Annotated[list[Name], Field(max_length=6)] = Field(default_factory=list)
    iamRole: Value = ""
    attributes: StringMap = Field(default_factory=dict)


class Image(Wire):
    name: Annotated[StrictStr, Field(min_length=1, max_length=255, pattern=_IMAGE_NAME.pattern)]
    tag: Annotated[
        Annotated[StrictStr, Field(pattern=_TAG.pattern)] | None, BeforeValidator(_unset_if_empty)
    ] = None
    digest: Annotated[
        Annotated[StrictStr, Field(pattern=_DIGEST.pattern)] | None, BeforeValidator(_unset_if_empty)
    ] = None

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
    expression: Value = ""  # Titus itself says "not supported yet"

    @model_validator(mode="after")
    def _no_expression(self, info: ValidationInfo) -> Constraints:
        if self.expression and not _stored(info):
            raise not_supported("expression", "constraint expressions (Titus does not support them either)")
        return self


class VolumeMount(Wire):
    mountPath: StrictStr = ""
    mountPropagation: Literal[
        "MountPropagationNone", "MountPropagationHostToContainer", "MountPropagationBidirectional"
    ] = "MountPropagationNone"
    volumeName: StrictStr = ""
    readOnly: StrictBool = False
    subPath: Value = ""


class AnyMessage(BaseModel):
    """google.protobuf.Any in proto3 JSON: an object with "@type" and the message's fields."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    type_url: StrictStr = Field(alias="@type")


Arg = Annotated[StrictStr, Field(max_length=MAX_ARG_LEN)]
Argv = Annotated[list[Arg], Field(max_length=MAX_ARGS)]
EnvMap = Annotated[
    dict[Annotated[StrictStr, Field(pattern=_ENV_NAME.pattern, max_length=256)], Value],
    Field(max_length=MAX_ENV),
]


class Container(Wire):
    resources: ContainerResources
    securityProfile: SecurityProfile = Field(default_factory=SecurityProfile)
    image: Image
    attributes: StringMap = Field(default_factory=dict)
    # Both optional, as in Titus: empty means the image's own ENTRYPOINT / CMD (the OCI and Docker runtimes
    # read them from the image config; the process runtime has no image and refuses a task with neither).
    entryPoint: Argv = Field(default_factory=list)
    command: Argv = Field(default_factory=list)
    env: EnvMap = Field(default_factory=dict)
    softConstraints: Constraints = Field(default_factory=Constraints)
    hardConstraints: Constraints = Field(default_factory=Constraints)
    experimental: AnyMessage | None = None
    volumeMounts: Annotated[list[VolumeMount], Field(max_length=32)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _supported(self, info: ValidationInfo) -> Container:
        if _stored(info):
            return self
        if self.experimental is not None:
            raise not_supported("experimental", "experimental features")
        if self.volumeMounts:
            raise not_supported("volumeMounts", "job volumes (the job's volumes field) are not implemented")
        for name, reason in attribute_errors(self.attributes):
            raise ValueError(f"@attributes.{name}: {reason}")
        return self


class BasicImage(Wire):
    name: StrictStr = ""
    tag: StrictStr = ""
    digest: StrictStr = ""


class BasicContainer(Wire):
    name: StrictStr = ""
    image: BasicImage | None = None
    entryPoint: Argv = Field(default_factory=list)
    command: Argv = Field(default_factory=list)
    env: dict[StrictStr, Value] = Field(default_factory=dict)
    volumeMounts: Annotated[list[VolumeMount], Field(max_length=32)] = Field(default_factory=list)


class SharedContainerVolumeSource(Wire):
    sourceContainer: StrictStr = ""
    sourcePath: StrictStr = ""


class SaasVolumeSource(Wire):
    SaaSVolumeID: StrictStr = ""


class Volume(Wire):
    name: StrictStr = ""
    # oneof VolumeSource
    sharedContainerVolumeSource: SharedContainerVolumeSource | None = None
    SaaSVolumeSource: SaasVolumeSource | None = None


class PlatformSidecar(Wire):
    name: StrictStr = ""
    channel: StrictStr = ""
    arguments: dict[str, Any] | None = None  # google.protobuf.Struct: any JSON object


# ------------------------------------------------------------------------------------------ job specs
class _Empty(Wire):
    """An empty proto message ({} in JSON)."""

class ImmediateRetry(Wire):
    retries: Annotated[StrictInt, BeforeValidator(_uint64), Field(ge=0, le=MAX_RETRIES)] = 0


class DelayedRetry(Wire):
    initialDelayMs: Annotated[UInt64, Field(ge=0, le=MAX_DELAY_MS)] = 0
    delayMs: Annotated[UInt64, Field(ge=0, le=MAX_DELAY_MS)] = 0
    retries: Annotated[StrictInt, BeforeValidator(_uint64), Field(ge=0, le=MAX_RETRIES)] = 0


class ExponentialBackOffRetry(Wire):
    initialDelayMs: Annotated[UInt64, Field(ge=0, le=MAX_DELAY_MS)] = 0
    maxDelayIntervalMs: Annotated[UInt64, Field(ge=0, le=MAX_DELAY_MS)] = 0
    retries: Annotated[StrictInt, BeforeValidator(_uint64), Field(ge=0, le=MAX_RETRIES)] = 0

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> ExponentialBackOffRetry:
        if self.initialDelayMs <= 0:
            raise ValueError("@initialDelayMs: initialDelayMs must be > 0")
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
    size: Annotated[StrictInt, BeforeValidator(_uint64), Field(ge=1, le=MAX_BATCH_SIZE)]
    runtimeLimitSec: Annotated[
        UInt64, _default_if_zero(DEFAULT_RUNTIME_LIMIT_SEC), Field(ge=1, le=MAX_RUNTIME_LIMIT_SEC)
    ] = DEFAULT_RUNTIME_LIMIT_SEC
    retryPolicy: RetryPolicy = DEFAULT_RETRY
    retryOnRuntimeLimit: StrictBool = False


CapacityBound = Annotated[StrictInt, BeforeValidator(_uint64), Field(ge=0, le=MAX_SERVICE_CAPACITY)]


class Capacity(Wire):
    """Titus's Capacity; every bound is a proto3 uint32, so an omitted one is 0."""

    min: CapacityBound = 0
    max: CapacityBound = 0
    desired: CapacityBound = 0

    @model_validator(mode="after")
    def _ordered(self) -> Capacity:
        if not self.min <= self.desired <= self.max:
            raise ValueError("@desired: min <= desired <= max must hold")
        return self


class MigrationPolicy(Wire):
    # oneof Policy: each is an empty message
    systemDefault: _Empty | None = None
    selfManaged: _Empty | None = None

    @model_validator(mode="after")
    def _one(self) -> MigrationPolicy:
        if self.systemDefault is not None and self.selfManaged is not None:
            raise ValueError("@systemDefault|selfManaged: at most one of systemDefault or selfManaged")
        return self


class ServiceJobProcesses(Wire):
    disableIncreaseDesired: StrictBool = False
    disableDecreaseDesired: StrictBool = False


class ServiceJobSpec(Wire):
    capacity: Capacity = Field(default_factory=Capacity)
    # proto3's default, as Titus reads it: a descriptor printed without defaults and the same one printed
    # with them mean the same job. Titus clients set `enabled: true`; `titus job submit` does for the user.
    enabled: StrictBool = False
    retryPolicy: RetryPolicy = RetryPolicy(
        exponentialBackOff=ExponentialBackOffRetry(
            initialDelayMs=1_000, maxDelayIntervalMs=60_000, retries=MAX_RETRIES
        )
    )
    migrationPolicy: MigrationPolicy | None = None
    serviceJobProcesses: ServiceJobProcesses = Field(default_factory=ServiceJobProcesses)


# ---------------------------------------------------------------------------------- disruption budget

class SelfManagedBudget(Wire):
    relocationTimeMs: UInt64 = 0


class AvailabilityPercentageLimit(Wire):
    percentageOfHealthyContainers: Annotated[Number, Field(ge=0, le=100)] = 0.0


class UnhealthyTasksLimit(Wire):
    limitOfUnhealthyContainers: Annotated[StrictInt, BeforeValidator(_uint64), Field(ge=0)] = 0


class RelocationLimit(Wire):
    limit: Annotated[StrictInt, BeforeValidator(_uint64), Field(ge=0)] = 0


class RatePercentagePerHour(Wire):
    maxPercentageOfContainersRelocatedInHour: Annotated[Number, Field(ge=0, le=100)] = 0.0


class RatePerInterval(Wire):
    intervalMs: UInt64 = 0
    limitPerInterval: Annotated[StrictInt, BeforeValidator(_uint64), Field(ge=0)] = 0


class RatePercentagePerInterval(Wire):
    intervalMs: UInt64 = 0
    percentageLimitPerInterval: Annotated[Number, Field(ge=0, le=100)] = 0.0


class HourlyTimeWindow(Wire):
    startHour: Annotated[StrictInt, BeforeValidator(_uint64), Field(ge=0, le=24)] = 0
    endHour: Annotated[StrictInt, BeforeValidator(_uint64), Field(ge=0, le=24)] = 0


_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
_WEEKENDS = ("Saturday", "Sunday")


class TimeWindow(Wire):
    days: list[Literal["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]] = Field(
        default_factory=list
    )
    hourlyTimeWindows: list[HourlyTimeWindow] = Field(default_factory=list)
    timeZone: Value = ""

    @field_validator("days", mode="before")
    @classmethod
    def _legacy_day_sets(cls, value: Any, info: ValidationInfo) -> Any:
        """Stored budgets from before the wire followed Titus's Day enum may say Weekdays/Weekends/All."""
        if not _stored(info) or not isinstance(value, list):
            return value
        sets = {"Weekdays": _WEEKDAYS, "Weekends": _WEEKENDS, "All": (*_WEEKDAYS, *_WEEKENDS)}
        days: list[Any] = []
        for day in value:
            for d in sets.get(day, (day,)) if isinstance(day, str) else (day,):
                if d not in days:
                    days.append(d)
        return days


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

    @model_validator(mode="after")
    def _supported(self, info: ValidationInfo) -> NetworkConfiguration:
        if self.networkMode != "UnknownNetworkMode" and not _stored(info):
            raise not_supported(
                "networkMode", "network modes; leave it UnknownNetworkMode (the backend chooses)"
            )
        return self


class JobDescriptor(Wire):
    owner: Owner
    applicationName: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=_APP_NAME.pattern)]
    capacityGroup: Annotated[
        StrictStr,
        BeforeValidator(lambda v: DEFAULT_CAPACITY_GROUP if v == "" else v),
        Field(min_length=1, max_length=64, pattern=_APP_NAME.pattern),
    ] = DEFAULT_CAPACITY_GROUP
    jobGroupInfo: JobGroupInfo = Field(default_factory=JobGroupInfo)
    attributes: StringMap = Field(default_factory=dict)
    container: Container
    batch: BatchJobSpec | None = None
    service: ServiceJobSpec | None = None
    disruptionBudget: JobDisruptionBudget | None = None
    networkConfiguration: NetworkConfiguration | None = None
    extraContainers: Annotated[list[BasicContainer], Field(max_length=16)] = Field(default_factory=list)
    volumes: Annotated[list[Volume], Field(max_length=32)] = Field(default_factory=list)
    platformSidecars: Annotated[list[PlatformSidecar], Field(max_length=16)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _exactly_one_spec(self, info: ValidationInfo) -> JobDescriptor:
        if (self.batch is None) == (self.service is None):
            raise ValueError("@batch|service: exactly one of batch or service is required")
        for key in self.attributes:
            if key.lower().startswith("titus"):
                raise ValueError(f"@attributes.{key}: attribute names starting with 'titus' are reserved")
        if _stored(info):
            return self
        if self.extraContainers:
            raise not_supported("extraContainers", "a task runs one container here")
        if self.volumes:
            raise not_supported("volumes", "job volumes")
        if self.platformSidecars:
            raise not_supported("platformSidecars", "platform sidecars")
        return self

    @property
    def job_type(self) -> str:
        return "BATCH" if self.batch is not None else "SERVICE"

    @property
    def retry_policy(self) -> RetryPolicy:
        spec = self.batch if self.batch is not None else self.service
        assert spec is not None
        return spec.retryPolicy


OptionalBound = Annotated[
    StrictInt, BeforeValidator(_uint64), Field(ge=0, le=MAX_SERVICE_CAPACITY)
] | None


class CapacityUpdate(Wire):
    """Body of PUT /api/v3/jobs/{id}/capacityAttributes: Titus's JobCapacityWithOptionalAttributes (each
    bound a UInt32Value, which proto3 JSON writes as a bare number); an absent bound is left as it is."""

    min: OptionalBound = None
    max: OptionalBound = None
    desired: OptionalBound = None

    @staticmethod
    def of(capacity: Capacity) -> CapacityUpdate:
        """PUT .../instances takes a whole Capacity; it sets every bound."""
        return CapacityUpdate(min=capacity.min, max=capacity.max, desired=capacity.desired)


# ------------------------------------------------------------------------------------ job operations
AttributeKey = Annotated[StrictStr, Field(min_length=1, max_length=MAX_NAME_LEN)]


class JobAttributesUpdate(Wire):
    """Body of PUT /api/v3/jobs/{id}/attributes; jobId may be omitted or must match the path."""

    jobId: StrictStr = ""
    attributes: Annotated[dict[AttributeKey, Value], Field(max_length=MAX_ATTRIBUTES)] = Field(
        default_factory=dict
    )


class TaskAttributesUpdate(Wire):
    """Body of PUT /api/v3/tasks/{id}/attributes; taskId may be omitted or must match the path."""

    taskId: StrictStr = ""
    attributes: Annotated[dict[AttributeKey, Value], Field(max_length=MAX_ATTRIBUTES)] = Field(
        default_factory=dict
    )


class TaskMoveRequest(Wire):
    sourceJobId: StrictStr = ""
    targetJobId: StrictStr = ""
    taskId: StrictStr = ""


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
    """The agent's answer to one log read of its desired set (`logReads`): one byte range of one stream,
    dataB64 from offset; size and start describe the stream on the agent; found is false when the agent has
    no such stream."""

    sessionEpoch: StrictInt
    requestId: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    found: StrictBool = True
    stream: Literal["stdout", "stderr"] = "stdout"
    offset: Annotated[StrictInt, Field(ge=0)] = 0
    size: Annotated[StrictInt, Field(ge=0)] = 0
    start: Annotated[StrictInt, Field(ge=0)] = 0
    dataB64: StrictStr = ""
    final: StrictBool = False


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
