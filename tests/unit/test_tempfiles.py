"""tempfiles.sweep_stale: temporaries left by killed writers are removed once old, never while a writer may still
be busy; and the stores that write temporaries (loss cache, result cache, checkpoints) sweep their own."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest

from instsel_assets.tempfiles import DEFAULT_STALE_SECONDS, stale_seconds, sweep_stale


def age(path, seconds: float) -> None:
    """Make ``path`` (and everything in it) look untouched for ``seconds``."""
    when = time.time() - seconds
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        os.utime(p, (when, when), follow_symlinks=False)


def test_old_temporaries_go_fresh_ones_and_other_files_stay(tmp_path):
    old_file = tmp_path / "shard-1-99-00001.parquet.tmp"
    old_file.write_bytes(b"half a shard")
    fresh_file = tmp_path / "shard-2-99-00002.parquet.tmp"
    fresh_file.write_bytes(b"being written")
    done = tmp_path / "shard-0-99-00000.parquet"
    done.write_bytes(b"a whole shard")
    old_dir = tmp_path / ".model.tmp-abc"
    (old_dir / "sub").mkdir(parents=True)
    (old_dir / "sub" / "weights.safetensors").write_bytes(b"x" * 100)
    busy_dir = tmp_path / ".model.tmp-def"
    busy_dir.mkdir()
    (busy_dir / "old.json").write_text("{}")
    for p in (old_file, done, old_dir):
        age(p, 2 * DEFAULT_STALE_SECONDS)
    age(busy_dir, 2 * DEFAULT_STALE_SECONDS)
    (busy_dir / "new.safetensors").write_bytes(b"still writing")  # a new file: the writer is alive

    assert sweep_stale(tmp_path, "shard-*.parquet.tmp") == [old_file]
    assert sweep_stale(tmp_path, ".model.tmp-*") == [old_dir]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [fresh_file.name, done.name, busy_dir.name])
    assert sweep_stale(tmp_path / "missing", "*") == []


def test_the_age_limit_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("INSTSEL_STALE_TEMP_SECONDS", raising=False)
    assert stale_seconds() == DEFAULT_STALE_SECONDS
    monkeypatch.setenv("INSTSEL_STALE_TEMP_SECONDS", "0")
    leftover = tmp_path / ".tmp-x.parquet"
    leftover.write_bytes(b"")
    assert sweep_stale(tmp_path, ".tmp-*.parquet") == [leftover]
    monkeypatch.setenv("INSTSEL_STALE_TEMP_SECONDS", "soon")
    with pytest.raises(ValueError, match="INSTSEL_STALE_TEMP_SECONDS='soon': expected a number of seconds"):
        stale_seconds()


def test_the_loss_cache_sweeps_a_killed_writers_shard_and_reads_the_whole_ones(tmp_path):
    from instsel_assets.scoring.loss_cache import LossCache

    cache = LossCache(tmp_path, "model", shard_size=2)
    cache.add(["a", "b"], [1.0, 2.0], [3, 4])  # one whole shard
    (shard,) = tmp_path.glob("shard-*.parquet")
    leftover = tmp_path / (shard.name.replace("00001", "00002") + ".tmp")
    leftover.write_bytes(shard.read_bytes()[:20])  # a writer killed in the middle
    age(leftover, 2 * DEFAULT_STALE_SECONDS)
    reopened = LossCache(tmp_path, "model", shard_size=2)
    assert reopened.stale_removed == 1 and not leftover.exists()
    assert reopened.lookup(["a", "b"]) == {"a": (1.0, 3), "b": (2.0, 4)}


def test_the_result_cache_sweeps_before_it_writes(tmp_path):
    from instsel_assets.scoring.result_cache import ResultCache

    cache = ResultCache(tmp_path, "shard_metric_features")
    cache.dir.mkdir()
    leftover = cache.dir / ".tmp-killed.parquet"
    leftover.write_bytes(b"PAR1")
    age(leftover, 2 * DEFAULT_STALE_SECONDS)
    cache.put("k", pd.DataFrame({"id": ["x"]}))
    assert not leftover.exists() and [p.name for p in cache.dir.iterdir()] == [cache.path("k").name]
