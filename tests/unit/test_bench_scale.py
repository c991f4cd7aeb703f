"""``benchmarks/bench_scale.py``: its reference-style implementations compute what the engine computes, and a
small run of the whole script reports agreement in every row.

Throughput is never asserted here (the script measures it); these tests check that the benchmark compares like
with like.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_scale():
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "benchmarks" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def alpaca_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("alpaca")
    shutil.copy(ROOT / "data" / "bench" / "alpaca_500.json", folder / "alpaca_data-00000-00500.json")
    return folder


@pytest.fixture(scope="module")
def pool(bench_scale, alpaca_dir):
    return bench_scale.alpaca_pool(alpaca_dir, 300)


def test_reference_near_duplicates_match_the_engine_on_planted_copies(bench_scale, pool):
    from instsel_assets.features.duplicates import duplicates

    rows = pool.head(40).copy()
    copy = rows.iloc[[3]].copy()
    copy["id"] = "zz-near-copy"
    words = copy["output"].iloc[0].split(" ")
    copy["output"] = " ".join(words + ["extra"])
    copy["conversations"] = [[{"role": "user", "content": rows["conversations"].iloc[3][0]["content"]},
                              {"role": "assistant", "content": copy["output"].iloc[0]}]]
    frame = pd.concat([rows, copy], ignore_index=True)
    engine = duplicates(frame)["near_dup_cluster_size"].to_numpy()
    reference = bench_scale.reference_near_duplicate_clusters(frame)
    assert (reference == engine).all()
    assert engine[-1] == 2 and engine[3] == 2


def test_reference_knn_and_deita_match_the_engine(bench_scale):
    from instsel_assets.features.knn import knn_mean_distance
    from instsel_assets.selection.deita_score_first import select_deita

    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert np.abs(bench_scale.reference_knn_mean_distance(x, 6) - knn_mean_distance(x, 6)).max() < 1e-5
    ids = np.array([f"r{i:04d}" for i in range(400)])
    scores = rng.integers(1, 5, size=400).astype(float)  # ties: the id order decides
    cand = pd.DataFrame({"id": ids, "deita_evol_score": scores, "embedding": list(x)})
    picks = select_deita(cand, 120, tau=0.5)
    assert bench_scale.reference_deita(x, scores, ids, 120, 0.5) == picks
    assert 0 < len(picks) <= 120


def test_synthetic_rows_plant_exact_and_near_copies(bench_scale, pool):
    raw, planted = bench_scale.synthetic_raw(pool, 2000, seed=1)
    assert len(raw) == 2000 and planted["planted_exact"] == 10 and planted["planted_near"] == 10
    records = [json.loads(r) for r in raw["raw"]]
    for i in planted["exact_rows"]:
        assert sum(r == records[i] for r in records[: 1000]) >= 1


def test_small_run_reports_agreement_in_every_row(bench_scale, alpaca_dir, tmp_path, capsys):
    assert bench_scale.main(["--alpaca", str(alpaca_dir), "--alpaca-rows", "300", "--big-rows", "3000",
                             "--reference-rows", "200", "--deita-budget", "100", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    record = json.loads(next(tmp_path.glob("scale-*.json")).read_text())
    stages = record["stages"]
    notes = {(s["stage"], s["implementation"].split(" ")[0], s["rows"]): s.get("notes", "") for s in stages}
    assert notes[("text indicators", "reference", 300)] == "same table"
    assert notes[("duplicates (exact + MinHash LSH)", "reference", 300)] == "same clusters"
    assert notes[("DEITA filter to 100 (tau 0.9)", "reference", 300)] == "same ids, same order"
    assert "ABOVE" not in notes[("KNN-6 distance", "reference", 200)]
    big = [s for s in stages if s["dataset"] == "synthetic 3,000"]
    assert {s["stage"] for s in big} == {"pool (normalise)", "text indicators", "duplicates (exact + MinHash LSH)"}
    dup_note = next(s["notes"] for s in big if s["stage"].startswith("duplicates"))
    found, planted = (int(v.replace(",", "")) for v in dup_note.split("found ")[1].split(";")[0].split(" / "))
    assert planted == 15 and found >= 14  # LSH may miss a pair at Jaccard ~0.9 with probability ~1e-4
    pool_note = next(s["notes"] for s in big if s["stage"].startswith("pool"))
    assert "removed as duplicates 15 / 15" in pool_note
    # every engine row at a reference's size carries its ratio; the table is printed
    for s in stages:
        if s["implementation"].startswith("engine") and any(
                r["implementation"].startswith("reference") and r["stage"] == s["stage"] and r["rows"] == s["rows"]
                and r["dataset"] == s["dataset"] for r in stages):
            assert s["speedup_vs_reference"] is not None
    assert "| data | stage | implementation |" in printed
