"""Highest prompt uncertainty first (Active Instruction Tuning, Kung et al. 2023).

The paper trains on the tasks whose prompt uncertainty is highest: the model's likelihood of the answer
moves most when the instruction is perturbed, so the model has not yet learnt to follow that kind of
instruction. The scores come from the ``prompt_uncertainty`` scorer (``scoring/prompt_uncertainty.py``).

Two levels:
- ``level="example"`` (default): rows by their own ``prompt_uncertainty``, highest first;
- ``level="task"``: the paper's unit. Rows by ``task_prompt_uncertainty`` (the mean over the rows of their
  task), highest first, so whole tasks come in one after the other; within a task (or between tasks of
  equal uncertainty) by the row's own uncertainty, highest first. A budget that ends inside a task takes
  that task's most uncertain rows.

Ties are broken by ascending ``id``. Rows without a finite ``prompt_uncertainty`` (no assistant turn: nothing
to train on) are not eligible at either level.

Registered selector: ``prompt_uncertainty`` (reads ``id``, ``prompt_uncertainty``, and
``task_prompt_uncertainty`` at the task level).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns

LEVELS = ("example", "task")


@register_selector(
    "prompt_uncertainty",
    family="trainable-llm",
    paper="Kung et al. 2023, 'Active Instruction Tuning' (prompt uncertainty)",
    summary="Highest prompt uncertainty first, per example or per task (task_prompt_uncertainty, then the "
            "row's own uncertainty), ties by id.",
    reads=("id", "prompt_uncertainty", "task_prompt_uncertainty"),
)
def select_prompt_uncertainty(candidates: pd.DataFrame, budget: int, *, seed: int = 0, level: str = "example",
                              **params) -> list[str]:
    """The ``budget`` most prompt-uncertain ids, in selection order (see the module docstring).

    ``level``: ``"example"`` or ``"task"``. ``seed`` is unused. Returns fewer than ``budget`` ids only
    when fewer rows are eligible.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {list(LEVELS)}, got {level!r}")
    columns = ("id", "prompt_uncertainty") + (("task_prompt_uncertainty",) if level == "task" else ())
    require_columns(candidates, columns, "prompt_uncertainty")
    budget = check_budget(budget)
    if budget == 0 or len(candidates) == 0:
        return []
    row = pd.to_numeric(candidates["prompt_uncertainty"], errors="raise").to_numpy(dtype="float64")
    frame = pd.DataFrame({"id": candidates["id"].astype(str).to_numpy(), "row": row})
    keys, ascending = ["row", "id"], [False, True]
    eligible = np.isfinite(row)
    if level == "task":
        task = pd.to_numeric(candidates["task_prompt_uncertainty"], errors="raise").to_numpy(dtype="float64")
        frame["task"] = task
        keys, ascending = ["task", "row", "id"], [False, False, True]
        eligible &= np.isfinite(task)
    frame = frame[eligible].sort_values(keys, ascending=ascending, kind="mergesort")
    return frame["id"].head(budget).tolist()
