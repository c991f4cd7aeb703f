"""``instsel bench ifd``: the reference-style loop, the fidelity measures and the command itself.

Throughput is never asserted here (benchmarks/ measures it); these tests check that the benchmark
compares like with like and reports what it claims.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from instsel_assets import bench, cli
from instsel_assets.scoring.ifd import ifd_scores


@pytest.fixture
def tiny_model_dir(tiny_lm, tmp_path):
    model, tok = tiny_lm
    path = tmp_path / "tiny-llama"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def alpaca_file(tmp_path):
    rows = [{"instruction": f"Name {i} colours of the sea.", "input": "" if i % 2 else "Be brief.",
             "output": "Blue, green and grey. " * (1 + i % 3)} for i in range(12)]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_reference_loop_matches_engine_in_fp32(tiny_lm, alpaca_file):
    model, tok = tiny_lm
    pool = bench.bench_pool(alpaca_file, 12)
    ref = bench.reference_ifd(pool, model, tok, max_length=1024)
    got = ifd_scores(pool, model, tok, batch_size=4)["ifd"].to_numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_reference_loop_truncates_like_the_engine(tiny_lm, alpaca_file):
    model, tok = tiny_lm
    pool = bench.bench_pool(alpaca_file, 6)
    ref = bench.reference_ifd(pool, model, tok, max_length=12)
    got = ifd_scores(pool, model, tok, batch_size=4, max_length=12)["ifd"].to_numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_top_fraction_overlap():
    ids = np.array([f"r{i}" for i in range(20)])
    a = np.linspace(0.1, 0.9, 20)
    assert bench.top_fraction_overlap(a, a, ids) == 1.0
    b = a.copy()
    b[-1] = 0.0  # the best row of a falls out of b's top 2
    assert bench.top_fraction_overlap(a, b, ids) == 0.5
    assert np.isnan(bench.top_fraction_overlap(a + 1, a + 1, ids))  # nothing below IFD 1: nothing to compare


def test_bench_pool_rejects_more_rows_than_the_file_holds(alpaca_file):
    with pytest.raises(ValueError, match="holds only 12 records"):
        bench.bench_pool(alpaca_file, 13)


def test_command_prints_json_with_both_rates(tiny_model_dir, alpaca_file, capsys):
    code = cli.main(["bench", "ifd", "--rows", "8", "--model", str(tiny_model_dir), "--data", str(alpaca_file),
                     "--device", "cpu", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 8 and out["model"] == str(tiny_model_dir)
    assert out["reference_examples_per_s"] > 0 and out["engine_examples_per_s"] > 0
    assert out["speedup"] == pytest.approx(out["engine_examples_per_s"] / out["reference_examples_per_s"])
    names = [(v["variant"].split()[0], v["dtype"]) for v in out["variants"]]
    assert names[:2] == [("reference", "float32"), ("engine", "float32")]
    fp32 = out["variants"][1]
    assert fp32["max_rel_diff_vs_reference"] < out["targets"]["fp32_max_rel_diff"]
    assert fp32["spearman_vs_fp32_engine"] == pytest.approx(1.0)
    for v in out["variants"]:
        assert 0 < v["flop_bound_fraction"] and v["tokens_per_s"] > v["examples_per_s"]
    assert out["tokens_per_variant"] > 0 and out["non_embedding_parameters"] > 0


def test_command_table_and_clear_error(tiny_model_dir, alpaca_file, capsys):
    assert cli.main(["bench", "ifd", "--rows", "4", "--model", str(tiny_model_dir), "--data", str(alpaca_file),
                     "--device", "cpu", "--skip-reference"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| variant | dtype |") and "| engine" in table and "| reference" not in table
    assert cli.main(["bench", "ifd", "--rows", "99", "--model", str(tiny_model_dir),
                     "--data", str(alpaca_file)]) == 1
    assert "holds only 12 records" in capsys.readouterr().err
