"""AlpaGasus threshold selection (Chen et al. 2023b, "AlpaGasus: Training a Better Alpaca with Fewer Data").

The judge template ``judge/templates/alpagasus.py`` writes ``alpagasus_score``, the judge's 0-5 accuracy
rating. The paper keeps the rows rated ``>= 4.5`` (about 9K of Alpaca's 52K; the reference
``rating/filter.py`` keeps ``score >= threshold`` with the default 4.5). Here the kept rows come highest score
first, ties broken by ascending ``id``, up to ``budget``; unscored (NaN) rows are never kept. Fewer than
``budget`` ids come back when fewer rows qualify (``fills_budget=False``).

Registered selector: ``alpagasus`` (reads ``id``, ``alpagasus_score``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns

DEFAULT_THRESHOLD = 4.5
SCALE = (0.0, 5.0)
_SLACK = 1e-6


def check_threshold(threshold) -> float:
    """The threshold as a float on the 0-5 scale; ``ValueError`` naming ``threshold`` otherwise."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    if not SCALE[0] <= float(threshold) <= SCALE[1]:
        raise ValueError(f"threshold must be in [{SCALE[0]:g}, {SCALE[1]:g}] (the rating scale), got {threshold}")
    return float(threshold)


@register_selector(
    "alpagasus",
    family="powerful-llm",
    paper="Chen et al. 2023b, AlpaGasus: Training a Better Alpaca with Fewer Data",
    summary="Keep rows whose judge accuracy rating (0-5) is >= threshold (4.5, the paper's), highest first.",
    reads=("id", "alpagasus_score"),
    fills_budget=False,
)
def select_alpagasus(candidates: pd.DataFrame, budget: int, *, seed: int = 0,
                     threshold: float = DEFAULT_THRESHOLD, **params) -> list[str]:
    """Up to ``budget`` ids with ``alpagasus_score >= threshold``, highest first, ties by id.

    ``seed`` is unused (the rule is deterministic). ``ValueError`` for a missing column, a bad ``budget`` or
    ``threshold``, or a score that is not a number in [0, 5] (naming the row id and field).
    """
    require_columns(candidates, ("id", "alpagasus_score"), "alpagasus")
    budget = check_budget(budget)
    threshold = check_threshold(threshold)
    if budget == 0 or len(candidates) == 0:
        return []
    ids = candidates["id"].astype(str).to_numpy()
    try:
        score = pd.to_numeric(candidates["alpagasus_score"], errors="raise").to_numpy(dtype="float64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"selector 'alpagasus': column 'alpagasus_score' is not numeric ({exc})") from exc
    lo, hi = SCALE
    bad = ~np.isnan(score) & ((score < lo - _SLACK) | (score > hi + _SLACK) | ~np.isfinite(score))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"selector 'alpagasus': row {ids[i]!r}, field 'alpagasus_score' = {score[i]} is outside "
                         f"the rating scale [{lo:g}, {hi:g}] ({int(bad.sum())} such rows)")
    frame = pd.DataFrame({"id": ids, "score": score})
    frame = frame[frame["score"].to_numpy() >= threshold]
    frame = frame.sort_values(["score", "id"], ascending=[False, True], kind="mergesort")
    return frame["id"].head(budget).tolist()
