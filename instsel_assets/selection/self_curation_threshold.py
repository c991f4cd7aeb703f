"""Self-curation threshold selection (Instruction Backtranslation / Humpback, Li et al. 2023b).

The score is the model's own 1-5 rating of each pair (``scoring/self_curation.py`` writes
``self_curation_score``, an expected rating in [1, 5]). The paper keeps the pairs rated 5, its ``A_5``
set, which it describes as "score >= 4.5" (section 3.3); with expected ratings, 4.5 is the matching
threshold: a row passes when the model puts most of its rating mass on 5 (e.g. p(5) >= 0.5 with the rest
on 4). Rows at or above ``threshold`` are kept, highest score first, ties broken by ascending ``id``;
unscored (NaN) rows are never kept. Fewer than ``budget`` ids come back when fewer rows qualify.

Registered selector: ``self_curation`` (reads ``id``, ``self_curation_score``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns

DEFAULT_THRESHOLD = 4.5
RATING_RANGE = (1.0, 5.0)
# Expected ratings are sums of floats; allow rounding noise at the ends of the scale.
_RANGE_SLACK = 1e-6


def check_threshold(threshold) -> float:
    """The threshold as a float in [1, 5]; ``ValueError`` naming ``threshold`` otherwise."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    lo, hi = RATING_RANGE
    if not lo <= float(threshold) <= hi:
        raise ValueError(f"threshold must be in [{lo:g}, {hi:g}] (the rating scale), got {threshold}")
    return float(threshold)


@register_selector(
    "self_curation",
    family="trainable-llm",
    paper="Li et al. 2023b, Self-Alignment with Instruction Backtranslation (Humpback), self-curation",
    summary="Keep rows whose self-curation rating is >= threshold (4.5: the paper's A_5 set), highest first.",
    reads=("id", "self_curation_score"),
    fills_budget=False,
)
def select_self_curation(candidates: pd.DataFrame, budget: int, *, seed: int = 0,
                         threshold: float = DEFAULT_THRESHOLD, **params) -> list[str]:
    """Up to ``budget`` ids with ``self_curation_score >= threshold``, highest score first, ties by id.

    ``seed`` is unused (the rule is deterministic). Raises ``ValueError`` for a missing column, a bad
    ``budget`` or ``threshold``, or a score that is not a number in [1, 5] (naming the row id).
    """
    require_columns(candidates, ("id", "self_curation_score"), "self_curation")
    budget = check_budget(budget)
    threshold = check_threshold(threshold)
    if budget == 0 or len(candidates) == 0:
        return []
    ids = candidates["id"].astype(str).to_numpy()
    try:
        score = pd.to_numeric(candidates["self_curation_score"], errors="raise").to_numpy(dtype="float64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"selector 'self_curation': column 'self_curation_score' is not numeric ({exc})") from exc
    lo, hi = RATING_RANGE
    bad = ~np.isnan(score) & ((score < lo - _RANGE_SLACK) | (score > hi + _RANGE_SLACK) | ~np.isfinite(score))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"selector 'self_curation': row {ids[i]!r}, field 'self_curation_score' = {score[i]} "
                         f"is outside the rating scale [{lo:g}, {hi:g}] ({int(bad.sum())} such rows)")
    frame = pd.DataFrame({"id": ids, "score": score})
    frame = frame[frame["score"].to_numpy() >= threshold]  # NaN compares False: unscored rows drop out
    frame = frame.sort_values(["score", "id"], ascending=[False, True], kind="mergesort")
    return frame["id"].head(budget).tolist()
