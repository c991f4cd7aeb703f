"""Nuggets selection (Li et al. 2023c, "One Shot Learning as Instruction Data Prospector").

The golden score is computed by the ``nuggets`` scorer (``scoring/nuggets.py``): the share of anchor
tasks a row helps as a one-shot demonstration. This selector keeps the ``budget`` rows with the highest
golden score. Golden scores are shares of a few anchors, so ties are common: they are broken by the lower
``mean_loss_delta`` (the demonstration that lowers the anchors' answer loss more on average), then by id.
Rows without a golden score (no demonstration, or no anchor to compare against) are never selected.

The paper's released subsets are thresholds on the golden score (e.g. ``golden_score > 0.85`` keeps
about 1% of Alpaca-GPT4); ``min_golden_score`` applies such a floor (inclusive) before the budget.

Registered selector: ``nuggets`` (reads ``id``, ``golden_score``, ``mean_loss_delta``).
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns

NUGGETS_READS = ("id", "golden_score", "mean_loss_delta")


@register_selector(
    "nuggets",
    family="trainable-llm",
    paper="Li et al. 2023c, One Shot Learning as Instruction Data Prospector (Nuggets)",
    summary="Top rows by golden score (ties: lower mean loss change, then id); unscored rows are never "
            "selected; optional floor on the golden score.",
    reads=NUGGETS_READS,
)
def select_nuggets(candidates: pd.DataFrame, budget: int, *, seed: int = 0,
                   min_golden_score: float | None = None, **params) -> list[str]:
    """The ``budget`` ids with the highest finite ``golden_score`` (at least ``min_golden_score`` when
    given), in selection order: golden score descending, then ``mean_loss_delta`` ascending (missing
    last), then ``id`` ascending. ``seed`` is unused (the rule is deterministic). Returns fewer than
    ``budget`` ids only when fewer rows are eligible.
    """
    require_columns(candidates, NUGGETS_READS, "nuggets")
    budget = check_budget(budget)
    if min_golden_score is not None and (
            isinstance(min_golden_score, bool) or not isinstance(min_golden_score, numbers.Real)
            or not 0.0 <= float(min_golden_score) <= 1.0):
        raise ValueError(f"min_golden_score must be None or a number in [0, 1], got {min_golden_score!r}")
    if budget == 0 or len(candidates) == 0:
        return []
    frame = pd.DataFrame({
        "id": candidates["id"].astype(str).to_numpy(),
        "golden_score": pd.to_numeric(candidates["golden_score"], errors="raise").to_numpy(dtype="float64"),
        "mean_loss_delta": pd.to_numeric(candidates["mean_loss_delta"], errors="raise").to_numpy(dtype="float64"),
    })
    keep = np.isfinite(frame["golden_score"].to_numpy())
    if min_golden_score is not None:
        keep &= frame["golden_score"].to_numpy() >= float(min_golden_score)
    frame = frame[keep]
    # a NaN delta sorts last: a row whose help cannot be measured does not win a tie
    frame = frame.sort_values(["golden_score", "mean_loss_delta", "id"], ascending=[False, True, True],
                              kind="mergesort", na_position="last")
    return frame["id"].head(budget).tolist()
