"""The per-shard result cache (scoring/result_cache.py): what the key depends on, round trips, damage."""

from __future__ import annotations

import numpy as np
import pandas as pd

from instsel_assets.scoring.result_cache import ResultCache, result_key


def test_key_depends_on_rows_order_code_and_settings():
    base = result_key("scores", "v1", {"model": "m", "batch_size": 8}, ["a", "b"])
    assert base == result_key("scores", "v1", {"batch_size": 8, "model": "m"}, ["a", "b"])  # settings order: no
    assert len({base,
                result_key("scores", "v1", {"model": "m", "batch_size": 8}, ["b", "a"]),
                result_key("scores", "v1", {"model": "m", "batch_size": 8}, ["a", "b", "c"]),
                result_key("scores", "v2", {"model": "m", "batch_size": 8}, ["a", "b"]),
                result_key("scores", "v1", {"model": "other", "batch_size": 8}, ["a", "b"]),
                result_key("features", "v1", {"model": "m", "batch_size": 8}, ["a", "b"]),
                result_key("scores", "v1", {"model": "m", "batch_size": 8}, ["ab"])}) == 7


def test_round_trip_with_arrays_and_attrs(tmp_path):
    cache = ResultCache(tmp_path, "shard_metric_features")
    table = pd.DataFrame({"id": ["a", "b"], "ifd": [0.5, np.nan],
                          "embedding": [np.arange(3, dtype=np.float32), np.ones(3, dtype=np.float32)]})
    table.attrs["n_unscorable"] = 1
    assert cache.get("k") is None and cache.misses == 1
    cache.put("k", table)
    got = cache.get("k")
    assert cache.hits == 1
    assert got["id"].tolist() == ["a", "b"] and np.isnan(got["ifd"][1])
    assert np.allclose(np.stack(got["embedding"].to_list()), np.stack(table["embedding"].to_list()))
    assert got.attrs.get("n_unscorable") == 1
    assert [p.name for p in (tmp_path / "shard_metric_features").iterdir()] == ["k.parquet"]  # no temp left


def test_damaged_entry_is_a_miss(tmp_path):
    cache = ResultCache(tmp_path, "scores")
    cache.put("k", pd.DataFrame({"id": ["a"]}))
    cache.path("k").write_bytes(b"not parquet")
    assert cache.get("k") is None and cache.misses == 1
