"""AlpaGasus selector: keep judge ratings >= 4.5 (0-5 scale), highest first, ties by id; fewer when few pass."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.selection.alpagasus_threshold import DEFAULT_THRESHOLD, select_alpagasus


def frame(scores: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"id": list(scores), "alpagasus_score": list(scores.values())})


SCORES = {"e": 4.9, "a": 4.5, "c": 4.7, "b": 4.7, "low": 4.49, "mid": 3.0, "nan": np.nan, "top": 5.0, "zero": 0.0}


def test_keeps_at_or_above_threshold_highest_first_ties_by_id():
    assert DEFAULT_THRESHOLD == 4.5
    assert select_alpagasus(frame(SCORES), 100) == ["top", "e", "b", "c", "a"]
    assert select_alpagasus(frame(SCORES), 2) == ["top", "e"]
    assert select_alpagasus(frame(SCORES), 100, threshold=0) == ["top", "e", "b", "c", "a", "low", "mid", "zero"]


def test_fewer_than_budget_and_empty_cases():
    assert select_alpagasus(frame({"x": 4.0}), 5) == []
    assert select_alpagasus(frame(SCORES), 0) == []
    assert select_alpagasus(frame(SCORES).iloc[:0], 3) == []
    shuffled = frame(SCORES).sample(frac=1.0, random_state=1)
    assert select_alpagasus(shuffled, 4, seed=9) == select_alpagasus(frame(SCORES), 4)


@pytest.mark.parametrize("bad", [float("nan"), "4.5", None, True, -0.1, 5.5])
def test_bad_threshold(bad):
    with pytest.raises(ValueError, match="threshold"):
        select_alpagasus(frame(SCORES), 3, threshold=bad)


def test_bad_scores_name_the_row_and_field():
    with pytest.raises(ValueError, match=r"row 'bad', field 'alpagasus_score' = 6\.0 is outside"):
        select_alpagasus(frame({"ok": 4.8, "bad": 6.0}), 3)
    with pytest.raises(ValueError, match=r"row 'neg', field 'alpagasus_score'"):
        select_alpagasus(frame({"neg": -1.0}), 3)  # the reference's "unparsable" marker is refused
    with pytest.raises(ValueError, match="not numeric"):
        select_alpagasus(pd.DataFrame({"id": ["a"], "alpagasus_score": ["high"]}), 3)
    with pytest.raises(ValueError, match=r"needs column\(s\) \['alpagasus_score'\]"):
        select_alpagasus(pd.DataFrame({"id": ["a"]}), 3)


def test_registered_as_a_powerful_llm_threshold_selector():
    info = registry.SELECTORS["alpagasus"]
    assert info.family == "powerful-llm" and info.fills_budget is False
    assert info.columns == ("id", "alpagasus_score") and info.fn is select_alpagasus
