"""InstructionGPT-4 selection (Wei et al. 2023): the top-m rows by the trained selector's score.

The score comes from the ``instruction_gpt4`` scorer (``scoring/instruction_gpt4.py``): a small network trained so
that the mean score of a subset's rows predicts the subset's quality (the standardised negative evaluation loss of
the model fine-tuned on it); higher is better. The paper keeps the 200 highest-scored multimodal examples; here the
number is the selection budget. Rows without a finite score are never selected; ties are broken by ascending id.

Registered selector: ``instruction_gpt4`` (reads ``id``, ``instruction_gpt4_score``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns
from instsel_assets.selection.threshold import numeric_values, ranked

INSTRUCTION_GPT4_READS = ("id", "instruction_gpt4_score")


@register_selector(
    "instruction_gpt4",
    family="metric-set",
    paper="Wei et al. 2023, 'InstructionGPT-4: A 200-Instruction Paradigm for Fine-Tuning MiniGPT-4' (text form)",
    summary="The budget rows with the highest score of the trained InstructionGPT-4 selector (top-m), ties by id; "
            "unscored rows are never selected.",
    reads=INSTRUCTION_GPT4_READS,
)
def select_instruction_gpt4(candidates: pd.DataFrame, budget: int, *, seed: int = 0, **params) -> list[str]:
    """The ``budget`` ids with the highest finite ``instruction_gpt4_score``, best first, ties by ascending id.
    ``seed`` is unused. Fewer ids only when fewer rows have a score."""
    require_columns(candidates, INSTRUCTION_GPT4_READS, "instruction_gpt4")
    budget = check_budget(budget)
    if budget == 0 or len(candidates) == 0:
        return []
    values = numeric_values(candidates, "instruction_gpt4_score", "instruction_gpt4")
    keep = np.isfinite(values)
    ids = candidates["id"].astype(str).to_numpy()
    return ranked(ids[keep], values[keep], descending=True)["id"].head(budget).tolist()
