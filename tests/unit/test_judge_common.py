"""Helpers shared by the judge templates: row access and the rating parser's edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from instsel_assets.judge.templates import _common as common
from instsel_assets.judge.types import ReplyParseError


def test_qa_pairs_one_per_answered_turn():
    row = {"id": "r", "conversations": np.array([
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "part 1"},
        {"role": "user", "content": "part 2"},
        {"role": "assistant", "content": "answer 1"},
        {"role": "assistant", "content": "orphan"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "  "},
        {"role": "user", "content": "q3"},
        {"role": "assistant", "content": "answer 3"},
    ], dtype=object)}
    assert common.qa_pairs(row) == [("part 1\n\npart 2", "answer 1"), ("q3", "answer 3")]
    assert common.user_query(row) == "part 1\n\npart 2\n\nq2\n\nq3"


def test_single_turn_prefers_flat_columns_and_accepts_series():
    row = pd.Series({"id": "s", "instruction": "Add.", "input": "2 and 3", "output": "5",
                     "conversations": [{"role": "user", "content": "Add.\n\n2 and 3"},
                                       {"role": "assistant", "content": "5"}]})
    assert common.single_turn(row) == ("Add.", "2 and 3", "5")
    row2 = {"id": "t", "instruction": None, "input": float("nan"), "output": None,
            "conversations": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    assert common.single_turn(row2) == ("Hi", "", "Hello")
    assert common.single_turn({"id": "u", "conversations": None}) is None


@pytest.mark.parametrize("row,match", [
    ({"id": "a", "conversations": "user: hi"}, r"row 'a', field 'conversations': expected a list"),
    ({"id": "b", "conversations": [{"role": "user"}]}, r"row 'b', field 'conversations': turn 0"),
    ({"id": "c", "conversations": [{"role": "user", "content": 5}]}, r"row 'c', field 'conversations': turn 0"),
    ({"id": "d", "instruction": 3, "output": "x", "conversations": []}, r"row 'd', field 'instruction'"),
])
def test_malformed_rows_name_the_row_and_field(row, match):
    with pytest.raises(ValueError, match=match):
        common.single_turn(row)


def test_parse_rating_range_and_labels():
    assert common.parse_rating("Rating: 3", 1, 5) == 3.0
    assert common.parse_rating("> **Final score:** 2.5", 0, 5) == 2.5
    with pytest.raises(ReplyParseError, match="outside"):
        common.parse_rating("6", 1, 5)
    with pytest.raises(ReplyParseError, match="not text"):
        common.parse_rating(4, 1, 5)
