"""Tree-Instruct selector: keep rows whose semantic tree has >= min_nodes nodes, largest first."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.selection.tree_instruct_threshold import DEFAULT_MIN_NODES, select_tree_instruct


def frame(nodes: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"id": list(nodes), "tree_nodes": list(nodes.values())})


NODES = {"big": 25, "b": 12, "a": 12, "edge": 10, "small": 9, "one": 1, "unparsed": np.nan}


def test_threshold_largest_first_ties_by_id():
    assert DEFAULT_MIN_NODES == 10
    assert select_tree_instruct(frame(NODES), 100) == ["big", "a", "b", "edge"]
    assert select_tree_instruct(frame(NODES), 2) == ["big", "a"]
    assert select_tree_instruct(frame(NODES), 100, min_nodes=1) == ["big", "a", "b", "edge", "small", "one"]
    assert select_tree_instruct(frame(NODES), 100, min_nodes=30) == []


def test_nullable_integer_column_and_empty_cases():
    nodes = pd.DataFrame({"id": ["x", "y"], "tree_nodes": pd.array([11, pd.NA], dtype="Int64")})
    assert select_tree_instruct(nodes, 5) == ["x"]
    assert select_tree_instruct(frame(NODES), 0) == []


def test_errors():
    with pytest.raises(ValueError, match="min_nodes"):
        select_tree_instruct(frame(NODES), 3, min_nodes=0)
    with pytest.raises(ValueError, match=r"row 'frac', field 'tree_nodes' = 2\.5"):
        select_tree_instruct(frame({"frac": 2.5}), 3)
    with pytest.raises(ValueError, match=r"row 'zero', field 'tree_nodes'"):
        select_tree_instruct(frame({"zero": 0}), 3)
    with pytest.raises(ValueError, match="not numeric"):
        select_tree_instruct(pd.DataFrame({"id": ["a"], "tree_nodes": ["many"]}), 3)


def test_registered():
    info = registry.SELECTORS["tree_instruct"]
    assert info.family == "powerful-llm" and info.fills_budget is False
    assert info.columns == ("id", "tree_nodes") and info.fn is select_tree_instruct
