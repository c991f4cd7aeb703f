"""Lowest response perplexity: the single-indicator baseline of the perplexity indicator.

InstructMining (Cao et al. 2023) does not select by perplexity alone: it fits a linear rule over several
indicators (perplexity among them) to the evaluation loss of models fine-tuned on random subsets, and
selects by the fitted rule. This selector keeps perplexity as the only indicator, lower is better
(the reference model finds the response fluent and expected for its instruction), so that the
contribution of the fitted rule can be measured against it.

The score comes from the ``response_perplexity`` scorer (``scoring/perplexity.py``).

Registered selector: ``perplexity`` (reads ``id``, ``response_ppl``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns


def _check_max_ppl(max_ppl) -> float | None:
    if max_ppl is None:
        return None
    if isinstance(max_ppl, bool) or not isinstance(max_ppl, numbers.Real) or math.isnan(max_ppl) or max_ppl <= 0:
        raise ValueError(f"max_ppl must be None or a positive number, got {max_ppl!r}")
    return float(max_ppl)


@register_selector(
    "perplexity",
    family="metric-set",
    paper="Cao et al. 2023, 'Instruction Mining' (perplexity indicator, used alone as a baseline)",
    summary="The lowest-perplexity rows (response_ppl), ties by id; rows without a finite perplexity or "
            "above the optional max_ppl bound are not eligible.",
    reads=("id", "response_ppl"),
)
def select_lowest_perplexity(candidates: pd.DataFrame, budget: int, *, seed: int = 0,
                             max_ppl: float | None = None, **params) -> list[str]:
    """The ``budget`` ids with the lowest finite ``response_ppl``, lowest first.

    ``max_ppl`` (default None: no bound) excludes rows with ``response_ppl > max_ppl``. Ties are broken
    by ascending ``id`` so the result does not depend on row order; ``seed`` is unused. Returns fewer
    than ``budget`` ids only when fewer rows are eligible.
    """
    require_columns(candidates, ("id", "response_ppl"), "perplexity")
    budget = check_budget(budget)
    bound = _check_max_ppl(max_ppl)
    if budget == 0 or len(candidates) == 0:
        return []
    ppl = pd.to_numeric(candidates["response_ppl"], errors="raise").to_numpy(dtype="float64")
    frame = pd.DataFrame({"id": candidates["id"].astype(str).to_numpy(), "ppl": ppl})
    keep = np.isfinite(ppl)
    if bound is not None:
        keep &= ppl <= bound
    frame = frame[keep].sort_values(["ppl", "id"], ascending=[True, True], kind="mergesort")
    return frame["id"].head(budget).tolist()
