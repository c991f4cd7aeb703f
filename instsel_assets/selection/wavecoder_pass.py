"""WaveCoder discriminator filter (Yu et al. 2023, "WaveCoder: Widespread And Versatile Enhanced Instruction
Tuning with Refined Data Generation").

The judge template ``judge/templates/wavecoder.py`` writes ``wavecoder_pass``: True when a code instruction meets
every requirement of its task type. The paper keeps what the discriminator accepts (the reference keeps a
sample when the overall answer is not "no"). Here the rows with ``wavecoder_pass`` True are kept; rows that
failed, were not judged (non-code rows) or whose reply was unparsable (None/NaN) are not. When more rows pass
than ``budget``, ``budget`` of them are drawn uniformly without replacement with ``numpy.random.default_rng(seed)``
(in draw order; the discriminator gives no ranking among passing rows); otherwise all passing rows come back in
candidate order, fewer than ``budget`` when fewer pass (``fills_budget=False``).

Registered selector: ``wavecoder`` (reads ``id``, ``wavecoder_pass``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns


def _flag(value, row_id: str) -> bool:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return False
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"selector 'wavecoder': row {row_id!r}, field 'wavecoder_pass' = {value!r} is not a bool")


@register_selector(
    "wavecoder",
    family="powerful-llm",
    paper="Yu et al. 2023, WaveCoder: Widespread And Versatile Enhanced Instruction Tuning with Refined Data "
          "Generation",
    summary="Keep the code rows the discriminator passes on every requirement of their task type (a seeded sample "
            "of them when more pass than the budget).",
    reads=("id", "wavecoder_pass"),
    fills_budget=False,
)
def select_wavecoder(candidates: pd.DataFrame, budget: int, *, seed: int = 0, **params) -> list[str]:
    """The passing ids (module docstring). ``ValueError`` for a missing column, a bad ``budget`` or a
    ``wavecoder_pass`` value that is not a bool (naming the row id and field)."""
    require_columns(candidates, ("id", "wavecoder_pass"), "wavecoder")
    budget = check_budget(budget)
    if budget == 0 or len(candidates) == 0:
        return []
    ids = candidates["id"].astype(str).tolist()
    passed = [i for i, (row_id, v) in enumerate(zip(ids, candidates["wavecoder_pass"].tolist())) if _flag(v, row_id)]
    if len(passed) <= budget:
        return [ids[i] for i in passed]
    picks = np.random.default_rng(seed).choice(len(passed), size=budget, replace=False)
    return [ids[passed[k]] for k in picks]
