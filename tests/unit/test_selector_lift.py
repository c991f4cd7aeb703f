"""LIFT selector: keep the rows of highest embedding row variance, then the best lift_score among them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.selection.lift_variance import row_variance, select_lift

# raw row variances: a 0, e 0.25, b 1, c 4, d 9
ROWS = {
    "a": ([0.0, 0.0, 0.0, 0.0], 9.0),
    "b": ([1.0, -1.0, 1.0, -1.0], 5.0),
    "c": ([2.0, -2.0, 2.0, -2.0], 7.0),
    "d": ([3.0, -3.0, 3.0, -3.0], 6.0),
    "e": ([0.5, -0.5, 0.5, -0.5], 10.0),
}


def frame(rows: dict[str, tuple[object, float]]) -> pd.DataFrame:
    return pd.DataFrame({"id": list(rows), "embedding": [e for e, _ in rows.values()],
                         "lift_score": [s for _, s in rows.values()]})


def test_variance_then_score_on_raw_embeddings():
    # 2 x budget = 4 rows by variance (d, c, b, e; a is dropped), then the 2 best scores
    assert select_lift(frame(ROWS), 2, pca_components=None) == ["e", "c"]
    assert select_lift(frame(ROWS), 2, pca_components=None, n_variance=2) == ["c", "d"]
    assert select_lift(frame(ROWS), 5, pca_components=None) == ["e", "a", "c", "d", "b"]
    assert select_lift(frame(ROWS), 1, pca_components=None, variance_factor=3.0) == ["c"]  # d, c, b kept
    assert select_lift(frame(ROWS), 1, pca_components=None, variance_factor=4.0) == ["e"]  # and e


def test_unscored_and_unembedded_rows():
    rows = dict(ROWS, c=([2.0, -2.0, 2.0, -2.0], np.nan), f=(None, 10.0))
    assert select_lift(frame(rows), 2, pca_components=None) == ["e", "d"]
    assert select_lift(frame({"x": (None, 5.0)}), 3) == []
    assert select_lift(frame(ROWS), 0) == []


def test_row_variance_after_pca():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    x[7] += 8.0  # an outlier: far from the centroid, highest variance along the components
    var = row_variance(x, 3)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    assert np.allclose(var, (centred @ vt[:3].T).var(axis=1))
    assert int(np.argmax(var)) == 7
    assert np.allclose(row_variance(x, None), x.var(axis=1))
    assert np.allclose(row_variance(x, 100), row_variance(x, 6))  # capped at min(n, d)
    rows = {f"r{i:02d}": (x[i].tolist(), 5.0 + (i == 7)) for i in range(40)}
    assert select_lift(frame(rows), 1, pca_components=3, n_variance=1) == ["r07"]


def test_ties_by_id():
    rows = {"b": ([1.0, -1.0], 5.0), "a": ([1.0, -1.0], 5.0)}
    assert select_lift(frame(rows), 2, pca_components=None) == ["a", "b"]


def test_errors_name_the_parameter_row_and_field():
    with pytest.raises(ValueError, match=r"row 'bad', field 'lift_score' = 12\.0"):
        select_lift(frame(dict(ROWS, bad=([1.0, 1.0, 1.0, 1.0], 12.0))), 2)
    with pytest.raises(ValueError, match="variance_factor"):
        select_lift(frame(ROWS), 2, variance_factor=0.5)
    with pytest.raises(ValueError, match="pca_components"):
        select_lift(frame(ROWS), 2, pca_components=0)
    with pytest.raises(ValueError, match="n_variance"):
        select_lift(frame(ROWS), 2, n_variance=-1)
    with pytest.raises(ValueError, match="field 'embedding'"):
        select_lift(frame({"a": ([1.0, 0.0], 5.0), "b": ([1.0], 5.0)}), 2)
    with pytest.raises(ValueError, match=r"needs column\(s\) \['lift_score'\]"):
        select_lift(pd.DataFrame({"id": ["a"], "embedding": [[1.0]]}), 2)


def test_registered():
    info = registry.SELECTORS["lift"]
    assert info.family == "powerful-llm" and info.fills_budget is False
    assert info.columns == ("id", "embedding", "lift_score") and info.fn is select_lift
