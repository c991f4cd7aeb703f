"""Self-curation selector: keep ratings >= threshold (4.5 = the paper's A_5), highest first, ties by id."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.selection.self_curation_threshold import DEFAULT_THRESHOLD, select_self_curation


def frame(scores: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"id": list(scores), "self_curation_score": list(scores.values())})


SCORES = {"e": 4.9, "a": 4.5, "c": 4.7, "b": 4.7, "low": 4.49, "mid": 3.0, "nan": np.nan, "top": 5.0, "one": 1.0}


def test_keeps_at_or_above_threshold_highest_first_ties_by_id():
    assert DEFAULT_THRESHOLD == 4.5
    assert select_self_curation(frame(SCORES), 100) == ["top", "e", "b", "c", "a"]
    assert select_self_curation(frame(SCORES), 3) == ["top", "e", "b"]
    assert select_self_curation(frame(SCORES), 100, threshold=3.0) == ["top", "e", "b", "c", "a", "low", "mid"]
    assert select_self_curation(frame(SCORES), 100, threshold=1) == ["top", "e", "b", "c", "a", "low", "mid", "one"]
    assert select_self_curation(frame(SCORES), 100, threshold=5) == ["top"]


def test_fewer_than_budget_when_fewer_qualify_and_empty_cases():
    assert select_self_curation(frame({"x": 4.0, "y": 2.0}), 5) == []
    assert select_self_curation(frame(SCORES), 0) == []
    assert select_self_curation(frame(SCORES).iloc[:0], 10) == []
    assert select_self_curation(frame({"x": np.nan}), 10, threshold=1.0) == []


def test_input_order_and_seed_do_not_matter():
    shuffled = frame(SCORES).sample(frac=1.0, random_state=3)
    assert select_self_curation(shuffled, 4, seed=7) == select_self_curation(frame(SCORES), 4, seed=0)


def test_reads_only_the_declared_columns():
    info = registry.SELECTORS["self_curation"]
    extra = frame(SCORES).assign(digit_mass="not a number", conversations=None)
    assert select_self_curation(extra[list(info.columns)], 10) == select_self_curation(extra, 10)


def test_scores_at_the_ends_of_the_scale_tolerate_rounding():
    # accepted (no error), compared as they are: y is just below the threshold
    assert select_self_curation(frame({"x": 5.0000000001, "y": 0.9999999999}), 5, threshold=1.0) == ["x"]
    with pytest.raises(ValueError, match="outside the rating scale"):
        select_self_curation(frame({"x": 5.001}), 5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "4.5", None, True, 0.5, 5.5])
def test_bad_threshold_names_the_parameter(bad):
    with pytest.raises(ValueError, match="threshold"):
        select_self_curation(frame(SCORES), 3, threshold=bad)


def test_bad_scores_name_the_row_and_field():
    with pytest.raises(ValueError, match=r"row 'bad', field 'self_curation_score' = 7\.0 is outside"):
        select_self_curation(frame({"ok": 4.8, "bad": 7.0}), 3)
    with pytest.raises(ValueError, match="self_curation_score"):
        select_self_curation(frame({"ok": 4.8, "bad": np.inf}), 3)
    with pytest.raises(ValueError, match="not numeric"):
        select_self_curation(pd.DataFrame({"id": ["a"], "self_curation_score": ["high"]}), 3)
    with pytest.raises(ValueError, match=r"needs column\(s\) \['self_curation_score'\]"):
        select_self_curation(pd.DataFrame({"id": ["a"]}), 3)
    with pytest.raises(ValueError, match="budget"):
        select_self_curation(frame(SCORES), -1)


def test_registered_as_trainable_llm_selector():
    info = registry.SELECTORS["self_curation"]
    assert info.family == "trainable-llm" and info.kind == "selector"
    assert info.columns == ("id", "self_curation_score")
    assert "Backtranslation" in info.paper
    assert info.fn is select_self_curation
