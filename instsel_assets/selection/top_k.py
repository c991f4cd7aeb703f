"""Generic top-k selector: the rows with the largest (or smallest) value of one score column.

The top-m form of the survey's "score, then select" (docs/METHODS.md eqs. 3-4: InstructMining's "threshold or
top-m on the fitted rule"), for any numeric column an asset computes, so ranking by one score needs a selection
entry, not a new selector. ``descending=False`` ranks smallest first, for scores where lower is better
(perplexity, loss).

``fraction`` keeps the top share of the pool, as Cherry LLM's "top 5% / 10%" does, but never more than
``budget`` rows: ``min(budget, max(1, round(fraction * len(candidates))))``. Ties are broken by ascending
``id`` so the result does not depend on row order. Rows whose value is missing (NaN) are not eligible, so fewer
than ``budget`` ids come back when fewer rows have a value, or when ``fraction`` asks for fewer
(``fills_budget=False``).

Registered selector: ``top_k`` (reads ``id`` and the column its ``column`` parameter names).
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.ifd_top_fraction import top_fraction_budget
from instsel_assets.selection.random_subset import check_budget
from instsel_assets.selection.threshold import (check_column, check_descending, column_from_params, numeric_values,
                                                ranked)


def check_fraction(fraction, selector: str) -> float | None:
    """``fraction`` as a float in (0, 1], or None; ``ValueError`` naming the parameter otherwise."""
    if fraction is None:
        return None
    if isinstance(fraction, (bool, np.bool_)) or not isinstance(fraction, numbers.Real) \
            or not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"selector {selector!r}: parameter 'fraction' must be a number in (0, 1], got {fraction!r}")
    return float(fraction)


@register_selector(
    "top_k",
    family="metric-set",
    paper="Survey eqs. 3-4 (Wang et al. 2024): the top m rows by one score column",
    summary="The budget rows with the largest `column` (smallest with descending=false), ties by id; optional "
            "`fraction` of the pool, never more than the budget; NaN rows are not eligible.",
    reads=("id",),
    fills_budget=False,
    reads_from_params=column_from_params,
)
def select_top_k(candidates: pd.DataFrame, budget: int, *, seed: int = 0, column: str | None = None,
                 descending: bool = True, fraction: float | None = None, **params) -> list[str]:
    """The ``k`` ids with the best ``column``, best first, ties by ascending id.

    ``k = budget``, or with ``fraction`` ``min(budget, max(1, round(fraction * len(candidates))))``; fewer when
    fewer rows have a value. ``seed`` is unused. ``ValueError`` for a missing or non-numeric column, a
    ``fraction`` outside (0, 1], a non-bool ``descending`` or a bad ``budget``.
    """
    column = check_column(column, "top_k")
    descending = check_descending(descending, "top_k")
    fraction = check_fraction(fraction, "top_k")
    values = numeric_values(candidates, column, "top_k")
    budget = check_budget(budget)
    if budget == 0 or len(candidates) == 0:
        return []
    k = budget if fraction is None else min(budget, top_fraction_budget(len(candidates), fraction))
    present = ~np.isnan(values)
    ids = candidates["id"].astype(str).to_numpy()
    frame = ranked(ids[present], values[present], descending=descending)
    return frame["id"].head(k).tolist()
