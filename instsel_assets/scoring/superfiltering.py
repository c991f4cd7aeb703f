"""Superfiltering (Li et al. 2024, "Superfiltering: Weak-to-Strong Data Filtering for Fast Instruction-Tuning").

The paper's finding is weak-to-strong consistency: a SMALL language model (GPT-2 124M in the paper)
ranks instruction data by IFD much like the 7B target does, at a fraction of the cost, and the
pre-experienced fine-tune of Cherry LLM is not needed. The score is IFD as the reference code
computes it (``code_ifd/put_analysis_to_data.py``): the ratio of PERPLEXITIES

    superfiltering_ifd = ppl(A|Q) / ppl(A) = exp(s(A|Q) - s(A)),

where ``s`` is the mean answer-token cross-entropy. It ranks rows by the loss difference, not by the
loss ratio of Cherry LLM (``superfiltering_ifd_loss_ratio``, written beside it).

Here the small scorer model is the packaged SmolLM2-135M-Instruct by default (``DEFAULT_SCORER_MODEL``);
any Hugging Face causal LM can be passed instead. The losses come from :func:`instsel_assets.scoring.ifd.ifd_scores`
(one batched ``answer_losses`` call for both passes), so the deliberate differences of that scorer
apply: the conversation is rendered with the model's chat template (the reference code scores the raw
text ``"{instruction}\\n{input}\\n" + output``), and only the first assistant turn is scored. Rows without
an assistant turn get NaN scores and ``n_answer_tokens = 0`` and are counted in ``out.attrs["n_unscorable"]``.

Registered scorer: ``superfiltering``.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from instsel_assets.models.loading import PACKAGED_SMOLLM2
from instsel_assets.registry import register_scorer
from instsel_assets.scoring import ifd

DEFAULT_SCORER_MODEL = PACKAGED_SMOLLM2

# output column -> ifd_scores column
_FROM_IFD = {
    "superfiltering_ifd": "ifd_ppl_ratio",
    "superfiltering_ifd_loss_ratio": "ifd",
    "superfiltering_loss_given_instruction": "loss_answer_given_instruction",
    "superfiltering_loss_answer": "loss_answer",
    "n_answer_tokens": "n_answer_tokens",
}
SUPERFILTERING_COLUMNS = tuple(_FROM_IFD)


@register_scorer(
    "superfiltering",
    family="trainable-llm",
    paper="Li et al. 2024, Superfiltering: Weak-to-Strong Data Filtering for Fast Instruction-Tuning",
    summary="IFD as a perplexity ratio exp(s(A|Q) - s(A)) of the first assistant turn under a small scorer "
            "model (SmolLM2-135M by default; GPT-2 124M in the paper), with no pre-experienced fine-tune.",
    writes=SUPERFILTERING_COLUMNS,
)
def superfiltering_scores(pool: pd.DataFrame, model, tokenizer, *, batch_size: int = 8, max_length: int = 1024,
                          progress: Callable[[int, int], None] | None = None, cache=None,
                          workers: int | str = "auto") -> pd.DataFrame:
    """One row per pool row (same order): ``id`` and ``SUPERFILTERING_COLUMNS``.

    ``pool`` needs ``id`` and ``conversations``. ``max_length`` 1024 is the reference code's default.
    ``progress(done, total)`` counts sequences (two per row). ``cache`` (a ``loss_cache.LossCache``) and
    ``workers`` go through ``ifd_scores`` to the loss engine.
    ``out.attrs``: ``n_unscorable`` and ``n_truncated`` from ``ifd_scores``.
    """
    scores = ifd.ifd_scores(pool, model, tokenizer, batch_size=batch_size, max_length=max_length,
                            progress=progress, cache=cache, workers=workers)
    out = pd.DataFrame({"id": scores["id"].to_numpy()})
    for name, source in _FROM_IFD.items():
        out[name] = scores[source].to_numpy()
    out.attrs.update(scores.attrs)
    return out
