"""DEITA's score-first, diversity-aware selection (Liu et al. 2023, "What Makes Good Data for Alignment?").

Rule (the paper's Algorithm 1 and the reference ``IterativeFilter.filter`` / ``Combined_Filter`` in
hkust-nlp/deita): sort the rows by evol score (``deita_evol_score``, written by ``judge/templates/deita.py``)
descending; walk down the list and add a row only when its cosine similarity to its nearest already selected row
is ``<= tau`` (the reference drops a row when any similarity is ``> threshold``; default 0.9, the paper's);
stop at ``budget`` rows (the paper's m = 6K). The first row is always added.

Differences from the reference: the embeddings are the candidate column ``embedding`` (the pipeline's MiniLM
sentence embeddings of the instruction) instead of the mean last hidden state of DEITA's 13B model over the
whole conversation; ties in the evol score are broken by ascending ``id`` (the reference's sort is not
stable across runs of pandas' default quicksort). Rows are compared in blocks (one matrix product per block
against the selected set, then the rows of the block against the ones of the block added before them), which
gives exactly the sequential rule's result.

Rows without a finite evol score or without an embedding are not eligible. Fewer than ``budget`` ids come back
when the eligible rows run out (``fills_budget=False``). All-zero embeddings have similarity 0 to everything.

Registered selector: ``deita`` (reads ``id``, ``deita_evol_score``, ``embedding``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd

from instsel_assets.features.embeddings import embedding_matrix, l2_normalize
from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns

DEFAULT_TAU = 0.9
_BLOCK = 256


def check_tau(tau) -> float:
    """``tau`` as a float in [-1, 1]; ``ValueError`` naming ``tau`` otherwise."""
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not math.isfinite(float(tau)):
        raise ValueError(f"tau must be a finite number, got {tau!r}")
    if not -1.0 <= float(tau) <= 1.0:
        raise ValueError(f"tau must be a cosine similarity in [-1, 1], got {tau}")
    return float(tau)


def score_first_indices(x: np.ndarray, order: np.ndarray, budget: int, tau: float) -> list[int]:
    """Row indices of ``x`` (L2-normalised, ``(n, d)``) taken in ``order`` that pass the similarity rule."""
    budget = min(budget, len(order))
    if budget == 0:
        return []
    chosen = np.zeros((budget, x.shape[1]), dtype=np.float32)
    picks: list[int] = []
    for start in range(0, len(order), _BLOCK):
        block = order[start:start + _BLOCK]
        xb = x[block]
        if picks:
            nearest = (xb @ chosen[:len(picks)].T).max(axis=1)
        else:
            nearest = np.full(len(block), -np.inf, dtype=np.float32)
        gram = xb @ xb.T
        added: list[int] = []  # positions in the block
        for k in range(len(block)):
            near = nearest[k]
            if added:
                near = max(near, float(gram[k, added].max()))
            if near <= tau:
                added.append(k)
                chosen[len(picks)] = xb[k]
                picks.append(int(block[k]))
                if len(picks) == budget:
                    return picks
    return picks


@register_selector(
    "deita",
    family="powerful-llm",
    paper="Liu et al. 2023, What Makes Good Data for Alignment? (DEITA)",
    summary="Score-first, diversity-aware: by evol score (complexity x quality) descending, add a row only if "
            "its cosine similarity to its nearest selected row is <= tau (0.9), until the budget.",
    reads=("id", "deita_evol_score", "embedding"),
    fills_budget=False,
)
def select_deita(candidates: pd.DataFrame, budget: int, *, seed: int = 0, tau: float = DEFAULT_TAU,
                 **params) -> list[str]:
    """DEITA's selection (module docstring), ids in selection order. ``seed`` is unused.

    ``ValueError`` for a missing column, a bad ``budget`` or ``tau``, a non-numeric evol score, a negative or
    infinite one (naming the row id and field), or embeddings of different lengths.
    """
    require_columns(candidates, ("id", "deita_evol_score", "embedding"), "deita")
    budget = check_budget(budget)
    tau = check_tau(tau)
    if budget == 0 or len(candidates) == 0:
        return []
    ids = candidates["id"].astype(str).to_numpy()
    try:
        score = pd.to_numeric(candidates["deita_evol_score"], errors="raise").to_numpy(dtype="float64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"selector 'deita': column 'deita_evol_score' is not numeric ({exc})") from exc
    bad = ~np.isnan(score) & (~np.isfinite(score) | (score < 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"selector 'deita': row {ids[i]!r}, field 'deita_evol_score' = {score[i]} is not a "
                         f"non-negative finite evol score ({int(bad.sum())} such rows)")
    embeddings = candidates["embedding"].to_numpy()
    has_emb = np.array([not _missing(v) for v in embeddings], dtype=bool)
    eligible = np.flatnonzero(np.isfinite(score) & has_emb)
    if len(eligible) == 0:
        return []
    try:
        x = l2_normalize(embedding_matrix(embeddings[eligible]))
    except ValueError as exc:
        raise ValueError(f"selector 'deita': field 'embedding': {exc}") from exc
    frame = pd.DataFrame({"pos": np.arange(len(eligible)), "score": score[eligible], "id": ids[eligible]})
    order = frame.sort_values(["score", "id"], ascending=[False, True], kind="mergesort")["pos"].to_numpy()
    picks = score_first_indices(x, order, budget, tau)
    return [str(ids[eligible[p]]) for p in picks]


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
