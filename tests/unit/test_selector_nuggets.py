import numpy as np
import pandas as pd
import pytest

from instsel_assets.registry import SELECTORS
from instsel_assets.selection.nuggets_top import NUGGETS_READS, select_nuggets


@pytest.fixture()
def candidates():
    return pd.DataFrame({
        "id": ["a", "b", "c", "d", "e", "f", "g"],
        "golden_score": [0.5, 0.75, 0.5, np.nan, 0.75, 0.25, 0.5],
        "mean_loss_delta": [-0.10, 0.02, -0.30, -5.0, 0.02, -0.9, -0.10],
    })


def test_registered():
    info = SELECTORS["nuggets"]
    assert info.fn is select_nuggets and info.family == "trainable-llm"
    assert info.columns == NUGGETS_READS == ("id", "golden_score", "mean_loss_delta")


def test_highest_golden_first_ties_by_lower_delta_then_id(candidates):
    # b and e tie on both keys -> id; a, c, g tie on golden -> c has the lowest delta, a and g tie -> id
    assert select_nuggets(candidates, 6) == ["b", "e", "c", "a", "g", "f"]
    assert select_nuggets(candidates, 3) == ["b", "e", "c"]


def test_unscored_rows_are_never_selected(candidates):
    picked = select_nuggets(candidates, 100)
    assert "d" not in picked and len(picked) == 6


def test_min_golden_score_floor(candidates):
    assert select_nuggets(candidates, 100, min_golden_score=0.5) == ["b", "e", "c", "a", "g"]
    assert select_nuggets(candidates, 100, min_golden_score=0.8) == []
    for bad in (-0.1, 1.5, "0.5", True):
        with pytest.raises(ValueError, match="min_golden_score"):
            select_nuggets(candidates, 2, min_golden_score=bad)


def test_missing_delta_loses_a_tie():
    frame = pd.DataFrame({"id": ["x", "y"], "golden_score": [0.5, 0.5], "mean_loss_delta": [np.nan, 0.4]})
    assert select_nuggets(frame, 2) == ["y", "x"]


def test_random_pool_order_free_and_sorted():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": [f"r{i:03d}" for i in range(300)],
                          "golden_score": rng.integers(0, 11, 300) / 10,  # shares of 10 anchors: many ties
                          "mean_loss_delta": rng.normal(0, 0.2, 300)})
    picked = select_nuggets(frame, 40, seed=1)
    assert picked == select_nuggets(frame.sample(frac=1.0, random_state=3), 40, seed=2)
    chosen = frame.set_index("id").loc[picked]
    keys = list(zip(-chosen["golden_score"], chosen["mean_loss_delta"]))
    assert keys == sorted(keys)
    assert chosen["golden_score"].min() >= frame["golden_score"].nlargest(40).min()


def test_errors_and_empty(candidates):
    with pytest.raises(ValueError, match="'mean_loss_delta'"):
        select_nuggets(candidates.drop(columns=["mean_loss_delta"]), 2)
    with pytest.raises(ValueError, match="'golden_score'"):
        select_nuggets(candidates.drop(columns=["golden_score"]), 2)
    with pytest.raises(ValueError, match="budget"):
        select_nuggets(candidates, -1)
    assert select_nuggets(candidates, 0) == []
    assert select_nuggets(candidates.iloc[:0], 5) == []
