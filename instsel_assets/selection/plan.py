"""The selections the pipeline runs: one partition of ``selected_subsets`` (and of the checkpoints
trained on them) per entry. This is the one place a user edits to add a selection.

Every selection gets the same budget, ``budget_fraction`` of the pool (10% by default: the
Cherry LLM setting), so the methods are compared at equal size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_BUDGET_FRACTION = 0.10


@dataclass(frozen=True)
class SelectionSpec:
    name: str  # partition key
    selector: str  # a registered selector (instsel methods)
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""


SELECTIONS: tuple[SelectionSpec, ...] = (
    SelectionSpec("ifd", "ifd", {}, "Cherry LLM: drop IFD >= 1, keep the highest IFD."),
    SelectionSpec("random", "random", {}, "Uniform random subset (seeded): the baseline every method must beat."),
    SelectionSpec("longest", "longest", {}, "Longest responses (characters): the length baseline."),
    SelectionSpec("kcenter_greedy", "kcenter_greedy", {},
                  "Farthest-first traversal on the MiniLM instruction embeddings (coreset)."),
)


def selection_names() -> list[str]:
    return [s.name for s in SELECTIONS]


def get_selection(name: str) -> SelectionSpec:
    for spec in SELECTIONS:
        if spec.name == name:
            return spec
    raise KeyError(f"no selection named {name!r}; declared: {selection_names()}")
