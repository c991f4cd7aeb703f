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

import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.rating_threshold import check_rating_threshold, rated_at_least

DEFAULT_THRESHOLD = 4.5
RATING_RANGE = (1.0, 5.0)


def check_threshold(threshold) -> float:
    """The threshold as a float in [1, 5]; ``ValueError`` naming ``threshold`` otherwise."""
    return check_rating_threshold(threshold, RATING_RANGE)


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
    return rated_at_least(candidates, budget, selector="self_curation", column="self_curation_score",
                          threshold=threshold, scale=RATING_RANGE)
