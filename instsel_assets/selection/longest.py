"""Longest-responses baseline (docs/METHODS.md, "Baselines every comparison needs"; Zhao et al. 2024
showed it is a strong one).

Registered selector: ``longest`` (reads ``id``, ``output_chars``).
"""

from __future__ import annotations

import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns


@register_selector(
    "longest",
    family="baseline",
    paper="Longest responses (length baseline; Zhao et al. 2024, 'Long Is More for Alignment')",
    summary="The rows with the longest responses (output_chars), ties broken by id.",
    reads=("id", "output_chars"),
)
def select_longest(candidates: pd.DataFrame, budget: int, *, seed: int = 0, **params) -> list[str]:
    """The ``budget`` rows with the largest ``output_chars``, longest first.

    Ties are broken by ascending ``id`` so the result does not depend on row order; ``seed`` is
    unused. Rows whose ``output_chars`` is missing (NaN) are not eligible.
    """
    require_columns(candidates, ("id", "output_chars"), "longest")
    budget = check_budget(budget)
    if budget == 0 or len(candidates) == 0:
        return []
    frame = pd.DataFrame(
        {
            "id": candidates["id"].astype(str).to_numpy(),
            "length": pd.to_numeric(candidates["output_chars"], errors="raise").to_numpy(dtype="float64"),
        }
    ).dropna(subset=["length"])
    frame = frame.sort_values(["length", "id"], ascending=[False, True], kind="mergesort")
    return frame["id"].head(budget).tolist()
