"""LIFT selection (Xu et al. 2023b, "Rethinking the Instruction Quality: LIFT is What You Need"): a diversity
pre-selection by row variance on embeddings, then a re-selection on the judge's quality scores.

Rule implemented here:

1. Vectorise and reduce: the candidate column ``embedding`` (the pipeline's MiniLM instruction embeddings; the
   paper embeds with an OpenAI embedding model) is centred and projected on its first ``pca_components``
   principal components (PCA by SVD; 16 by default, at most ``min(n, d)``; ``pca_components=None`` keeps the
   raw embeddings).
2. Row variance: the variance of each row's coordinates (numpy ``var``, population). The paper keeps the rows
   of highest row variance as the most informative, least redundant part of the expanded data; here the
   ``ceil(variance_factor * budget)`` rows of highest row variance are kept (``variance_factor`` 2.0 by
   default, a project choice: the paper reports its own absolute counts, not a ratio), or ``n_variance`` rows
   when given.
3. Quality re-selection: among those, the ``budget`` rows of highest ``lift_score`` (the mean of the judge's
   five criteria, ``judge/templates/lift.py``), highest first.

Ties (in row variance and in score) are broken by ascending ``id``. Rows without an embedding cannot enter
step 1; rows without a finite ``lift_score`` are never selected, so fewer than ``budget`` ids come back when
fewer such rows survive step 2 (``fills_budget=False``). ``seed`` is unused (the SVD is deterministic up to
signs, which do not change a variance).

Registered selector: ``lift`` (reads ``id``, ``embedding``, ``lift_score``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd

from instsel_assets.features.embeddings import embedding_matrix
from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns

DEFAULT_PCA_COMPONENTS = 16
DEFAULT_VARIANCE_FACTOR = 2.0
SCORE_SCALE = (1.0, 10.0)
_SLACK = 1e-6


def row_variance(x: np.ndarray, pca_components: int | None = DEFAULT_PCA_COMPONENTS) -> np.ndarray:
    """The variance of every row of ``x`` ``(n, d)`` after centring and projecting on the first
    ``pca_components`` principal components (``None``: of the raw rows)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-d (n, d), got shape {x.shape}")
    if pca_components is None or len(x) == 0:
        return x.var(axis=1) if x.size else np.zeros(len(x))
    k = min(int(pca_components), x.shape[0], x.shape[1])
    centred = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return (centred @ vt[:k].T).var(axis=1)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@register_selector(
    "lift",
    family="powerful-llm",
    paper="Xu et al. 2023b, Rethinking the Instruction Quality: LIFT is What You Need",
    summary="Keep the rows of highest embedding row variance (after PCA; 2x the budget by default), then the "
            "budget rows of highest lift_score (mean of the judge's five criteria) among them.",
    reads=("id", "embedding", "lift_score"),
    fills_budget=False,
)
def select_lift(candidates: pd.DataFrame, budget: int, *, seed: int = 0,
                pca_components: int | None = DEFAULT_PCA_COMPONENTS,
                variance_factor: float = DEFAULT_VARIANCE_FACTOR, n_variance: int | None = None,
                **params) -> list[str]:
    """LIFT's two-step selection (module docstring), ids highest ``lift_score`` first.

    ``ValueError`` for a missing column, a bad ``budget`` or parameter, a non-numeric ``lift_score``, a score
    outside [1, 10] (naming the row id and field), or embeddings of different lengths.
    """
    require_columns(candidates, ("id", "embedding", "lift_score"), "lift")
    budget = check_budget(budget)
    if pca_components is not None:
        pca_components = _positive_int("pca_components", pca_components)
    if n_variance is not None:
        n_variance = _positive_int("n_variance", n_variance)
    elif (isinstance(variance_factor, bool) or not isinstance(variance_factor, numbers.Real)
          or not math.isfinite(float(variance_factor)) or variance_factor < 1.0):
        raise ValueError(f"variance_factor must be a finite number >= 1, got {variance_factor!r}")
    if budget == 0 or len(candidates) == 0:
        return []
    ids = candidates["id"].astype(str).to_numpy()
    try:
        score = pd.to_numeric(candidates["lift_score"], errors="raise").to_numpy(dtype="float64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"selector 'lift': column 'lift_score' is not numeric ({exc})") from exc
    lo, hi = SCORE_SCALE
    bad = ~np.isnan(score) & (~np.isfinite(score) | (score < lo - _SLACK) | (score > hi + _SLACK))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"selector 'lift': row {ids[i]!r}, field 'lift_score' = {score[i]} is outside the "
                         f"scale [{lo:g}, {hi:g}] ({int(bad.sum())} such rows)")
    embeddings = candidates["embedding"].to_numpy()
    has_emb = np.flatnonzero([not _missing(v) for v in embeddings])
    if len(has_emb) == 0:
        return []
    try:
        x = embedding_matrix(embeddings[has_emb])
    except ValueError as exc:
        raise ValueError(f"selector 'lift': field 'embedding': {exc}") from exc
    keep = n_variance if n_variance is not None else math.ceil(float(variance_factor) * budget)
    variance = row_variance(x, pca_components)
    by_variance = pd.DataFrame({"pos": has_emb, "var": variance, "id": ids[has_emb]})
    by_variance = by_variance.sort_values(["var", "id"], ascending=[False, True], kind="mergesort").head(keep)
    pos = by_variance["pos"].to_numpy()
    frame = pd.DataFrame({"id": ids[pos], "score": score[pos]})
    frame = frame[np.isfinite(frame["score"].to_numpy())]
    frame = frame.sort_values(["score", "id"], ascending=[False, True], kind="mergesort")
    return frame["id"].head(budget).tolist()


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
