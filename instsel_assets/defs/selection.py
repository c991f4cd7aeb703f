"""selected_subsets: one partition per selection of ``selection/plan.py``, all at the same budget."""

import dagster as dg
from pydantic import Field
import pandas as pd

from instsel_assets.defs._common import code_version_of, subset_hash, suite_check
from instsel_assets.defs.lineage import latest_record, metadata_dict
from instsel_assets.selection.plan import DEFAULT_BUDGET_FRACTION, get_selection, selection_names

selection_partitions = dg.StaticPartitionsDefinition(selection_names())

CODE_VERSION = code_version_of(
    "instsel_assets.selection.plan", "instsel_assets.selection.ifd_top_fraction",
    "instsel_assets.selection.random_subset", "instsel_assets.selection.longest",
    "instsel_assets.selection.kcenter_greedy")


# Which asset computes each column a selector may read (see candidate_table).
COLUMN_ASSETS = {"ifd": "ifd_scores", "embedding": "metric_features", "language": "metric_features",
                 "output_chars": "length_indicators", "total_tokens": "length_indicators"}


class SelectionConfig(dg.Config):
    budget_fraction: float = Field(
        default=DEFAULT_BUDGET_FRACTION,
        description="Subset size as a fraction of the pool, the same for every selection (0.10 = Cherry LLM's 10%).")
    seed: int = Field(
        default=0,
        description="Seed of the random selector and of k-center's first center.")


def candidate_table(pool: pd.DataFrame, features: pd.DataFrame, lengths: pd.DataFrame,
                    scores: pd.DataFrame) -> pd.DataFrame:
    """One row per pool row with every column a selector may read."""
    table = pool[["id", "source"]].merge(features[["id", "embedding", "language"]], on="id", how="left")
    table = table.merge(lengths[["id", "output_chars", "total_tokens"]], on="id", how="left")
    return table.merge(scores[["id", "ifd"]], on="id", how="left")


@dg.asset(
    group_name="selection",
    partitions_def=selection_partitions,
    code_version=CODE_VERSION,
    kinds={"duckdb", "pandas"},
    metadata={"partition_expr": "method"},
    description="The subset each selection method picks from the pool, at the same budget. "
                "Selectors only read score columns (scorers compute them).",
    check_specs=[
        dg.AssetCheckSpec("size_equals_budget", asset="selected_subsets", blocking=True,
                          description="The subset has exactly `budget` rows."),
        dg.AssetCheckSpec("ids_in_pool", asset="selected_subsets", blocking=True,
                          description="Every selected id is a pool row."),
        dg.AssetCheckSpec("great_expectations_suite", asset="selected_subsets",
                          description="Great Expectations suite 'selected_subsets'."),
    ],
)
def selected_subsets(context: dg.AssetExecutionContext, config: SelectionConfig,
                     instruction_pool: pd.DataFrame, metric_features: pd.DataFrame,
                     length_indicators: pd.DataFrame, ifd_scores: pd.DataFrame):
    from instsel_assets.registry import get_selector
    from instsel_assets.selection.ifd_top_fraction import top_fraction_budget

    method = context.partition_key
    spec = get_selection(method)
    selector = get_selector(spec.selector)
    budget = top_fraction_budget(len(instruction_pool), config.budget_fraction)
    candidates = candidate_table(instruction_pool, metric_features, length_indicators, ifd_scores)
    context.log.info(f"{method}: selector {spec.selector} picks {budget} of {len(candidates)} rows")
    ids = selector.fn(candidates, budget, seed=config.seed, **spec.params)
    subset = pd.DataFrame({"method": method, "selection_rank": range(len(ids)), "id": ids})
    subset = subset.merge(instruction_pool[["id", "source"]], on="id", how="left")
    subset["budget"] = budget

    # The settings of the scorers whose columns this selector read, from the materialisations read.
    scorer_settings = {}
    for column in selector.columns:
        asset = COLUMN_ASSETS.get(column)
        if asset:
            meta = metadata_dict(latest_record(context.instance, asset))
            scorer_settings[column] = {"asset": asset, **{k: meta[k] for k in ("scorer", "scorer_settings",
                                                                               "embedding_model") if k in meta}}
    digest = subset_hash(subset["id"])
    yield dg.Output(subset, metadata={
        "dagster/row_count": len(subset),
        "method": method, "selector": spec.selector, "selector_params": dg.MetadataValue.json(spec.params),
        "budget": budget, "budget_fraction": config.budget_fraction, "seed": config.seed,
        "pool_rows": len(instruction_pool), "subset_hash": digest,
        "columns_read": dg.MetadataValue.json(list(selector.columns)),
        "scorer_settings": dg.MetadataValue.json(scorer_settings),
        "sources": dg.MetadataValue.json(subset["source"].value_counts().to_dict()),
    })
    yield dg.AssetCheckResult(check_name="size_equals_budget", passed=len(subset) == budget,
                              metadata={"rows": len(subset), "budget": budget})
    missing = int((~subset["id"].isin(instruction_pool["id"])).sum())
    yield dg.AssetCheckResult(check_name="ids_in_pool", passed=missing == 0, metadata={"ids_not_in_pool": missing})
    yield suite_check(subset, "selected_subsets")
