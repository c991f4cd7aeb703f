"""InsTag complexity-first diverse sampling (Lu et al. 2023, "#InsTag", Algorithm 1).

Rule: sort the rows by their number of tags (complexity) descending. Then passes: each pass starts with an
empty set of covered tags and walks down the remaining rows; a row is added when it brings at least one tag
that the pass has not covered yet (its tags join the covered set). A pass ends when the budget is reached or
when every tag of the pool is covered (the algorithm's ``|T_B| = |T|`` break); the next pass starts again from
the most complex remaining row. Passes repeat until ``budget`` rows (the paper's N = 6K) are selected.

The tags are read from ``instag_tags`` as stored: run ``judge/instag_normalize.normalize_tag_column`` on the
pool first so that complexity and coverage are counted on normalised tags, as in the paper. Each row's tags
count once each. Ties in complexity are broken by ascending ``id`` (the paper does not say). Rows without tags
(unparsable or unjudged) are never selected, so fewer than ``budget`` ids come back when fewer rows have tags
(``fills_budget=False``). ``seed`` is unused.

Registered selector: ``instag`` (reads ``id``, ``instag_tags``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns


def _tags(value, row_id: str) -> frozenset[str]:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return frozenset()  # pd.NA: how DuckDB returns a NULL list
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"selector 'instag': row {row_id!r}, field 'instag_tags' must be a list of tags, "
                         f"got {type(value).__name__}")
    tags = list(value)
    bad = [t for t in tags if not isinstance(t, str)]
    if bad:
        raise ValueError(f"selector 'instag': row {row_id!r}, field 'instag_tags' holds a non-string tag {bad[0]!r}")
    return frozenset(t for t in tags if t.strip())


def complexity_first_order(tag_sets: list[frozenset[str]], order: list[int], budget: int) -> list[int]:
    """Indices picked by Algorithm 1 from the rows ``order`` (already sorted by complexity)."""
    universe = frozenset().union(*tag_sets) if tag_sets else frozenset()
    remaining = [i for i in order if tag_sets[i]]
    picks: list[int] = []
    while remaining and len(picks) < budget:
        covered: set[str] = set()
        left: list[int] = []
        for pos, i in enumerate(remaining):
            if len(picks) >= budget or len(covered) == len(universe):
                left.extend(remaining[pos:])
                break
            if tag_sets[i] - covered:
                picks.append(i)
                covered |= tag_sets[i]
            else:
                left.append(i)
        remaining = left
    return picks


@register_selector(
    "instag",
    family="powerful-llm",
    paper="Lu et al. 2023, #InsTag: Instruction Tagging for Analyzing Supervised Fine-tuning of LLMs",
    summary="Complexity-first diverse sampling: by tag count descending, add a row only if it brings a tag the "
            "current pass has not covered; passes repeat until the budget.",
    reads=("id", "instag_tags"),
    fills_budget=False,
)
def select_instag(candidates: pd.DataFrame, budget: int, *, seed: int = 0, **params) -> list[str]:
    """Complexity-first diverse sampling (module docstring), ids in selection order.

    ``ValueError`` for a missing column, a bad ``budget``, or a row whose ``instag_tags`` is not a list of
    strings (naming the row id and field).
    """
    require_columns(candidates, ("id", "instag_tags"), "instag")
    budget = check_budget(budget)
    if budget == 0 or len(candidates) == 0:
        return []
    ids = candidates["id"].astype(str).tolist()
    tag_sets = [_tags(v, i) for v, i in zip(candidates["instag_tags"].tolist(), ids)]
    n_tags = np.array([len(t) for t in tag_sets])
    frame = pd.DataFrame({"pos": np.arange(len(ids)), "n": n_tags, "id": ids})
    order = frame.sort_values(["n", "id"], ascending=[False, True], kind="mergesort")["pos"].tolist()
    return [ids[i] for i in complexity_first_order(tag_sets, order, budget)]
