"""DEITA selector: by evol score descending, add a row only if its nearest selected row has cosine <= tau."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.selection import deita_score_first
from instsel_assets.selection.deita_score_first import select_deita


def unit(angle_deg: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([np.cos(a), np.sin(a), 0.0], dtype=np.float32)


def frame(rows: dict[str, tuple[float, object]]) -> pd.DataFrame:
    return pd.DataFrame({"id": list(rows), "deita_evol_score": [s for s, _ in rows.values()],
                         "embedding": [e for _, e in rows.values()]})


# cos(10 deg) = 0.985 > 0.9: near-duplicates; cos(30 deg) = 0.866 <= 0.9: diverse enough
ROWS = {
    "best": (30.0, unit(0)),
    "dup_of_best": (29.0, unit(10)),
    "second": (25.0, unit(30)),
    "dup_of_second": (24.0, unit(35)),
    "third": (20.0, unit(90)),
    "unscored": (np.nan, unit(180)),
    "no_embedding": (50.0, None),
    "last": (1.0, [0.0, 0.0, 1.0]),
}


def test_score_first_with_the_similarity_rule():
    assert select_deita(frame(ROWS), 10) == ["best", "second", "third", "last"]
    assert select_deita(frame(ROWS), 2) == ["best", "second"]
    # tau = 0.99: near-duplicates pass; tau = 0.5: "second" (cos 0.866 to "best") is refused
    # tau = 0.99: "dup_of_best" (cos 0.985) passes, "dup_of_second" (cos 0.996 to "second") does not
    assert select_deita(frame(ROWS), 10, tau=0.99) == ["best", "dup_of_best", "second", "third", "last"]
    assert select_deita(frame(ROWS), 10, tau=0.5) == ["best", "third", "last"]


def test_tau_is_inclusive_like_the_reference():
    rows = {"a": (2.0, [1.0, 0.0]), "b": (1.0, [0.0, 3.0]), "c": (0.5, [2.0, 0.0])}  # cosines exactly 0 and 1
    assert select_deita(frame(rows), 5, tau=0.0) == ["a", "b"]
    assert select_deita(frame(rows), 5, tau=-0.01) == ["a"]
    assert select_deita(frame(rows), 5, tau=1.0) == ["a", "b", "c"]


def test_ties_by_id_and_input_order_does_not_matter():
    rows = {"b": (5.0, unit(0)), "a": (5.0, unit(5)), "c": (5.0, unit(80))}
    assert select_deita(frame(rows), 3) == ["a", "c"]
    assert select_deita(frame(ROWS).sample(frac=1.0, random_state=2), 10) == select_deita(frame(ROWS), 10)


def test_blocks_give_the_sequential_result(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    rows = {f"r{i:03d}": (float(rng.uniform(1, 36)), x[i]) for i in range(300)}

    def sequential(tau):
        order = sorted(rows, key=lambda k: (-rows[k][0], k))
        chosen = []
        for k in order:
            v = rows[k][1] / np.linalg.norm(rows[k][1])
            if all(float(v @ (rows[c][1] / np.linalg.norm(rows[c][1]))) <= tau for c in chosen):
                chosen.append(k)
        return chosen

    monkeypatch.setattr(deita_score_first, "_BLOCK", 7)
    assert select_deita(frame(rows), 1000, tau=0.5) == sequential(0.5)
    assert select_deita(frame(rows), 20, tau=0.5) == sequential(0.5)[:20]


def test_lists_and_numpy_embeddings_and_empty_cases():
    rows = {"a": (3.0, [1.0, 0.0]), "b": (2.0, np.array([0.0, 1.0]))}
    assert select_deita(frame(rows), 5) == ["a", "b"]
    assert select_deita(frame(rows), 0) == []
    assert select_deita(frame({"a": (np.nan, [1.0, 0.0])}), 5) == []


def test_errors_name_the_parameter_row_and_field():
    with pytest.raises(ValueError, match="tau"):
        select_deita(frame(ROWS), 3, tau=1.5)
    with pytest.raises(ValueError, match=r"row 'neg', field 'deita_evol_score'"):
        select_deita(frame({"neg": (-3.0, [1.0])}), 3)
    with pytest.raises(ValueError, match="field 'embedding'.*different lengths"):
        select_deita(frame({"a": (2.0, [1.0, 0.0]), "b": (1.0, [1.0, 0.0, 0.0])}), 3)
    with pytest.raises(ValueError, match=r"needs column\(s\) \['embedding'\]"):
        select_deita(pd.DataFrame({"id": ["a"], "deita_evol_score": [1.0]}), 3)


def test_registered():
    info = registry.SELECTORS["deita"]
    assert info.family == "powerful-llm" and info.fills_budget is False
    assert info.columns == ("id", "deita_evol_score", "embedding") and info.fn is select_deita
