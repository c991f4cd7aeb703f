"""Great Expectations 1.x suites for the tabular assets.

Each suite is a list of (expectation class name, kwargs), declared next to the others below so a
reader sees every rule in one place. ``validate_frame`` runs a suite on a DataFrame in an
ephemeral GX context and returns a plain summary that the Dagster wiring turns into an asset
check result (dagster-ge targets GX < 1 and is unmaintained, so GX is called directly).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pandas as pd

Expectation = tuple[str, dict[str, Any]]

_JUDGE_TABLE: list[Expectation] = [
    ("ExpectColumnValuesToNotBeNull", {"column": "id"}),
    ("ExpectColumnValuesToBeUnique", {"column": "id"}),
    ("ExpectColumnValuesToBeInSet", {"column": "judge_status",
                                     "value_set": ["ok", "unparsable", "failed", "budget", "not_judgeable"]}),
    ("ExpectColumnValuesToNotBeNull", {"column": "judge_raw"}),
]

SUITES: dict[str, list[Expectation]] = {
    "instruction_pool": [
        ("ExpectColumnValuesToNotBeNull", {"column": "id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValueLengthsToEqual", {"column": "id", "value": 16}),
        ("ExpectColumnValuesToNotBeNull", {"column": "source"}),
        ("ExpectColumnValueLengthsToBeBetween", {"column": "instruction", "min_value": 1}),
        ("ExpectColumnValueLengthsToBeBetween", {"column": "output", "min_value": 1}),
        ("ExpectColumnValuesToBeBetween", {"column": "n_turns", "min_value": 1}),
    ],
    "metric_features": [
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "ttr", "min_value": 0.0, "max_value": 1.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "mtld", "min_value": 0.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "knn6_mean_distance", "min_value": 0.0, "max_value": 2.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "output_tokens", "min_value": 1}),
        ("ExpectColumnValuesToNotBeNull", {"column": "language"}),
    ],
    "duplicate_indicators": [
        ("ExpectColumnValuesToNotBeNull", {"column": "id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "exact_dup_group"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "near_dup_cluster"}),
        ("ExpectColumnValuesToBeBetween", {"column": "exact_dup_rank", "min_value": 0}),
        ("ExpectColumnValuesToBeBetween", {"column": "near_dup_rank", "min_value": 0}),
        ("ExpectColumnValuesToBeBetween", {"column": "near_dup_cluster_size", "min_value": 1}),
    ],
    "length_indicators": [
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "instruction_chars", "min_value": 1}),
        ("ExpectColumnValuesToBeBetween", {"column": "output_chars", "min_value": 1}),
        ("ExpectColumnValuesToBeBetween", {"column": "input_chars", "min_value": 0}),
    ],
    "ifd_scores": [
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "ifd"}),
        ("ExpectColumnValuesToBeBetween", {"column": "ifd", "min_value": 0.0, "strict_min": True}),
        ("ExpectColumnValuesToBeBetween", {"column": "loss_answer", "min_value": 0.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "loss_answer_given_instruction", "min_value": 0.0}),
    ],
    "superfiltering_scores": [
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "superfiltering_ifd", "min_value": 0.0, "strict_min": True}),
        ("ExpectColumnValuesToBeBetween", {"column": "superfiltering_loss_answer", "min_value": 0.0}),
    ],
    "perplexity_scores": [
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "response_ppl", "min_value": 1.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "response_loss", "min_value": 0.0}),
    ],
    "prompt_uncertainty_scores": [
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "prompt_uncertainty", "min_value": 0.0, "max_value": 1.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "answer_likelihood", "min_value": 0.0, "max_value": 1.0}),
    ],
    "nuggets_scores": [
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "golden_score", "min_value": 0.0, "max_value": 1.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "n_anchors_used", "min_value": 0}),
    ],
    "self_curation_scores": [
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "self_curation_score", "min_value": 1.0, "max_value": 5.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "digit_mass", "min_value": 0.0, "max_value": 1.0}),
    ],
    "diverseevol_ranks": [
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "diverseevol_rank", "min_value": -1}),
        ("ExpectColumnValuesToBeBetween", {"column": "diverseevol_round", "min_value": -1}),
    ],
    "tegit_scores": [
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "tegit_good_prob", "min_value": 0.0, "max_value": 1.0}),
    ],
    # The reward model's logit is unbounded; the stand-in's expected rating is checked to lie in [1, 5] by an extra
    # expectation (defs/scores.py). Unscorable rows are NaN, counted by the scored_rows_finite check.
    "reward_scores": [
        ("ExpectColumnValuesToNotBeNull", {"column": "id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "reward_model"}),
    ],
    # Judge tables (defs/judge.py): every pool row once, with its status and raw replies; the score columns are
    # null on the rows that are not "ok" (null values are not checked by the range expectations).
    "alpagasus_scores": [
        *_JUDGE_TABLE,
        ("ExpectColumnValuesToBeBetween", {"column": "alpagasus_score", "min_value": 0.0, "max_value": 5.0}),
    ],
    "deita_scores": [
        *_JUDGE_TABLE,
        ("ExpectColumnValuesToBeBetween", {"column": "deita_complexity", "min_value": 1.0, "max_value": 6.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "deita_quality", "min_value": 1.0, "max_value": 6.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "deita_evol_score", "min_value": 1.0}),
    ],
    "instag_tags": [
        *_JUDGE_TABLE,
        ("ExpectColumnValuesToBeBetween", {"column": "instag_n_tags_raw", "min_value": 1}),
        ("ExpectColumnValuesToBeBetween", {"column": "instag_n_tags", "min_value": 0}),
    ],
    "lift_scores": [
        *_JUDGE_TABLE,
        *[("ExpectColumnValuesToBeBetween", {"column": f"lift_{c}", "min_value": 1.0, "max_value": 10.0})
          for c in ("accuracy", "explainability", "clarity", "difficulty", "length", "score")],
    ],
    "tree_instruct_scores": [
        *_JUDGE_TABLE,
        ("ExpectColumnValuesToBeBetween", {"column": "tree_nodes", "min_value": 1, "max_value": 1000}),
    ],
    "wavecoder_scores": [
        *_JUDGE_TABLE,
        ("ExpectColumnValuesToBeInSet", {"column": "wavecoder_subtopic",
                                         "value_set": ["generation", "summarization", "translation", "repair"]}),
    ],
    "selected_subsets": [
        ("ExpectColumnValuesToNotBeNull", {"column": "id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "selection_rank", "min_value": 0}),
    ],
    "evaluation_test_sets": [
        ("ExpectColumnValuesToNotBeNull", {"column": "item_id"}),
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["test_set", "item_id"]}),
        ("ExpectColumnValuesToBeBetween", {"column": "n_turns", "min_value": 1, "max_value": 2}),
        ("ExpectColumnValueLengthsToBeBetween", {"column": "turns", "min_value": 3}),
    ],
    "generated_answers": [
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["method", "test_set", "item_id"]}),
        ("ExpectColumnValuesToBeInSet", {"column": "status", "value_set": ["ok", "failed"]}),
        ("ExpectColumnValuesToBeBetween", {"column": "n_new_tokens", "min_value": 0}),
    ],
    "pairwise_judgements": [
        *_JUDGE_TABLE,
        ("ExpectColumnValuesToBeInSet", {"column": "verdict", "value_set": ["win", "lose", "tie", None]}),
        ("ExpectColumnValuesToBeInSet", {"column": "baseline_kind", "value_set": ["internal", "external"]}),
    ],
    "judge_fidelity": [
        *_JUDGE_TABLE,
        ("ExpectColumnValuesToBeInSet", {"column": "label", "value_set": [1, 2]}),
    ],
    "method_comparison": [
        ("ExpectColumnValuesToNotBeNull", {"column": "method"}),
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["method", "test_set"]}),
        ("ExpectColumnValuesToBeBetween", {"column": "ws_vs_random", "min_value": 0.0, "max_value": 2.0,
                                           "mostly": 1.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "ws_vs_full", "min_value": 0.0, "max_value": 2.0}),
    ],
}


@dataclass
class SuiteResult:
    suite: str
    success: bool
    rows: int
    failures: list[dict[str, Any]] = field(default_factory=list)  # one per failed expectation
    evaluated: int = 0
    # one per expectation, in suite order: expectation, column, kwargs (the thresholds), success, unexpected_count,
    # unexpected_percent, examples (of unexpected values), observed_value (when GX reports one)
    results: list[dict[str, Any]] = field(default_factory=list)

    def markdown(self) -> str:
        """A Markdown table of every expectation's result, for the asset check's metadata (shown in the UI)."""
        lines = ["| expectation | column | thresholds | result | unexpected | examples |",
                 "| --- | --- | --- | --- | --- | --- |"]
        for r in self.results:
            column = r["column"] if isinstance(r["column"], str) else ", ".join(map(str, r["column"] or []))
            thresholds = ", ".join(f"{k}={v}" for k, v in r["kwargs"].items()) or "-"
            examples = ", ".join(r["examples"]) or "-"
            cells = [r["expectation"], column, thresholds, "pass" if r["success"] else "**FAIL**",
                     str(r["unexpected_count"]), examples]
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ")[:200] for c in cells) + " |")
        return "\n".join(lines)

    def summary(self) -> str:
        if self.success:
            return f"{self.suite}: {self.evaluated} expectations passed on {self.rows} rows"
        parts = [f"{f['expectation']}({f['column']}): {f['unexpected_count']} unexpected, e.g. {f['examples']}"
                 for f in self.failures]
        return f"{self.suite}: {len(self.failures)} of {self.evaluated} expectations failed: " + "; ".join(parts)


@lru_cache(maxsize=1)
def _context():
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    try:  # progress bars would flood the run logs
        context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    return context


def validate_frame(df: pd.DataFrame, suite_name: str, extra: list[Expectation] | None = None) -> SuiteResult:
    """Run the suite ``suite_name`` (plus ``extra`` expectations) on ``df``.

    Only the scalar columns a suite names are handed to GX, so array columns (embeddings,
    conversations) never reach it.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations = list(SUITES[suite_name]) + list(extra or [])
    columns = sorted({kw["column"] for _, kw in expectations if "column" in kw}
                     | {c for _, kw in expectations for c in kw.get("column_list", ())})
    missing = [c for c in columns if c not in df.columns]
    if missing:
        absent = [{"expectation": "column_exists", "column": c, "unexpected_count": len(df), "examples": []}
                  for c in missing]
        results = [{"expectation": f"column_exists({c})", "column": c, "kwargs": {}, "success": False,
                    "unexpected_count": len(df), "unexpected_percent": 100.0, "examples": [], "observed_value": None}
                   for c in missing]
        results += [{"expectation": _snake(cls_name), "column": kw.get("column") or list(kw.get("column_list", [])),
                     "kwargs": _thresholds(kw), "success": False, "unexpected_count": 0, "unexpected_percent": None,
                     "examples": ["not evaluated: a column is missing"], "observed_value": None}
                    for cls_name, kw in expectations]
        return SuiteResult(suite_name, False, len(df), absent, len(expectations), results)
    context = _context()
    name = f"{suite_name}_{id(df)}"
    source = context.data_sources.add_or_update_pandas(name)
    batch_def = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    suite = gx.ExpectationSuite(name=name)
    for cls_name, kwargs in expectations:
        suite.add_expectation(getattr(gxe, cls_name)(**kwargs))
    suite = context.suites.add_or_update(suite)
    try:
        batch = batch_def.get_batch(batch_parameters={"dataframe": df[columns].copy()})
        result = batch.validate(suite)
    finally:
        context.suites.delete(name)
        context.data_sources.delete(name)
    failures, results = [], []
    for r in result.results:
        kwargs = r.expectation_config.kwargs
        one = {
            "expectation": r.expectation_config.type,
            "column": kwargs.get("column") or kwargs.get("column_list"),
            "kwargs": _thresholds(kwargs),
            "success": bool(r.success),
            "unexpected_count": int(r.result.get("unexpected_count") or 0),
            "unexpected_percent": _plain(r.result.get("unexpected_percent")),
            "examples": [str(v)[:80] for v in (r.result.get("partial_unexpected_list") or [])[:5]],
            "observed_value": _plain(r.result.get("observed_value")),
        }
        if r.exception_info and r.exception_info.get("raised_exception"):
            one["success"] = False
            one["examples"] = [str(r.exception_info.get("exception_message"))[:200]]
        results.append(one)
        if not one["success"]:
            failures.append({k: one[k] for k in ("expectation", "column", "unexpected_count", "examples")})
    return SuiteResult(suite_name, bool(result.success), len(df), failures, len(result.results), results)


def _snake(name: str) -> str:
    import re

    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _thresholds(kwargs: dict[str, Any]) -> dict[str, Any]:
    """An expectation's settings other than its column(s), JSON-safe (what the UI shows as its thresholds)."""
    return {k: _plain(v) for k, v in dict(kwargs).items()
            if k not in ("column", "column_list", "batch_id") and v is not None}


def _plain(value: Any) -> Any:
    """``value`` as plain JSON (numpy scalars to Python numbers, anything else unusual to text)."""
    import json

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _plain(item())
        except (TypeError, ValueError):
            pass
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)[:200]


# MoDS (defs/mods.py). D_h: the reward threshold is checked by the asset's `threshold_applied` check (its value
# depends on the reward model); the stand-in's 1-5 range is an extra expectation added there.
SUITES["mods_quality_set"] = [
    ("ExpectColumnValuesToNotBeNull", {"column": "id"}),
    ("ExpectColumnValuesToBeUnique", {"column": "id"}),
    ("ExpectColumnValuesToNotBeNull", {"column": "reward_score"}),
    ("ExpectColumnValuesToNotBeNull", {"column": "reward_model"}),
    ("ExpectColumnValuesToNotBeNull", {"column": "quality_threshold"}),
]
SUITES["mods_seed_instructions"] = [
    ("ExpectColumnValuesToNotBeNull", {"column": "id"}),
    ("ExpectColumnValuesToBeUnique", {"column": "id"}),
    ("ExpectColumnValuesToBeUnique", {"column": "seed_order"}),
    ("ExpectColumnValuesToBeBetween", {"column": "seed_order", "min_value": 0}),
]
# generated_reward is null on the rows whose answer could not be generated (role 'failed'; nulls are not range-checked).
SUITES["mods_necessary_instructions"] = [
    ("ExpectColumnValuesToNotBeNull", {"column": "id"}),
    ("ExpectColumnValuesToBeUnique", {"column": "id"}),
    ("ExpectColumnValuesToBeInSet", {"column": "mods_role",
                                     "value_set": ["seed", "augmented", "necessary", "not_necessary", "failed"]}),
    ("ExpectColumnValuesToBeBetween", {"column": "mods_order", "min_value": -1}),
    ("ExpectColumnValuesToNotBeNull", {"column": "quality_reward"}),
]


# The experiment-driven metric-set methods (defs/experiments.py): one row per subset experiment; one score per pool
# row (the InstructMining score is a predicted loss and may be negative when the rule extrapolates, so it is not
# bounded here; unscorable rows are NaN, counted by the scored_rows_finite check).
SUITES.update({
    "subset_experiments": [
        ("ExpectColumnValuesToNotBeNull", {"column": "subset_id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "subset_id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "n_rows", "min_value": 1}),
        ("ExpectColumnValuesToBeBetween", {"column": "steps", "min_value": 1}),
        ("ExpectColumnValuesToBeBetween", {"column": "eval_loss", "min_value": 0.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "eval_examples", "min_value": 1}),
    ],
    "instruct_mining_scores": [
        ("ExpectColumnValuesToNotBeNull", {"column": "id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
    ],
    "instruction_gpt4_scores": [
        ("ExpectColumnValuesToNotBeNull", {"column": "id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
    ],
})

# Incremental pool shards (defs/shards.py): the pool's and the scores' expectations, per shard.
SUITES.update({
    "pool_shard": [*SUITES["instruction_pool"], ("ExpectColumnValuesToNotBeNull", {"column": "shard"})],
    "shard_metric_features": [
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "ttr", "min_value": 0.0, "max_value": 1.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "mtld", "min_value": 0.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "output_tokens", "min_value": 1}),
        ("ExpectColumnValuesToNotBeNull", {"column": "language"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "shard"}),
    ],
    "shard_superfiltering_scores": [*SUITES["superfiltering_scores"],
                                    ("ExpectColumnValuesToNotBeNull", {"column": "shard"})],
    "sharded_superfiltering_subset": [
        ("ExpectColumnValuesToNotBeNull", {"column": "id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "shard"}),
        ("ExpectColumnValuesToBeBetween", {"column": "superfiltering_ifd", "min_value": 0.0, "strict_min": True,
                                           "max_value": 1.0, "strict_max": True}),
    ],
})


# The remaining tables of the graph, so that every tabular asset (every DataFrame on the table io_manager) has a
# suite (tests/unit/test_gx_coverage.py holds that). Raw sources: one suite for every raw_datasets/<source> asset.
SUITES.update({
    "raw_datasets": [
        ("ExpectColumnValuesToNotBeNull", {"column": "source"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "source_file"}),
        ("ExpectColumnValuesToBeBetween", {"column": "source_row", "min_value": 0}),
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["source_file", "source_row"]}),
        ("ExpectColumnValuesToNotBeNull", {"column": "format"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "raw"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "parse_error"}),
    ],
    "pool_quarantine": [
        ("ExpectColumnValuesToNotBeNull", {"column": "source"}),
        ("ExpectColumnValuesToBeInSet", {"column": "kind", "value_set": ["invalid", "duplicate"]}),
        ("ExpectColumnValueLengthsToBeBetween", {"column": "reason", "min_value": 1}),
        ("ExpectColumnValuesToBeBetween", {"column": "source_row", "min_value": 0}),
        ("ExpectColumnValuesToNotBeNull", {"column": "duplicate_of"}),
    ],
    "external_answers": [
        ("ExpectColumnValuesToNotBeNull", {"column": "item_id"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "model"}),
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["test_set", "model", "item_id"]}),
        ("ExpectColumnValueLengthsToBeBetween", {"column": "answer", "min_value": 2}),  # a JSON list of turns
    ],
    # The report table of evaluation_reports: one row per evaluated model and test set.
    "evaluation_reports": [
        ("ExpectColumnValuesToNotBeNull", {"column": "method"}),
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["method", "test_set"]}),
        ("ExpectColumnValuesToBeBetween", {"column": "n_examples", "min_value": 1}),
        ("ExpectColumnValuesToBeBetween", {"column": "n_answer_tokens", "min_value": 1}),
        ("ExpectColumnValuesToBeBetween", {"column": "mean_loss", "min_value": 0.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "perplexity", "min_value": 1.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "subset_rows", "min_value": 0}),
    ],
    "instruct_mining_rule": [
        ("ExpectColumnValuesToNotBeNull", {"column": "term"}),
        ("ExpectColumnValuesToBeUnique", {"column": "term"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "coefficient"}),
        ("ExpectColumnValuesToBeBetween", {"column": "n_subsets", "min_value": 1}),
    ],
    # SQL models (dbt_like_sql/; defs/sql_models.py adds the check for every model named here)
    "dedup_length_filter": [
        ("ExpectColumnValuesToNotBeNull", {"column": "id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "kept"}),
        ("ExpectColumnValuesToBeBetween", {"column": "output_chars", "min_value": 0}),
    ],
    "ifd_top_per_source": [
        ("ExpectColumnValuesToNotBeNull", {"column": "id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "ifd", "min_value": 0.0, "max_value": 1.0, "strict_max": True}),
        ("ExpectColumnValuesToBeBetween", {"column": "rank_in_source", "min_value": 1}),
    ],
    "pool_summary": [
        ("ExpectColumnValuesToNotBeNull", {"column": "source"}),
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["source", "language"]}),
        ("ExpectColumnValuesToBeBetween", {"column": "rows", "min_value": 1}),
    ],
})
# pool_shard_quarantine (defs/shards.py): the quarantine's expectations, per shard.
SUITES["pool_shard_quarantine"] = [*SUITES["pool_quarantine"], ("ExpectColumnValuesToNotBeNull", {"column": "shard"})]
