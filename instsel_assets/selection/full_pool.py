"""The full-pool baseline (docs/METHODS.md, "Evaluation": internal comparison): every pool row, so the model
fine-tuned on it is "the same base model fine-tuned on the full pool" that a selected subset must beat.

It takes no budget: ``selection/plan.py`` declares it unbudgeted, so it has one partition (``full``) rather than
one per budget, and ``selected_subsets`` hands it the pool's size as its budget.

Registered selector: ``full_pool`` (reads ``id``).
"""

from __future__ import annotations

import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns


@register_selector(
    "full_pool",
    family="baseline",
    paper="The full pool (internal comparison of every method paper: AlpaGasus, Cherry LLM, DEITA)",
    summary="Every pool row, in pool order; the budget must cover the pool (its partition takes the pool's size).",
    reads=("id",),
)
def select_full_pool(candidates: pd.DataFrame, budget: int, *, seed: int = 0, **params) -> list[str]:
    """Every candidate id in candidate order. ``ValueError`` when ``budget`` is smaller than the pool: a full
    pool cut to a budget would be a different baseline, so it is refused rather than truncated."""
    require_columns(candidates, ("id",), "full_pool")
    budget = check_budget(budget)
    if budget < len(candidates):
        raise ValueError(f"full_pool keeps every row: budget {budget} is smaller than the pool ({len(candidates)} "
                         f"rows); it runs unbudgeted (selection/plan.py)")
    return candidates["id"].astype(str).tolist()
