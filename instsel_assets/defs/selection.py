"""selected_subsets: one partition per selection x budget of ``selection/plan.py``; every selection runs at every budget.

The asset depends on every score asset (so the lineage graph shows which scores can feed a selection) but
reads only the score tables whose columns its partition's selector declares: selecting ``random`` needs no
LM score, selecting ``nuggets`` needs ``nuggets_scores`` and nothing else. A generic selector (``threshold``,
``top_k``, ``compose``) reads the columns its parameters name, so the tables are chosen from the selector's
columns for the partition's parameters (``MethodInfo.columns_read``). A needed score table that was never
materialised is a clear error naming the asset to materialise first.
"""

from typing import Any

import dagster as dg
import duckdb
import pandas as pd
from pydantic import Field

from instsel_assets.defs._common import code_version_of, subset_hash, suite_check
from instsel_assets.defs.lineage import latest_record, metadata_dict
from instsel_assets.selection.plan import (
    BUDGETS, DEFAULT_BUDGET_FRACTION, SELECTIONS, budget_label, budget_of_key, budget_rows, parse_selection_key,
    selection_keys)

# selection x budget (selection/plan.py): "ifd" at the default budget, "ifd@5pct" at each other one
selection_partitions = dg.StaticPartitionsDefinition(selection_keys())

CODE_VERSION = code_version_of(
    "instsel_assets.selection.plan", "instsel_assets.selection.ifd_top_fraction",
    "instsel_assets.selection.random_subset", "instsel_assets.selection.longest",
    "instsel_assets.selection.kcenter_greedy", "instsel_assets.selection.superfiltering_top",
    "instsel_assets.selection.facility_location", "instsel_assets.selection.perplexity_lowest",
    "instsel_assets.selection.prompt_uncertainty_top", "instsel_assets.selection.nuggets_top",
    "instsel_assets.selection.self_curation_threshold", "instsel_assets.selection.diverseevol_rank",
    "instsel_assets.selection.tegit_accept", "instsel_assets.selection.alpagasus_threshold",
    "instsel_assets.selection.deita_score_first", "instsel_assets.selection.instag_complexity_first",
    "instsel_assets.selection.lift_variance", "instsel_assets.selection.tree_instruct_threshold",
    "instsel_assets.selection.wavecoder_pass", "instsel_assets.selection.threshold",
    "instsel_assets.selection.top_k", "instsel_assets.selection.compose",
    "instsel_assets.selection.dataset_quantization", "instsel_assets.selection.coreset",
    "instsel_assets.selection.instruct_mining", "instsel_assets.selection.instruction_gpt4",
    "instsel_assets.selection.mods")

# Which asset computes each column a selector may read. The pool's own tables (metric_features,
# length_indicators) are always loaded; the score assets only when their columns are read.
COLUMN_ASSETS = {
    "embedding": "metric_features", "language": "metric_features",
    "output_chars": "length_indicators", "total_tokens": "length_indicators",
    "ifd": "ifd_scores",
    "superfiltering_ifd": "superfiltering_scores",
    "response_ppl": "perplexity_scores",
    "prompt_uncertainty": "prompt_uncertainty_scores", "task_prompt_uncertainty": "prompt_uncertainty_scores",
    "golden_score": "nuggets_scores", "mean_loss_delta": "nuggets_scores",
    "self_curation_score": "self_curation_scores",
    "diverseevol_rank": "diverseevol_ranks",
    "tegit_good_prob": "tegit_scores",
    # Family 1 indicators and MoDS's reward score (features / scores groups), read by the generic selectors.
    "exact_dup_group": "duplicate_indicators", "exact_dup_rank": "duplicate_indicators",
    "near_dup_cluster": "duplicate_indicators", "near_dup_rank": "duplicate_indicators",
    "near_dup_cluster_size": "duplicate_indicators",
    "reward_score": "reward_scores",
    "mods_role": "mods_necessary_instructions", "mods_order": "mods_necessary_instructions",
    "instruct_mining_score": "instruct_mining_scores", "instruction_gpt4_score": "instruction_gpt4_scores",
    # Judge tables (defs/judge.py); instag_tags holds the tags normalised over the pool (the raw ones are
    # instag_tags_raw, not read by the selector).
    "alpagasus_score": "alpagasus_scores",
    "deita_evol_score": "deita_scores",
    "instag_tags": "instag_tags",
    "lift_score": "lift_scores",
    "tree_nodes": "tree_instruct_scores",
    "wavecoder_pass": "wavecoder_scores",
}
SCORE_ASSETS = tuple(sorted({a for a in COLUMN_ASSETS.values() if a not in ("metric_features", "length_indicators")}))


class SelectionConfig(dg.Config):
    budget_fraction: float = Field(
        default=DEFAULT_BUDGET_FRACTION,
        description="Subset size as a fraction of the pool for the default-budget partitions (the bare selection "
                    "names), the same for every selection (0.10 = Cherry LLM's 10%). Partitions named "
                    "<selection>@<budget> (selection/plan.py BUDGETS) have their budget in the name and ignore it.")
    seed: int = Field(
        default=0,
        description="Seed of the random selector and of k-center's first center.")
    selector_params: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for this partition's selector, over the plan's own (e.g. "
                    "{\"threshold\": 3.5} for self_curation, whose paper threshold 4.5 suits large models; "
                    "{\"diversity\": true} for superfiltering). The parameters used are in the metadata.")


def selector_parameters(fn) -> list[str]:
    """The keyword parameters a selector function names, besides ``candidates``, ``budget`` and ``seed``."""
    from instsel_assets.registry import selector_parameters as parameters

    return parameters(fn)


def columns_and_assets(columns: tuple[str, ...], method: str, selector: str) -> dict[str, str]:
    """``{score asset: first column read from it}`` for the columns a selector reads; ``ValueError`` naming the
    columns no asset provides (a generic selector's ``column`` parameter may name anything)."""
    unknown = [c for c in columns if c not in COLUMN_ASSETS and c not in ("id", "source")]
    if unknown:
        raise ValueError(f"{method}: selector {selector!r} reads column(s) {unknown}, which no asset provides; "
                         f"the columns a selector can read: {sorted(['id', 'source', *COLUMN_ASSETS])}")
    needed: dict[str, str] = {}
    for column in columns:
        asset = COLUMN_ASSETS.get(column)
        if asset in SCORE_ASSETS:
            needed.setdefault(asset, column)
    return needed


def read_score_table(asset: str, column: str, method: str) -> pd.DataFrame:
    """The latest materialisation of a score asset, read from where the IO manager writes it: the DuckDB file, or
    the bucket with ``INSTSEL_STORAGE=s3`` (defs/storage.py)."""
    from instsel_assets.defs.resources import duckdb_path
    from instsel_assets.defs.storage import read_table, storage_kind

    if storage_kind() == "s3":
        try:
            return read_table(asset)
        except LookupError:
            raise LookupError(f"selection {method!r} reads column {column!r} from asset {asset}, which has not been "
                              f"materialised (not in the bucket): materialise {asset} first") from None
    path = duckdb_path()
    con = duckdb.connect(path)
    try:
        exists = con.execute("select count(*) from information_schema.tables where table_schema = 'public' "
                             "and table_name = ?", [asset]).fetchone()[0]
        if not exists:
            raise LookupError(f"selection {method!r} reads column {column!r} from asset {asset}, which has not been "
                              f"materialised (no table public.{asset} in {path}): materialise {asset} first")
        return con.execute(f'select * from public."{asset}"').df()
    finally:
        con.close()


def candidate_table(pool: pd.DataFrame, features: pd.DataFrame, lengths: pd.DataFrame,
                    scores: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per pool row with every column the selector may read: the pool's features and lengths, plus
    the named columns of each score table given (``{asset: DataFrame}``)."""
    table = pool[["id", "source"]].merge(features[["id", "embedding", "language"]], on="id", how="left")
    table = table.merge(lengths[["id", "output_chars", "total_tokens"]], on="id", how="left")
    for asset, frame in (scores or {}).items():
        columns = [c for c, a in COLUMN_ASSETS.items() if a == asset and c in frame.columns]
        table = table.merge(frame[["id", *columns]], on="id", how="left")
    return table


@dg.asset(
    group_name="selection",
    partitions_def=selection_partitions,
    code_version=CODE_VERSION,
    kinds={"duckdb", "pandas"},
    metadata={"partition_expr": "method"},
    deps=list(SCORE_ASSETS),
    description="The subset each selection method picks from the pool, every method at the same budgets. Selectors only "
                "read score columns (scorers compute them); each partition reads only the score tables its "
                "selector needs. Partitions: selection x budget (selection/plan.py): each selection at the default budget "
                "(budget_fraction) under its own name, and at " + ", ".join(budget_label(b) for b in BUDGETS[1:])
                + " as <name>@<budget>. Selections: " + ", ".join(f"{s.name} ({s.description})" for s in SELECTIONS),
    check_specs=[
        dg.AssetCheckSpec("size_fits_budget", asset="selected_subsets", blocking=True,
                          description="The subset has exactly `budget` rows; a threshold selector (registered with "
                                      "fills_budget=False) may keep fewer when fewer rows pass its threshold, but "
                                      "never none. The shortfall is in the metadata."),
        dg.AssetCheckSpec("ids_in_pool", asset="selected_subsets", blocking=True,
                          description="Every selected id is a pool row."),
        dg.AssetCheckSpec("great_expectations_suite", asset="selected_subsets",
                          description="Great Expectations suite 'selected_subsets'."),
    ],
)
def selected_subsets(context: dg.AssetExecutionContext, config: SelectionConfig,
                     instruction_pool: pd.DataFrame, metric_features: pd.DataFrame,
                     length_indicators: pd.DataFrame):
    from instsel_assets.registry import get_selector
    from instsel_assets.selection.ifd_top_fraction import top_fraction_budget

    method = context.partition_key
    spec, fixed_budget = parse_selection_key(method)
    selector = get_selector(spec.selector)
    if not spec.budgeted:
        budget, budget_fraction = len(instruction_pool), 1.0
    elif fixed_budget is None:
        budget = top_fraction_budget(len(instruction_pool), config.budget_fraction)
        budget_fraction = config.budget_fraction
    else:
        budget = budget_rows(len(instruction_pool), fixed_budget)
        budget_fraction = fixed_budget if isinstance(fixed_budget, float) else None
    params = {**spec.params, **config.selector_params}
    accepted = selector_parameters(selector.fn)
    unknown = sorted(set(config.selector_params) - set(accepted))
    if unknown:  # selectors take **params, so a misspelt key would otherwise be ignored without a word
        raise ValueError(f"{method}: selector_params {unknown} are not parameters of selector {spec.selector!r}; "
                         f"it accepts {accepted or 'none'}")
    columns = selector.columns_read(params)  # static columns, then those the parameters name
    needed = columns_and_assets(columns, method, spec.selector)  # score asset -> first column read from it
    scores = {asset: read_score_table(asset, column, method) for asset, column in needed.items()}
    candidates = candidate_table(instruction_pool, metric_features, length_indicators, scores)
    context.log.info(f"{method}: selector {spec.selector} picks {budget} of {len(candidates)} rows"
                     + (f", reading {', '.join(sorted(scores))}" if scores else ""))
    ids = selector.fn(candidates, budget, seed=config.seed, **params)
    if len(ids) < budget:
        context.log.warning(f"{method}: selector {spec.selector} kept {len(ids)} rows, {budget - len(ids)} fewer than "
                            f"the budget {budget}" + (" (fewer rows pass its threshold)" if not selector.fills_budget
                                                      else ""))
    subset = pd.DataFrame({"method": method, "selection_rank": range(len(ids)), "id": ids})
    subset = subset.merge(instruction_pool[["id", "source"]], on="id", how="left")
    subset["budget"] = budget

    # The settings of the scorers whose columns this selector read, from the materialisations read.
    scorer_settings = {}
    score_runs = {}
    for column in columns:
        asset = COLUMN_ASSETS.get(column)
        if asset:
            record = latest_record(context.instance, asset)
            meta = metadata_dict(record)
            scorer_settings[column] = {"asset": asset, **{k: meta[k] for k in ("scorer", "scorer_settings",
                                                                               "embedding_model") if k in meta}}
            if record is not None:
                score_runs[asset] = {"run_id": record.run_id, "storage_id": record.storage_id}
    digest = subset_hash(subset["id"])
    yield dg.Output(subset, metadata={
        "dagster/row_count": len(subset),
        "method": method, "selector": spec.selector, "selector_params": dg.MetadataValue.json(params),
        "selection": spec.name, "budget": budget, "budget_fraction": budget_fraction,
        "budget_label": budget_of_key(method), "seed": config.seed,
        "pool_rows": len(instruction_pool), "subset_hash": digest,
        "columns_read": dg.MetadataValue.json(list(columns)),
        "score_assets_read": dg.MetadataValue.json(score_runs),
        "scorer_settings": dg.MetadataValue.json(scorer_settings),
        "sources": dg.MetadataValue.json(subset["source"].value_counts().to_dict()),
    })
    size_ok = len(subset) == budget if selector.fills_budget else 0 < len(subset) <= budget
    yield dg.AssetCheckResult(check_name="size_fits_budget", passed=bool(size_ok),
                              metadata={"rows": len(subset), "budget": budget, "shortfall": budget - len(subset),
                                        "fills_budget": selector.fills_budget})
    missing = int((~subset["id"].isin(instruction_pool["id"])).sum())
    yield dg.AssetCheckResult(check_name="ids_in_pool", passed=missing == 0, metadata={"ids_not_in_pool": missing})
    yield suite_check(subset, "selected_subsets")
