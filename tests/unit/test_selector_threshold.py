import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.registry import SELECTORS
from instsel_assets.selection.threshold import select_threshold


@pytest.fixture()
def candidates():
    return pd.DataFrame(
        {
            "id": ["e", "a", "d", "b", "c", "f", "g"],
            "score": [1.0, 3.0, 3.0, 0.5, 2.0, np.nan, 2.5],
            "text": ["x"] * 7,
        }
    )


def test_registered_with_the_column_from_its_params():
    info = SELECTORS["threshold"]
    assert info.fn is select_threshold and info.family == "metric-set"
    assert info.fills_budget is False
    assert info.columns == ("id",)
    assert info.columns_read({"column": "response_ppl", "op": "<", "value": 20}) == ("id", "response_ppl")
    assert info.columns_read({}) == ("id",)
    assert info.as_dict()["columns_from_params"] is True
    assert registry.get_selector("random").as_dict()["columns_from_params"] is False


@pytest.mark.parametrize(
    ("op", "value", "descending", "expected"),
    [
        (">=", 2.0, True, ["a", "d", "g", "c"]),
        (">", 2.0, True, ["a", "d", "g"]),
        ("<=", 1.0, True, ["e", "b"]),
        ("<", 1.0, True, ["b"]),
        (">=", 2.0, False, ["c", "g", "a", "d"]),  # smallest first; the tie a/d stays by id
        ("<=", 2.5, False, ["b", "e", "c", "g"]),
    ],
)
def test_keeps_the_rows_that_pass_best_first_ties_by_id(candidates, op, value, descending, expected):
    assert select_threshold(candidates, 10, column="score", op=op, value=value, descending=descending) == expected


def test_at_most_budget_and_fewer_when_fewer_pass(candidates):
    assert select_threshold(candidates, 2, column="score", op=">=", value=2.0) == ["a", "d"]
    assert select_threshold(candidates, 0, column="score", op=">=", value=2.0) == []
    assert select_threshold(candidates, 10, column="score", op=">", value=3.0) == []
    assert select_threshold(candidates.iloc[:0], 5, column="score", op=">", value=0) == []


def test_nan_never_passes(candidates):
    kept = select_threshold(candidates, 10, column="score", op=">", value=-1e9)
    assert "f" not in kept and len(kept) == 6
    assert "f" not in select_threshold(candidates, 10, column="score", op="<", value=1e9)


def test_nullable_and_integer_columns():
    frame = pd.DataFrame({"id": ["a", "b", "c"], "n": pd.array([3, None, 5], dtype="Int64")})
    assert select_threshold(frame, 5, column="n", op=">=", value=3) == ["c", "a"]
    flags = pd.DataFrame({"id": ["a", "b", "c"], "ok": [True, False, True]})
    assert select_threshold(flags, 5, column="ok", op=">=", value=1) == ["a", "c"]


def test_independent_of_row_order_and_seed(candidates):
    shuffled = candidates.sample(frac=1.0, random_state=3)
    for descending in (True, False):
        assert (select_threshold(shuffled, 3, seed=7, column="score", op=">", value=0.7, descending=descending)
                == select_threshold(candidates, 3, seed=0, column="score", op=">", value=0.7, descending=descending))


def test_errors(candidates):
    with pytest.raises(ValueError, match=r"needs column\(s\) \['missing'\]"):
        select_threshold(candidates, 2, column="missing", op=">=", value=1)
    with pytest.raises(ValueError, match="parameter 'column'"):
        select_threshold(candidates, 2, op=">=", value=1)
    with pytest.raises(ValueError, match=r"parameter 'op' must be one of \['<', '<=', '>', '>='\], got '=='"):
        select_threshold(candidates, 2, column="score", op="==", value=1)
    with pytest.raises(ValueError, match="parameter 'value' must be a finite number, got None"):
        select_threshold(candidates, 2, column="score", op=">=")
    with pytest.raises(ValueError, match="parameter 'value'"):
        select_threshold(candidates, 2, column="score", op=">=", value=float("nan"))
    with pytest.raises(ValueError, match="parameter 'value'"):
        select_threshold(candidates, 2, column="score", op=">=", value="3")
    with pytest.raises(ValueError, match="parameter 'descending'"):
        select_threshold(candidates, 2, column="score", op=">=", value=1, descending="false")
    with pytest.raises(ValueError, match="column 'text' is not numeric"):
        select_threshold(candidates, 2, column="text", op=">=", value=1)
    with pytest.raises(ValueError, match="budget"):
        select_threshold(candidates, -1, column="score", op=">=", value=1)
