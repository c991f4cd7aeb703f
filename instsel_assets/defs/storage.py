"""Where the tables and artefacts live: the local disk (the default) or an S3 bucket (any S3-compatible server).

Chosen by environment variables, read when the definitions load:

| variable | default | meaning |
| --- | --- | --- |
| `INSTSEL_STORAGE` | `local` | `local`: tables in the DuckDB file (`INSTSEL_DUCKDB`), artefact values pickled under `$INSTSEL_HOME/artifacts` (unchanged); `s3`: both in the bucket below |
| `INSTSEL_S3_BUCKET` | none (required with `s3`) | the bucket; it must exist |
| `INSTSEL_S3_PREFIX` | `instsel` | the key prefix everything is stored under (empty: the bucket's root) |
| `INSTSEL_S3_ENDPOINT_URL` | unset = AWS | the endpoint of an S3-compatible server (MinIO, Ceph, R2, ...), e.g. `http://minio:9000`; it must not hold credentials |
| `INSTSEL_S3_REGION` | unset = boto3's (`AWS_REGION` / `AWS_DEFAULT_REGION` / the profile) | the bucket's region |
| `INSTSEL_S3_CACHE` | `$INSTSEL_HOME/cache/s3` | where artefact directories are downloaded to for the assets that read them (safe to delete) |

Credentials come only from the standard AWS sources, never from an `INSTSEL_*` variable or run config:
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, each wired into dagster-aws's `S3Resource`
as a `dg.EnvVar` (read when a run starts, never stored with the run) when it is set as the definitions load;
otherwise boto3's default chain (`AWS_PROFILE` and the shared config files, web identity, the instance or task
role). A process that loads the definitions with the keys set needs them set where its runs execute too. No
credential is written to metadata, logs or error messages.

Layout in the bucket (`<asset>` is the asset key's path, e.g. `raw_datasets/alpaca`; `<partition>` is present for
partitioned assets only, e.g. `ifd@5pct`):

- a table (every asset on `io_manager`): `<prefix>/<asset>[/<partition>]/table.parquet`, one Parquet file per
  partition, written and read by DuckDB, the engine of the local IO manager, so a downstream asset receives the
  same pandas types as from the DuckDB file (list columns such as `conversations` and `embedding` as numpy
  arrays, `conversations` of dicts). An input over several partitions reads all their files in one scan.
- an artefact (every asset on `artifact_io_manager`): its value (the manifest dict) pickled at
  `<prefix>/<asset>[/<partition>]/value.pickle`. When the value is a mapping whose `path` is a local directory
  (a checkpoint) or file (a selector's JSON), every file under it is uploaded to
  `<prefix>/<asset>[/<partition>]/files/<relative path>`, listed with its size and SHA-256 in `files.json` beside
  it, and files left from an earlier materialisation are deleted. A downstream load downloads them into
  `$INSTSEL_S3_CACHE/<asset>[/<partition>]/<content digest>/`, checks every file's size and SHA-256, and hands the
  consumer the same value with `path` pointing at that copy (same file names, same nesting). The download goes
  to a temporary folder renamed into place, so concurrent steps on one machine share a complete copy; a new
  checkpoint gets a new digest folder (older ones stay until the cache is deleted).

Why Parquet rather than `S3PickleIOManager` for the tables: Parquet keeps the column types (an empty table too)
and reads the partitions of an input in one scan; the per-partition files keep the selection partitions
(`selected_subsets`' `ifd`, `ifd@5pct`, ...) independent, as the DuckDB table's partition column did. The
artefact values stay pickled, as `FilesystemIOManager` stores them locally, so the bucket must be trusted as
much as the local folder was.

The SQL models (`dbt_like_sql/`) work unchanged with `s3`: their inputs are loaded through `io_manager` and the
SQL runs in an in-memory DuckDB over those DataFrames, so they read the S3 tables.

What stays on the local disk with `s3`: the loss, judge and generation caches and the converted model weights
(`INSTSEL_HOME`; per machine, safe to lose: they only cost recomputation), the report files and plots the
evaluation writes under `$INSTSEL_HOME/reports`, the working directories the training assets write their
checkpoints into before the IO manager uploads them (and the per-subset and per-round checkpoints that
`subset_experiments`, `self_curation_scores` and `diverseevol_ranks` train and use within their own step), and the
Dagster instance (`DAGSTER_HOME`). Two readers outside the IO managers still read local storage and need a change
to follow the tables and checkpoints into the bucket: `selection.read_score_table` (used by `selected_subsets` and
by the experiments' optional indicators) reads the score tables from the DuckDB file (`read_table` below returns
them from the bucket), and `evaluation.materialised_checkpoints` reads each checkpoint at the `checkpoint_dir` path
in its metadata (`fetch_artifact` below returns the manifest with a downloaded copy).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import pandas as pd
from pydantic import Field, PrivateAttr

from instsel_assets import settings

STORAGE_KINDS = ("local", "s3")
DEFAULT_PREFIX = "instsel"
TABLE_FILE = "table.parquet"
VALUE_FILE = "value.pickle"
INDEX_FILE = "files.json"
FILES_DIR = "files"
# Dagster's EnvVar, one per standard AWS credential variable the S3Resource takes.
CREDENTIAL_VARIABLES = (("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
                        ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                        ("aws_session_token", "AWS_SESSION_TOKEN"))


# ------------------------------------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class S3Settings:
    """The non-secret S3 settings of the environment (no credentials: those stay with boto3 / Dagster)."""

    bucket: str
    prefix: str
    endpoint_url: str | None
    region: str | None
    cache_dir: str


def storage_kind() -> str:
    """``INSTSEL_STORAGE``: ``local`` (default) or ``s3``; ``ValueError`` for anything else."""
    kind = (os.environ.get("INSTSEL_STORAGE") or "local").strip().lower()
    if kind not in STORAGE_KINDS:
        raise ValueError(f"INSTSEL_STORAGE must be one of {list(STORAGE_KINDS)}, got {kind!r}")
    return kind


def s3_settings() -> S3Settings:
    """The ``INSTSEL_S3_*`` settings; ``ValueError`` without a bucket or for an endpoint URL holding credentials."""
    bucket = (os.environ.get("INSTSEL_S3_BUCKET") or "").strip()
    if not bucket:
        raise ValueError("INSTSEL_STORAGE=s3 needs INSTSEL_S3_BUCKET, the name of an existing bucket")
    prefix = os.environ.get("INSTSEL_S3_PREFIX", DEFAULT_PREFIX).strip().strip("/")
    endpoint = (os.environ.get("INSTSEL_S3_ENDPOINT_URL") or "").strip() or None
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.username is not None or parts.password is not None:
            # the URL itself is not repeated: it holds a secret
            raise ValueError("INSTSEL_S3_ENDPOINT_URL must not hold credentials; set AWS_ACCESS_KEY_ID and "
                             "AWS_SECRET_ACCESS_KEY instead")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("INSTSEL_S3_ENDPOINT_URL must be an http(s) URL with a host, such as "
                             "http://minio:9000")  # not repeated: a malformed value may hold anything
    region = (os.environ.get("INSTSEL_S3_REGION") or "").strip() or None
    cache = os.environ.get("INSTSEL_S3_CACHE") or str(settings.storage_root() / "cache" / "s3")
    return S3Settings(bucket=bucket, prefix=prefix, endpoint_url=endpoint, region=region,
                      cache_dir=str(Path(cache).resolve()))


def s3_resource(*, with_env_credentials: bool = True):
    """dagster-aws's ``S3Resource`` for the configured endpoint and region. The credential fields are
    ``dg.EnvVar`` of the standard AWS variables set now (``with_env_credentials``), else left to boto3's chain."""
    from dagster_aws.s3 import S3Resource

    cfg = s3_settings()
    secrets = {field: dg.EnvVar(var) for field, var in CREDENTIAL_VARIABLES
               if with_env_credentials and os.environ.get(var)}
    return S3Resource(endpoint_url=cfg.endpoint_url, region_name=cfg.region, **secrets)


def storage_resources() -> dict[str, Any]:
    """The IO managers of the configured storage, merged over ``default_resources()``: nothing for ``local``
    (the DuckDB and filesystem IO managers stay), ``io_manager`` and ``artifact_io_manager`` on S3 for ``s3``."""
    if storage_kind() == "local":
        return {}
    cfg = s3_settings()
    s3 = s3_resource()
    return {
        "io_manager": S3TableIOManager(s3=s3, bucket=cfg.bucket, prefix=cfg.prefix),
        "artifact_io_manager": S3ArtifactIOManager(s3=s3, bucket=cfg.bucket, prefix=cfg.prefix,
                                                   cache_dir=cfg.cache_dir),
    }


# ------------------------------------------------------------------------------------------------ the store
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return str(response.get("Error", {}).get("Code"))
    return None


def _is_missing(exc: BaseException) -> bool:
    return _error_code(exc) in ("NoSuchKey", "404", "NotFound")


class S3Store:
    """Tables and artefacts under ``s3://bucket/prefix/`` through one boto3 S3 client (see the module docstring
    for the layout). Error messages name ``s3://`` URIs only, never the endpoint or a credential."""

    def __init__(self, client, bucket: str, prefix: str):
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")

    # keys
    def base(self, asset: Sequence[str], partition: str | None) -> str:
        parts = [self.prefix] if self.prefix else []
        parts += [str(p) for p in asset]
        if partition is not None:
            if not partition or partition in (".", "..") or "/" in partition:
                raise ValueError(f"{'/'.join(asset)}: partition key {partition!r} cannot name an S3 folder")
            parts.append(partition)
        return "/".join(parts)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _is_missing(exc):
                return False
            raise
        return True

    def _list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    def _delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            if batch:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    # tables
    def table_key(self, asset: Sequence[str], partition: str | None) -> str:
        return f"{self.base(asset, partition)}/{TABLE_FILE}"

    def put_table(self, asset: Sequence[str], partition: str | None, frame: pd.DataFrame) -> str:
        import duckdb

        from instsel_assets.defs.duckdb_io import _typed_for_empty

        key = self.table_key(asset, partition)
        frame = _typed_for_empty(frame)  # noqa: F841 - read by DuckDB's replacement scan below
        with tempfile.TemporaryDirectory(prefix="instsel-s3-") as tmp:
            path = os.path.join(tmp, TABLE_FILE)
            con = duckdb.connect(":memory:")
            try:
                con.execute(f"copy (select * from frame) to '{_sql_text(path)}' (format parquet, compression zstd)")
            finally:
                con.close()
            self.client.upload_file(path, self.bucket, key)
        return key

    def get_table(self, asset: Sequence[str], partitions: Sequence[str | None]) -> pd.DataFrame:
        """The table of one partition (or of the unpartitioned asset), or the rows of several partitions in one
        frame; a partition never stored is skipped among several, an error alone."""
        import duckdb

        name = "/".join(asset)
        requested = len(partitions)
        if requested > 1:  # one listing instead of a request per partition never stored
            stored = set(self._list(self.base(asset, None) + "/"))
            partitions = [p for p in partitions if self.table_key(asset, p) in stored]
        with tempfile.TemporaryDirectory(prefix="instsel-s3-") as tmp:
            paths = []
            for i, partition in enumerate(partitions):
                key = self.table_key(asset, partition)
                path = os.path.join(tmp, f"{i}.parquet")
                try:
                    self.client.download_file(self.bucket, key, path)
                except Exception as exc:
                    if not _is_missing(exc):
                        raise
                    if requested == 1:
                        what = f"partition {partition!r} of " if partition is not None else ""
                        raise LookupError(f"no table for {what}asset {name} at {self.uri(key)}: materialise it "
                                          f"first") from None
                    continue  # deleted since the listing
                paths.append(path)
            if not paths:
                raise LookupError(f"no table for any of the {requested} partitions of asset {name} under "
                                  f"{self.uri(self.base(asset, None))}/: materialise them first")
            con = duckdb.connect(":memory:")
            try:
                files = ", ".join(f"'{_sql_text(p)}'" for p in paths)
                return con.execute(f"select * from read_parquet([{files}], union_by_name = true)").df()
            finally:
                con.close()

    # artefacts
    def put_artifact(self, asset: Sequence[str], partition: str | None, value: Any) -> dict[str, Any]:
        """Store ``value`` and, when it names a local ``path``, every file under it; returns the index of the
        files (``kind`` None and no ``files`` when the value names no path)."""
        base = self.base(asset, partition)
        local = artifact_local_path(value, "/".join(asset))
        index: dict[str, Any] = {"kind": None, "name": None, "files": {}}
        if local is not None:
            if local.is_dir():
                index.update(kind="dir", name=local.name)
                files = sorted((p.relative_to(local).as_posix(), p) for p in local.rglob("*") if p.is_file())
            else:
                index.update(kind="file", name=local.name)
                files = [(local.name, local)]
            for rel, path in files:
                size, digest = path.stat().st_size, _sha256(path)
                self.client.upload_file(str(path), self.bucket, f"{base}/{FILES_DIR}/{rel}")
                index["files"][rel] = {"size": size, "sha256": digest}
        wanted = {f"{base}/{FILES_DIR}/{rel}" for rel in index["files"]}
        self._delete([k for k in self._list(f"{base}/{FILES_DIR}/") if k not in wanted])
        if index["kind"] is None:
            self._delete([f"{base}/{INDEX_FILE}"])
        else:
            self.client.put_object(Bucket=self.bucket, Key=f"{base}/{INDEX_FILE}",
                                   Body=json.dumps(index, indent=1, sort_keys=True).encode("utf-8"),
                                   ContentType="application/json")
        # the value last: its presence means the files and the index are complete
        self.client.put_object(Bucket=self.bucket, Key=f"{base}/{VALUE_FILE}",
                               Body=pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        return index

    def get_artifact(self, asset: Sequence[str], partition: str | None, cache_dir: str | os.PathLike) -> Any:
        """The stored value; when it came with files, they are downloaded under ``cache_dir`` (checked against
        the index) and the returned value's ``path`` points at the local copy."""
        import copy

        name = "/".join(asset)
        base = self.base(asset, partition)
        try:
            value = pickle.loads(self._get(f"{base}/{VALUE_FILE}"))
        except Exception as exc:
            if _is_missing(exc):
                what = f"partition {partition!r} of " if partition is not None else ""
                raise LookupError(f"no artefact for {what}asset {name} at {self.uri(base)}/{VALUE_FILE}: "
                                  f"materialise it first") from None
            raise
        try:
            index = json.loads(self._get(f"{base}/{INDEX_FILE}").decode("utf-8"))
        except Exception as exc:
            if _is_missing(exc):
                return value
            raise
        root = self._download(asset, partition, base, index, Path(cache_dir))
        local = root if index["kind"] == "dir" else root / index["name"]
        value = copy.copy(value)
        value["path"] = str(local)
        return value

    def _download(self, asset: Sequence[str], partition: str | None, base: str, index: dict,
                  cache_dir: Path) -> Path:
        digest = hashlib.sha256(json.dumps(index, sort_keys=True).encode("utf-8")).hexdigest()[:16]
        parent = cache_dir.joinpath(*asset, *([partition] if partition is not None else []))
        final = parent / digest
        if final.is_dir():
            return final  # only ever renamed into place complete and checked
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".{digest}.{uuid.uuid4().hex}.part"
        try:
            for rel, entry in sorted(index["files"].items()):
                parts = rel.split("/")
                if any(part in ("", ".", "..") for part in parts):
                    raise ValueError(f"{self.uri(base)}/{INDEX_FILE} lists a file outside its folder: {rel!r}")
                target = tmp.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                key = f"{base}/{FILES_DIR}/{rel}"
                self.client.download_file(self.bucket, key, str(target))
                if target.stat().st_size != entry["size"] or _sha256(target) != entry["sha256"]:
                    raise OSError(f"{self.uri(key)} does not match its entry in {self.uri(base)}/{INDEX_FILE} (was "
                                  f"the asset re-materialised during the download? load it again)")
            if index["kind"] == "dir" and not index["files"]:
                tmp.mkdir(parents=True, exist_ok=True)  # an empty directory is still a directory
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # left only when another process finished first or on error
        return final


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


def artifact_local_path(value: Any, asset: str = "artefact") -> Path | None:
    """The local file or directory an artefact value names in its ``path`` (a mapping's key), or None when it
    names none; ``FileNotFoundError`` when it names one that does not exist."""
    if not isinstance(value, Mapping) or not isinstance(value.get("path"), (str, os.PathLike)):
        return None
    path = Path(value["path"])
    if not path.exists():
        raise FileNotFoundError(f"{asset}: the value's path {str(path)!r} does not exist, so there is nothing to "
                                f"upload")
    return path


# ------------------------------------------------------------------------------------------------ IO managers
def _client_of(s3: Any):
    return s3.get_client() if hasattr(s3, "get_client") else s3


def _asset_path(context) -> list[str]:
    return list(context.asset_key.path)


def _output_partitions(context: dg.OutputContext) -> list[str | None]:
    return list(context.asset_partition_keys) if context.has_asset_partitions else [None]


def _input_partitions(context: dg.InputContext) -> list[str | None]:
    return list(context.asset_partition_keys) if context.has_asset_partitions else [None]


def _log(context, message: str) -> None:
    try:
        context.log.info(message)
    except Exception:  # a context built outside a run has no log
        pass


class _S3IOManager(dg.ConfigurableIOManager):
    """Shared by the two IO managers: one boto3 client per process (building one costs a fifth of a second), and
    the S3 resource (whose resolved fields hold the credentials) left out of the repr, so an IO manager in a
    message or a log never shows a key."""

    _client: Any = PrivateAttr(default=None)

    def _store(self) -> S3Store:
        if self._client is None:
            self._client = _client_of(self.s3)
        return S3Store(self._client, self.bucket, self.prefix)

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            if name != "s3":
                yield name, value


class S3TableIOManager(_S3IOManager):
    """The tables (pandas DataFrames) as Parquet files in S3, one per asset partition:
    ``s3://<bucket>/<prefix>/<asset>[/<partition>]/table.parquet``, written and read by DuckDB."""

    s3: dg.ConfigurableResource = Field(description="dagster-aws's S3Resource (endpoint, region, credentials).")
    bucket: str = Field(description="The bucket (INSTSEL_S3_BUCKET).")
    prefix: str = Field(default=DEFAULT_PREFIX, description="The key prefix (INSTSEL_S3_PREFIX).")

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        asset = _asset_path(context)
        name = "/".join(asset)
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{name}: the S3 table IO manager stores pandas DataFrames, got {type(obj).__name__}")
        store = self._store()
        partitions = _output_partitions(context)
        if len(partitions) == 1:
            pieces = [(partitions[0], obj)]
        else:  # one run over several partitions: split the rows on the partition column, as the DuckDB one does
            column = (context.definition_metadata or {}).get("partition_expr")
            if not isinstance(column, str) or column not in obj.columns:
                raise ValueError(f"{name}: a run over {len(partitions)} partitions needs the definition metadata "
                                 f"'partition_expr' to name the column holding the partition key")
            unknown = sorted(set(obj[column].astype(str)) - set(partitions))
            if unknown:
                raise ValueError(f"{name}: rows for partitions {unknown} that this run does not write")
            pieces = [(p, obj[obj[column].astype(str) == p]) for p in partitions]
        keys = [store.put_table(asset, partition, frame) for partition, frame in pieces]
        from dagster._core.definitions.metadata import TableMetadataSet

        rows = len(obj)
        _log(context, f"{name}: {rows} rows to {store.uri(keys[0])}" + (f" and {len(keys) - 1} more partitions"
                                                                          if len(keys) > 1 else ""))
        context.add_output_metadata({
            **(TableMetadataSet(partition_row_count=rows, storage_kind="s3") if partitions != [None]
               else TableMetadataSet(row_count=rows, storage_kind="s3")),
            "storage_uri": dg.MetadataValue.path(store.uri(keys[0]) if len(keys) == 1
                                                 else store.uri(store.base(asset, None)) + "/"),
            "dataframe_columns": dg.MetadataValue.table_schema(dg.TableSchema(
                columns=[dg.TableColumn(name=str(c), type=str(t)) for c, t in obj.dtypes.items()])),
        })

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        return self._store().get_table(_asset_path(context), _input_partitions(context))


class S3ArtifactIOManager(_S3IOManager):
    """Artefact values (checkpoint and selector manifests) in S3 with the files their ``path`` names, downloaded
    back for the assets that read them (see the module docstring)."""

    s3: dg.ConfigurableResource = Field(description="dagster-aws's S3Resource (endpoint, region, credentials).")
    bucket: str = Field(description="The bucket (INSTSEL_S3_BUCKET).")
    prefix: str = Field(default=DEFAULT_PREFIX, description="The key prefix (INSTSEL_S3_PREFIX).")
    cache_dir: str = Field(description="Local folder the artefact files are downloaded to (INSTSEL_S3_CACHE).")

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        asset = _asset_path(context)
        partitions = _output_partitions(context)
        if len(partitions) != 1:
            raise ValueError(f"{'/'.join(asset)}: an artefact is stored one partition per run, got {len(partitions)}")
        store = self._store()
        index = store.put_artifact(asset, partitions[0], obj)
        base = store.base(asset, partitions[0])
        n, size = len(index["files"]), sum(e["size"] for e in index["files"].values())
        _log(context, f"{'/'.join(asset)}: value and {n} files ({size / 1e6:.1f} MB) to {store.uri(base)}/")
        context.add_output_metadata({"dagster/storage_kind": "s3",
                                     "storage_uri": dg.MetadataValue.path(store.uri(base) + "/"),
                                     "artifact_files": n, "artifact_bytes": size})

    def load_input(self, context: dg.InputContext) -> Any:
        store = self._store()
        asset = _asset_path(context)
        partitions = _input_partitions(context)
        if len(partitions) == 1:
            return store.get_artifact(asset, partitions[0], self.cache_dir)
        return {p: store.get_artifact(asset, p, self.cache_dir) for p in partitions}


# ------------------------------------------------------------------------------------------------ direct reads
def _env_store() -> S3Store:
    if storage_kind() != "s3":
        raise RuntimeError("read_table / fetch_artifact read the S3 storage, but INSTSEL_STORAGE is not 's3'")
    cfg = s3_settings()
    # boto3's default chain reads the same AWS_* variables (or the role) as the resource's EnvVar fields
    return S3Store(s3_resource(with_env_credentials=False).get_client(), cfg.bucket, cfg.prefix)


def _key_path(asset: str | Sequence[str] | dg.AssetKey) -> list[str]:
    if isinstance(asset, dg.AssetKey):
        return list(asset.path)
    return asset.split("/") if isinstance(asset, str) else list(asset)


def read_table(asset: str | Sequence[str] | dg.AssetKey, partition: str | None = None) -> pd.DataFrame:
    """A table stored in the configured bucket (``INSTSEL_STORAGE=s3``), for code that reads a table outside an
    asset input; ``LookupError`` when it has not been materialised."""
    return _env_store().get_table(_key_path(asset), [partition])


def fetch_artifact(asset: str | Sequence[str] | dg.AssetKey, partition: str | None = None) -> Any:
    """An artefact value stored in the configured bucket with its files downloaded (``path`` points at the local
    copy), for code that reads a checkpoint outside an asset input; ``LookupError`` when it was never stored."""
    return _env_store().get_artifact(_key_path(asset), partition, s3_settings().cache_dir)
