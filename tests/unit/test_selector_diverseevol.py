"""DiverseEvol selector: lowest ranks first, unranked rows never chosen, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.selection.diverseevol_rank import select_diverseevol


def candidates():
    # scorer output shape: int64 ranks, -1 for rows the growth never added; pool order is not rank order
    return pd.DataFrame({
        "id": ["a", "b", "c", "d", "e", "f"],
        "diverseevol_rank": np.array([3, -1, 0, 2, -1, 1], dtype=np.int64),
        "diverseevol_round": np.array([1, -1, 0, 1, -1, 0], dtype=np.int64),
    })


def test_lowest_ranks_in_rank_order():
    assert select_diverseevol(candidates(), 4) == ["c", "f", "d", "a"]
    assert select_diverseevol(candidates(), 2) == ["c", "f"]  # a prefix of the growth
    assert select_diverseevol(candidates(), 0) == []
    assert select_diverseevol(candidates(), 2, seed=99) == ["c", "f"]


def test_float_ranks_with_nan_from_storage():
    cand = candidates()
    cand["diverseevol_rank"] = [3.0, np.nan, 0.0, 2.0, np.nan, 1.0]
    assert select_diverseevol(cand, 4) == ["c", "f", "d", "a"]


def test_budget_above_ranked_rows_names_the_scorer_budget():
    with pytest.raises(ValueError, match=r"budget 5 .* 4 ranked.*scorer's `budget` config to at least 5"):
        select_diverseevol(candidates(), 5)
    with pytest.raises(ValueError, match="0 ranked"):
        select_diverseevol(candidates().iloc[:0], 1)


def test_bad_input():
    with pytest.raises(ValueError, match="diverseevol_rank"):
        select_diverseevol(candidates()[["id"]], 2)
    with pytest.raises(ValueError, match="budget"):
        select_diverseevol(candidates(), -1)
    dup = candidates()
    dup.loc[0, "diverseevol_rank"] = 0
    with pytest.raises(ValueError, match=r"not unique.*\['a', 'c'\]"):
        select_diverseevol(dup, 2)


def test_registered_as_trainable_llm_selector():
    info = registry.SELECTORS["diverseevol"]
    assert info.family == "trainable-llm"
    assert info.columns == ("id", "diverseevol_rank")
    assert info.fn is select_diverseevol
    registry.load_all()
    assert registry.get_selector("diverseevol").fn is select_diverseevol
    assert registry.get_scorer("diverseevol").columns == ("diverseevol_rank", "diverseevol_round")
