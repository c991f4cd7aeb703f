"""InsTag tag normalisation: frequency filter, lowercase/lemma rules, semantic and association merging.

The embeddings are a deterministic fake: tags named in ``SYNONYMS`` share a vector, every other tag gets its own
orthogonal one, so the expected merges are known exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from instsel_assets.judge import instag_normalize as norm

SYNONYMS = {"math": 0, "mathematics": 0, "arithmetic": 0, "code": 1, "coding": 1}


def fake_embed(tags: list[str]) -> np.ndarray:
    """One-hot vectors: synonyms share a dimension; other tags get their own (by sorted position)."""
    others = sorted(t for t in set(tags) if t not in SYNONYMS)
    dim = 2 + len(others)
    out = np.zeros((len(tags), dim), dtype=np.float32)
    for i, t in enumerate(tags):
        out[i, SYNONYMS[t] if t in SYNONYMS else 2 + others.index(t)] = 1.0
    return out


@pytest.mark.parametrize("tag,expected", [
    ("Creative-Writing", "creative writing"),
    ("data_analysis", "data analysis"),
    ("Queries", "query"),
    ("Classes", "class"),
    ("Matches", "match"),
    ("boxes", "box"),
    ("Tags", "tag"),
    ("math problems", "math problem"),
    ("Physics", "physics"),
    ("analysis", "analysis"),
    ("status", "status"),
    ("series", "series"),
    ("C++ programming", "c++ programming"),
    ("C# code", "c# code"),
    ("user's request!", "user request"),
    ("  Q&A  ", "q a"),
    ("gas", "gas"),
    ("!!!", ""),
])
def test_rule_normalisation(tag, expected):
    assert norm.rule_normalize(tag) == expected


def test_frequency_filter_counts_rows_and_drops_rare_tags():
    rows = [["Math", "rare"], ["Math", "Math"], ["Math"], ["other"]]
    out = norm.normalize_tags(rows, alpha=2, min_support=100)
    assert out.tags == [["math"], ["math"], ["math"], []]
    assert out.mapping == {"Math": "math", "rare": None, "other": None}
    assert out.counts == {"math": 3}
    assert out.report["n_raw"] == 3 and out.report["n_after_frequency"] == 1
    assert out.report["semantic_merging"] is False


def test_frequency_filter_is_on_the_raw_strings_before_the_rules():
    # the paper's order: "Math" and "math" are counted apart, so each is below alpha=3
    out = norm.normalize_tags([["Math"], ["Math"], ["math"], ["math"]], alpha=3, min_support=100)
    assert out.tags == [[], [], [], []]
    out = norm.normalize_tags([["Math"], ["Math"], ["math"], ["math"]], alpha=2, min_support=100)
    assert out.tags == [["math"]] * 4 and out.counts == {"math": 4}


def test_semantic_merging_into_the_most_frequent_tag():
    rows = [["math"], ["math"], ["mathematics"], ["arithmetic", "coding"], ["code"], ["code"], ["poetry"]]
    out = norm.normalize_tags(rows, alpha=1, embed=fake_embed, semantic_threshold=0.95, min_support=100)
    assert out.tags == [["math"], ["math"], ["math"], ["math", "code"], ["code"], ["code"], ["poetry"]]
    assert out.counts == {"math": 4, "code": 3, "poetry": 1}
    assert out.mapping["mathematics"] == "math" and out.mapping["coding"] == "code"
    assert out.report["semantic_merging"] is True and out.report["n_after_semantic"] == 3


def test_semantic_merging_follows_chains_like_dbscan_with_min_samples_one():
    vecs = {"a": [1.0, 0.0], "b": [np.cos(0.3), np.sin(0.3)], "c": [np.cos(0.6), np.sin(0.6)]}

    def embed(tags):
        return np.array([vecs[t] for t in tags], dtype=np.float32)

    # cos(a, b) = cos(b, c) = cos(0.3) ~ 0.955 >= 0.95, cos(a, c) = cos(0.6) ~ 0.825: one group through b
    out = norm.normalize_tags([["a"], ["b"], ["b"], ["c"]], alpha=1, embed=embed, semantic_threshold=0.95,
                              min_support=100)
    assert out.counts == {"b": 4}


def test_association_merging_repeats_until_no_rule_holds():
    # "x" always comes with "y" (5 rows), "y" always with "z": x -> y, then y -> z
    rows = [["x", "y", "z"]] * 5 + [["y", "z"]] * 2 + [["z"]] * 3 + [["w"]] * 6
    out = norm.normalize_tags(rows, alpha=1, min_support=5, min_confidence=0.99)
    assert out.counts == {"z": 10, "w": 6}
    assert out.mapping == {"x": "z", "y": "z", "z": "z", "w": "w"}
    assert out.report["association_rounds"] >= 1


def test_association_needs_support_and_confidence():
    rows = [["x", "y"]] * 4 + [["x"]] + [["y"]] * 3
    assert norm.normalize_tags(rows, alpha=1, min_support=4, min_confidence=0.99).counts == {"x": 5, "y": 7}
    assert norm.normalize_tags(rows, alpha=1, min_support=5, min_confidence=0.5).counts == {"x": 5, "y": 7}
    merged = norm.normalize_tags(rows, alpha=1, min_support=4, min_confidence=0.8)
    assert merged.counts == {"y": 8}
    assert norm.association_rules(rows, 4, 0.8) == [("x", "y")]


def test_accepts_numpy_arrays_and_missing_rows():
    out = norm.normalize_tags([np.array(["A", "b"], dtype=object), None, float("nan"), ["a"]], alpha=1,
                              min_support=100)
    assert out.tags == [["a", "b"], [], [], ["a"]]


def test_bad_inputs_name_the_row():
    with pytest.raises(ValueError, match="row 1: tag 3"):
        norm.normalize_tags([["a"], ["b", 3]])
    with pytest.raises(ValueError, match="row 0"):
        norm.normalize_tags(["not a list"])
    with pytest.raises(ValueError, match="alpha"):
        norm.normalize_tags([["a"]], alpha=0)
    with pytest.raises(ValueError, match="min_confidence"):
        norm.normalize_tags([["a"]], min_confidence=1.5)
    with pytest.raises(ValueError, match="embed returned shape"):
        norm.normalize_tags([["a"]], alpha=1, embed=lambda tags: np.zeros((5, 2)))


def test_normalize_tag_column_rewrites_tags_and_counts():
    frame = pd.DataFrame({"id": ["r1", "r2", "r3"], "instag_tags": [["Math", "Coding"], ["math"], ["poetry"]]})
    out = norm.normalize_tag_column(frame, alpha=1, embed=fake_embed, min_support=100)
    assert out["instag_tags"].tolist() == [["math", "coding"], ["math"], ["poetry"]]
    assert out["instag_n_tags"].tolist() == [2, 1, 1]
    assert out.attrs["instag_normalization"]["n_raw"] == 4
    assert frame["instag_tags"].tolist()[0] == ["Math", "Coding"]  # input untouched
    bad = pd.DataFrame({"id": ["r1", "r2"], "instag_tags": [["a"], "oops"]})
    with pytest.raises(ValueError, match=r"row 'r2', field 'instag_tags'"):
        norm.normalize_tag_column(bad)
