"""Jobs: the chain in three steps, because its assets are partitioned three ways.

1. ``prepare_pool_job`` (unpartitioned): raw datasets -> pool -> features -> SQL models -> scores.
2. ``select_and_train_job`` (one run per selection partition): subset -> checkpoint.
3. ``evaluate_job`` (unpartitioned): every checkpoint -> evaluation report.
"""

from __future__ import annotations

import dagster as dg

prepare_pool_job = dg.define_asset_job(
    "prepare_pool_job",
    selection=dg.AssetSelection.groups("raw", "pool", "features", "sql_models", "scores"),
    description="Read every source, build the pool, compute features, SQL indicators and LM scores.",
)
select_and_train_job = dg.define_asset_job(
    "select_and_train_job",
    selection=dg.AssetSelection.groups("selection", "training"),
    description="Select one partition's subset and fine-tune the base model on it.",
)
evaluate_job = dg.define_asset_job(
    "evaluate_job",
    selection=dg.AssetSelection.groups("evaluation"),
    description="Held-out loss of the base model and every checkpoint; the comparison report.",
)

JOBS = [prepare_pool_job, select_and_train_job, evaluate_job]
