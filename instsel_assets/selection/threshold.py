"""Generic threshold selector: keep the rows whose score column passes a comparison with a value.

The threshold form of the survey's "score, then select" (``S = {x | G(x) > tau}``, docs/METHODS.md eqs. 3-4
and 9), for any numeric column an asset computes: an indicator (``total_tokens``, ``output_chars``), an LM
score (``ifd``, ``response_ppl``), a judge rating (``lift_score``, ``tree_nodes``). A threshold on one score
then needs a selection entry, not a new selector; the method-specific selectors (``alpagasus``,
``self_curation``, ...) keep the rules and scales of their papers.

The kept rows come best first (``descending=True``: largest value first; ``False``: smallest first), ties
broken by ascending ``id`` so the result does not depend on row order, at most ``budget`` of them. A row whose
value is missing (NaN) never passes: an unscored row is not evidence of quality. Fewer than ``budget`` ids
come back when fewer rows pass (``fills_budget=False``).

Registered selector: ``threshold`` (reads ``id`` and the column its ``column`` parameter names).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns

COMPARISONS = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less}


def check_column(column, selector: str) -> str:
    """``column`` as a non-empty string; ``ValueError`` naming the ``column`` parameter otherwise."""
    if not isinstance(column, str) or not column:
        raise ValueError(f"selector {selector!r}: parameter 'column' must name a numeric column of the candidates, "
                         f"got {column!r}")
    return column


def check_descending(descending, selector: str) -> bool:
    """``descending`` as a bool; ``ValueError`` naming the parameter otherwise (a string such as "false" would
    otherwise be truthy)."""
    if not isinstance(descending, (bool, np.bool_)):
        raise ValueError(f"selector {selector!r}: parameter 'descending' must be true or false, got {descending!r}")
    return bool(descending)


def numeric_values(candidates: pd.DataFrame, column: str, selector: str) -> np.ndarray:
    """The values of ``column`` as float64, missing values as NaN; ``ValueError`` naming the column when it is
    absent or not numeric."""
    require_columns(candidates, ("id", column), selector)
    try:
        values = pd.to_numeric(candidates[column], errors="raise")
        return values.to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"selector {selector!r}: column {column!r} is not numeric ({exc})") from exc


def ranked(ids: np.ndarray, values: np.ndarray, *, descending: bool) -> pd.DataFrame:
    """``ids`` and ``values`` as a frame, best first (by value in the given direction), ties by ascending id."""
    frame = pd.DataFrame({"id": ids, "value": values})
    return frame.sort_values(["value", "id"], ascending=[not descending, True], kind="mergesort")


def column_from_params(params: Mapping[str, Any]) -> tuple[str, ...]:
    """The column a ``threshold`` or ``top_k`` call reads besides ``id``: its ``column`` parameter."""
    column = params.get("column")
    return (column,) if isinstance(column, str) and column else ()


@register_selector(
    "threshold",
    family="metric-set",
    paper="Survey eqs. 3-4 and 9 (Wang et al. 2024): S = {x | G(x) > tau}, on any score column",
    summary="Keep the rows whose `column` satisfies `op` `value` (>=, >, <=, <), best first by `column` "
            "(descending by default), ties by id; NaN never passes.",
    reads=("id",),
    fills_budget=False,
    reads_from_params=column_from_params,
)
def select_threshold(candidates: pd.DataFrame, budget: int, *, seed: int = 0, column: str | None = None,
                     op: str = ">=", value: float | None = None, descending: bool = True, **params) -> list[str]:
    """Up to ``budget`` ids whose ``column`` satisfies ``column <op> value``, best first, ties by id.

    ``op`` is one of ``>=``, ``>``, ``<=``, ``<``; ``value`` a finite number; ``descending`` orders the kept
    rows largest first (True) or smallest first (False), e.g. ``op="<"`` with ``descending=False`` for a
    perplexity ceiling. ``seed`` is unused (the rule is deterministic). ``ValueError`` for a missing or
    non-numeric column, an unknown ``op``, a ``value`` that is not a finite number, or a bad ``budget``.
    """
    column = check_column(column, "threshold")
    if not isinstance(op, str) or op not in COMPARISONS:
        raise ValueError(f"selector 'threshold': parameter 'op' must be one of {sorted(COMPARISONS)}, got {op!r}")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"selector 'threshold': parameter 'value' must be a finite number, got {value!r}")
    descending = check_descending(descending, "threshold")
    values = numeric_values(candidates, column, "threshold")
    budget = check_budget(budget)
    if budget == 0 or len(candidates) == 0:
        return []
    passes = COMPARISONS[op](values, float(value))  # NaN compares False: missing values never pass
    ids = candidates["id"].astype(str).to_numpy()
    frame = ranked(ids[passes], values[passes], descending=descending)
    return frame["id"].head(budget).tolist()
