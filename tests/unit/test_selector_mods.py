"""MoDS: the selector (seeds, then augmented rows, in mods_order, capped at the budget) and the step rules of
selection/mods.py on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.selection.mods import (PAPER_QUALITY_THRESHOLD, STAND_IN_QUALITY_THRESHOLD, necessity_table,
                                           pick_seeds, quality_set, resolve_necessity_threshold,
                                           resolve_quality_threshold, role_counts, select_mods, size_from)


def candidates() -> pd.DataFrame:
    # the candidate table after the left merge on the pool: rows outside D_h have no role (NaN)
    return pd.DataFrame({
        "id": ["a", "b", "c", "d", "e", "f", "g", "h"],
        "mods_role": ["augmented", "seed", None, "not_necessary", "seed", "necessary", "augmented", "failed"],
        "mods_order": [3.0, 1.0, np.nan, -1.0, 0.0, -1.0, 2.0, -1.0],
    })


def test_seeds_then_augmented_in_order_capped_at_budget():
    assert select_mods(candidates(), 10) == ["e", "b", "g", "a"]  # fewer than the budget: all MoDS picked
    assert select_mods(candidates(), 3) == ["e", "b", "g"]
    assert select_mods(candidates(), 1) == ["e"]
    assert select_mods(candidates(), 0) == []
    assert select_mods(candidates(), 3, seed=7) == ["e", "b", "g"]  # seed plays no part


def test_integer_orders_and_no_augmented_rows():
    cand = candidates()
    cand["mods_order"] = cand["mods_order"].fillna(-1).astype("int64")
    assert select_mods(cand, 4) == ["e", "b", "g", "a"]
    only_seeds = cand[cand["mods_role"] != "augmented"]
    assert select_mods(only_seeds, 5) == ["e", "b"]


def test_clear_errors():
    with pytest.raises(ValueError, match="mods_order"):
        select_mods(candidates()[["id", "mods_role"]], 2)
    with pytest.raises(ValueError, match="materialise mods_necessary_instructions"):
        select_mods(candidates().assign(mods_role=None), 2)
    dup = candidates()
    dup.loc[0, "mods_order"] = 2.0
    with pytest.raises(ValueError, match=r"not unique.*\['a', 'g'\]"):
        select_mods(dup, 2)
    unordered = candidates()
    unordered.loc[6, "mods_order"] = np.nan
    with pytest.raises(ValueError, match=r"without a mods_order: \['g'\]"):
        select_mods(unordered, 2)
    swapped = candidates()
    swapped.loc[[0, 1], "mods_order"] = [1.0, 3.0]  # augmented 'a' before seed 'b'
    with pytest.raises(ValueError, match="before a seed"):
        select_mods(swapped, 4)
    with pytest.raises(ValueError, match="budget"):
        select_mods(candidates(), -1)


def test_registered_as_small_model_threshold_selector():
    info = registry.SELECTORS["mods"]
    assert info.family == "small-model" and info.fills_budget is False
    assert info.columns == ("id", "mods_role", "mods_order")
    assert registry.get_selector("mods").fn is select_mods


# ------------------------------------------------------------------------------------------------ the step rules
def scores(label: str = "my-reward-model") -> pd.DataFrame:
    return pd.DataFrame({"id": ["r0", "r1", "r2", "r3", "r4"],
                         "reward_score": [-1.5, 0.0, 2.0, np.nan, 0.7], "reward_model": label})


def test_quality_threshold_defaults_follow_the_reward_models_scale():
    assert resolve_quality_threshold(scores()) == (PAPER_QUALITY_THRESHOLD, "paper default")
    stand_in = scores("stand-in: packaged SmolLM2 rating, not a reward model")
    assert resolve_quality_threshold(stand_in) == (STAND_IN_QUALITY_THRESHOLD, "stand-in default")
    assert resolve_quality_threshold(scores(), threshold=1.0) == (1.0, "config")
    threshold, how = resolve_quality_threshold(scores(), quantile=0.5)
    assert how == "quantile 0.5" and threshold == pytest.approx(0.35)  # median of the 4 finite scores
    with pytest.raises(ValueError, match="not both"):
        resolve_quality_threshold(scores(), threshold=1.0, quantile=0.5)
    with pytest.raises(ValueError, match=r"quality_quantile must be in \(0, 1\)"):
        resolve_quality_threshold(scores(), quantile=1.0)


def test_necessity_threshold_defaults_to_the_quality_threshold():
    rewards = [1.0, 2.0, np.nan, 3.0, 4.0]
    assert resolve_necessity_threshold(rewards, 3.0) == (3.0, "quality threshold")
    assert resolve_necessity_threshold(rewards, 3.0, threshold=2.5) == (2.5, "config")
    assert resolve_necessity_threshold(rewards, 3.0, quantile=0.5) == (2.5, "quantile 0.5")  # NaN ignored
    with pytest.raises(ValueError, match="not both"):
        resolve_necessity_threshold(rewards, 3.0, threshold=2.5, quantile=0.5)
    with pytest.raises(ValueError, match="no answer of the seed model"):
        resolve_necessity_threshold([np.nan], 3.0, quantile=0.5)


def test_quality_set_keeps_scores_at_or_above_the_threshold_highest_first():
    dh = quality_set(scores(), 0.0)
    assert list(dh["id"]) == ["r2", "r4", "r1"]  # >= 0.0 (the tie at 0.0 is kept), NaN never
    assert list(dh.columns) == ["id", "reward_score", "reward_model", "quality_threshold"]
    assert (dh["quality_threshold"] == 0.0).all()
    with pytest.raises(ValueError, match=r"no row has reward_score >= 5 \(scores: -1.5..2"):
        quality_set(scores(), 5.0)


def test_sizes_from_counts_or_fractions():
    assert size_from(None, 0.025, 600, "n_seeds") == 15
    assert size_from(None, 0.025, 10, "n_seeds") == 1  # at least one
    assert size_from(7, 0.025, 600, "n_seeds") == 7
    with pytest.raises(ValueError, match="n_seeds must be a positive integer"):
        size_from(0, 0.025, 600, "n_seeds")
    with pytest.raises(ValueError, match=r"fraction for n_augmented must be in \(0, 1\]"):
        size_from(None, 1.5, 600, "n_augmented")


def features(ids) -> pd.DataFrame:
    # points on a line: k-center order is predictable (farthest first)
    coords = {"p0": 0.0, "p1": 1.0, "p2": 2.0, "p3": 10.0, "p4": 11.0, "p5": 20.0, "p6": 21.0}
    return pd.DataFrame({"id": list(ids), "embedding": [np.array([coords[i], 0.0], np.float32) for i in ids]})


def test_seeds_are_kcenter_picks_of_the_quality_set():
    ids = ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]
    dh = pd.DataFrame({"id": ids, "reward_score": np.linspace(3.0, 4.2, 7)})
    seeds = pick_seeds(dh, features(ids), 3, seed=0)
    assert list(seeds.columns) == ["id", "seed_order", "reward_score"]
    assert list(seeds["seed_order"]) == [0, 1, 2] and seeds["id"].is_unique and set(seeds["id"]) <= set(ids)
    coords = features(ids).set_index("id")["embedding"].map(lambda v: float(v[0]))
    first = coords[seeds["id"].iloc[0]]
    assert coords[seeds["id"].iloc[1]] == max(coords, key=lambda c: abs(c - first))  # farthest from the first
    assert len(pick_seeds(dh, features(ids), 50)) == 7  # capped at |D_h|
    with pytest.raises(ValueError, match="no embedding in metric_features"):
        pick_seeds(dh, features(ids[:3]), 2)


def test_necessity_table_chain():
    ids = ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]
    dh = pd.DataFrame({"id": ids, "reward_score": np.linspace(3.0, 4.2, 7)})
    feats = features(ids)
    seeds = pd.DataFrame({"id": ["p4", "p1"], "seed_order": [0, 1]})
    # the seed model's answers: p0, p3, p5, p6 answered badly; p2 has no answer
    reward = np.array([1.0, 4.0, np.nan, 2.0, 3.5, 1.5, 2.9])
    table = necessity_table(dh, seeds, reward, feats, threshold=3.0, n_augmented=2, seed=0)
    assert list(table["id"]) == ids
    assert list(table.columns) == ["id", "mods_role", "mods_order", "necessary", "generated_reward", "quality_reward"]
    np.testing.assert_array_equal(table["necessary"], [True, False, False, True, False, True, True])
    assert role_counts(table) == {"seed": 2, "augmented": 2, "necessary": 2, "not_necessary": 0, "failed": 1}
    augmented = table[table["mods_role"] == "augmented"]
    assert augmented["necessary"].all() and not augmented["id"].isin(seeds["id"]).any()
    ordered = table[table["mods_order"] >= 0].sort_values("mods_order")
    assert list(ordered["mods_order"]) == [0, 1, 2, 3]
    assert list(ordered["id"][:2]) == ["p4", "p1"]  # the seeds first, in seed order
    assert list(ordered["mods_role"][2:]) == ["augmented", "augmented"]
    assert select_mods(table, 10) == list(ordered["id"])  # the selector reads the table as it is
    # more augmented rows asked than necessary non-seed rows: all of them
    everything = necessity_table(dh, seeds, reward, feats, threshold=3.0, n_augmented=50)
    assert role_counts(everything) == {"seed": 2, "augmented": 4, "necessary": 0, "not_necessary": 0, "failed": 1}


def test_seeds_as_centers_start_the_augmented_set_away_from_the_seeds():
    ids = ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]
    dh = pd.DataFrame({"id": ids, "reward_score": 4.0})
    feats = features(ids)
    seeds = pd.DataFrame({"id": ["p0"], "seed_order": [0]})
    reward = np.array([4.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # every non-seed is necessary
    table = necessity_table(dh, seeds, reward, feats, threshold=3.0, n_augmented=1, seeds_as_centers=True)
    assert list(table.loc[table["mods_role"] == "augmented", "id"]) == ["p6"]  # farthest from the seed p0
    with pytest.raises(ValueError, match="seeds not in the quality set"):
        necessity_table(dh, pd.DataFrame({"id": ["zz"], "seed_order": [0]}), reward, feats, threshold=3.0,
                        n_augmented=1)
    with pytest.raises(ValueError, match="generated rewards for 7 D_h rows"):
        necessity_table(dh, seeds, reward[:3], feats, threshold=3.0, n_augmented=1)
