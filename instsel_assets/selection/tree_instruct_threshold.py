"""Tree-Instruct complexity threshold (Zhao et al. 2023, "A Preliminary Study of the Intrinsic Relationship between
Complexity and Alignment").

The judge template ``judge/templates/tree_instruct.py`` writes ``tree_nodes``, the number of nodes of the
instruction's semantic tree. The paper's finding is that more complex instructions (larger trees: it adds 3, 6
or 10 nodes) align better; it generates harder instructions rather than selecting, so the selection rule here is
the survey's "threshold on complexity": keep the rows with ``tree_nodes >= min_nodes``, largest trees first, ties
broken by ascending ``id``, up to ``budget``. ``min_nodes`` defaults to 10, a project choice (the paper's largest
addition is 10 nodes; it sets no selection threshold). Unscored rows are never kept; fewer than
``budget`` ids come back when fewer rows qualify (``fills_budget=False``). ``seed`` is unused.

Registered selector: ``tree_instruct`` (reads ``id``, ``tree_nodes``).
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns

DEFAULT_MIN_NODES = 10


@register_selector(
    "tree_instruct",
    family="powerful-llm",
    paper="Zhao et al. 2023, A Preliminary Study of the Intrinsic Relationship between Complexity and Alignment "
          "(Tree-Instruct)",
    summary="Keep rows whose instruction's semantic tree has >= min_nodes nodes (10), largest first.",
    reads=("id", "tree_nodes"),
    fills_budget=False,
)
def select_tree_instruct(candidates: pd.DataFrame, budget: int, *, seed: int = 0,
                         min_nodes: int = DEFAULT_MIN_NODES, **params) -> list[str]:
    """Up to ``budget`` ids with ``tree_nodes >= min_nodes``, largest first, ties by id.

    ``ValueError`` for a missing column, a bad ``budget`` or ``min_nodes``, or a node count that is not a
    positive whole number (naming the row id and field).
    """
    require_columns(candidates, ("id", "tree_nodes"), "tree_instruct")
    budget = check_budget(budget)
    if isinstance(min_nodes, bool) or not isinstance(min_nodes, numbers.Integral) or min_nodes < 1:
        raise ValueError(f"min_nodes must be a positive integer, got {min_nodes!r}")
    if budget == 0 or len(candidates) == 0:
        return []
    ids = candidates["id"].astype(str).to_numpy()
    try:
        nodes = pd.to_numeric(candidates["tree_nodes"], errors="raise").to_numpy(dtype="float64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"selector 'tree_instruct': column 'tree_nodes' is not numeric ({exc})") from exc
    bad = ~np.isnan(nodes) & (~np.isfinite(nodes) | (nodes < 1) | (nodes != np.round(nodes)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"selector 'tree_instruct': row {ids[i]!r}, field 'tree_nodes' = {nodes[i]} is not a "
                         f"positive whole node count ({int(bad.sum())} such rows)")
    frame = pd.DataFrame({"id": ids, "nodes": nodes})
    frame = frame[frame["nodes"].to_numpy() >= min_nodes]
    frame = frame.sort_values(["nodes", "id"], ascending=[False, True], kind="mergesort")
    return frame["id"].head(budget).tolist()
