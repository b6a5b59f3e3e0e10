"""S3 adapter for finished tasks' logs (the only module that imports boto3 for them): agents upload a task's
stdout and stderr once its end is recorded, masters read byte ranges back once no agent holds the files.

As in Titus, the logs outlive the agent. One object per stream, `<prefix>/<task id>/<stream>`, holding the
bytes the agent still kept (rotation may have dropped the oldest): metadata `start` says at which stream
offset the object begins, so offsets mean the same thing from the agent and from S3. Retention is an S3
lifecycle rule on the prefix (id `titus-task-logs`), set by the master at start and merged into the bucket's
other rules, never replacing them.

Settings (agent and master alike): TITUS_LOG_S3_BUCKET (empty: no archive), TITUS_LOG_S3_PREFIX
(`task-logs`), TITUS_LOG_S3_REGION (or AWS_REGION, `us-east-1`), TITUS_LOG_S3_ENDPOINT_URL (moto_server in
the tests), TITUS_LOG_RETENTION_DAYS (`30`; `0` leaves the bucket's lifecycle to its owner, as with the bucket
Terraform's log_bucket module makes, which has its own rule). Credentials come from boto3's usual chain.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

RULE_ID = "titus-task-logs"


class LogArchiveError(Exception):
    pass


class S3LogArchive:
    def __init__(self, bucket: str, prefix: str = "task-logs", region: str = "us-east-1",
                 endpoint_url: str | None = None, retention_days: int = 30) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.retention_days = retention_days
        self.s3 = boto3.client("s3", region_name=region, endpoint_url=endpoint_url,
                               config=Config(retries={"max_attempts": 5, "mode": "standard"},
                                             connect_timeout=5, read_timeout=30))

    def key(self, task_id: str, stream: str) -> str:
        return f"{self.prefix}/{task_id}/{stream}"

    def put(self, task_id: str, stream: str, data: bytes, start: int) -> None:
        """Store the kept part of a finished task's stream: `data` is the stream from offset `start` on."""
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self.key(task_id, stream), Body=data,
                               ContentType="text/plain", Metadata={"start": str(start)})
        except (BotoCoreError, ClientError) as exc:
            raise LogArchiveError(f"upload of {task_id}/{stream} to s3://{self.bucket}: {exc}") from exc

    def read(self, task_id: str, stream: str, offset: int, limit: int) -> dict[str, Any] | None:
        """The range [offset, offset + limit) (offset < 0: from the end) as the master's log route answers
        it, or None if the archive has no such stream."""
        key = self.key(task_id, stream)
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise LogArchiveError(f"s3://{self.bucket}/{key}: {exc}") from exc
        except BotoCoreError as exc:
            raise LogArchiveError(f"s3://{self.bucket}/{key}: {exc}") from exc
        start = int(head.get("Metadata", {}).get("start", "0") or 0)
        length = int(head["ContentLength"])
        size = start + length
        begin = size + offset if offset < 0 else offset
        begin = min(max(begin, start), size)
        end = min(begin + max(0, limit), size)
        data = b""
        if end > begin:
            try:
                got = self.s3.get_object(Bucket=self.bucket, Key=key,
                                         Range=f"bytes={begin - start}-{end - start - 1}")
                data = got["Body"].read()
            except (BotoCoreError, ClientError) as exc:
                raise LogArchiveError(f"s3://{self.bucket}/{key}: {exc}") from exc
        return {"data": data, "offset": begin, "size": size, "start": start, "final": True, "source": "s3"}

    def ensure_retention(self) -> None:
        """Expire the prefix's objects after retention_days: our rule is added to (or replaces our earlier
        one among) the bucket's lifecycle rules; other rules stay as they are. With retention_days 0 the
        bucket's owner keeps the retention, and the bucket is not touched (nor needs the right to be)."""
        if self.retention_days == 0:
            return
        try:
            try:
                rules = self.s3.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules", [])
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
                    raise
                rules = []
            rules = [r for r in rules if r.get("ID") != RULE_ID]
            rules.append({"ID": RULE_ID, "Status": "Enabled", "Filter": {"Prefix": self.prefix + "/"},
                          "Expiration": {"Days": self.retention_days}})
            self.s3.put_bucket_lifecycle_configuration(Bucket=self.bucket,
                                                       LifecycleConfiguration={"Rules": rules})
        except (BotoCoreError, ClientError) as exc:
            raise LogArchiveError(f"cannot set the log retention on s3://{self.bucket}: {exc}") from exc


def from_settings(values: Mapping[str, str]) -> S3LogArchive | None:
    bucket = values.get("TITUS_LOG_S3_BUCKET", "")
    if not bucket:
        return None
    raw_days = values.get("TITUS_LOG_RETENTION_DAYS", "30").strip()
    try:
        days = int(raw_days)
    except ValueError:
        days = -1
    if days < 0:
        raise LogArchiveError(f"TITUS_LOG_RETENTION_DAYS must be a whole number of days (0: the bucket's own "
                              f"lifecycle), not {raw_days!r}")
    return S3LogArchive(
        bucket,
        values.get("TITUS_LOG_S3_PREFIX", "task-logs"),
        values.get("TITUS_LOG_S3_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
        values.get("TITUS_LOG_S3_ENDPOINT_URL") or None,
        days,
    )
