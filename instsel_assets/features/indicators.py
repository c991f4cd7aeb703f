"""Per-row text indicators of docs/METHODS.md, Family 1: token lengths, lexical diversity, language.

Character lengths are not computed here: they live in a SQL model (``dbt_like_sql/``).
This module registers nothing; the ``lexical_diversity`` scorer (``text_stats.py``) and the
Dagster ``metric_features`` asset call it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from instsel_assets.features.text_stats import (
    detect_language,
    flat_text,
    mtld,
    response_text,
    turn_contents,
    type_token_ratio,
    user_text,
    words,
)

INDICATOR_COLUMNS = (
    "id",
    "language",
    "instruction_tokens",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "ttr",
    "mtld",
)

_TOKENIZER_BATCH = 512


def count_tokens(texts: Sequence[str], tokenizer=None, batch_size: int = _TOKENIZER_BATCH) -> np.ndarray:
    """Token count of each text.

    With a Hugging Face tokenizer: ``len(tokenizer(text, add_special_tokens=False)["input_ids"])``,
    called on batches of ``batch_size`` texts. Without one (``None``): the number of
    :func:`~instsel_assets.features.text_stats.words` (CJK ideographs count one each).
    """
    texts = ["" if t is None else str(t) for t in texts]
    out = np.zeros(len(texts), dtype=np.int64)
    if tokenizer is None:
        for i, t in enumerate(texts):
            out[i] = len(words(t))
        return out
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        # empty strings are skipped: some tokenizers reject them in a batch, and they have 0 tokens
        idx = [j for j, t in enumerate(chunk) if t]
        if not idx:
            continue
        ids = tokenizer([chunk[j] for j in idx], add_special_tokens=False)["input_ids"]
        for j, seq in zip(idx, ids):
            out[start + j] = len(seq)
    return out


def compute_text_indicators(pool: pd.DataFrame, tokenizer=None) -> pd.DataFrame:
    """One row per pool row, in pool order, with columns :data:`INDICATOR_COLUMNS`.

    - ``instruction_tokens`` / ``input_tokens`` / ``output_tokens``: tokens of the flat
      ``instruction`` / ``input`` / ``output`` columns (for multi-turn rows: the first user turn
      and first reply, as the pool schema defines them);
    - ``total_tokens``: the sum of the tokens of every turn's content in ``conversations``
      (system, user and assistant turns; all turns of a multi-turn row); rows without a
      conversation use ``instruction + input + output``. Chat-template tokens are not counted;
    - tokens come from ``tokenizer`` (any Hugging Face tokenizer, no special tokens), or, when it
      is ``None``, are the :func:`words` count (CJK ideographs one each, punctuation not counted);
    - ``ttr`` / ``mtld``: on the :func:`words` of the response (all assistant turns joined),
      whatever the tokenizer (lexical diversity is about words, not subword pieces);
    - ``language``: :func:`detect_language` of the user turns joined.
    """
    missing = [c for c in ("id", "instruction", "input", "output") if c not in pool.columns]
    if missing:
        raise ValueError(f"compute_text_indicators needs column(s) {missing}")
    cols = list(pool.columns)
    rows = [dict(zip(cols, v)) for v in pool.itertuples(index=False, name=None)]
    n = len(rows)

    instr = [flat_text(r, "instruction") for r in rows]
    inp = [flat_text(r, "input") for r in rows]
    outp = [flat_text(r, "output") for r in rows]

    # total: all turn contents, flattened with an owner index, counted in one batched pass
    turn_texts: list[str] = []
    owner: list[int] = []
    for i, r in enumerate(rows):
        turns = turn_contents(r.get("conversations"))
        if turns is None:
            turns = [instr[i], inp[i], outp[i]]
        turn_texts.extend(turns)
        owner.extend([i] * len(turns))

    instruction_tokens = count_tokens(instr, tokenizer)
    input_tokens = count_tokens(inp, tokenizer)
    output_tokens = count_tokens(outp, tokenizer)
    turn_tokens = count_tokens(turn_texts, tokenizer)
    total_tokens = np.zeros(n, dtype=np.int64)
    if turn_texts:
        np.add.at(total_tokens, np.asarray(owner, dtype=np.int64), turn_tokens)

    ttr = np.zeros(n, dtype=np.float64)
    mtld_values = np.zeros(n, dtype=np.float64)
    language = []
    for i, r in enumerate(rows):
        toks = words(response_text(r))
        ttr[i] = type_token_ratio(toks)
        mtld_values[i] = mtld(toks)
        language.append(detect_language(user_text(r)))

    return pd.DataFrame(
        {
            "id": pool["id"].astype(str).to_numpy(),
            "language": np.asarray(language, dtype=object),
            "instruction_tokens": instruction_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": total_tokens,
            "ttr": ttr,
            "mtld": mtld_values,
        },
        columns=list(INDICATOR_COLUMNS),
    )
