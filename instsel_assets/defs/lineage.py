"""Reading the Dagster instance: the materialisations that produced an asset (partition).

Used by assets (a checkpoint names the exact subset and scores it was trained from) and by the
``instsel lineage`` command.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

INPUT_EVENT_POINTER = "dagster/input_event_pointer/"
INPUT_DATA_VERSION = "dagster/input_data_version/"


def latest_record(instance: dg.DagsterInstance, key: dg.AssetKey | str,
                  partition: str | None = None) -> dg.EventLogRecord | None:
    key = dg.AssetKey.from_user_string(key) if isinstance(key, str) else key
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return records[0] if records else None


def latest_record_before(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str,
                         before_storage_id: int) -> dg.EventLogRecord | None:
    """The newest materialisation of ``key[partition]`` stored before ``before_storage_id``."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition], before_storage_id=before_storage_id),
        limit=1).records
    return records[0] if records else None


def record_by_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey,
                         storage_id: int) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, storage_ids=[storage_id]), limit=1).records
    return records[0] if records else None


def metadata_dict(record: dg.EventLogRecord | None) -> dict[str, Any]:
    if record is None or record.asset_materialization is None:
        return {}
    return {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}


def describe(instance: dg.DagsterInstance, record: dg.EventLogRecord) -> dict[str, Any]:
    """A JSON-able description of one materialisation and the upstream materialisations it read."""
    mat = record.asset_materialization
    tags = mat.tags or {}
    upstream = []
    for tag, value in sorted(tags.items()):
        if not tag.startswith(INPUT_EVENT_POINTER):
            continue
        up_key = dg.AssetKey.from_user_string(tag[len(INPUT_EVENT_POINTER):])
        try:
            storage_id = int(value)
        except (TypeError, ValueError):  # "NULL": a dependency that had never been materialised
            storage_id = None
        up_record = record_by_storage_id(instance, up_key, storage_id) if storage_id is not None else None
        up_mat = up_record.asset_materialization if up_record else None
        corrected = False
        if up_mat is not None and mat.partition and up_mat.partition and up_mat.partition != mat.partition:
            # Dagster's input pointer names the newest materialisation of the upstream asset in whichever
            # partition; with the identity partition mapping of this project (selected_subsets[m] ->
            # finetuned_checkpoints[m]) the input read was the same partition's newest one before this record.
            same = latest_record_before(instance, up_key, mat.partition, record.storage_id)
            if same is not None:
                up_record, up_mat, storage_id, corrected = same, same.asset_materialization, same.storage_id, True
        upstream.append({
            "asset": up_key.to_user_string(),
            "data_version": tags.get(INPUT_DATA_VERSION + up_key.to_user_string()),
            "run_id": up_record.run_id if up_record else None,
            "partition": up_mat.partition if up_mat else None,
            "storage_id": storage_id,
            "timestamp": up_record.timestamp if up_record else None,
            "code_version": (up_mat.tags or {}).get("dagster/code_version") if up_mat else None,
            "pointer_corrected": corrected,
        })
    return {
        "asset": mat.asset_key.to_user_string(),
        "partition": mat.partition,
        "run_id": record.run_id,
        "storage_id": record.storage_id,
        "timestamp": record.timestamp,
        "data_version": tags.get("dagster/data_version"),
        "code_version": tags.get("dagster/code_version"),
        "metadata": {k: _jsonable(v) for k, v in metadata_dict(record).items()},
        "upstream": upstream,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if type(value) in (list, tuple):  # exact types: Dagster records (TableSchema) subclass tuple
        return [_jsonable(v) for v in value]
    if type(value) is dict:
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def materialisation_records(instance: dg.DagsterInstance, key: dg.AssetKey | str, partition: str | None = None,
                            limit: int = 1000) -> list[dg.EventLogRecord]:
    """Materialisations of ``key[partition]``, newest first."""
    key = dg.AssetKey.from_user_string(key) if isinstance(key, str) else key
    return list(instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None),
        limit=limit).records)


def reports_of_checkpoint(instance: dg.DagsterInstance, asset: str, method: str,
                          checkpoint: dg.EventLogRecord) -> dg.EventLogRecord | None:
    """The newest materialisation of the report ``asset`` (evaluation_reports, generated_answers) that read the
    checkpoint materialisation ``checkpoint`` of ``method``: named in its ``checkpoints_read`` metadata, or, for a
    report without it, the one whose newest ``finetuned_checkpoints[method]`` before it was ``checkpoint``."""
    for record in materialisation_records(instance, asset):
        read = metadata_dict(record).get("checkpoints_read")
        if isinstance(read, dict):
            if (read.get(method) or {}).get("storage_id") == checkpoint.storage_id:
                return record
            continue
        if record.storage_id < checkpoint.storage_id:
            return None  # older than the checkpoint: it cannot have read it (records are newest first)
        before = latest_record_before(instance, dg.AssetKey("finetuned_checkpoints"), method, record.storage_id)
        if before is not None and before.storage_id == checkpoint.storage_id:
            return record
    return None


def downstream_reading(instance: dg.DagsterInstance, asset: str, upstream: str,
                       upstream_record: dg.EventLogRecord) -> dg.EventLogRecord | None:
    """The newest materialisation of ``asset`` whose input pointer for the unpartitioned ``upstream`` names
    ``upstream_record``."""
    tag = INPUT_EVENT_POINTER + upstream
    for record in materialisation_records(instance, asset):
        if (record.asset_materialization.tags or {}).get(tag) == str(upstream_record.storage_id):
            return record
    return None
