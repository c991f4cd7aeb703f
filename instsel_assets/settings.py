"""Where things live on disk. Every path can be moved with an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """Bundled datasets and ``sources.yaml`` (``INSTSEL_DATA_DIR``, default ``<project>/data``)."""
    return Path(os.environ.get("INSTSEL_DATA_DIR", PROJECT_ROOT / "data")).resolve()


def storage_root() -> Path:
    """DuckDB file, checkpoints, reports and caches (``INSTSEL_HOME``, default ``<project>/.instsel``)."""
    return Path(os.environ.get("INSTSEL_HOME", PROJECT_ROOT / ".instsel")).resolve()


def model_cache_dir() -> Path:
    """Converted model weights (GGUF -> safetensors) (``INSTSEL_MODEL_CACHE``, default ``<storage>/models``)."""
    return Path(os.environ.get("INSTSEL_MODEL_CACHE", storage_root() / "models")).resolve()


def sql_models_dir() -> Path:
    """The SQL models (``INSTSEL_SQL_DIR``, default ``<project>/dbt_like_sql``)."""
    return Path(os.environ.get("INSTSEL_SQL_DIR", PROJECT_ROOT / "dbt_like_sql")).resolve()


def loss_cache_dir() -> Path:
    """The loss engine's result shards (``INSTSEL_LOSS_CACHE``, default ``<storage>/cache/loss``)."""
    return Path(os.environ.get("INSTSEL_LOSS_CACHE", storage_root() / "cache" / "loss")).resolve()


def judge_cache_dir() -> Path:
    """The judge engine's reply shards (``INSTSEL_JUDGE_CACHE``, default ``<storage>/cache/judge``)."""
    return Path(os.environ.get("INSTSEL_JUDGE_CACHE", storage_root() / "cache" / "judge")).resolve()


def env_seconds(name: str, default: float, *, minimum: float = 0, whole: bool = False) -> float:
    """A duration from the environment variable ``name`` (``default`` when unset or blank); ``ValueError`` naming
    the variable and its value for anything but a number (a whole one with ``whole``) of at least ``minimum``."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value) if whole else float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a {'whole ' if whole else ''}number of seconds") from None
    if not number >= minimum:  # also refuses nan
        raise ValueError(f"{name}={value!r}: expected at least {minimum:g} second{'' if minimum == 1 else 's'}")
    return number
