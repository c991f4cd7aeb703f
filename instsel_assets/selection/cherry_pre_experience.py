"""Cherry LLM's "pre-experienced" subset (Li et al. 2023a, "From Quantity to Quality", section 2.1).

Before computing IFD, Cherry LLM fine-tunes the base model briefly on a small, diverse subset so that
it knows the instruction-following format. The reference code (``cherry_seletion/data_by_cluster.py``
run by ``scripts/pre_experience_selection.sh``) builds that subset as follows, and so does
:func:`pre_experience_indices`:

1. k-means with scikit-learn, ``KMeans(n_clusters=100, random_state=0)`` (``n_init=10``, scikit-learn's
   default when the code was written) on one embedding per instruction;
2. for each cluster, in label order: a cluster with fewer than ``per_cluster`` (M = 10) rows gives all
   of them. Otherwise only the rows whose instruction perplexity lies between the 25th and 75th
   percentile of the cluster's are kept (the "middle confidence" rows; the script passes
   ``--low_th 25 --up_th 75``); when fewer than M of them remain, all of them are taken, otherwise
   M are taken evenly spaced in row order (``middle[::len(middle) // M][:M]``). The M are therefore
   neither drawn at random nor the ones nearest the centroid.

Deliberate differences:
- The reference embedding is the mean of the base LLM's last hidden states over the instruction text,
  and the perplexity is that of the instruction text under the same base LLM. Here the embedding is
  whatever ``embedding`` column is given (the pipeline's: the MiniLM sentence embedding of the user
  turns), and the middle-perplexity filter uses an instruction loss column when one is named
  (``loss_column``; :func:`instruction_loss_scores` computes it with the base model). Mean loss and
  perplexity keep the same rows, as the percentile band is invariant under a monotone map. Without a
  loss column the filter is skipped and the M rows are spread evenly over the whole cluster.
- The number of clusters is clamped to the number of distinct embeddings (k-means cannot make more
  non-empty clusters), with a logged warning.
- As in the reference, a cluster of exactly M rows goes through the loss filter, so with a loss column
  it gives about M/2 rows.

The subset has about ``n_clusters x per_cluster`` rows (1000 in the paper); the selector's ``budget`` is
not used. The fine-tune on it is run by ``instsel_assets.training.sft.finetune_lora``.

Registered selector: ``cherry_pre_experience`` (reads ``id``, ``embedding``; and ``loss_column`` when named).
Registered scorer: ``cherry_instruction_loss`` (writes ``instruction_loss``, ``n_instruction_tokens``).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable

import numpy as np
import pandas as pd

from instsel_assets.features.embeddings import embedding_matrix
from instsel_assets.features.text_stats import user_text
from instsel_assets.registry import register_scorer, register_selector
from instsel_assets.scoring.loss_engine import answer_losses
from instsel_assets.selection.random_subset import check_budget, require_columns

log = logging.getLogger(__name__)

DEFAULT_N_CLUSTERS = 100
DEFAULT_PER_CLUSTER = 10
DEFAULT_LOW_PERCENTILE = 25.0
DEFAULT_HIGH_PERCENTILE = 75.0
DEFAULT_N_INIT = 10
INSTRUCTION_LOSS_COLUMNS = ("instruction_loss", "n_instruction_tokens")


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_percentiles(low, high) -> tuple[float, float]:
    for name, v in (("low_percentile", low), ("high_percentile", high)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 <= v <= 100:
            raise ValueError(f"{name} must be a number in [0, 100], got {v!r}")
    if low > high:
        raise ValueError(f"low_percentile ({low}) must not exceed high_percentile ({high})")
    return float(low), float(high)


def cluster_labels(embeddings: np.ndarray, *, n_clusters: int = DEFAULT_N_CLUSTERS, seed: int = 0,
                   n_init: int = DEFAULT_N_INIT) -> np.ndarray:
    """k-means labels of the rows (``KMeans(n_clusters, n_init, random_state=seed)``), with
    ``n_clusters`` clamped to the number of distinct rows (logged)."""
    from sklearn.cluster import KMeans

    n_clusters = _positive_int(n_clusters, "n_clusters")
    n_init = _positive_int(n_init, "n_init")
    x = np.asarray(embeddings, dtype=np.float32)
    distinct = int(np.unique(x, axis=0).shape[0])
    if n_clusters > distinct:
        log.warning("n_clusters=%d is more than the %d distinct embeddings; using %d clusters",
                    n_clusters, distinct, distinct)
        n_clusters = distinct
    if n_clusters == 1:
        return np.zeros(x.shape[0], dtype=np.int64)
    model = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(x)
    return model.labels_.astype(np.int64)


def pick_in_cluster(members: np.ndarray, per_cluster: int, loss: np.ndarray | None = None,
                    low_percentile: float = DEFAULT_LOW_PERCENTILE,
                    high_percentile: float = DEFAULT_HIGH_PERCENTILE) -> np.ndarray:
    """The reference code's pick inside one cluster (``members``: its row indices, ascending; ``loss``:
    the loss of every row of the data set, or None to skip the middle-band filter)."""
    if len(members) < per_cluster:
        return members
    middle = members
    if loss is not None:
        values = loss[members]
        lower, upper = np.percentile(values, [low_percentile, high_percentile])
        middle = members[(values >= lower) & (values <= upper)]
    if len(middle) < per_cluster:
        return middle
    return middle[:: len(middle) // per_cluster][:per_cluster]


def pre_experience_indices(
    embeddings: np.ndarray,
    *,
    n_clusters: int = DEFAULT_N_CLUSTERS,
    per_cluster: int = DEFAULT_PER_CLUSTER,
    seed: int = 0,
    instruction_loss: np.ndarray | None = None,
    low_percentile: float = DEFAULT_LOW_PERCENTILE,
    high_percentile: float = DEFAULT_HIGH_PERCENTILE,
    n_init: int = DEFAULT_N_INIT,
) -> list[int]:
    """Row indices of the pre-experienced subset (rule in the module docstring), cluster by cluster in
    k-means label order, ascending row order inside a cluster.

    ``instruction_loss`` (one finite value per row, or None): mean loss or perplexity of each
    instruction under the base model, for the ``[low_percentile, high_percentile]`` band.
    ``ValueError`` names the parameter, or the row whose embedding or loss is not finite.
    """
    n_clusters = _positive_int(n_clusters, "n_clusters")
    per_cluster = _positive_int(per_cluster, "per_cluster")
    n_init = _positive_int(n_init, "n_init")
    low_percentile, high_percentile = _check_percentiles(low_percentile, high_percentile)
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-d (n, d), got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise ValueError(f"embedding of row {int(bad[0])} has a NaN or infinite value")
    loss = None
    if instruction_loss is not None:
        loss = np.asarray(instruction_loss, dtype=np.float64).reshape(-1)
        if loss.shape[0] != x.shape[0]:
            raise ValueError(f"instruction_loss has {loss.shape[0]} values for {x.shape[0]} embeddings")
        bad = np.flatnonzero(~np.isfinite(loss))
        if len(bad):
            raise ValueError(f"instruction_loss of row {int(bad[0])} is not finite ({loss[bad[0]]})")
    if x.shape[0] == 0:
        return []
    labels = cluster_labels(x, n_clusters=n_clusters, seed=seed, n_init=n_init)
    picks: list[int] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        picks.extend(int(i) for i in pick_in_cluster(members, per_cluster, loss, low_percentile, high_percentile))
    return picks


@register_selector(
    "cherry_pre_experience",
    family="trainable-llm",
    paper="Li et al. 2023a, From Quantity to Quality (Cherry LLM): learning from brief experience",
    summary="k-means on the instruction embeddings (100 clusters); per cluster 10 rows evenly spaced among "
            "the middle-perplexity ones: the subset the pre-experienced model is fine-tuned on.",
    reads=("id", "embedding"),
)
def select_cherry_pre_experience(
    candidates: pd.DataFrame,
    budget: int,
    *,
    seed: int = 0,
    n_clusters: int = DEFAULT_N_CLUSTERS,
    per_cluster: int = DEFAULT_PER_CLUSTER,
    loss_column: str | None = None,
    low_percentile: float = DEFAULT_LOW_PERCENTILE,
    high_percentile: float = DEFAULT_HIGH_PERCENTILE,
    n_init: int = DEFAULT_N_INIT,
    **params,
) -> list[str]:
    """Ids of the pre-experienced subset, cluster by cluster (see :func:`pre_experience_indices`).

    ``budget`` is validated but not used: the size is set by ``n_clusters x per_cluster`` (at most;
    small clusters and the middle-band filter give fewer). ``seed`` is k-means' ``random_state``.
    ``loss_column``: name of a column of instruction losses (e.g. ``instruction_loss`` from the
    ``cherry_instruction_loss`` scorer) for the middle-perplexity filter; None skips it.
    A missing embedding or loss raises ``ValueError`` naming the row id and the field.
    """
    columns = ["id", "embedding"] + ([loss_column] if loss_column is not None else [])
    require_columns(candidates, columns, "cherry_pre_experience")
    check_budget(budget)
    # parameters are checked before the rows, so a bad configuration fails on an empty pool too
    n_clusters = _positive_int(n_clusters, "n_clusters")
    per_cluster = _positive_int(per_cluster, "per_cluster")
    n_init = _positive_int(n_init, "n_init")
    low_percentile, high_percentile = _check_percentiles(low_percentile, high_percentile)
    if len(candidates) == 0:
        return []
    ids = candidates["id"].astype(str).to_numpy()
    values = candidates["embedding"].to_numpy()
    missing = [i for i, v in zip(ids, values) if v is None or (isinstance(v, float) and math.isnan(v))]
    if missing:
        raise ValueError(f"cherry_pre_experience: field 'embedding' is missing for id(s) {missing[:5]}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    x = embedding_matrix(values)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise ValueError(f"cherry_pre_experience: field 'embedding' of id {ids[bad[0]]!r} has a NaN or infinite value")
    loss = None
    if loss_column is not None:
        loss = pd.to_numeric(candidates[loss_column], errors="raise").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(loss))
        if len(bad):
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise ValueError(f"cherry_pre_experience: field {loss_column!r} is not finite for id(s) "
                             f"{[str(ids[i]) for i in bad[:5]]}{more}")
    if budget != n_clusters * per_cluster:
        log.info("cherry_pre_experience ignores budget=%s: the subset size is set by n_clusters x per_cluster = %d",
                 budget, n_clusters * per_cluster)
    picks = pre_experience_indices(x, n_clusters=n_clusters, per_cluster=per_cluster, seed=seed,
                                   instruction_loss=loss, low_percentile=low_percentile,
                                   high_percentile=high_percentile, n_init=n_init)
    return [str(ids[i]) for i in picks]


@register_scorer(
    "cherry_instruction_loss",
    family="trainable-llm",
    paper="Li et al. 2023a, From Quantity to Quality (Cherry LLM): learning from brief experience",
    summary="Mean token loss of the instruction text (user turns) under the base model: the perplexity that "
            "picks the middle-band rows of each cluster for the pre-experienced subset.",
    writes=INSTRUCTION_LOSS_COLUMNS,
)
def instruction_loss_scores(pool: pd.DataFrame, model, tokenizer, *, batch_size: int = 8, max_length: int = 1024,
                            progress: Callable[[int, int], None] | None = None, cache=None,
                            workers: int | str = "auto") -> pd.DataFrame:
    """One row per pool row (same order): ``id``, ``instruction_loss`` (mean cross-entropy, nats, of the
    instruction tokens; its exp is the reference's perplexity) and ``n_instruction_tokens`` (scored).

    The text is the user side of the row (all user turns joined by a newline; for flat rows
    ``instruction`` and ``input``), as in the reference: raw text, no chat template. It is tokenised
    without special tokens and scored after the tokenizer's BOS token when it has one (so every token
    is predicted, like the reference's LLaMA tokenizer); without a BOS the first token has no
    prediction and is not scored. A longer text keeps its first tokens (the loss engine cuts an
    answer that does not fit on the right, as the reference's ``truncation=True`` does).
    Rows with no user text (or a single token and no BOS) get NaN and 0 tokens; they are counted in
    ``out.attrs["n_unscorable"]``; ``out.attrs["n_truncated"]`` counts rows cut to ``max_length``.
    ``cache`` (a ``loss_cache.LossCache``) and ``workers`` are passed to the loss engine.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    prefix = [] if bos is None else [int(bos)]
    cols = list(pool.columns)
    pairs: list[tuple[list[int], list[int]]] = []
    for row in pool.itertuples(index=False, name=None):
        text = user_text(dict(zip(cols, row)))
        pairs.append((prefix, list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []))
    res = answer_losses(model, tokenizer, pairs, batch_size=batch_size, max_length=max_length,
                        progress=progress, cache=cache, workers=workers)
    out = pd.DataFrame({
        "id": pool["id"].to_numpy(),
        "instruction_loss": res.mean_loss,
        "n_instruction_tokens": res.n_answer_tokens,
    })
    out.attrs["n_unscorable"] = int((res.n_answer_tokens == 0).sum())
    out.attrs["n_truncated"] = int((res.n_truncated > 0).sum())
    return out
