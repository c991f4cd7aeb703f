"""A content-addressed cache of whole per-shard result tables.

A per-shard asset (features, scores of one pool shard) is a pure function of the shard's rows, the code that
computes it and its settings (model id, batch size, ...). The cache key is a SHA-256 over exactly those, so
re-materialising an unchanged shard loads the table instead of computing it (no model is even loaded), while a
changed row, a code change or another model misses. Tables are Parquet files written atomically
(temporary file + rename): a crash never leaves a half-written entry. The key doubles as the output's Dagster
data version, so downstream assets see that nothing changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

_KEY_VERSION = "instsel-shard-result-v1"


def result_key(asset: str, code_version: str, settings: Mapping[str, Any], row_ids: Iterable[str]) -> str:
    """The cache key of ``asset``'s table over the rows ``row_ids`` (content ids: a row's id is the hash of its
    conversation, so equal ids mean equal inputs); the order of the rows counts (the table follows it)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([_KEY_VERSION, asset, code_version, dict(settings)], sort_keys=True,
                             default=str).encode("utf-8"))
    for row_id in row_ids:
        digest.update(b"\0" + str(row_id).encode("utf-8"))
    return digest.hexdigest()


class ResultCache:
    """``get(key)`` / ``put(key, table)`` under ``root/<asset>/<key>.parquet``."""

    def __init__(self, root: str | os.PathLike, asset: str):
        self.dir = Path(root) / asset
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.parquet"

    def get(self, key: str) -> pd.DataFrame | None:
        path = self.path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            table = pd.read_parquet(path)
        except Exception:  # a damaged entry (disk trouble): recompute rather than fail
            self.misses += 1
            return None
        self.hits += 1
        return table

    def put(self, key: str, table: pd.DataFrame) -> Path:
        from instsel_assets.tempfiles import sweep_stale

        self.dir.mkdir(parents=True, exist_ok=True)
        sweep_stale(self.dir, ".tmp-*.parquet")  # left by a writer killed before its rename
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".parquet")
        os.close(fd)
        try:
            table.to_parquet(tmp, index=False)
            os.replace(tmp, self.path(key))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self.path(key)
