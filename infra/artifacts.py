"""The deploy's artifact bucket: the functions bundle, the template and Chalice's deployed state.

CloudFormation takes an inline template of at most 51,200 bytes; ours is several times that, so it always
goes through S3 (TemplateURL). Objects are keyed by their content hash: an unchanged bundle keeps its key,
so the stack's ArtifactKey parameter does not change and CloudFormation leaves the functions alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

APP = "ymera"
#: Chalice's record of what it deployed (REST API id, function ARN), kept in the bucket so a second machine
#: or a CI runner updates the same API instead of creating another one.
CHALICE_STATE_KEY = "chalice/deployed/{stage}.json"


class ArtifactError(RuntimeError):
    """The bucket cannot be used (owned by someone else, or refused)."""


def bucket_name(stage: str, account: str, region: str) -> str:
    """Bucket names are global: account and region make the default one ours alone."""
    return f"{APP}-{stage}-artifacts-{account}-{region}"


def _tls_only(bucket: str) -> dict[str, Any]:
    arns = [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "DenyPlainTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": arns,
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}


def bucket_exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchBucket", "NotFound"}:
            return False
        if code in {"403", "AccessDenied", "Forbidden"}:
            raise ArtifactError(f"bucket {bucket} exists but these credentials may not use it "
                                "(another account's? pass --bucket)") from exc
        raise
    return True


def ensure_bucket(s3: Any, bucket: str, region: str, *, tls_only: bool = True) -> bool:
    """Create the bucket if missing, then (always: it converges drift) versioning, a public access block,
    default encryption and a TLS-only policy. Returns whether it was created. `tls_only=False` only for an
    emulator: moto ignores policy conditions, so "deny unless TLS" denies every request there."""
    created = not bucket_exists(s3, bucket)
    if created:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":  # us-east-1 refuses its own name as a LocationConstraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    if tls_only:
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(_tls_only(bucket)))
    return created


def content_key(data: bytes, prefix: str, suffix: str) -> str:
    return f"{prefix}/{hashlib.sha256(data).hexdigest()}{suffix}"


def upload_once(s3: Any, bucket: str, data: bytes, prefix: str, suffix: str) -> tuple[str, bool]:
    """Put `data` under its content-hash key unless it is already there; returns (key, uploaded)."""
    key = content_key(data, prefix, suffix)
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return key, False
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) not in {"404", "NoSuchKey", "NotFound"}:
            raise
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return key, True


def object_url(bucket: str, key: str, region: str) -> str:
    """The virtual-hosted URL CloudFormation's TemplateURL takes."""
    return f"https://{bucket}.s3.{region}.amazonaws.com/{key}"


def download_chalice_state(s3: Any, bucket: str, stage: str, project_dir: Path) -> bool:
    """Put the bucket's copy of `.chalice/deployed/<stage>.json` in place (it wins over a local one)."""
    try:
        body = s3.get_object(Bucket=bucket, Key=CHALICE_STATE_KEY.format(stage=stage))["Body"].read()
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise
    path = project_dir / ".chalice" / "deployed" / f"{stage}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return True


def upload_chalice_state(s3: Any, bucket: str, stage: str, project_dir: Path) -> None:
    path = project_dir / ".chalice" / "deployed" / f"{stage}.json"
    if path.exists():
        s3.put_object(Bucket=bucket, Key=CHALICE_STATE_KEY.format(stage=stage), Body=path.read_bytes())


def delete_chalice_state(s3: Any, bucket: str, stage: str) -> None:
    s3.delete_object(Bucket=bucket, Key=CHALICE_STATE_KEY.format(stage=stage))


def empty_and_delete_bucket(s3: Any, bucket: str) -> int:
    """Every version and delete marker, then the bucket (versioned buckets refuse a plain delete)."""
    if not bucket_exists(s3, bucket):
        return 0
    removed = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        batch = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                 for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]]
        if batch:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            removed += len(batch)
    s3.delete_bucket(Bucket=bucket)
    return removed
