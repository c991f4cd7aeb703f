"""TEGIT acceptance (Chen et al. 2023c, TeGit): keep what the task discriminator accepts.

The discriminator itself is a trainable-LLM scorer (``scoring/tegit_discriminator.py``) that writes
``tegit_good_prob``, the probability that a row is a good training task. TeGit keeps the tasks its
discriminator accepts; here a row is accepted when ``tegit_good_prob >= threshold`` (0.5: the
classifier's decision boundary). Accepted rows are returned highest probability first, so a budget
smaller than the accepted set keeps the most confidently accepted ones. Rows without a probability
(NaN: no assistant turn, counted by the scorer) are never accepted.

Registered selector: ``tegit`` (reads ``id``, ``tegit_good_prob``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns

GOOD_PROB_COLUMN = "tegit_good_prob"
DEFAULT_THRESHOLD = 0.5


@register_selector(
    "tegit",
    family="trainable-llm",
    paper="Chen et al. 2023c, TeGit: Generating High-Quality Instruction-Tuning Data with Text-Grounded Task Design",
    summary="Keep the rows the task discriminator accepts (tegit_good_prob >= 0.5), highest probability first.",
    reads=("id", GOOD_PROB_COLUMN),
    fills_budget=False,
)
def select_tegit(candidates: pd.DataFrame, budget: int, *, seed: int = 0, threshold: float = DEFAULT_THRESHOLD,
                 **params) -> list[str]:
    """Up to ``budget`` ids of rows with a finite ``tegit_good_prob >= threshold``, highest first.

    Ties are broken by ascending ``id``; ``seed`` is unused. ``threshold`` must be a number in [0, 1].
    Returns fewer than ``budget`` ids when fewer rows are accepted.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not (
            math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be a probability in [0, 1], got {threshold!r}")
    require_columns(candidates, ("id", GOOD_PROB_COLUMN), "tegit")
    budget = check_budget(budget)
    if budget == 0 or len(candidates) == 0:
        return []
    prob = pd.to_numeric(candidates[GOOD_PROB_COLUMN], errors="raise").to_numpy(dtype="float64")
    frame = pd.DataFrame({"id": candidates["id"].astype(str).to_numpy(), "prob": prob})
    frame = frame[np.isfinite(frame["prob"].to_numpy()) & (frame["prob"].to_numpy() >= threshold)]
    frame = frame.sort_values(["prob", "id"], ascending=[False, True], kind="mergesort")
    return frame["id"].head(budget).tolist()
