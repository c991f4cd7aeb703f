"""Incremental pool data: files landing in a folder or an S3 prefix become shards, scored once each.

- ``pool_shard_sensor`` lists the landing area (``ingest/landing.py``) and, for each new or changed file, adds a
  ``pool_shards`` dynamic partition (the file name) and requests ``pool_shard`` / ``pool_shard_quarantine`` for it.
  Its cursor holds every shard's content fingerprint: an unchanged file is never requested again.
- ``pool_shard`` / ``pool_shard_quarantine`` (per shard): the file read and normalised exactly as the pool's
  sources are (formats.py, normalize.py), with the accounting check; the data version is the content hash.
- ``shard_metric_features`` and ``shard_superfiltering_scores`` (per shard): indicators + MiniLM embeddings, and
  Superfiltering's IFD under the ``filter_model``. Each is cached whole per shard (``scoring/result_cache.py``, key
  = the shard's row ids + code version + settings), so re-materialising an unchanged shard loads the table and
  loads no model; the key is the output's data version, so nothing downstream turns stale.
- ``sharded_superfiltering_subset`` (unpartitioned): reads every shard's rows and scores, removes rows repeated
  across shards, and applies Superfiltering's rule (IFD < 1, highest first) at ``budget_fraction`` of the rows.

Declarative automation replaces a schedule here: the per-shard assets and the subset carry
``AutomationCondition.eager()``, evaluated by ``shards_automation_sensor``: a new shard is featurised and scored,
then the subset is recomputed, with no job to maintain. A new scorer model or a code change (their code versions)
marks the per-shard assets stale; a backfill over all ``pool_shards`` partitions brings them back.
"""


import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from instsel_assets import settings
from instsel_assets.defs._common import code_version_of, subset_hash, suite_check
from instsel_assets.defs.k8s import gpu_op_tags
from instsel_assets.defs.resources import EmbeddingModelResource, LanguageModelResource, model_code_version

GROUP = "shards"
SHARD_COLUMN = "shard"
SHARD_SOURCE = "landing"  # the ``source`` of every shard row; the ``shard`` column names the file
pool_shards = dg.DynamicPartitionsDefinition(name="pool_shards")

POOL_CODE_VERSION = code_version_of("instsel_assets.ingest.normalize", "instsel_assets.ingest.formats",
                                    "instsel_assets.ingest.landing")
# Token counts come from the language model's tokenizer: its model is part of the features' code version.
FEATURES_CODE_VERSION = model_code_version(code_version_of(
    "instsel_assets.features.indicators", "instsel_assets.features.text_stats", "instsel_assets.features.embeddings",
    "instsel_assets.scoring.result_cache"), "language_model")
SCORES_CODE_VERSION = model_code_version(code_version_of(
    "instsel_assets.scoring.superfiltering", "instsel_assets.scoring.ifd", "instsel_assets.scoring.loss_engine",
    "instsel_assets.scoring.loss_cache", "instsel_assets.models.chat", "instsel_assets.scoring.result_cache"),
    "filter_model")
SUBSET_CODE_VERSION = code_version_of("instsel_assets.selection.superfiltering_top",
                                      "instsel_assets.selection.ifd_top_fraction")


def _sensor_status(name: str) -> dg.DefaultSensorStatus:
    value = os.environ.get(name, "running").strip().lower()
    if value not in ("running", "stopped"):
        raise ValueError(f"{name}={value!r}: expected 'running' or 'stopped'")
    return dg.DefaultSensorStatus.RUNNING if value == "running" else dg.DefaultSensorStatus.STOPPED


def result_cache_dir() -> Path:
    """Per-shard result tables (``INSTSEL_SHARD_CACHE``, default ``<storage>/cache/shards``)."""
    return Path(os.environ.get("INSTSEL_SHARD_CACHE", settings.storage_root() / "cache" / "shards")).resolve()


def _landing_format() -> str:
    from instsel_assets.ingest.formats import DECLARABLE_FORMATS

    fmt = os.environ.get("INSTSEL_LANDING_FORMAT", "auto").strip() or "auto"
    if fmt not in DECLARABLE_FORMATS:
        raise ValueError(f"INSTSEL_LANDING_FORMAT={fmt!r}: expected one of {', '.join(DECLARABLE_FORMATS)}")
    return fmt


# ------------------------------------------------------------------------------------------------- the sensor
@dg.sensor(
    name="pool_shard_sensor",
    target=dg.AssetSelection.assets("pool_shard", "pool_shard_quarantine"),
    minimum_interval_seconds=settings.env_seconds("INSTSEL_LANDING_SENSOR_INTERVAL", 30, minimum=1, whole=True),
    default_status=_sensor_status("INSTSEL_LANDING_SENSOR"),
    description="Lists the landing area (INSTSEL_LANDING_DIR, default .instsel/landing; or INSTSEL_LANDING_S3_PREFIX "
                "in INSTSEL_S3_BUCKET): every new .json/.jsonl file becomes a pool_shards partition and is ingested; "
                "a changed file (new content hash / ETag) is ingested again; an unchanged one never.",
)
def pool_shard_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    from instsel_assets.ingest.landing import landing_description, list_landed

    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    shards, rejected = list_landed()
    for r in rejected:
        context.log.warning(f"landing: {r.name!r} ignored: {r.reason}")
    known = set(context.instance.get_dynamic_partitions(pool_shards.name))
    new_keys = [s.key for s in shards if s.key not in known]
    changed = [s for s in shards if seen.get(s.key) != s.fingerprint]
    if not changed and not new_keys:
        return dg.SkipReason(f"{landing_description()}: {len(shards)} shard(s), none new or changed"
                             + (f"; {len(rejected)} file(s) rejected" if rejected else ""))
    runs = [dg.RunRequest(run_key=f"{s.key}:{s.fingerprint}", partition_key=s.key,
                          tags={"instsel/shard_fingerprint": s.fingerprint[:64]}) for s in changed]
    context.log.info(f"{landing_description()}: {len(new_keys)} new shard(s) {new_keys[:10]}, "
                     f"{len(changed) - len([s for s in changed if s.key in new_keys])} changed, "
                     f"{len(shards) - len(changed)} unchanged")
    cursor = dict(seen)
    cursor.update({s.key: s.fingerprint for s in changed})
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[pool_shards.build_add_request(new_keys)] if new_keys else [],
        cursor=json.dumps(cursor, sort_keys=True),
    )


# ------------------------------------------------------------------------------------------ per-shard pool
@dg.multi_asset(
    name="pool_shard_assets",
    partitions_def=pool_shards,
    outs={
        "pool_shard": dg.AssetOut(
            group_name=GROUP, code_version=POOL_CODE_VERSION, kinds={"duckdb", "pandas"},
            metadata={"partition_expr": SHARD_COLUMN},
            description="The usable rows of one landed shard in the pool's schema (content-hash id, conversations, "
                        "flat fields), source 'landing', column `shard` = the file name; exact duplicates within the "
                        "shard removed. Data version: the file's content hash."),
        "pool_shard_quarantine": dg.AssetOut(
            group_name=GROUP, code_version=POOL_CODE_VERSION, kinds={"duckdb", "pandas"},
            metadata={"partition_expr": SHARD_COLUMN},
            description="The shard's rows that are not in pool_shard, each with its reason (kind 'invalid' or "
                        "'duplicate')."),
    },
    check_specs=[
        dg.AssetCheckSpec("accounting", asset="pool_shard", blocking=True,
                          description="read = kept + duplicates + quarantined for the shard."),
        dg.AssetCheckSpec("great_expectations_suite", asset="pool_shard",
                          description="Great Expectations suite 'pool_shard'."),
        dg.AssetCheckSpec("reasons_present", asset="pool_shard_quarantine",
                          description="Every quarantined row of the shard carries a reason."),
        dg.AssetCheckSpec("great_expectations_suite", asset="pool_shard_quarantine",
                          description="Great Expectations suite 'pool_shard_quarantine'."),
    ],
)
def pool_shard_assets(context: dg.AssetExecutionContext):
    from instsel_assets.ingest.formats import SourceError, read_file
    from instsel_assets.ingest.landing import fingerprint_bytes, read_landed
    from instsel_assets.ingest.normalize import build_pool

    key = context.partition_key
    try:
        data, location = read_landed(key)
        with tempfile.TemporaryDirectory(prefix="instsel-shard-") as tmp:
            path = Path(tmp) / key  # read_file decides JSON vs JSON Lines by the suffix, as for sources
            path.write_bytes(data)
            raw = read_file(path, SHARD_SOURCE, key, _landing_format())
    except SourceError as err:
        raise dg.Failure(description=f"shard {key}: {err}") from None
    result = build_pool(raw)
    pool = result.pool.assign(**{SHARD_COLUMN: key})
    quarantine = result.quarantine.assign(**{SHARD_COLUMN: key})
    c = result.counts.get(SHARD_SOURCE, {"read": 0, "kept": 0, "duplicates": 0, "quarantined": 0})
    context.log.info(f"shard {key} ({location}): read {c['read']} = kept {c['kept']} + duplicates "
                     f"{c['duplicates']} + quarantined {c['quarantined']}")
    version = fingerprint_bytes(data + POOL_CODE_VERSION.encode())[:32]
    yield dg.Output(pool, output_name="pool_shard", data_version=dg.DataVersion(version), metadata={
        "dagster/row_count": len(pool), "location": location, "bytes": len(data),
        "content_sha256": fingerprint_bytes(data), "format": _landing_format(),
        "read": int(c["read"]), "kept": int(c["kept"]), "duplicates": int(c["duplicates"]),
        "quarantined": int(c["quarantined"]),
    })
    reasons = quarantine["reason"].str.split(":").str[0].value_counts().head(20).to_dict() if len(quarantine) else {}
    yield dg.Output(quarantine, output_name="pool_shard_quarantine", data_version=dg.DataVersion(version),
                    metadata={"dagster/row_count": len(quarantine), "top_reasons": dg.MetadataValue.json(reasons)})
    dup = int((quarantine["kind"] == "duplicate").sum()) if len(quarantine) else 0
    inv = int((quarantine["kind"] == "invalid").sum()) if len(quarantine) else 0
    yield dg.AssetCheckResult(asset_key="pool_shard", check_name="accounting",
                              passed=len(raw) == len(pool) + dup + inv,
                              metadata={"read": len(raw), "kept": len(pool), "duplicates": dup, "quarantined": inv})
    yield suite_check(pool, "pool_shard", asset_key="pool_shard")
    missing_reason = int((quarantine["reason"].fillna("").str.strip() == "").sum()) if len(quarantine) else 0
    yield dg.AssetCheckResult(asset_key="pool_shard_quarantine", check_name="reasons_present",
                              passed=missing_reason == 0, metadata={"rows_without_reason": missing_reason})
    yield suite_check(quarantine, "pool_shard_quarantine", asset_key="pool_shard_quarantine")


# ------------------------------------------------------------------------------------------ per-shard results
def _cached_table(context: dg.AssetExecutionContext, asset: str, code_version: str, settings_: dict[str, Any],
                  rows: pd.DataFrame, compute) -> tuple[pd.DataFrame, dict[str, Any], str]:
    """The shard's table from the result cache, or ``compute()`` stored there; (table, metadata, cache key)."""
    from instsel_assets.scoring.result_cache import ResultCache, result_key

    key = result_key(asset, code_version, settings_, rows["id"].astype(str))
    cache = ResultCache(result_cache_dir(), asset)
    t0 = time.monotonic()
    table = cache.get(key)
    hit = table is not None
    if hit:
        context.log.info(f"{asset}[{context.partition_key}]: {len(table)} rows from the result cache "
                         f"({key[:12]}): nothing recomputed")
    else:
        context.log.info(f"{asset}[{context.partition_key}]: computing {len(rows)} rows")
        table = compute()
        cache.put(key, table)
    meta = {"result_cache_hit": hit, "rows_computed": 0 if hit else len(rows), "cache_key": key[:16],
            "seconds": round(time.monotonic() - t0, 2), "scorer_settings": dg.MetadataValue.json(settings_)}
    return table, meta, key


def _covers_shard(asset: str, table: pd.DataFrame, shard: pd.DataFrame) -> dg.AssetCheckResult:
    same = len(table) == len(shard) and set(table["id"].astype(str)) == set(shard["id"].astype(str))
    return dg.AssetCheckResult(asset_key=asset, check_name="covers_shard", passed=bool(same),
                               metadata={"rows": len(table), "shard_rows": len(shard)})


@dg.asset(
    group_name=GROUP,
    partitions_def=pool_shards,
    code_version=FEATURES_CODE_VERSION,
    kinds={"duckdb", "pandas", "torch"},
    metadata={"partition_expr": SHARD_COLUMN},
    automation_condition=dg.AutomationCondition.eager(),
    description="Per-shard indicators (tokens of instruction / input / response under the language model's "
                "tokenizer, TTR, MTLD, language) and the MiniLM embedding of each instruction. Cached whole per shard.",
    check_specs=[
        dg.AssetCheckSpec("covers_shard", asset="shard_metric_features", blocking=True,
                          description="One row per pool_shard row, same ids."),
        dg.AssetCheckSpec("great_expectations_suite", asset="shard_metric_features",
                          description="Great Expectations suite 'shard_metric_features'."),
    ],
)
def shard_metric_features(context: dg.AssetExecutionContext, pool_shard: pd.DataFrame,
                          language_model: LanguageModelResource, embedding_model: EmbeddingModelResource):
    def compute() -> pd.DataFrame:
        from instsel_assets.features.embeddings import minilm_embedding
        from instsel_assets.features.indicators import compute_text_indicators

        _, tokenizer = language_model.load()
        features = compute_text_indicators(pool_shard, tokenizer)
        embedded = minilm_embedding(pool_shard, model=embedding_model.load(), batch_size=embedding_model.batch_size)
        return features.merge(embedded, on="id", how="left")

    params = {"tokenizer_model": language_model.model, "embedding_model": embedding_model.model}
    table, meta, key = _cached_table(context, "shard_metric_features", FEATURES_CODE_VERSION, params, pool_shard,
                                     compute)
    table = table.assign(**{SHARD_COLUMN: context.partition_key})
    yield dg.Output(table, data_version=dg.DataVersion(key[:32]), metadata={
        "dagster/row_count": len(table), **meta,
        "languages": dg.MetadataValue.json(table["language"].value_counts().to_dict() if len(table) else {}),
    })
    yield _covers_shard("shard_metric_features", table, pool_shard)
    yield suite_check(table, "shard_metric_features")


@dg.asset(
    group_name=GROUP,
    partitions_def=pool_shards,
    code_version=SCORES_CODE_VERSION,
    kinds={"duckdb", "pandas", "torch"},
    op_tags=gpu_op_tags(),
    metadata={"partition_expr": SHARD_COLUMN},
    automation_condition=dg.AutomationCondition.eager(),
    description="Superfiltering's IFD (perplexity ratio under the `filter_model`, no pre-experience) of every row of "
                "one shard, on the shared loss engine and its loss cache. Cached whole per shard; the code version "
                "includes the configured filter model (INSTSEL_FILTER_MODEL), so a new model marks it stale.",
    check_specs=[
        dg.AssetCheckSpec("covers_shard", asset="shard_superfiltering_scores", blocking=True,
                          description="One score row per pool_shard row."),
        dg.AssetCheckSpec("great_expectations_suite", asset="shard_superfiltering_scores",
                          description="Great Expectations suite 'shard_superfiltering_scores'."),
    ],
)
def shard_superfiltering_scores(context: dg.AssetExecutionContext, pool_shard: pd.DataFrame,
                                filter_model: LanguageModelResource):
    from instsel_assets.defs._common import ProgressLogger

    def compute() -> pd.DataFrame:
        from instsel_assets.registry import get_scorer

        model, tokenizer = filter_model.load()
        kwargs = filter_model.engine_kwargs(model, tokenizer, log=context.log)
        return get_scorer("superfiltering").fn(pool_shard, model, tokenizer,
                                               progress=ProgressLogger(context.log, "Superfiltering"), **kwargs)

    table, meta, key = _cached_table(context, "shard_superfiltering_scores", SCORES_CODE_VERSION,
                                     filter_model.settings_dict(), pool_shard, compute)
    table = table.assign(**{SHARD_COLUMN: context.partition_key})
    ifd = table["superfiltering_ifd"].to_numpy(dtype=float) if len(table) else np.zeros(0)
    yield dg.Output(table, data_version=dg.DataVersion(key[:32]), metadata={
        "dagster/row_count": len(table), **meta, "scorer": "superfiltering", "model": filter_model.model,
        "rows_ifd_at_least_1": int((ifd >= 1).sum()), "rows_unscored": int((~np.isfinite(ifd)).sum()),
    })
    yield _covers_shard("shard_superfiltering_scores", table, pool_shard)
    yield suite_check(table, "shard_superfiltering_scores")


# ------------------------------------------------------------------------------------------- selection
class ShardedSubsetConfig(dg.Config):
    budget_fraction: float = Field(
        default=0.10, description="Subset size as a fraction of the distinct rows of all shards, in (0, 1].")
    max_ifd: float = Field(default=1.0, description="Superfiltering drops rows with IFD >= max_ifd (paper: 1).")


@dg.asset(
    group_name=GROUP,
    code_version=SUBSET_CODE_VERSION,
    kinds={"duckdb", "pandas"},
    automation_condition=dg.AutomationCondition.eager(),
    ins={"pool_shard": dg.AssetIn(partition_mapping=dg.AllPartitionMapping()),
         "shard_superfiltering_scores": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())},
    description="Superfiltering's subset of the rows of every landed shard: rows repeated across shards counted "
                "once (the first shard in name order keeps them), unscored rows and IFD >= max_ifd dropped, the "
                "highest IFD kept up to budget_fraction of the distinct rows.",
    check_specs=[
        dg.AssetCheckSpec("reads_every_shard", asset="sharded_superfiltering_subset", blocking=True,
                          description="Rows and scores of every pool_shards partition were read."),
        dg.AssetCheckSpec("size_fits_budget", asset="sharded_superfiltering_subset",
                          description="At most `budget` rows, all distinct pool ids."),
        dg.AssetCheckSpec("great_expectations_suite", asset="sharded_superfiltering_subset",
                          description="Great Expectations suite 'sharded_superfiltering_subset'."),
    ],
)
def sharded_superfiltering_subset(context: dg.AssetExecutionContext, config: ShardedSubsetConfig,
                                  pool_shard: pd.DataFrame, shard_superfiltering_scores: pd.DataFrame):
    from instsel_assets.registry import get_selector
    from instsel_assets.selection.ifd_top_fraction import top_fraction_budget

    shards = sorted(context.instance.get_dynamic_partitions(pool_shards.name))
    rows = pool_shard.sort_values([SHARD_COLUMN, "id"], kind="mergesort")
    distinct = rows.drop_duplicates("id", keep="first")
    scores = shard_superfiltering_scores.drop(columns=[SHARD_COLUMN])
    candidates = distinct[["id", SHARD_COLUMN]].merge(scores.drop_duplicates("id"), on="id", how="left")
    budget = top_fraction_budget(len(candidates), config.budget_fraction)
    ids = get_selector("superfiltering").fn(candidates, budget, max_ifd=config.max_ifd)
    subset = pd.DataFrame({"selection_rank": range(len(ids)), "id": ids}).merge(
        candidates[["id", SHARD_COLUMN, "superfiltering_ifd"]], on="id", how="left")
    per_shard = pool_shard.groupby(SHARD_COLUMN).size().to_dict() if len(pool_shard) else {}
    context.log.info(f"{len(shards)} shard(s), {len(rows)} rows, {len(distinct)} distinct: kept {len(subset)} "
                     f"of budget {budget}")
    yield dg.Output(subset, metadata={
        "dagster/row_count": len(subset), "shards": len(shards), "rows_read": len(rows),
        "distinct_rows": len(distinct), "rows_repeated_across_shards": len(rows) - len(distinct),
        "budget": budget, "budget_fraction": config.budget_fraction, "max_ifd": config.max_ifd,
        "subset_hash": subset_hash(subset["id"]), "rows_per_shard": dg.MetadataValue.json(
            {str(k): int(v) for k, v in per_shard.items()}),
        "selected_per_shard": dg.MetadataValue.json(
            {str(k): int(v) for k, v in subset[SHARD_COLUMN].value_counts().items()}),
    })
    scored_shards = set(shard_superfiltering_scores[SHARD_COLUMN]) if len(shard_superfiltering_scores) else set()
    row_shards = set(pool_shard[SHARD_COLUMN]) if len(pool_shard) else set()
    # A shard whose every row was quarantined has no rows to read; it is still accounted for by its partition.
    empty = {s for s in shards if s not in row_shards}
    missing = sorted((set(shards) - row_shards - empty) | (row_shards - scored_shards))
    yield dg.AssetCheckResult(check_name="reads_every_shard", passed=not missing and bool(shards),
                              metadata={"shards": len(shards), "shards_without_scores": dg.MetadataValue.json(missing),
                                        "shards_without_rows": dg.MetadataValue.json(sorted(empty))})
    yield dg.AssetCheckResult(check_name="size_fits_budget",
                              passed=len(subset) <= budget and bool(subset["id"].is_unique),
                              metadata={"rows": len(subset), "budget": budget})
    yield suite_check(subset, "sharded_superfiltering_subset")


SHARD_ASSETS = [pool_shard_assets, shard_metric_features, shard_superfiltering_scores, sharded_superfiltering_subset]

shards_automation_sensor = dg.AutomationConditionSensorDefinition(
    "shards_automation_sensor",
    target=dg.AssetSelection.groups(GROUP),
    default_status=_sensor_status("INSTSEL_SHARD_AUTOMATION"),
    minimum_interval_seconds=settings.env_seconds("INSTSEL_AUTOMATION_INTERVAL", 30, minimum=1, whole=True),
    description="Evaluates the eager automation conditions of the shards group: a newly ingested shard is "
                "featurised and scored, then sharded_superfiltering_subset is recomputed.",
)
SHARD_SENSORS = [pool_shard_sensor, shards_automation_sensor]
