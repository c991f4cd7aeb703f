"""DiverseEvol selection (Wu et al. 2023): the first ``budget`` rows in the order the iterative growth added them.

The work is done by the ``diverseevol`` scorer (``scoring/diverseevol.py``), which grows a subset round by
round and writes ``diverseevol_rank`` (0-based order of addition, ``-1`` for rows never added). Taking
the lowest ranks gives a prefix of that growth: the random start, then each round's k-center picks. A
budget smaller than the scorer's is therefore the subset the growth had at that size (the paper reports
every intermediate round this way), with the last round possibly cut short.

Registered selector: ``diverseevol`` (reads ``id``, ``diverseevol_rank``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns


@register_selector(
    "diverseevol",
    family="trainable-llm",
    paper="Wu et al. 2023, Self-Evolved Diverse Data Sampling for Efficient Instruction Tuning (DiverseEvol)",
    summary="The budget rows added first by DiverseEvol's iterative growth (lowest diverseevol_rank).",
    reads=("id", "diverseevol_rank"),
)
def select_diverseevol(candidates: pd.DataFrame, budget: int, *, seed: int = 0, **params) -> list[str]:
    """The ``budget`` ids with the lowest non-negative ``diverseevol_rank``, in rank order.

    ``seed`` is unused (the randomness is in the scorer). Rows with a negative or missing rank were never
    added by the scorer and are never selected. Raises ``ValueError`` when fewer rows are ranked than
    ``budget`` (the scorer's own ``budget`` was smaller, or the pool had too few eligible rows) and when
    two rows share a rank.
    """
    require_columns(candidates, ("id", "diverseevol_rank"), "diverseevol")
    budget = check_budget(budget)
    if budget == 0:
        return []
    rank = pd.to_numeric(candidates["diverseevol_rank"], errors="raise").to_numpy(dtype="float64")
    ranked = np.isfinite(rank) & (rank >= 0)
    n_ranked = int(ranked.sum())
    if n_ranked < budget:
        raise ValueError(
            f"selector 'diverseevol': budget {budget} asks for more rows than the {n_ranked} ranked by the "
            f"diverseevol scorer (of {len(candidates)} candidates); raise the scorer's `budget` config to at "
            f"least {budget} and re-run it, or lower the selection budget")
    ids = candidates["id"].astype(str).to_numpy()[ranked]
    order = rank[ranked]
    duplicated = pd.Series(order).duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise ValueError(f"selector 'diverseevol': diverseevol_rank is not unique; ids sharing a rank: "
                         f"{ids[duplicated][:5].tolist()}")
    picks = np.argsort(order, kind="stable")[:budget]
    return [str(i) for i in ids[picks]]
