"""The n x n reference k-center, triangle pruning of the O(n) version, and ``instsel bench kcenter``.

Speed is never asserted here (benchmarks/bench_kcenter.py measures it): these tests check that the
versions the benchmark compares pick the same centers, and that the command reports what it claims.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from instsel_assets import bench, cli
from instsel_assets.selection import kcenter_greedy as kg
from instsel_assets.selection.kcenter_greedy import kcenter_greedy_indices, select_kcenter_greedy
from instsel_assets.selection.kcenter_reference import covering_radius, kcenter_reference_indices


def textbook(x, budget, first):
    """Farthest-first traversal in float64, every distance recomputed."""
    x = x.astype(np.float64)
    chosen = [first]
    while len(chosen) < budget:
        d = np.linalg.norm(x[:, None, :] - x[None, chosen, :], axis=2).min(axis=1)
        d[chosen] = -1
        chosen.append(int(np.argmax(d)))
    return chosen


def brute_radius(x, centers):
    x = x.astype(np.float64)
    return float(np.linalg.norm(x[:, None, :] - x[None, list(centers), :], axis=2).min(axis=1).max())


@pytest.mark.parametrize("kind", ["clustered", "diffuse"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_and_running_min_agree(kind, seed):
    x = bench.synthetic_embeddings(400, 16, kind, seed, clusters=8)
    ref = kcenter_reference_indices(x, 40, seed=seed)
    fast = kcenter_greedy_indices(x, 40, seed=seed)
    assert len(ref) == 40 and len(set(ref)) == 40
    assert ref == fast or abs(covering_radius(x, ref) - covering_radius(x, fast)) <= 1e-4
    first = int(np.random.default_rng(seed).integers(400))
    assert ref == textbook(x, 40, first)


def test_reference_with_labeled_rows_and_budget_edges():
    x = bench.synthetic_embeddings(120, 8, "clustered", 3, clusters=5)
    start = [0, 7, 30]
    ref = kcenter_reference_indices(x, 15, initial=start)
    assert ref == kcenter_greedy_indices(x, 15, initial=start)
    assert not set(ref) & set(start)
    assert kcenter_reference_indices(x, 0) == []
    assert sorted(kcenter_reference_indices(x, 500, initial=start)) == sorted(set(range(120)) - set(start))
    # computing the Gram matrix in partitions changes nothing
    assert kcenter_reference_indices(x, 15, seed=4, partition=7) == kcenter_reference_indices(x, 15, seed=4)
    with pytest.raises(ValueError, match="initial"):
        kcenter_reference_indices(x, 3, initial=[120])


def test_covering_radius_is_exact():
    x = bench.synthetic_embeddings(300, 12, "diffuse", 5)
    for centers in ([0], [3, 50, 299], list(range(0, 300, 7))):
        assert covering_radius(x, centers) == pytest.approx(brute_radius(x, centers), abs=1e-9)
    assert covering_radius(x, list(range(300))) == pytest.approx(0.0, abs=1e-6)


def test_synthetic_embeddings_are_seeded_unit_vectors():
    a = bench.synthetic_embeddings(1000, 32, "clustered", 7)
    assert a.dtype == np.float32 and a.shape == (1000, 32)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, bench.synthetic_embeddings(1000, 32, "clustered", 7))
    assert not np.array_equal(a, bench.synthetic_embeddings(1000, 32, "clustered", 8))
    # blobs: a row's nearest neighbour is much closer than in the isotropic data
    diffuse = bench.synthetic_embeddings(1000, 32, "diffuse", 7)

    def nn(x):
        g = x @ x.T
        np.fill_diagonal(g, -2)
        return float(np.median(np.sqrt(np.maximum(2 - 2 * g.max(axis=1), 0))))

    assert nn(a) < 0.7 * nn(diffuse)
    with pytest.raises(ValueError, match="clustered"):
        bench.synthetic_embeddings(10, 4, "uniform")


# ----------------------------------------------------------------------------------------------
# triangle pruning
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["float32", "float16"])
@pytest.mark.parametrize("kind", ["clustered", "diffuse"])
def test_prune_gives_the_same_centers(kind, precision):
    x = bench.synthetic_embeddings(3000, 48, kind, 11, clusters=20)
    for seed in (0, 1):
        plain = kcenter_greedy_indices(x, 200, seed=seed, precision=precision)
        stats = {}
        pruned = kcenter_greedy_indices(x, 200, seed=seed, precision=precision, prune=True, stats=stats)
        assert pruned == plain
        # every new center's distance to every row that is not a center yet: computed or skipped
        assert stats["distances_computed"] + stats["distances_skipped"] == sum(3000 - j for j in range(1, 200))
    if kind == "clustered":
        assert stats["distances_skipped"] > 0.5 * 199 * 3000  # the pruning does skip most distances


def test_prune_with_initial_rows_extra_centers_and_duplicates():
    x = bench.synthetic_embeddings(800, 16, "clustered", 2, clusters=10)
    x = np.concatenate([x, x[:40]])  # 40 exact duplicates
    extra = bench.synthetic_embeddings(5, 16, "clustered", 9, clusters=2)
    for kwargs in ({"initial": [3, 100, 820]}, {"centers": extra}, {"initial": [1], "centers": extra}, {}):
        assert (kcenter_greedy_indices(x, 120, prune=True, **kwargs)
                == kcenter_greedy_indices(x, 120, **kwargs)), kwargs
    every = kcenter_greedy_indices(x, 10_000, prune=True)
    assert sorted(every) == list(range(840))
    # a duplicate comes only after every distinct row is a center
    assert len({tuple(r) for r in x[every[:800]]}) == 800
    assert kcenter_greedy_indices(x, 0, prune=True) == []


def test_pruning_changes_no_computed_value(monkeypatch):
    """With the skip test disabled (infinite margin) every distance is computed; the picks are the
    same, so every skipped distance was one that could not lower a running minimum."""
    x = bench.synthetic_embeddings(4000, 64, "clustered", 4, clusters=30)
    for precision in ("float32", "float16"):
        stats = {}
        pruned = kcenter_greedy_indices(x, 400, precision=precision, prune=True, stats=stats)
        assert stats["distances_skipped"] > 0
        with monkeypatch.context() as m:
            m.setattr(kg, "_distance_error", lambda d, r2, precision: float("inf"))
            full = {}
            assert kcenter_greedy_indices(x, 400, precision=precision, prune=True, stats=full) == pruned
            assert full["distances_skipped"] == 0


def test_prune_matches_the_textbook_and_the_selector_passes_it_on():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    first = int(np.random.default_rng(11).integers(200))
    assert kcenter_greedy_indices(x, 25, seed=11, prune=True) == textbook(x, 25, first)
    frame = pd.DataFrame({"id": [f"p{i:03d}" for i in range(200)], "embedding": list(x)})
    assert select_kcenter_greedy(frame, 10, seed=3, prune=True) == select_kcenter_greedy(frame, 10, seed=3)


# ----------------------------------------------------------------------------------------------
# instsel bench kcenter
# ----------------------------------------------------------------------------------------------

def test_bench_kcenter_json(capsys):
    assert cli.main(["bench", "kcenter", "--n", "500", "--dim", "16", "--k", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["benchmark"], out["n"], out["dim"], out["k"], out["seed"], out["data"]) == (
        "kcenter", 500, 16, 20, 0, "clustered")
    for key in ("cpu", "cores", "torch", "numpy"):
        assert out["machine"][key]
    assert out["reference"] == "ran" and out["all_agree"] is True
    names = [(v["variant"], v["precision"]) for v in out["variants"]]
    assert names[0] == ("reference (n x n matrix)", "float32")
    assert ("O(n) running min", "float32") in names and ("O(n) running min", "float16") in names
    assert ("O(n) + triangle pruning", "float32") in names
    for v in out["variants"]:
        assert v["seconds"] > 0 and v["tracemalloc_peak_mb"] > 0 and v["speedup_vs_reference"] > 0
        assert "rss_peak_delta_mb" in v and "rss_ratio_vs_reference" in v
        assert v["tracemalloc_ratio_vs_reference"] > 0
        assert v["agrees_with_baseline"] and v["radius_diff_vs_baseline"] <= 1e-4
        assert v["covering_radius"] > 0
    ref = out["variants"][0]
    fast = next(v for v in out["variants"] if v["variant"] == "O(n) running min" and v["precision"] == "float32")
    assert ref["tracemalloc_peak_mb"] > 0.5 * 2 * 4 * 500 * 500 / 1e6  # the n x n matrix, twice
    assert fast["tracemalloc_peak_mb"] < ref["tracemalloc_peak_mb"] / 10


def test_bench_kcenter_table_and_errors(capsys):
    assert cli.main(["bench", "kcenter", "--n", "300", "--dim", "8", "--k", "10", "--data", "diffuse",
                     "--skip-reference", "--no-prune"]) == 0
    out = capsys.readouterr().out
    assert "| O(n) running min | float16 |" in out and "reference (n x n" not in out
    assert "skipped: --skip-reference" in out
    assert cli.main(["bench", "kcenter", "--n", "10", "--k", "20"]) == 1
    assert "1 <= k <= n" in capsys.readouterr().err


def test_bench_kcenter_runs_only_the_variants_asked_for(capsys):
    assert cli.main(["bench", "kcenter", "--n", "400", "--dim", "8", "--k", "12", "--json",
                     "--variants", "pruned-float32,float16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(v["variant"], v["precision"]) for v in out["variants"]] == [
        ("O(n) running min", "float16"), ("O(n) + triangle pruning", "float32")]
    assert out["reference"] == "skipped: not among the variants asked for"
    assert out["baseline"] == "O(n) running min (float16)" and out["all_agree"] is True
    assert cli.main(["bench", "kcenter", "--n", "400", "--k", "12", "--variants", "float64"]) == 1
    assert "variants must be names of reference, float32" in capsys.readouterr().err


def test_reference_is_skipped_when_the_matrix_is_too_big():
    reason = bench.reference_skip_reason(52_002, 2600)
    assert reason.startswith("skipped: n x n would need 10.8 GB")
    assert bench.reference_skip_reason(500, 20) is None
