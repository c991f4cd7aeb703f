"""The landing area of incremental pool data: files dropped there become pool shards (one partition each).

The landing area is a local folder (``INSTSEL_LANDING_DIR``, default ``<storage>/landing``) or, when
``INSTSEL_LANDING_S3_PREFIX`` is set, a prefix of the S3 bucket ``INSTSEL_S3_BUCKET`` (endpoint, region and
credentials as for ``INSTSEL_STORAGE=s3``). Only ``.json`` / ``.jsonl`` files directly in it are shards; names
starting with ``.`` or ``_`` (partial uploads, markers) are ignored. A shard's partition key is its file name,
which must match :data:`SHARD_KEY_RE` (letters, digits, ``.``, ``_``, ``-``; at most 100 characters); any other
name is reported as rejected with the reason, never read. A local shard must be a regular file inside the folder
after resolving symlinks.

Each listed shard carries a content fingerprint (SHA-256 of the bytes for a local file, the ETag for an S3
object): the sensor re-ingests a shard only when its fingerprint changes.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from instsel_assets import settings
from instsel_assets.ingest.formats import DATA_SUFFIXES, SourceError

SHARD_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_SHARD_BYTES = 2 * 1024**3  # a shard is read into memory whole; bigger files should be split


@dataclass(frozen=True)
class LandedShard:
    key: str  # the partition key: the file name
    location: str  # absolute path or s3://bucket/key
    fingerprint: str
    size: int


@dataclass(frozen=True)
class Rejected:
    name: str
    reason: str


def shard_key_problem(name: str) -> str | None:
    """Why ``name`` cannot be a shard key, or ``None`` when it can."""
    if not SHARD_KEY_RE.fullmatch(name):
        return (f"shard name {name!r} must be 1-100 characters of letters, digits, '.', '_' or '-', starting with "
                f"a letter or digit")
    if ".." in name:
        return f"shard name {name!r} must not contain '..'"
    if Path(name).suffix.lower() not in DATA_SUFFIXES:
        return f"shard name {name!r} must end in one of {', '.join(sorted(DATA_SUFFIXES))}"
    return None


def validate_shard_key(name: str) -> str:
    problem = shard_key_problem(name)
    if problem:
        raise SourceError(problem)
    return name


def _ignored(name: str) -> bool:
    return name.startswith((".", "_"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def landing_dir() -> Path:
    return Path(os.environ.get("INSTSEL_LANDING_DIR", settings.storage_root() / "landing")).resolve()


def landing_s3_prefix() -> str | None:
    prefix = os.environ.get("INSTSEL_LANDING_S3_PREFIX", "").strip()
    return prefix.strip("/") + "/" if prefix else None


def landing_description() -> str:
    prefix = landing_s3_prefix()
    if prefix is not None:
        return f"s3://{os.environ.get('INSTSEL_S3_BUCKET', '?')}/{prefix}"
    return str(landing_dir())


def list_folder(root: Path) -> tuple[list[LandedShard], list[Rejected]]:
    """The shards of a local landing folder (missing folder: none)."""
    shards: list[LandedShard] = []
    rejected: list[Rejected] = []
    if not root.is_dir():
        return shards, rejected
    real_root = root.resolve()
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        name = entry.name
        if _ignored(name) or (entry.is_dir() and not entry.is_symlink()):
            continue
        problem = shard_key_problem(name)
        if problem is None:
            target = entry.resolve()
            if target.parent != real_root and real_root not in target.parents:
                problem = f"{entry}: the symlink leaves the landing folder {real_root}"
            elif not target.is_file():
                problem = f"{entry}: not a regular file"
            elif target.stat().st_size > MAX_SHARD_BYTES:
                problem = f"{entry}: {target.stat().st_size} bytes is over the shard limit of {MAX_SHARD_BYTES}"
        if problem:
            rejected.append(Rejected(name, problem))
            continue
        shards.append(LandedShard(name, str(entry.resolve()), _sha256(entry), entry.stat().st_size))
    return shards, rejected


def _s3_client():
    from instsel_assets.defs.storage import s3_resource

    # boto3's default chain reads the AWS_* variables (or the pod's role), as the storage's direct reads do
    return s3_resource(with_env_credentials=False).get_client()


def list_s3(client, bucket: str, prefix: str) -> tuple[list[LandedShard], list[Rejected]]:
    """The shards directly under ``prefix`` of ``bucket`` (not in sub-prefixes)."""
    shards: list[LandedShard] = []
    rejected: list[Rejected] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for obj in page.get("Contents", []):
            name = obj["Key"][len(prefix):]
            if not name or _ignored(name):
                continue
            problem = shard_key_problem(name)
            if problem is None and obj["Size"] > MAX_SHARD_BYTES:
                problem = f"s3://{bucket}/{obj['Key']}: {obj['Size']} bytes is over the shard limit"
            if problem:
                rejected.append(Rejected(name, problem))
                continue
            shards.append(LandedShard(name, f"s3://{bucket}/{obj['Key']}", obj["ETag"].strip('"'), int(obj["Size"])))
    shards.sort(key=lambda s: s.key)
    return shards, rejected


def list_landed() -> tuple[list[LandedShard], list[Rejected]]:
    """The shards of the configured landing area."""
    prefix = landing_s3_prefix()
    if prefix is not None:
        bucket = os.environ.get("INSTSEL_S3_BUCKET", "").strip()
        if not bucket:
            raise SourceError("INSTSEL_LANDING_S3_PREFIX is set but INSTSEL_S3_BUCKET is not")
        return list_s3(_s3_client(), bucket, prefix)
    return list_folder(landing_dir())


def read_landed(key: str) -> tuple[bytes, str]:
    """(bytes, location) of shard ``key`` in the configured landing area; a clear ``SourceError`` when it is gone
    or its name is not a valid shard key."""
    validate_shard_key(key)
    prefix = landing_s3_prefix()
    if prefix is not None:
        bucket = os.environ.get("INSTSEL_S3_BUCKET", "").strip()
        client = _s3_client()
        location = f"s3://{bucket}/{prefix}{key}"
        try:
            return client.get_object(Bucket=bucket, Key=prefix + key)["Body"].read(), location
        except Exception as exc:  # botocore's ClientError: NoSuchKey and friends
            raise SourceError(f"{location}: cannot read the shard ({type(exc).__name__})") from None
    shards, rejected = list_folder(landing_dir())
    for shard in shards:
        if shard.key == key:
            return Path(shard.location).read_bytes(), shard.location
    for r in rejected:
        if r.name == key:
            raise SourceError(r.reason)
    raise SourceError(f"{landing_dir() / key}: no such shard in the landing folder (was it removed?)")


def fingerprint_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
