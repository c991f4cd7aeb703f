import numpy as np
import pandas as pd
import pytest

from instsel_assets.registry import SELECTORS
from instsel_assets.selection.kcenter_greedy import kcenter_greedy_indices, select_kcenter_greedy


def frame_of(x, as_lists=False):
    return pd.DataFrame(
        {"id": [f"p{i:03d}" for i in range(len(x))], "embedding": [list(r) if as_lists else r for r in x]}
    )


def reference_kcenter(x, budget, first):
    """Textbook farthest-first traversal, float64, with full distance recomputation."""
    x = x.astype(np.float64)
    chosen = [first]
    while len(chosen) < budget:
        d = np.linalg.norm(x[:, None, :] - x[None, chosen, :], axis=2).min(axis=1)
        d[chosen] = -1
        chosen.append(int(np.argmax(d)))
    return chosen


@pytest.fixture()
def clusters():
    rng = np.random.default_rng(0)
    centers = np.array([[10, 0, 0], [0, 10, 0], [0, 0, 10]], dtype=np.float32)
    x = np.concatenate([c + 0.1 * rng.standard_normal((30, 3)) for c in centers]).astype(np.float32)
    return x, np.repeat([0, 1, 2], 30)


def test_registered():
    info = SELECTORS["kcenter_greedy"]
    assert info.fn is select_kcenter_greedy and info.family == "small-model"
    assert "embedding" in info.columns


def test_one_pick_per_well_separated_cluster(clusters):
    x, label = clusters
    frame = frame_of(x)
    for seed in range(5):
        ids = select_kcenter_greedy(frame, 3, seed=seed)
        picked = [int(i[1:]) for i in ids]
        assert sorted(label[picked]) == [0, 1, 2]


def test_matches_textbook_farthest_first_traversal():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    first = int(np.random.default_rng(11).integers(200))
    assert kcenter_greedy_indices(x, 25, seed=11) == reference_kcenter(x, 25, first)


def test_budget_exact_distinct_and_deterministic(clusters):
    x, _ = clusters
    frame = frame_of(x, as_lists=True)  # lists are accepted as well as arrays
    for budget in (0, 1, 7, 90, 500):
        ids = select_kcenter_greedy(frame, budget, seed=2)
        assert len(ids) == min(budget, 90)
        assert len(set(ids)) == len(ids)
    assert select_kcenter_greedy(frame, 10, seed=5) == select_kcenter_greedy(frame, 10, seed=5)
    firsts = {select_kcenter_greedy(frame, 1, seed=s)[0] for s in range(10)}
    assert len(firsts) > 1  # the seed picks the first center


def test_spread_beats_random():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 4)).astype(np.float32)
    picks = kcenter_greedy_indices(x, 20)
    rand = rng.choice(500, 20, replace=False)

    def covering_radius(idx):
        return np.linalg.norm(x[:, None] - x[None, idx], axis=2).min(axis=1).max()

    assert covering_radius(picks) < covering_radius(rand)


def test_already_selected_are_centers_and_not_returned(clusters):
    x, label = clusters
    frame = frame_of(x)
    start = ["p000", "p001"]  # both in cluster 0
    ids = select_kcenter_greedy(frame, 2, already_selected=start)
    assert not set(ids) & set(start)
    assert sorted(label[[int(i[1:]) for i in ids]]) == [1, 2]
    # all but one row already selected: only that row is left
    rest = [i for i in frame["id"] if i != "p050"]
    assert select_kcenter_greedy(frame, 5, already_selected=rest) == ["p050"]
    with pytest.raises(ValueError, match="not among the candidates"):
        select_kcenter_greedy(frame, 2, already_selected=["nope"])


def test_center_embeddings_outside_the_candidates(clusters):
    x, label = clusters
    frame = frame_of(x)
    ids = select_kcenter_greedy(frame, 2, center_embeddings=np.array([[0, 10, 0]], dtype=np.float32))
    assert sorted(label[[int(i[1:]) for i in ids]]) == [0, 2]
    with pytest.raises(ValueError, match="shape"):
        select_kcenter_greedy(frame, 2, center_embeddings=np.zeros((1, 5), dtype=np.float32))


def test_duplicates_are_picked_last():
    x = np.array([[0, 0], [0, 0], [1, 0], [0, 1]], dtype=np.float32)
    for seed in range(6):
        picks = kcenter_greedy_indices(x, 4, seed=seed)
        assert sorted(picks) == [0, 1, 2, 3]
        assert picks[3] in (0, 1)  # the second copy of [0, 0] comes only after every other point
        assert len({0, 1} & set(picks[:3])) == 1


def test_float16_precision_option(clusters):
    x, label = clusters
    ids = select_kcenter_greedy(frame_of(x), 3, precision="float16")
    assert sorted(label[[int(i[1:]) for i in ids]]) == [0, 1, 2]


def test_missing_embeddings_are_not_eligible_and_errors(clusters):
    x, _ = clusters
    frame = frame_of(x[:5])
    frame.loc[2, "embedding"] = None
    ids = select_kcenter_greedy(frame, 10)
    assert len(ids) == 4 and "p002" not in ids
    with pytest.raises(ValueError, match="'embedding'"):
        select_kcenter_greedy(frame.drop(columns=["embedding"]), 2)
    with pytest.raises(ValueError, match="budget"):
        select_kcenter_greedy(frame, -1)
    assert select_kcenter_greedy(frame, 0) == []
