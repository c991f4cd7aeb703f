"""IFD, Instruction-Following Difficulty (Cherry LLM, Li et al. 2023a), also Superfiltering's score.

``IFD(Q, A) = s(A|Q) / s(A)``: ``s(A|Q)`` is the mean token cross-entropy of the answer given the
instruction as prefix, ``s(A)`` the same with no instruction. A ratio near or above 1 means the instruction
does not help the model predict the answer (Cherry LLM drops IFD >= 1, then keeps the top fraction).

Two variants are written, as docs/METHODS.md asks:
- ``ifd``: ratio of mean losses, what Cherry LLM's reference code computes (the default);
- ``ifd_ppl_ratio``: ratio of perplexities ``exp(s(A|Q)) / exp(s(A)) = exp(s(A|Q) - s(A))``, what
  Superfiltering's code computes. It is a monotone function of the loss DIFFERENCE, not of the ratio,
  so the two rank rows differently. Superfiltering is this scorer run with a small model
  (the packaged SmolLM2-135M by default, GPT-2 124M in the paper).

Chat-template setting (a deliberate difference from the reference code, which scores raw text): the
conditioned pass renders the conversation with the model's chat template up to the first assistant turn
(``chat.prefix_answer_pairs(with_prefix=True)``), the unconditioned pass keeps only the template's assistant
header (``with_prefix=False``); both score the same answer token ids, which include the template's
end-of-turn marker.

Only the FIRST assistant turn of each conversation is scored (for single-turn pools, the only one).
Multi-turn aggregation (e.g. mean over turns, or the last turn given the whole history) comes later.
Rows without an assistant turn, or whose conversation the template cannot render, get NaN scores and
``n_answer_tokens = 0``.

Both passes of every row go through ``loss_engine.answer_losses`` in ONE call, so length bucketing and
batching cover the conditioned and unconditioned sequences together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from instsel_assets.models import chat
from instsel_assets.registry import register_scorer
from instsel_assets.scoring.loss_engine import answer_losses

log = logging.getLogger(__name__)

IFD_COLUMNS = ("loss_answer_given_instruction", "loss_answer", "ifd", "ifd_ppl_ratio", "n_answer_tokens")


def first_turn_pairs(tokenizer, conversations: Sequence[Mapping[str, Any]]) -> tuple[tuple[list[int], list[int]],
                                                                                       tuple[list[int], list[int]]] | None:
    """``((prefix_ids, answer_ids), (header_ids, answer_ids))`` for the first assistant turn, or None."""
    if conversations is None or len(conversations) == 0:
        return None
    roles = [str(t["role"]) for t in conversations]
    if "assistant" not in roles:
        return None
    conversations = list(conversations)[: roles.index("assistant") + 1]  # render nothing after the turn
    try:
        with_q = chat.prefix_answer_pairs(tokenizer, conversations, with_prefix=True)
        without_q = chat.prefix_answer_pairs(tokenizer, conversations, with_prefix=False)
    except ValueError as exc:
        log.warning("cannot render conversation for IFD: %s", exc)
        return None
    if not with_q:
        return None
    return (with_q[0].prefix_ids, with_q[0].answer_ids), (without_q[0].prefix_ids, without_q[0].answer_ids)


@register_scorer(
    "ifd",
    family="trainable-llm",
    paper="Li et al. 2023a, From Quantity to Quality (Cherry LLM)",
    summary="Instruction-Following Difficulty s(A|Q)/s(A) of the first assistant turn under a causal LM "
            "(loss ratio, Cherry LLM's default; the perplexity ratio of Superfiltering beside it).",
    writes=IFD_COLUMNS,
)
def ifd_scores(pool: pd.DataFrame, model, tokenizer, *, batch_size: int = 8, max_length: int = 1024,
               progress: Callable[[int, int], None] | None = None, cache=None,
               workers: int | str = "auto") -> pd.DataFrame:
    """One row per pool row (same order): ``id`` and ``IFD_COLUMNS``.

    ``pool`` needs ``id`` and ``conversations`` (a sequence of ``{role, content}`` mappings per row).
    ``progress(done, total)`` counts sequences (two per row). ``cache`` (a ``loss_cache.LossCache``) and
    ``workers`` are passed to the loss engine.
    """
    n = len(pool)
    pairs: list[tuple[list[int], list[int]]] = []
    owners: list[int] = []
    for i, conv in enumerate(pool["conversations"].tolist()):
        got = first_turn_pairs(tokenizer, conv)
        if got is None:
            continue
        pairs.extend(got)
        owners.append(i)
    res = answer_losses(model, tokenizer, pairs, batch_size=batch_size, max_length=max_length, progress=progress,
                        cache=cache, workers=workers)

    loss_q = np.full(n, np.nan)
    loss_a = np.full(n, np.nan)
    n_tokens = np.zeros(n, dtype=np.int64)
    owners_a = np.asarray(owners, dtype=np.int64)
    if len(owners_a):
        loss_q[owners_a] = res.mean_loss[0::2]
        loss_a[owners_a] = res.mean_loss[1::2]
        n_tokens[owners_a] = res.n_answer_tokens[0::2]
    with np.errstate(divide="ignore", invalid="ignore"):
        ifd = loss_q / loss_a
        ppl_ratio = np.exp(loss_q - loss_a)
    out = pd.DataFrame({
        "id": pool["id"].to_numpy(),
        "loss_answer_given_instruction": loss_q,
        "loss_answer": loss_a,
        "ifd": ifd,
        "ifd_ppl_ratio": ppl_ratio,
        "n_answer_tokens": n_tokens,
    })
    out.attrs["n_unscorable"] = int(n - len(owners))
    out.attrs["n_truncated"] = int((res.n_truncated[0::2] > 0).sum()) if len(owners_a) else 0
    return out
