"""Superfiltering selection (Li et al. 2024, "Superfiltering: Weak-to-Strong Data Filtering for Fast
Instruction-Tuning").

Reads the ``superfiltering_ifd`` column (IFD as a perplexity ratio under a small scorer model, from
``scoring/superfiltering.py``) and applies the rule of the reference code (``code_ifd/select_data.py``):
rows whose IFD is NaN or ``>= 1`` (the instruction does not make the answer easier to predict; the
``max_ifd`` threshold) are dropped, and the remaining rows are ranked by IFD, highest first
(ties by ascending ``id``); the top ``budget`` are kept.

Optional diversity pass (``diversity=True``; the reference ``code_diversity_fla/do_fla.py``): the top
``diversity_pool_factor x budget`` rows by IFD form the ground set, and ``budget`` of them are picked
by greedy facility location on their embeddings (``selection/facility_location.py``, submodlib's
euclidean similarity ``exp(-||x_i - x_j|| / d)`` by default, lazy greedy); the ids come back in pick
order. The factor defaults to 10, the reference script's setting (``--ifd_num 10400 --fla_num 1040``
on Alpaca's 52K: 20% by IFD, then 2% by facility location). Deliberate difference: the reference
embeds instruction, input AND response with all-MiniLM-L6-v2; this selector uses the ``embedding``
column it is given (the pipeline's is the MiniLM embedding of the user turns).

Registered selector: ``superfiltering`` (reads ``id``, ``superfiltering_ifd``; ``embedding`` only when
``diversity=True``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd

from instsel_assets.features.embeddings import embedding_matrix
from instsel_assets.registry import register_selector
from instsel_assets.selection.facility_location import (DEFAULT_MAX_DENSE, SIMILARITIES,
                                                        facility_location_indices)
from instsel_assets.selection.random_subset import check_budget, require_columns

SCORE_COLUMN = "superfiltering_ifd"
DEFAULT_DIVERSITY_POOL_FACTOR = 10.0


def ranked_by_ifd(candidates: pd.DataFrame, *, max_ifd: float = 1.0) -> pd.DataFrame:
    """The eligible rows (finite ``superfiltering_ifd < max_ifd``) with their position in
    ``candidates`` (column ``row``), highest IFD first, ties by ascending ``id``."""
    score = pd.to_numeric(candidates[SCORE_COLUMN], errors="raise").to_numpy(dtype="float64")
    frame = pd.DataFrame({"id": candidates["id"].astype(str).to_numpy(), "ifd": score,
                          "row": np.arange(len(candidates))})
    keep = np.isfinite(score) & (score < max_ifd)
    return frame[keep].sort_values(["ifd", "id"], ascending=[False, True], kind="mergesort")


@register_selector(
    "superfiltering",
    family="trainable-llm",
    paper="Li et al. 2024, Superfiltering: Weak-to-Strong Data Filtering for Fast Instruction-Tuning",
    summary="Drop perplexity-ratio IFD >= 1 and unscored rows, keep the highest IFD; optionally take the top "
            "10 x budget by IFD and pick budget of them by greedy facility location on the embeddings.",
    reads=("id", SCORE_COLUMN, "embedding"),
    fills_budget=False,
)
def select_superfiltering(
    candidates: pd.DataFrame,
    budget: int,
    *,
    seed: int = 0,
    max_ifd: float = 1.0,
    diversity: bool = False,
    diversity_pool_factor: float = DEFAULT_DIVERSITY_POOL_FACTOR,
    similarity: str = "euclidean",
    max_dense: int = DEFAULT_MAX_DENSE,
    **params,
) -> list[str]:
    """Superfiltering's ids, at most ``budget`` (fewer only when fewer rows are eligible).

    - ``diversity=False``: the ``budget`` highest-IFD eligible ids, highest first.
    - ``diversity=True``: the top ``ceil(diversity_pool_factor * budget)`` eligible ids by IFD, then
      ``budget`` of them by greedy facility location (``similarity``: ``"euclidean"`` or ``"cosine"``;
      ``max_dense``: see ``facility_location_indices``), in pick order. Every row of that ground set
      needs an ``embedding``; a missing one raises ``ValueError`` naming the row id.
    ``seed`` is unused (both passes are deterministic).
    """
    require_columns(candidates, ("id", SCORE_COLUMN), "superfiltering")
    budget = check_budget(budget)
    if isinstance(diversity, (bool, np.bool_)):
        diversity = bool(diversity)
    else:
        raise ValueError(f"diversity must be True or False, got {diversity!r}")
    if isinstance(max_ifd, bool) or not isinstance(max_ifd, numbers.Real) or math.isnan(max_ifd):
        raise ValueError(f"max_ifd must be a number, got {max_ifd!r}")
    if diversity:
        require_columns(candidates, ("embedding",), "superfiltering")
        if (isinstance(diversity_pool_factor, bool) or not isinstance(diversity_pool_factor, numbers.Real)
                or not math.isfinite(diversity_pool_factor) or diversity_pool_factor < 1):
            raise ValueError(f"diversity_pool_factor must be a finite number >= 1, got {diversity_pool_factor!r}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {list(SIMILARITIES)}, got {similarity!r}")
    if budget == 0 or len(candidates) == 0:
        return []
    ranked = ranked_by_ifd(candidates, max_ifd=max_ifd)
    if not diversity:
        return ranked["id"].head(budget).tolist()

    ground = ranked.head(math.ceil(diversity_pool_factor * budget))
    values = candidates["embedding"].to_numpy()[ground["row"].to_numpy()]
    missing = [i for i, v in zip(ground["id"], values) if v is None or (isinstance(v, float) and math.isnan(v))]
    if missing:
        raise ValueError(
            f"superfiltering (diversity=True): field 'embedding' is missing for id(s) {missing[:5]}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    x = embedding_matrix(values)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise ValueError(f"superfiltering (diversity=True): field 'embedding' of id {ground['id'].iloc[bad[0]]!r} "
                         "has a NaN or infinite value")
    picks = facility_location_indices(x, budget, similarity=similarity, max_dense=max_dense)
    ids = ground["id"].to_numpy()
    return [str(ids[i]) for i in picks]
