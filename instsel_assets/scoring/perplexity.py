"""Response perplexity under a reference causal LM (the perplexity indicator of docs/METHODS.md, Family 1;
one of the indicators InstructMining, Cao et al. 2023, fits its linear rule over).

``response_loss`` is the mean token cross-entropy (nats) of the FIRST assistant turn's tokens given
everything before it, rendered with the model's chat template; ``response_ppl = exp(response_loss)``.
Low perplexity means the reference model finds the response fluent and expected for its instruction.

The (prefix, answer) pair is exactly IFD's conditioned pair (``ifd.first_turn_pairs``, the pair
``s(A|Q)`` is computed on): the answer ids include the template's end-of-turn marker, and only the first
assistant turn of a multi-turn conversation is scored. Because the pairs are identical, a
``loss_cache.LossCache`` shared with the IFD/Superfiltering scorers serves both when the model is the
same, so this column costs no extra forward pass there.

Rows without an assistant turn, or whose conversation the template cannot render, get NaN scores and
``n_answer_tokens = 0``; they are counted in ``out.attrs["n_unscorable"]``. Rows whose pair did not fit
``max_length`` (the prefix is cut on the left first, see ``loss_engine``) are counted in
``out.attrs["n_truncated"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from instsel_assets.registry import register_scorer
from instsel_assets.scoring.ifd import first_turn_pairs
from instsel_assets.scoring.loss_engine import answer_losses

PERPLEXITY_COLUMNS = ("response_loss", "response_ppl", "n_answer_tokens")


def _require_pool_columns(pool: pd.DataFrame, columns: Sequence[str], scorer: str) -> None:
    missing = [c for c in columns if c not in pool.columns]
    if missing:
        raise ValueError(f"scorer {scorer!r} needs pool column(s) {missing}; pool has {list(pool.columns)}")


def conditioned_pair(tokenizer, conversations, row_id) -> tuple[list[int], list[int]] | None:
    """The (prefix_ids, answer_ids) pair of the first assistant turn given its context, or None when the
    row has no assistant turn or its conversation cannot be rendered.

    ``ValueError`` naming the row id when ``conversations`` is not a sequence of role/content mappings.
    """
    try:
        got = first_turn_pairs(tokenizer, conversations)
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(
            f"row {row_id!r}: field 'conversations' must be a sequence of {{role, content}} mappings "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return None if got is None else got[0]


@register_scorer(
    "response_perplexity",
    family="trainable-llm",
    paper="Cao et al. 2023, 'Instruction Mining' (InstructMining): response perplexity indicator",
    summary="Mean answer-token cross-entropy of the first assistant turn given its instruction under a "
            "causal LM, and its exponential (perplexity); the same pair as IFD's s(A|Q).",
    writes=PERPLEXITY_COLUMNS,
)
def response_perplexity_scores(pool: pd.DataFrame, model, tokenizer, *, batch_size: int = 8,
                               max_length: int = 1024, progress: Callable[[int, int], None] | None = None,
                               cache=None, workers: int | str = "auto") -> pd.DataFrame:
    """One row per pool row (same order): ``id`` and ``PERPLEXITY_COLUMNS``.

    ``pool`` needs ``id`` and ``conversations``. One ``answer_losses`` call scores every row;
    ``progress(done, total)`` counts sequences (one per scorable row).
    """
    _require_pool_columns(pool, ("id", "conversations"), "response_perplexity")
    n = len(pool)
    ids = pool["id"].to_numpy()
    pairs: list[tuple[list[int], list[int]]] = []
    owners: list[int] = []
    for i, conv in enumerate(pool["conversations"].tolist()):
        pair = conditioned_pair(tokenizer, conv, ids[i])
        if pair is None:
            continue
        pairs.append(pair)
        owners.append(i)
    res = answer_losses(model, tokenizer, pairs, batch_size=batch_size, max_length=max_length,
                        progress=progress, cache=cache, workers=workers)

    loss = np.full(n, np.nan)
    n_tokens = np.zeros(n, dtype=np.int64)
    owners_a = np.asarray(owners, dtype=np.int64)
    if len(owners_a):
        loss[owners_a] = res.mean_loss
        n_tokens[owners_a] = res.n_answer_tokens
    with np.errstate(over="ignore", invalid="ignore"):
        ppl = np.exp(loss)
    out = pd.DataFrame({
        "id": ids,
        "response_loss": loss,
        "response_ppl": ppl,
        "n_answer_tokens": n_tokens,
    })
    out.attrs["n_unscorable"] = int(np.isnan(loss).sum())
    out.attrs["n_truncated"] = int((res.n_truncated > 0).sum()) if len(owners_a) else 0
    return out
