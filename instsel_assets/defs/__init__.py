"""The Dagster wiring: assets per stage, their checks, jobs and resources. Thin by design: asset
bodies call the library and record metadata."""

from __future__ import annotations

import dagster as dg


def build_definitions() -> dg.Definitions:
    from instsel_assets.defs.evaluation import EVALUATION_ASSETS
    from instsel_assets.defs.executors import executor_from_env
    from instsel_assets.defs.experiments import EXPERIMENT_ASSETS
    from instsel_assets.defs.mods import MODS_ASSETS
    from instsel_assets.defs.features import duplicate_indicators, metric_features
    from instsel_assets.defs.jobs import JOBS
    from instsel_assets.defs.judge import JUDGE_ASSETS
    from instsel_assets.defs.pool import pool_assets
    from instsel_assets.defs.raw import raw_assets
    from instsel_assets.defs.resources import default_resources
    from instsel_assets.defs.schedules import build_schedules
    from instsel_assets.defs.scores import SCORE_ASSETS
    from instsel_assets.defs.selection import selected_subsets
    from instsel_assets.defs.shards import SHARD_ASSETS, SHARD_SENSORS
    from instsel_assets.defs.sql_models import sql_assets
    from instsel_assets.defs.training import finetuned_checkpoints

    assets = [*raw_assets(), *pool_assets(), metric_features, duplicate_indicators, *sql_assets(), *SCORE_ASSETS, *JUDGE_ASSETS,
              *EXPERIMENT_ASSETS, *MODS_ASSETS,
              selected_subsets, finetuned_checkpoints, *EVALUATION_ASSETS, *SHARD_ASSETS]
    # INSTSEL_EXECUTOR=k8s: dagster-k8s's k8s_job_executor; unset: Dagster's default executor (defs/executors.py).
    executor = executor_from_env()
    return dg.Definitions(assets=assets, jobs=JOBS, resources=default_resources(), schedules=build_schedules(),
                          sensors=SHARD_SENSORS,
                          **({"executor": executor} if executor is not None else {}))
