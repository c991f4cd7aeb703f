"""InstructMining selection (Cao et al. 2023): the rows of lowest predicted evaluation loss.

The score comes from the ``instruct_mining`` scorer (``scoring/instruct_mining.py``): the fitted linear rule
over the indicators, applied to each row, is the evaluation loss a model fine-tuned on data like that row is
predicted to reach; lower is better. The selector keeps the ``budget`` rows of lowest predicted loss (top-m), or,
with ``max_predicted_loss``, only rows at or below that threshold (the paper's rule used as a filter), lowest
first. The paper then searches the subset size with BlendSearch; here the size is the selection budget.

Rows without a finite score (an indicator missing) are never selected. Ties are broken by ascending id.

Registered selector: ``instruct_mining`` (reads ``id``, ``instruct_mining_score``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns
from instsel_assets.selection.threshold import numeric_values, ranked

INSTRUCT_MINING_READS = ("id", "instruct_mining_score")


@register_selector(
    "instruct_mining",
    family="metric-set",
    paper="Cao et al. 2023, 'Instruction Mining: When Data Mining Meets Large Language Model Finetuning'",
    summary="The rows of lowest predicted evaluation loss under the fitted InstructMining rule (top-m), optionally "
            "only those at or below max_predicted_loss; ties by id; unscored rows are never selected.",
    reads=INSTRUCT_MINING_READS,
    fills_budget=False,
)
def select_instruct_mining(candidates: pd.DataFrame, budget: int, *, seed: int = 0,
                           max_predicted_loss: float | None = None, **params) -> list[str]:
    """The ``budget`` ids with the lowest finite ``instruct_mining_score``, lowest first, ties by ascending id.

    ``max_predicted_loss`` (default None: no threshold) keeps only rows whose score is ``<=`` it, so fewer than
    ``budget`` ids come back when fewer pass. ``seed`` is unused (the rule is deterministic). ``ValueError`` for a
    missing or non-numeric score column, a threshold that is not a finite number, or a bad budget.
    """
    require_columns(candidates, INSTRUCT_MINING_READS, "instruct_mining")
    if max_predicted_loss is not None and (
            isinstance(max_predicted_loss, bool) or not isinstance(max_predicted_loss, numbers.Real)
            or not math.isfinite(float(max_predicted_loss))):
        raise ValueError(f"selector 'instruct_mining': max_predicted_loss must be None or a finite number, got "
                         f"{max_predicted_loss!r}")
    budget = check_budget(budget)
    if budget == 0 or len(candidates) == 0:
        return []
    values = numeric_values(candidates, "instruct_mining_score", "instruct_mining")
    keep = np.isfinite(values)
    if max_predicted_loss is not None:
        keep &= values <= float(max_predicted_loss)
    ids = candidates["id"].astype(str).to_numpy()
    return ranked(ids[keep], values[keep], descending=False)["id"].head(budget).tolist()
