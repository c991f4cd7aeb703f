"""The rule shared by the rating-threshold selectors (self-curation, AlpaGasus): keep the rows whose rating
is at least a threshold, highest first, ties by ascending ``id``, up to ``budget``; unscored (NaN) rows are
never kept, and a rating outside the scale is an error naming the row. Not a selector itself."""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd

from instsel_assets.selection.random_subset import check_budget, require_columns

# Expected ratings are sums of floats; allow rounding noise at the ends of the scale.
SCALE_SLACK = 1e-6


def check_rating_threshold(threshold, scale: tuple[float, float]) -> float:
    """The threshold as a float on ``scale``; ``ValueError`` naming ``threshold`` otherwise."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    lo, hi = scale
    if not lo <= float(threshold) <= hi:
        raise ValueError(f"threshold must be in [{lo:g}, {hi:g}] (the rating scale), got {threshold}")
    return float(threshold)


def rated_at_least(candidates: pd.DataFrame, budget: int, *, selector: str, column: str, threshold,
                   scale: tuple[float, float]) -> list[str]:
    """Up to ``budget`` ids with ``column >= threshold``, highest first, ties by id (module docstring)."""
    require_columns(candidates, ("id", column), selector)
    budget = check_budget(budget)
    threshold = check_rating_threshold(threshold, scale)
    if budget == 0 or len(candidates) == 0:
        return []
    ids = candidates["id"].astype(str).to_numpy()
    try:
        score = pd.to_numeric(candidates[column], errors="raise").to_numpy(dtype="float64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"selector {selector!r}: column {column!r} is not numeric ({exc})") from exc
    lo, hi = scale
    bad = ~np.isnan(score) & ((score < lo - SCALE_SLACK) | (score > hi + SCALE_SLACK) | ~np.isfinite(score))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"selector {selector!r}: row {ids[i]!r}, field {column!r} = {score[i]} is outside the "
                         f"rating scale [{lo:g}, {hi:g}] ({int(bad.sum())} such rows)")
    frame = pd.DataFrame({"id": ids, "score": score})
    frame = frame[frame["score"].to_numpy() >= threshold]  # NaN compares False: unscored rows drop out
    frame = frame.sort_values(["score", "id"], ascending=[False, True], kind="mergesort")
    return frame["id"].head(budget).tolist()
