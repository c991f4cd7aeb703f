"""Held-out loss: the cheap evaluation signal that needs no judge (docs/METHODS.md, "Evaluation").

The loss of a test set's reference answers under a (fine-tuned) model, computed by the same engine as
every other LM score (``scoring.loss_engine.answer_losses``): the prompt is the user turn, the reference
is the assistant turn, both rendered with the model's chat template; only the reference tokens (with
the template's end-of-turn marker) are scored.

The bundled test set is AlpacaEval's 805 instructions with text-davinci-003's outputs as references
(``data/eval/alpaca_eval_805/text_davinci_003_model_outputs.json``, the file AlpacaEval itself uses
as its reference outputs).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from instsel_assets import settings
from instsel_assets.models import chat
from instsel_assets.scoring.loss_engine import answer_losses

ALPACA_EVAL_FILE = Path("eval") / "alpaca_eval_805" / "text_davinci_003_model_outputs.json"


def default_alpaca_eval_path() -> Path:
    return settings.data_root() / ALPACA_EVAL_FILE


def _text_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def load_alpaca_eval(path: str | Path | None = None, limit: int | None = None) -> pd.DataFrame:
    """An AlpacaEval model-outputs JSON file (a list of ``{instruction, output, ...}``) as a DataFrame
    with ``id`` (hash of the instruction), ``instruction`` and ``reference`` (the ``output``), in file order.

    ``path`` defaults to the bundled text-davinci-003 outputs; ``limit`` keeps the first rows.
    """
    path = Path(path) if path is not None else default_alpaca_eval_path()
    with open(path, encoding="utf-8") as fh:
        records = json.load(fh)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    if limit is not None:
        records = records[: max(int(limit), 0)]
    rows = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "instruction" not in rec or "output" not in rec:
            raise ValueError(f"{path}: record {i} lacks 'instruction' or 'output'")
        rows.append({"id": _text_id(str(rec["instruction"])), "instruction": str(rec["instruction"]),
                     "reference": str(rec["output"])})
    return pd.DataFrame(rows, columns=["id", "instruction", "reference"])


def heldout_loss(model, tokenizer, prompts: list[str], references: list[str], *, batch_size: int = 8,
                 max_length: int = 1024) -> pd.DataFrame:
    """Per example: ``mean_loss`` (mean cross-entropy of the reference tokens given the prompt) and
    ``n_answer_tokens``, in input order."""
    if len(prompts) != len(references):
        raise ValueError(f"{len(prompts)} prompts but {len(references)} references")
    return heldout_loss_turns(model, tokenizer, [[p] for p in prompts], [[r] for r in references],
                              batch_size=batch_size, max_length=max_length)


def heldout_loss_turns(model, tokenizer, turns: list[list[str]], references: list[list[str]], *,
                       batch_size: int = 8, max_length: int = 1024, **engine_kwargs) -> pd.DataFrame:
    """Multi-turn held-out loss (MT-Bench's two-turn references): per item, the conversation of its user turns
    and reference answers is rendered with the chat template, every reference turn is scored given everything
    before it, and ``mean_loss`` is the token-weighted mean over the item's reference turns. ``engine_kwargs``
    (``cache``, ``workers``, ``progress``) go to the loss engine: with a loss cache a re-run computes nothing."""
    if len(turns) != len(references):
        raise ValueError(f"{len(turns)} items but {len(references)} references")
    pairs, owner = [], []
    for i, (users, answers) in enumerate(zip(turns, references)):
        if len(users) != len(answers) or not users:
            raise ValueError(f"item {i}: {len(users)} user turns but {len(answers)} reference turns")
        conv = [m for user, answer in zip(users, answers)
                for m in ({"role": "user", "content": user}, {"role": "assistant", "content": answer})]
        for pair in chat.prefix_answer_pairs(tokenizer, conv, with_prefix=True):
            pairs.append((pair.prefix_ids, pair.answer_ids))
            owner.append(i)
    res = answer_losses(model, tokenizer, pairs, batch_size=batch_size, max_length=max_length, **engine_kwargs)
    frame = pd.DataFrame({"item": owner, "loss": np.asarray(res.mean_loss, dtype=np.float64),
                          "n": np.asarray(res.n_answer_tokens, dtype=np.int64)})
    frame = frame[(frame["n"] > 0) & np.isfinite(frame["loss"])]
    frame["weighted"] = frame["loss"] * frame["n"]
    grouped = frame.groupby("item").agg(weighted=("weighted", "sum"), n=("n", "sum")).reindex(range(len(turns)))
    n = grouped["n"].fillna(0).astype(np.int64).to_numpy()
    mean = np.where(n > 0, grouped["weighted"].to_numpy() / np.maximum(n, 1), np.nan)
    return pd.DataFrame({"mean_loss": mean, "n_answer_tokens": n})


def summarise_heldout(df: pd.DataFrame) -> dict:
    """``mean_loss`` weighted by answer tokens, its ``perplexity`` (exp), ``n_examples`` scored and
    ``n_tokens``; NaN loss and perplexity when nothing was scored."""
    n = df["n_answer_tokens"].to_numpy(dtype=np.int64)
    loss = df["mean_loss"].to_numpy(dtype=np.float64)
    ok = (n > 0) & np.isfinite(loss)
    n_tokens = int(n[ok].sum())
    mean = float((loss[ok] * n[ok]).sum() / n_tokens) if n_tokens else math.nan
    return {
        "mean_loss": mean,
        "perplexity": math.exp(mean) if n_tokens else math.nan,
        "n_examples": int(ok.sum()),
        "n_tokens": n_tokens,
    }
