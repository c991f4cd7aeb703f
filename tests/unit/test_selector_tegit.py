"""TEGIT acceptance selector: threshold, order, ties, budget, unscored rows, bad arguments."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.selection.tegit_accept import select_tegit


def candidates():
    return pd.DataFrame({
        "id": ["e", "a", "d", "b", "c", "f", "g"],
        "tegit_good_prob": [0.9, 0.7, 0.7, 0.5, 0.49, np.nan, 0.99],
        "other": [1, 2, 3, 4, 5, 6, 7],
    })


def test_keeps_accepted_rows_highest_first_ties_by_id():
    # c (0.49) is below the boundary and f (NaN, no assistant turn) is never accepted;
    # b sits exactly on the default threshold 0.5 and is accepted (>=).
    assert select_tegit(candidates(), 100) == ["g", "e", "a", "d", "b"]


def test_budget_cuts_the_most_confident_first():
    assert select_tegit(candidates(), 3) == ["g", "e", "a"]
    assert select_tegit(candidates(), 0) == []


def test_threshold_parameter():
    assert select_tegit(candidates(), 100, threshold=0.8) == ["g", "e"]
    assert select_tegit(candidates(), 100, threshold=0.0) == ["g", "e", "a", "d", "b", "c"]
    assert select_tegit(candidates(), 100, threshold=1.0) == []


def test_input_order_does_not_matter():
    frame = candidates()
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert select_tegit(shuffled, 100) == select_tegit(frame, 100)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, math.nan, "0.5", True])
def test_bad_threshold_is_named(threshold):
    with pytest.raises(ValueError, match="threshold"):
        select_tegit(candidates(), 3, threshold=threshold)


def test_bad_budget_and_missing_column():
    with pytest.raises(ValueError, match="budget"):
        select_tegit(candidates(), -1)
    with pytest.raises(ValueError, match="tegit_good_prob"):
        select_tegit(candidates().drop(columns=["tegit_good_prob"]), 3)


def test_empty_candidates():
    assert select_tegit(candidates().iloc[:0], 5) == []


def test_registered_as_trainable_llm_selector():
    info = registry.SELECTORS["tegit"]
    assert info.family == "trainable-llm"
    assert info.columns == ("id", "tegit_good_prob")
    assert "TeGit" in info.paper
    assert info.fn is select_tegit
