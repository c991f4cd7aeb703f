"""InsTag selector: complexity-first diverse sampling (passes that each add rows bringing an uncovered tag)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.selection.instag_complexity_first import select_instag

TAGS = {
    "r1": ["a", "b", "c", "d"],
    "r2": ["a", "b", "c"],
    "r3": ["e", "f"],
    "r4": ["a", "e"],
    "r5": ["g"],
    "r6": ["a"],
    "r7": [],
    "r8": None,
}


def frame(tags: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame({"id": list(tags), "instag_tags": list(tags.values())})


def test_complexity_first_passes():
    # pass 1: r1 (a-d), r3 (e, f), r5 (g): every tag covered; pass 2: r2, r4 (brings e again); pass 3: r6
    assert select_instag(frame(TAGS), 100) == ["r1", "r3", "r5", "r2", "r4", "r6"]
    assert select_instag(frame(TAGS), 4) == ["r1", "r3", "r5", "r2"]
    assert select_instag(frame(TAGS), 1) == ["r1"]


def test_rows_without_tags_are_never_selected_and_duplicates_count_once():
    rows = {"x": ["a", "a", "a"], "y": ["b", "c"], "z": []}
    assert select_instag(frame(rows), 10) == ["y", "x"]  # y has 2 distinct tags, x has 1


def test_ties_by_id_numpy_arrays_and_order_independence():
    rows = {"b": np.array(["t1", "t2"], dtype=object), "a": ["t2", "t3"], "c": ("t4",)}
    assert select_instag(frame(rows), 10) == ["a", "b", "c"]
    shuffled = frame(TAGS).sample(frac=1.0, random_state=5)
    assert select_instag(shuffled, 100, seed=3) == select_instag(frame(TAGS), 100)
    assert select_instag(frame(TAGS), 0) == [] and select_instag(frame(TAGS).iloc[:0], 5) == []


def test_null_tags_as_duckdb_returns_them_are_no_tags():
    rows = pd.DataFrame({"id": ["a", "b", "c"], "instag_tags": pd.Series([["t1"], pd.NA, np.nan], dtype=object)})
    assert select_instag(rows, 3) == ["a"]


def test_errors_name_the_row_and_field():
    with pytest.raises(ValueError, match=r"row 'bad', field 'instag_tags' must be a list"):
        select_instag(frame({"ok": ["a"], "bad": "a, b"}), 3)
    with pytest.raises(ValueError, match=r"row 'bad', field 'instag_tags' holds a non-string tag 3"):
        select_instag(frame({"bad": ["a", 3]}), 3)
    with pytest.raises(ValueError, match=r"needs column\(s\) \['instag_tags'\]"):
        select_instag(pd.DataFrame({"id": ["a"]}), 3)


def test_registered():
    info = registry.SELECTORS["instag"]
    assert info.family == "powerful-llm" and info.fills_budget is False
    assert info.columns == ("id", "instag_tags") and info.fn is select_instag
