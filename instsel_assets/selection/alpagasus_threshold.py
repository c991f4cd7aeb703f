"""AlpaGasus threshold selection (Chen et al. 2023b, "AlpaGasus: Training a Better Alpaca with Fewer Data").

The judge template ``judge/templates/alpagasus.py`` writes ``alpagasus_score``, the judge's 0-5 accuracy
rating. The paper keeps the rows rated ``>= 4.5`` (about 9K of Alpaca's 52K; the reference
``rating/filter.py`` keeps ``score >= threshold`` with the default 4.5). Here the kept rows come highest score
first, ties broken by ascending ``id``, up to ``budget``; unscored (NaN) rows are never kept. Fewer than
``budget`` ids come back when fewer rows qualify (``fills_budget=False``).

Registered selector: ``alpagasus`` (reads ``id``, ``alpagasus_score``).
"""

from __future__ import annotations

import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.rating_threshold import check_rating_threshold, rated_at_least

DEFAULT_THRESHOLD = 4.5
SCALE = (0.0, 5.0)


def check_threshold(threshold) -> float:
    """The threshold as a float on the 0-5 scale; ``ValueError`` naming ``threshold`` otherwise."""
    return check_rating_threshold(threshold, SCALE)


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
    return rated_at_least(candidates, budget, selector="alpagasus", column="alpagasus_score",
                          threshold=threshold, scale=SCALE)
