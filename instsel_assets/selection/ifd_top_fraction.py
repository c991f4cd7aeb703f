"""IFD top-fraction selection (Cherry LLM, Li et al. 2023a; also Superfiltering, Li et al. 2024).

The IFD score itself is computed by a trainable-LLM scorer (``scoring/``); this selector applies
Cherry LLM's rule to the ``ifd`` column: rows with ``IFD >= 1`` (the instruction does not make the
answer easier to predict) and rows without a score are dropped, then the highest-IFD rows are
kept. The paper keeps the top 5% / 10%: :func:`top_fraction_budget` turns a fraction into a budget.

Registered selector: ``ifd`` (reads ``id``, ``ifd``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns

DEFAULT_FRACTION = 0.10


def top_fraction_budget(n_rows: int, fraction: float = DEFAULT_FRACTION) -> int:
    """``max(1, round(n_rows * fraction))`` (Python's round, half to even); 0 when ``n_rows`` is 0.

    ``fraction`` must be in (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    if n_rows == 0:
        return 0
    return max(1, round(n_rows * fraction))


@register_selector(
    "ifd",
    family="trainable-llm",
    paper="Li et al. 2023a, 'From Quantity to Quality' (Cherry LLM, IFD); Li et al. 2024 (Superfiltering)",
    summary="Drop IFD >= 1 and unscored rows, keep the highest-IFD rows (top 10% by default budget).",
    reads=("id", "ifd"),
    fills_budget=False,
)
def select_ifd(candidates: pd.DataFrame, budget: int, *, seed: int = 0, max_ifd: float = 1.0, **params) -> list[str]:
    """The ``budget`` highest-IFD ids among rows with a finite ``ifd < max_ifd`` (1.0), highest first.

    Ties are broken by ascending ``id``; ``seed`` is unused. Returns fewer than ``budget`` ids only
    when fewer rows are eligible.
    """
    require_columns(candidates, ("id", "ifd"), "ifd")
    budget = check_budget(budget)
    if budget == 0 or len(candidates) == 0:
        return []
    score = pd.to_numeric(candidates["ifd"], errors="raise").to_numpy(dtype="float64")
    frame = pd.DataFrame({"id": candidates["id"].astype(str).to_numpy(), "ifd": score})
    frame = frame[np.isfinite(frame["ifd"].to_numpy()) & (frame["ifd"].to_numpy() < max_ifd)]
    frame = frame.sort_values(["ifd", "id"], ascending=[False, True], kind="mergesort")
    return frame["id"].head(budget).tolist()
