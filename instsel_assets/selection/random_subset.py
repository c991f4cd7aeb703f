"""Random subset baseline (docs/METHODS.md, "Baselines every comparison needs").

Also holds the small argument checks every selector shares (:func:`check_budget`,
:func:`require_columns`).

Registered selector: ``random`` (reads ``id`` only).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector


def check_budget(budget: int) -> int:
    """The budget as an int; ``ValueError`` when negative or not an integer."""
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
        raise ValueError(f"budget must be an integer, got {budget!r}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    return int(budget)


def require_columns(candidates: pd.DataFrame, columns: Iterable[str], method: str) -> None:
    """``ValueError`` naming every column of ``columns`` missing from ``candidates``."""
    missing = [c for c in columns if c not in candidates.columns]
    if missing:
        raise ValueError(
            f"selector {method!r} needs column(s) {missing}; candidates have {list(candidates.columns)}"
        )


@register_selector(
    "random",
    family="baseline",
    paper="Random subset of the same size (the baseline of every method paper)",
    summary="Seeded uniform sample without replacement (numpy default_rng(seed)).",
    reads=("id",),
)
def select_random(candidates: pd.DataFrame, budget: int, *, seed: int = 0, **params) -> list[str]:
    """``min(budget, len(candidates))`` ids drawn uniformly without replacement, in draw order.

    Deterministic for a fixed ``seed`` and candidate order (``default_rng(seed).choice``).
    """
    require_columns(candidates, ("id",), "random")
    budget = check_budget(budget)
    n = len(candidates)
    m = min(budget, n)
    if m == 0:
        return []
    rng = np.random.default_rng(seed)
    picks = rng.choice(n, size=m, replace=False)
    ids = candidates["id"].astype(str).to_numpy()
    return [str(i) for i in ids[picks]]
