"""Titus's v3 job API messages, written here from the published proto's facts, as protobuf descriptors.

Source of the facts: Netflix/titus-api-definitions, src/main/proto/netflix/titus/titus_job_api.proto,
titus_base.proto, titus_containers.proto and titus_volumes.proto (master branch). Each message below lists
its fields as (JSON name, number, type), its oneofs and its enums, exactly as that proto defines them; the
descriptors are built at test time into protobuf's own pool, so `json_format.Parse` applies the real proto3
JSON rules (unknown fields refused, enums by name, 64-bit integers as numbers or strings, oneofs exclusive)
the way a Titus client built on those messages does. Message names are flattened
(`ContainerResources.EfsMount` becomes `EfsMount`): JSON never names a message type, so only the field
names and types matter. Enums sit in holder messages so that their values keep Titus's names.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    empty_pb2,
    json_format,
    message_factory,
    struct_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

PACKAGE = "titus.compat"
_FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _FDP.TYPE_STRING,
    "bool": _FDP.TYPE_BOOL,
    "double": _FDP.TYPE_DOUBLE,
    "int32": _FDP.TYPE_INT32,
    "uint32": _FDP.TYPE_UINT32,
    "uint64": _FDP.TYPE_UINT64,
    "bytes": _FDP.TYPE_BYTES,
}
_WELL_KNOWN = {
    "Any": ".google.protobuf.Any",
    "UInt32Value": ".google.protobuf.UInt32Value",
    "Struct": ".google.protobuf.Struct",
}

# Enums: name -> values in number order (0, 1, 2, ...).
ENUMS: dict[str, list[str]] = {
    "MountPerm": ["RO", "WO", "RW"],
    "Day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "NetworkMode": ["UnknownNetworkMode", "Ipv4Only", "Ipv6AndIpv4", "Ipv6AndIpv4Fallback", "Ipv6Only",
                    "HighScale"],
    "MountPropagation": ["MountPropagationNone", "MountPropagationHostToContainer",
                         "MountPropagationBidirectional"],
    "JobState": ["Accepted", "KillInitiated", "Finished"],
    "TaskState": ["Accepted", "Launched", "StartInitiated", "Started", "KillInitiated", "Disconnected",
                  "Finished"],
    "ContainerHealth": ["Unset", "Unhealthy", "Healthy"],
}

# A field: (JSON name, number, type). Type: a scalar, an enum or message name, "repeated X",
# "map<string,string>", or a well-known type. A fourth item names the oneof the field belongs to.
Field = tuple[Any, ...]
MESSAGES: dict[str, list[Field]] = {
    # ------------------------------------------------------------------ titus_base.proto
    "Page": [("pageNumber", 1, "int32"), ("pageSize", 2, "int32"), ("cursor", 3, "string")],
    "Pagination": [("currentPage", 1, "Page"), ("hasMore", 2, "bool"), ("totalPages", 3, "int32"),
                   ("totalItems", 4, "int32"), ("cursor", 5, "string"), ("cursorPosition", 6, "int32")],
    "Immediate": [("retries", 1, "uint32")],
    "Delayed": [("initialDelayMs", 1, "uint64"), ("delayMs", 2, "uint64"), ("retries", 3, "uint32")],
    "ExponentialBackOff": [("initialDelayMs", 1, "uint64"), ("maxDelayIntervalMs", 2, "uint64"),
                           ("retries", 3, "uint32")],
    "RetryPolicy": [("immediate", 1, "Immediate", "Policy"), ("delayed", 2, "Delayed", "Policy"),
                    ("exponentialBackOff", 3, "ExponentialBackOff", "Policy")],
    "HourlyTimeWindow": [("startHour", 1, "uint32"), ("endHour", 2, "uint32")],
    "TimeWindow": [("days", 1, "repeated Day"), ("hourlyTimeWindows", 2, "repeated HourlyTimeWindow"),
                   ("timeZone", 3, "string")],
    "ContainerHealthProvider": [("name", 1, "string"), ("attributes", 3, "map<string,string>")],
    "AddressLocation": [("region", 1, "string"), ("availabilityZone", 2, "string"),
                        ("subnetId", 3, "string")],
    "AddressAllocation": [("addressLocation", 1, "AddressLocation"), ("uuid", 2, "string"),
                          ("address", 3, "string"), ("ipv6Address", 4, "string")],
    "StaticIPAddressIDs": [("uuids", 1, "repeated string")],
    "SignedAddressAllocation": [("addressAllocation", 1, "AddressAllocation"),
                                ("signedAddressAllocation", 2, "bytes"),
                                ("authoritativePublicKey", 3, "bytes"),
                                ("hostPublicKey", 4, "bytes"), ("hostPublicKeySignature", 5, "bytes"),
                                ("message", 6, "bytes"), ("messageSignature", 7, "bytes")],
    "Version": [("timestamp", 1, "uint64")],
    # ------------------------------------------------------------------ titus_volumes.proto
    "SharedContainerVolumeSource": [("sourceContainer", 1, "string"), ("sourcePath", 2, "string")],
    "SaaSVolumeSource": [("SaaSVolumeID", 1, "string")],
    "Volume": [("name", 1, "string"),
               ("sharedContainerVolumeSource", 2, "SharedContainerVolumeSource", "VolumeSource"),
               ("SaaSVolumeSource", 3, "SaaSVolumeSource", "VolumeSource")],
    "VolumeMount": [("mountPath", 1, "string"), ("mountPropagation", 2, "MountPropagation"),
                    ("volumeName", 3, "string"), ("readOnly", 4, "bool"), ("subPath", 5, "string")],
    # ------------------------------------------------------------------ titus_containers.proto
    "BasicImage": [("name", 1, "string"), ("tag", 2, "string"), ("digest", 3, "string")],
    "BasicContainer": [("name", 1, "string"), ("image", 2, "BasicImage"),
                       ("entryPoint", 3, "repeated string"),
                       ("command", 4, "repeated string"), ("env", 5, "map<string,string>"),
                       ("volumeMounts", 6, "repeated VolumeMount")],
    "PlatformSidecar": [("name", 1, "string"), ("channel", 2, "string"), ("arguments", 3, "Struct")],
    # ------------------------------------------------------------------ titus_job_api.proto
    "Owner": [("teamEmail", 1, "string")],
    "JobGroupInfo": [("stack", 1, "string"), ("detail", 2, "string"), ("sequence", 3, "string")],
    "Constraints": [("constraints", 1, "map<string,string>"), ("expression", 2, "string")],
    "Image": [("name", 1, "string"), ("tag", 2, "string"), ("digest", 3, "string")],
    "NetworkConfiguration": [("networkMode", 1, "NetworkMode")],
    "EfsMount": [("efsId", 1, "string"), ("mountPoint", 2, "string"), ("mountPerm", 3, "MountPerm"),
                 ("efsRelativeMountPoint", 4, "string")],
    "ContainerResources": [("cpu", 1, "double"), ("gpu", 2, "uint32"), ("memoryMB", 3, "uint32"),
                           ("diskMB", 4, "uint32"), ("networkMbps", 5, "uint32"), ("allocateIP", 6, "bool"),
                           ("efsMounts", 7, "repeated EfsMount"), ("shmSizeMB", 8, "uint32"),
                           ("signedAddressAllocations", 9, "repeated SignedAddressAllocation"),
                           ("pool", 10, "string", "staticIPAddresses"),
                           ("staticIPAddressIDs", 11, "StaticIPAddressIDs", "staticIPAddresses")],
    "SecurityProfile": [("securityGroups", 1, "repeated string"), ("iamRole", 2, "string"),
                        ("attributes", 3, "map<string,string>")],
    "Container": [("resources", 1, "ContainerResources"), ("securityProfile", 2, "SecurityProfile"),
                  ("image", 3, "Image"), ("attributes", 4, "map<string,string>"),
                  ("entryPoint", 5, "repeated string"), ("command", 6, "repeated string"),
                  ("env", 7, "map<string,string>"), ("softConstraints", 8, "Constraints"),
                  ("hardConstraints", 9, "Constraints"), ("experimental", 10, "Any"),
                  ("volumeMounts", 11, "repeated VolumeMount")],
    "Capacity": [("min", 1, "uint32"), ("max", 2, "uint32"), ("desired", 3, "uint32")],
    "JobCapacityWithOptionalAttributes": [("min", 1, "UInt32Value"), ("max", 2, "UInt32Value"),
                                          ("desired", 3, "UInt32Value")],
    "SelfManaged": [("relocationTimeMs", 1, "uint64")],
    "AvailabilityPercentageLimit": [("percentageOfHealthyContainers", 1, "double")],
    "UnhealthyTasksLimit": [("limitOfUnhealthyContainers", 1, "uint32")],
    "RelocationLimit": [("limit", 1, "uint32")],
    "RateUnlimited": [],
    "RatePercentagePerHour": [("maxPercentageOfContainersRelocatedInHour", 1, "double")],
    "RatePerInterval": [("intervalMs", 1, "uint64"), ("limitPerInterval", 2, "uint32")],
    "RatePercentagePerInterval": [("intervalMs", 1, "uint64"), ("percentageLimitPerInterval", 2, "double")],
    "JobDisruptionBudget": [("selfManaged", 1, "SelfManaged", "Policy"),
                            ("availabilityPercentageLimit", 2, "AvailabilityPercentageLimit", "Policy"),
                            ("unhealthyTasksLimit", 3, "UnhealthyTasksLimit", "Policy"),
                            ("relocationLimit", 4, "RelocationLimit", "Policy"),
                            ("rateUnlimited", 5, "RateUnlimited", "Rate"),
                            ("ratePercentagePerHour", 6, "RatePercentagePerHour", "Rate"),
                            ("timeWindows", 7, "repeated TimeWindow"),
                            ("containerHealthProviders", 8, "repeated ContainerHealthProvider"),
                            ("ratePerInterval", 9, "RatePerInterval", "Rate"),
                            ("ratePercentagePerInterval", 10, "RatePercentagePerInterval", "Rate")],
    "BatchJobSpec": [("size", 1, "uint32"), ("runtimeLimitSec", 2, "uint64"),
                     ("retryPolicy", 3, "RetryPolicy"),
                     ("retryOnRuntimeLimit", 4, "bool")],
    "SystemDefault": [],
    "SelfManagedMigration": [],
    "MigrationPolicy": [("systemDefault", 1, "SystemDefault", "Policy"),
                        ("selfManaged", 2, "SelfManagedMigration", "Policy")],
    "MigrationDetails": [("needsMigration", 1, "bool"), ("deadline", 2, "uint64"), ("started", 3, "uint64")],
    "ServiceJobProcesses": [("disableIncreaseDesired", 1, "bool"), ("disableDecreaseDesired", 2, "bool")],
    "ServiceJobSpec": [("capacity", 1, "Capacity"), ("enabled", 2, "bool"), ("retryPolicy", 3, "RetryPolicy"),
                       ("migrationPolicy", 4, "MigrationPolicy"),
                       ("serviceJobProcesses", 5, "ServiceJobProcesses")],
    "JobDescriptor": [("owner", 1, "Owner"), ("applicationName", 3, "string"), ("capacityGroup", 4, "string"),
                      ("jobGroupInfo", 5, "JobGroupInfo"), ("attributes", 6, "map<string,string>"),
                      ("container", 7, "Container"), ("batch", 8, "BatchJobSpec", "JobSpec"),
                      ("service", 9, "ServiceJobSpec", "JobSpec"),
                      ("disruptionBudget", 10, "JobDisruptionBudget"),
                      ("networkConfiguration", 11, "NetworkConfiguration"),
                      ("extraContainers", 12, "repeated BasicContainer"), ("volumes", 13, "repeated Volume"),
                      ("platformSidecars", 14, "repeated PlatformSidecar")],
    "JobStatus": [("state", 1, "JobState"), ("reasonCode", 2, "string"), ("reasonMessage", 3, "string"),
                  ("timestamp", 4, "uint64")],
    "ContainerState": [("containerName", 1, "string"), ("containerHealth", 2, "ContainerHealth"),
                       ("containerImage", 3, "BasicImage"), ("platformSidecar", 4, "string")],
    "TaskStatus": [("state", 1, "TaskState"), ("reasonCode", 2, "string"), ("reasonMessage", 3, "string"),
                   ("timestamp", 4, "uint64"), ("containerState", 5, "repeated ContainerState")],
    "UI": [("url", 1, "string")],
    "LiveStream": [("url", 1, "string")],
    "S3": [("accountName", 1, "string"), ("accountId", 2, "string"), ("region", 3, "string"),
           ("bucket", 4, "string"), ("key", 5, "string")],
    "LogLocation": [("ui", 1, "UI"), ("liveStream", 2, "LiveStream"), ("s3", 3, "S3")],
    "Task": [("id", 1, "string"), ("jobId", 2, "string"), ("taskContext", 3, "map<string,string>"),
             ("status", 4, "TaskStatus"), ("statusHistory", 5, "repeated TaskStatus"),
             ("logLocation", 6, "LogLocation"), ("migrationDetails", 7, "MigrationDetails"),
             ("attributes", 8, "map<string,string>"), ("version", 9, "Version")],
    "Job": [("id", 1, "string"), ("jobDescriptor", 2, "JobDescriptor"), ("status", 3, "JobStatus"),
            ("statusHistory", 4, "repeated JobStatus"), ("version", 5, "Version")],
    "JobId": [("id", 1, "string")],
    "JobQueryResult": [("items", 1, "repeated Job"), ("pagination", 2, "Pagination")],
    "TaskQueryResult": [("items", 1, "repeated Task"), ("pagination", 2, "Pagination")],
    "JobAttributesUpdate": [("jobId", 1, "string"), ("attributes", 2, "map<string,string>")],
    "TaskAttributesUpdate": [("taskId", 1, "string"), ("attributes", 2, "map<string,string>")],
    "TaskMoveRequest": [("sourceJobId", 1, "string"), ("targetJobId", 2, "string"), ("taskId", 3, "string")],
    "Empty": [],  # google.protobuf.Empty: the answer to every update
    "KeepAliveRequest": [("requestId", 1, "uint64"), ("timestamp", 2, "uint64")],
    "KeepAliveResponse": [("request", 1, "KeepAliveRequest"), ("timestamp", 2, "uint64")],
    "JobUpdate": [("job", 1, "Job"), ("archived", 2, "bool")],
    "TaskUpdate": [("task", 1, "Task"), ("movedFromAnotherJob", 2, "bool"), ("archived", 3, "bool")],
    "SnapshotEnd": [],
    # ------------------------------------------------------------------ titus_scheduler_api.proto
    "SchedulingSuccess": [("message", 1, "string")],
    "SchedulingFailure": [("reason", 1, "string"), ("failureCount", 2, "int32"),
                          ("agentIdSamples", 3, "repeated string")],
    "SchedulingFailures": [("failures", 1, "repeated SchedulingFailure")],
    "SchedulingResultEvent": [("success", 1, "SchedulingSuccess", "Status"),
                              ("failures", 2, "SchedulingFailures", "Status")],
    "JobChangeNotification": [("jobUpdate", 1, "JobUpdate", "Notification"),
                              ("taskUpdate", 2, "TaskUpdate", "Notification"),
                              ("snapshotEnd", 3, "SnapshotEnd", "Notification"),
                              ("timestamp", 4, "uint64"),
                              ("keepAliveResponse", 5, "KeepAliveResponse", "Notification")],
}


def _entry_name(field_name: str) -> str:
    return field_name[0].upper() + field_name[1:] + "Entry"


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name="titus_compat.proto", package=PACKAGE, syntax="proto3")
    f.dependency.extend(["google/protobuf/any.proto", "google/protobuf/wrappers.proto",
                         "google/protobuf/struct.proto"])
    for name, values in ENUMS.items():
        # Enum values are scoped by the enum's parent (Titus nests JobState in JobStatus, TaskState in
        # TaskStatus, ...), so each enum gets a holder message of its own: same value names, no clashes.
        enum = f.message_type.add(name=f"{name}Scope").enum_type.add(name=name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
    for name, fields in MESSAGES.items():
        msg = f.message_type.add(name=name)
        oneofs: list[str] = []
        for spec in fields:
            json_name, number, kind = spec[0], spec[1], spec[2]
            field = msg.field.add(name=json_name, number=number, json_name=json_name,
                                  label=_FDP.LABEL_OPTIONAL)
            if kind.startswith("map<"):
                entry = msg.nested_type.add(name=_entry_name(json_name))
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=_FDP.TYPE_STRING, label=_FDP.LABEL_OPTIONAL,
                                json_name="key")
                entry.field.add(name="value", number=2, type=_FDP.TYPE_STRING, label=_FDP.LABEL_OPTIONAL,
                                json_name="value")
                field.label = _FDP.LABEL_REPEATED
                field.type = _FDP.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{name}.{_entry_name(json_name)}"
                continue
            if kind.startswith("repeated "):
                field.label = _FDP.LABEL_REPEATED
                kind = kind.removeprefix("repeated ")
            if kind in _SCALARS:
                field.type = _SCALARS[kind]
            elif kind in ENUMS:
                field.type = _FDP.TYPE_ENUM
                field.type_name = f".{PACKAGE}.{kind}Scope.{kind}"
            elif kind in _WELL_KNOWN:
                field.type = _FDP.TYPE_MESSAGE
                field.type_name = _WELL_KNOWN[kind]
            else:
                assert kind in MESSAGES, f"{name}.{json_name}: unknown type {kind}"
                field.type = _FDP.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{kind}"
            if len(spec) > 3:
                if spec[3] not in oneofs:
                    oneofs.append(spec[3])
                    msg.oneof_decl.add(name=spec[3])
                field.oneof_index = oneofs.index(spec[3])
    return f


@cache
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for wk in (any_pb2, wrappers_pb2, struct_pb2, empty_pb2):
        pool.AddSerializedFile(wk.DESCRIPTOR.serialized_pb)
    pool.Add(_file())
    return pool


def descriptor(name: str) -> Descriptor:
    return _pool().FindMessageTypeByName(f"{PACKAGE}.{name}")


def new(name: str) -> Message:
    """An empty message of Titus's type `name`."""
    cls: type[Message] = message_factory.GetMessageClass(descriptor(name))
    return cls()


def parse_strict(doc: Any, name: str) -> Message:
    """Titus's message `name` from our JSON, by protobuf's own proto3 JSON parser with unknown fields
    refused (raises json_format.ParseError naming what does not fit)."""
    import json

    msg = new(name)
    json_format.Parse(json.dumps(doc), msg, ignore_unknown_fields=False, descriptor_pool=_pool())
    return msg


def to_json(msg: Message, print_defaults: bool = False) -> dict[str, Any]:
    """What a Titus client sends: json_format's output, optionally with every default printed (as Java
    clients configured with includingDefaultValueFields do)."""
    import json

    text = json_format.MessageToJson(msg, always_print_fields_with_no_presence=print_defaults,
                                     descriptor_pool=_pool())
    doc: dict[str, Any] = json.loads(text)
    return doc


def from_dict(doc: dict[str, Any], name: str) -> Message:
    """A message built from a plain dict (test convenience; strict as parse_strict)."""
    return parse_strict(doc, name)


def check_proto3_json(doc: Any, name: str, path: str = "") -> list[str]:
    """What proto3 JSON output demands beyond parsing: 64-bit integers written as strings, enums written by
    name. Returns every offending path (empty when the document is canonical in those respects)."""
    return _check(doc, descriptor(name), path)


_INT64 = {FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_FIXED64,
          FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64}


def _check(doc: Any, desc: Descriptor, path: str) -> list[str]:
    problems: list[str] = []
    if not isinstance(doc, dict):
        return [f"{path or '(root)'}: not an object"]
    fields = {f.json_name: f for f in desc.fields}
    for key, value in doc.items():
        field = fields.get(key)
        where = f"{path}.{key}" if path else key
        if field is None:
            problems.append(f"{where}: not a field of {desc.name}")
            continue
        values = value if field.is_repeated and isinstance(value, list) else [value]
        if field.type in _INT64:
            problems += [f"{where}: 64-bit integer not written as a string" for v in values
                         if not isinstance(v, str)]
        elif field.type == FieldDescriptor.TYPE_ENUM:
            problems += [f"{where}: enum not written by name" for v in values if not isinstance(v, str)]
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name.startswith(PACKAGE) \
                and not field.message_type.GetOptions().map_entry:
            for i, v in enumerate(values):
                problems += _check(v, field.message_type, f"{where}[{i}]" if len(values) > 1 else where)
    return problems
