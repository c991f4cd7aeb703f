"""Subset experiments: fine-tune the model on random subsets of the pool and measure each one's held-out loss.

The labels the experiment-driven metric-set methods learn from (docs/METHODS.md, Family 1):

- InstructMining (Cao et al. 2023) fits a linear rule ``loss ~ b0 + sum_i b_i * I_i(D)`` where ``I_i(D)`` is the
  mean of indicator ``i`` over the rows of a fine-tuning set ``D`` and ``loss`` is the evaluation loss of the model
  fine-tuned on ``D``;
- InstructionGPT-4 (Wei et al. 2023) trains a selector whose mean row score over a subset should match that
  subset's quality label.

Both need the same table: for each of several subsets, its members, the evaluation loss of the model fine-tuned
on it, and the subset means of the row indicators. This module draws the subsets, runs one experiment (LoRA
fine-tune through :func:`instsel_assets.training.sft.finetune_lora`, held-out loss through
:func:`instsel_assets.evaluation.heldout.heldout_loss`) and computes the subset means.

Differences from the papers, on purpose:

- every subset is a uniform random sample of the same size from one pool (InstructMining mixed datasets of known
  different quality, and fine-tuned LLaMA-2-7B on each; InstructionGPT-4 split its data into clusters). Random
  subsets of one pool differ little in their means, so the fitted rule is only as informative as that spread;
  more and smaller subsets widen it;
- every experiment starts from the same base model with the same LoRA initialisation and data-order seed, so the
  subsets' data is the only thing that differs between them;
- the evaluation loss is the token-weighted mean loss of reference answers of a fixed held-out set (AlpacaEval's
  text-davinci-003 outputs by default), the project's judge-free evaluation signal.

No dagster import here: the asset layer calls these functions and logs their progress.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MEAN_PREFIX = "mean_"
"""Prefix of the subset-mean indicator columns of an experiments table (``mean_output_tokens``...)."""


def subset_id(index: int) -> str:
    """The id of the ``index``-th subset: ``s00``, ``s01``, ..."""
    return f"s{index:02d}"


def draw_subsets(ids: Sequence[str], n_subsets: int, subset_size: int, seed: int = 0) -> dict[str, list[str]]:
    """``{subset id: member ids}``: ``n_subsets`` uniform random samples without replacement of ``subset_size``
    ids each, drawn independently (two subsets may share rows), members in sampling order.

    The draw depends only on the sorted set of ids and ``seed``, not on the order of ``ids``. ``ValueError`` when
    ``n_subsets < 1``, ``subset_size < 1``, ``subset_size`` exceeds the number of distinct ids, or ids repeat.
    """
    if isinstance(n_subsets, bool) or int(n_subsets) != n_subsets or n_subsets < 1:
        raise ValueError(f"n_subsets must be an integer >= 1, got {n_subsets!r}")
    if isinstance(subset_size, bool) or int(subset_size) != subset_size or subset_size < 1:
        raise ValueError(f"subset_size must be an integer >= 1, got {subset_size!r}")
    pool = sorted(str(i) for i in ids)
    if len(set(pool)) != len(pool):
        raise ValueError(f"draw_subsets: ids must be unique ({len(pool) - len(set(pool))} repeated)")
    if subset_size > len(pool):
        raise ValueError(f"subset_size {subset_size} exceeds the {len(pool)} rows of the pool")
    rng = np.random.default_rng(seed)
    return {subset_id(k): [pool[j] for j in rng.choice(len(pool), size=int(subset_size), replace=False)]
            for k in range(int(n_subsets))}


def numeric_indicator_columns(rows: pd.DataFrame, exclude: Sequence[str] = ("id",)) -> list[str]:
    """The numeric (non-bool) columns of a per-row indicator table, in table order, except ``exclude``."""
    out = []
    for column in rows.columns:
        if column in exclude:
            continue
        dtype = rows[column].dtype
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            continue
        out.append(str(column))
    return out


def subset_indicator_means(subsets: Mapping[str, Sequence[str]], rows: pd.DataFrame,
                           indicators: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per subset: ``subset_id`` and ``mean_<indicator>`` for each indicator, the mean over the subset's
    rows of the indicator (rows where it is missing are left out; NaN when no member has a value).

    ``rows`` is a per-row table with ``id``; ``indicators`` defaults to its numeric columns. ``ValueError`` naming
    the ids a subset has that ``rows`` lacks, or an indicator that is not a column.
    """
    if "id" not in rows.columns:
        raise ValueError("subset_indicator_means: the row table needs an 'id' column")
    indicators = list(numeric_indicator_columns(rows) if indicators is None else indicators)
    absent = [c for c in indicators if c not in rows.columns]
    if absent:
        raise ValueError(f"subset_indicator_means: indicator column(s) {absent} are not in the row table "
                         f"(columns: {list(rows.columns)})")
    table = rows.drop_duplicates("id").set_index(rows.drop_duplicates("id")["id"].astype(str))
    values = table[indicators].apply(pd.to_numeric, errors="coerce").astype("float64")
    out = []
    for sid, members in subsets.items():
        members = [str(m) for m in members]
        missing = [m for m in members if m not in values.index]
        if missing:
            raise ValueError(f"subset {sid}: {len(missing)} member id(s) not in the row table, e.g. {missing[:3]}")
        means = values.loc[members].mean(axis=0, skipna=True)
        out.append({"subset_id": sid, **{f"{MEAN_PREFIX}{c}": float(means[c]) for c in indicators}})
    return pd.DataFrame(out, columns=["subset_id", *[f"{MEAN_PREFIX}{c}" for c in indicators]])


@dataclass
class ExperimentResult:
    """One subset's experiment: its held-out loss and how the fine-tune went."""

    eval_loss: float  # token-weighted mean loss of the held-out references under the fine-tuned model
    eval_examples: int  # held-out examples scored
    eval_tokens: int  # reference tokens scored
    steps: int
    first_train_loss: float
    last_train_loss: float
    train_losses: list[float]
    n_examples: int  # subset rows trained on (rows whose answer was cut away entirely are skipped)
    train_seconds: float
    eval_seconds: float
    checkpoint_dir: str


def heldout_eval_loss(model, tokenizer, prompts: Sequence[str], references: Sequence[str], *, batch_size: int,
                      max_length: int) -> dict[str, Any]:
    """``summarise_heldout`` of the model on the held-out pairs (``mean_loss``, ``n_examples``, ``n_tokens``...)."""
    from instsel_assets.evaluation.heldout import heldout_loss, summarise_heldout

    frame = heldout_loss(model, tokenizer, list(prompts), list(references), batch_size=batch_size,
                         max_length=max_length)
    return summarise_heldout(frame)


def run_subset_experiment(model, tokenizer, conversations: Sequence[Sequence[Mapping[str, Any]]], out_dir: Path,
                          sft_config, *, base_model_id: str, prompts: Sequence[str], references: Sequence[str],
                          eval_batch_size: int = 8, eval_max_length: int = 768,
                          progress: Callable[[dict[str, Any]], None] | None = None,
                          manifest: Mapping[str, Any] | None = None) -> ExperimentResult:
    """Fine-tune ``model`` (owned from now on, as by ``finetune_lora``) with a LoRA adapter on ``conversations``,
    save the adapter to ``out_dir``, then measure the held-out loss of ``references`` given ``prompts`` under the
    fine-tuned model. ``progress`` receives ``finetune_lora``'s training reports."""
    from instsel_assets.training.sft import finetune_lora

    result = finetune_lora(model, tokenizer, list(conversations), out_dir, sft_config, base_model_id=base_model_id,
                           progress=progress, manifest=manifest)
    started = time.perf_counter()
    summary = heldout_eval_loss(result.model, tokenizer, prompts, references, batch_size=eval_batch_size,
                                max_length=eval_max_length)
    return ExperimentResult(
        eval_loss=float(summary["mean_loss"]), eval_examples=int(summary["n_examples"]),
        eval_tokens=int(summary["n_tokens"]), steps=int(result.steps), first_train_loss=float(result.first_loss),
        last_train_loss=float(result.last_loss), train_losses=[float(x) for x in result.losses],
        n_examples=int(result.n_examples), train_seconds=float(result.seconds),
        eval_seconds=time.perf_counter() - started, checkpoint_dir=str(out_dir))


def non_finite_losses(table: pd.DataFrame, column: str = "eval_loss") -> list[str]:
    """The subset ids of an experiments table whose ``column`` is missing or not finite."""
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype="float64")
    return [str(s) for s, v in zip(table["subset_id"], values) if not math.isfinite(v)]
