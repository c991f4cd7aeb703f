"""Prompt uncertainty, Active Instruction Tuning (Kung et al. 2023, "Active Instruction Tuning: Improving
Cross-Task Generalization by Training on Prompt Sensitive Tasks"; reference code PlusLabNLP/Active-IT).

The rule. For a row with instruction ``I`` and answer ``y``, make ``k`` perturbed instructions
``I'_1..I'_k`` by dropping every word of ``I`` independently with probability ``drop_rate``; then

    prompt_uncertainty = 1/k * sum_j | p(y | I'_j) - p(y | I) |

where ``p`` is the per-token likelihood ``exp(-mean token cross-entropy of y)`` (the geometric mean of
the answer's token probabilities). The paper's setting, which the defaults follow, is ``k = 10``
perturbations at ``drop_rate = 0.2`` (``--perturb_num 10`` and ``...-0.2-Mean-abs-bald`` in the reference
``reproduce.sh``). The reference code computes the same likelihood: the per-example uncertainty it stores
is the label-token mean cross-entropy (``CrossEntropyLoss`` with its default mean reduction), turned into
``np.exp(-loss)`` before the absolute differences are averaged. A per-token likelihood, unlike the
product of token probabilities, is comparable across answer lengths: the product of a long answer is
vanishingly small whatever the instruction, so its differences would be too.

Task level: the paper ranks TASKS by the mean uncertainty of examples sampled from each (10 per task
there). ``task_uncertainty`` gives that table for a task column (``category`` by default: Dolly's
categories), and the row output carries it as ``task_prompt_uncertainty``: the mean over the scored
rows sharing the row's non-empty category. A row with an empty category is its own task (its own value).

What is perturbed, and deliberate differences from the reference code:

- The answer ``y`` is the row's own first assistant reply (the reference's "HL", has-label, variant).
  The paper's main setting ("NL") scores the model's own greedy prediction under the original
  instruction instead; a selection pool already has answers, and it is their fit that is being judged.
- The instruction is the content of the first user turn, rendered with the model's chat template like
  IFD's conditioned pass (the original pair is exactly ``ifd.first_turn_pairs``' conditioned pair, so a
  shared loss cache serves both). For Alpaca/Dolly rows with a non-empty ``input`` (context), the user
  turn is ``instruction + "\\n\\n" + input``: only the instruction part is perturbed and the input text is
  kept intact (the reference perturbs the task definition, never the instance input). When the row's
  ``input`` is not found at the end of the first user turn, the whole turn is perturbed and the row is
  counted in ``out.attrs["n_input_not_in_prompt"]``.
- Words: the reference splits on whitespace and joins the kept words with single spaces. Here a word is a
  run of non-space characters, except that every CJK character (and CJK punctuation) is a word of its
  own, since Chinese and Japanese put no spaces between words and a whole Chinese instruction would
  otherwise be one word; and the kept words keep the whitespace that preceded them, so a perturbation
  that drops nothing reproduces the original prompt exactly (and moves the likelihood by exactly 0).
- A perturbation that would drop every word keeps one of them, drawn from the same generator (the
  reference can produce an empty definition). An instruction of a single word therefore has no
  perturbation that differs from it: its uncertainty is 0; such rows are counted in
  ``out.attrs["n_one_word_instruction"]``.
- Perturbations are drawn per row from a generator seeded by a stable hash of ``(seed, row id)``, so a
  row's score does not depend on the pool's order or size. The reference draws ``k`` perturbed
  definitions per task and shares them between the task's examples.

Cost: ``(1 + k)`` sequences per row, all sent through ONE ``loss_engine.answer_losses`` call (length
bucketing and batching across rows and perturbations). Identical (prefix, answer) pairs are scored once:
with short instructions many perturbations drop nothing and equal the original prompt.
``out.attrs["n_pairs_scored"]`` is the number of distinct pairs sent to the engine.

Rows without an assistant turn, without a user turn before it, or whose conversation the template cannot
render, get NaN scores and ``n_perturbations = 0``; they are counted in ``out.attrs["n_unscorable"]``.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from instsel_assets.models import chat
from instsel_assets.registry import register_scorer
from instsel_assets.scoring.ifd import first_turn_pairs
from instsel_assets.scoring.loss_engine import answer_losses

PROMPT_UNCERTAINTY_COLUMNS = ("prompt_uncertainty", "answer_likelihood", "n_perturbations",
                              "task_prompt_uncertainty")
DEFAULT_K = 10
DEFAULT_DROP_RATE = 0.2
INPUT_SEPARATOR = "\n\n"  # how ingest.normalize joins instruction and input into the user turn

# Kana, CJK unified ideographs (+ extension A, compatibility), CJK symbols/punctuation, full-width forms.
_CJK = "\u3001-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff01-\uff60"
_WORD = re.compile(rf"(\s*)([{_CJK}]|[^\s{_CJK}]+)")


def split_words(text: str) -> list[tuple[str, str]]:
    """``(whitespace before, word)`` pairs; ``"".join(s + w for s, w in split_words(t))`` is ``t`` without
    its trailing whitespace. A word is a run of non-space characters, or one CJK character."""
    return [(m.group(1), m.group(2)) for m in _WORD.finditer(text)]


def drop_words(text: str, drop_rate: float, rng: np.random.Generator) -> str:
    """``text`` with each word dropped independently with probability ``drop_rate``.

    Kept words keep the whitespace before them (the first kept word takes the text's leading whitespace).
    When every word would be dropped, one word drawn uniformly is kept. Text without words is returned
    unchanged.
    """
    words = split_words(text)
    if not words:
        return text
    keep = rng.random(len(words)) >= drop_rate
    if not keep.any():
        keep[int(rng.integers(len(words)))] = True
    trailing = text[len(text.rstrip()):]
    pieces = []
    for (sep, word), kept in zip(words, keep):
        if kept:
            pieces.append((sep if pieces else words[0][0]) + word)
    return "".join(pieces) + trailing


def row_rng(row_id: Any, seed: int) -> np.random.Generator:
    """A generator seeded by a stable hash of ``(seed, row id)`` (the same in every process and pool order)."""
    digest = hashlib.blake2b(f"{int(seed)}\x00{row_id}".encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def split_instruction(user_content: str, input_text: str) -> tuple[str, str] | None:
    """``(instruction part, kept suffix)`` of a user turn built as ``instruction + "\\n\\n" + input``, or
    None when ``input_text`` is empty or is not that suffix of ``user_content``."""
    if not input_text:
        return None
    suffix = INPUT_SEPARATOR + input_text
    if len(user_content) > len(suffix) and user_content.endswith(suffix):
        return user_content[: -len(suffix)], suffix
    return None


def _check_params(k, drop_rate, seed) -> None:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k (number of perturbed instructions) must be an integer >= 1, got {k!r}")
    if (isinstance(drop_rate, bool) or not isinstance(drop_rate, numbers.Real) or math.isnan(drop_rate)
            or not 0.0 < drop_rate < 1.0):
        raise ValueError(f"drop_rate must be a number in (0, 1), got {drop_rate!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")


def _first_turn(conversations: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, str]], int] | None:
    """The messages up to the first assistant turn and the index of the first user turn before it."""
    messages = chat.as_messages(conversations)
    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        return None
    messages = messages[: roles.index("assistant") + 1]
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        return None
    return messages, users[0]


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


@register_scorer(
    "prompt_uncertainty",
    family="trainable-llm",
    paper="Kung et al. 2023, 'Active Instruction Tuning' (prompt uncertainty)",
    summary="Mean absolute change of the answer's per-token likelihood exp(-mean loss) over k instructions "
            "perturbed by random word dropping (k=10, drop rate 0.2), per row and averaged per task.",
    writes=PROMPT_UNCERTAINTY_COLUMNS,
)
def prompt_uncertainty_scores(pool: pd.DataFrame, model, tokenizer, *, batch_size: int = 8,
                              max_length: int = 1024, progress: Callable[[int, int], None] | None = None,
                              cache=None, workers: int | str = "auto", k: int = DEFAULT_K, drop_rate: float = DEFAULT_DROP_RATE,
                              seed: int = 0, task_column: str = "category") -> pd.DataFrame:
    """One row per pool row (same order): ``id`` and ``PROMPT_UNCERTAINTY_COLUMNS``.

    ``pool`` needs ``id`` and ``conversations``; ``input`` (perturb only the instruction part of the
    first user turn) and ``task_column`` (task-level mean) are used when present: without ``input`` the
    whole first user turn is perturbed, without ``task_column`` every row is its own task.
    ``progress(done, total)`` counts distinct sequences.
    """
    _check_params(k, drop_rate, seed)
    missing = [c for c in ("id", "conversations") if c not in pool.columns]
    if missing:
        raise ValueError(f"scorer 'prompt_uncertainty' needs pool column(s) {missing}; "
                         f"pool has {list(pool.columns)}")
    n = len(pool)
    ids = pool["id"].to_numpy()
    inputs = pool["input"].tolist() if "input" in pool.columns else [""] * n

    unique: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    pairs: list[tuple[list[int], list[int]]] = []

    def slot(prefix: list[int], answer: list[int]) -> int:
        key = (tuple(prefix), tuple(answer))
        if key not in unique:
            unique[key] = len(pairs)
            pairs.append((prefix, answer))
        return unique[key]

    owners: list[int] = []
    slots: list[list[int]] = []  # per scorable row: [original, perturbation 1..k]
    n_input_kept = n_input_missing = n_one_word = 0
    for i, conv in enumerate(pool["conversations"].tolist()):
        row_id = ids[i]
        try:
            original = first_turn_pairs(tokenizer, conv)
            first = _first_turn(conv) if original is not None else None
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"row {row_id!r}: field 'conversations' must be a sequence of {{role, content}} "
                             f"mappings ({type(exc).__name__}: {exc})") from exc
        if original is None or first is None:
            continue
        messages, user_index = first
        content = messages[user_index]["content"]
        split = split_instruction(content, _text(inputs[i]))
        if split is not None:
            instruction, kept_suffix = split
            n_input_kept += 1
        else:
            instruction, kept_suffix = content, ""
            if _text(inputs[i]):
                n_input_missing += 1
        if len(split_words(instruction)) <= 1:
            n_one_word += 1
        prefix_ids, answer_ids = original[0]
        row_slots = [slot(prefix_ids, answer_ids)]
        rng = row_rng(row_id, seed)
        for _ in range(k):
            perturbed = [dict(m) for m in messages]
            perturbed[user_index]["content"] = drop_words(instruction, drop_rate, rng) + kept_suffix
            try:
                pair = chat.prefix_answer_pairs(tokenizer, perturbed, with_prefix=True)[0]
            except ValueError as exc:
                raise ValueError(f"row {row_id!r}: field 'conversations': the chat template cannot render a "
                                 f"perturbed first user turn: {exc}") from exc
            if pair.answer_ids != list(answer_ids):
                raise ValueError(f"row {row_id!r}: field 'conversations': the chat template tokenises the answer "
                                 f"differently once the instruction is perturbed; the likelihoods would not "
                                 f"compare the same answer")
            row_slots.append(slot(pair.prefix_ids, pair.answer_ids))
        owners.append(i)
        slots.append(row_slots)

    res = answer_losses(model, tokenizer, pairs, batch_size=batch_size, max_length=max_length,
                        progress=progress, cache=cache, workers=workers)

    uncertainty = np.full(n, np.nan)
    likelihood = np.full(n, np.nan)
    n_perturbations = np.zeros(n, dtype=np.int64)
    n_truncated = 0
    if owners:
        index = np.asarray(slots, dtype=np.int64)  # rows x (1 + k)
        p = np.exp(-res.mean_loss[index])
        owners_a = np.asarray(owners, dtype=np.int64)
        likelihood[owners_a] = p[:, 0]
        uncertainty[owners_a] = np.abs(p[:, 1:] - p[:, :1]).mean(axis=1)
        scored = owners_a[np.isfinite(likelihood[owners_a])]
        n_perturbations[scored] = k
        n_truncated = int((res.n_truncated[index[:, 0]] > 0).sum())

    tasks = pool[task_column].tolist() if task_column in pool.columns else [""] * n
    out = pd.DataFrame({
        "id": ids,
        "prompt_uncertainty": uncertainty,
        "answer_likelihood": likelihood,
        "n_perturbations": n_perturbations,
        "task_prompt_uncertainty": _task_means(uncertainty, tasks),
    })
    out.attrs["n_unscorable"] = int(np.isnan(uncertainty).sum())
    out.attrs["n_truncated"] = n_truncated
    out.attrs["n_input_kept"] = n_input_kept
    out.attrs["n_input_not_in_prompt"] = n_input_missing
    out.attrs["n_one_word_instruction"] = n_one_word
    out.attrs["n_pairs_scored"] = len(pairs)
    out.attrs["n_pairs_requested"] = len(owners) * (1 + k)
    return out


def _task_means(uncertainty: np.ndarray, tasks: Sequence[Any]) -> np.ndarray:
    """Per row: the mean finite uncertainty of the rows sharing its non-empty task; its own value when the
    task is empty (NaN only where the row has no value and its task has no scored row)."""
    frame = pd.DataFrame({"task": [_text(t) for t in tasks], "u": uncertainty})
    named = frame["task"] != ""
    means = frame[named].groupby("task")["u"].mean()  # pandas' mean skips NaN
    result = frame["u"].to_numpy(dtype="float64").copy()
    result[named.to_numpy()] = frame.loc[named, "task"].map(means).to_numpy(dtype="float64")
    return result


def task_uncertainty(scores: pd.DataFrame, pool: pd.DataFrame, task_column: str = "category") -> pd.DataFrame:
    """Task-level prompt uncertainty (the paper's unit of selection): one row per non-empty task.

    ``scores`` needs ``id`` and ``prompt_uncertainty``; ``pool`` needs ``id`` and ``task_column``.
    Columns: ``task``, ``n_rows`` (rows of the task in ``scores``), ``n_scored`` (rows with a finite
    uncertainty) and ``prompt_uncertainty`` (their mean; NaN when none is scored), sorted by uncertainty,
    highest first, ties by task name. ``attrs["n_rows_without_task"]`` counts the rows with an empty task.
    ``ValueError`` when a score id is not in ``pool`` or ``pool`` repeats an id.
    """
    for frame, columns, name in ((scores, ("id", "prompt_uncertainty"), "scores"),
                                 (pool, ("id", task_column), "pool")):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"task_uncertainty: {name} needs column(s) {missing}; has {list(frame.columns)}")
    if pool["id"].duplicated().any():
        dup = pool.loc[pool["id"].duplicated(), "id"].iloc[0]
        raise ValueError(f"task_uncertainty: pool repeats id {dup!r}")
    task_of = pd.Series([_text(t) for t in pool[task_column].tolist()], index=pool["id"].to_numpy())
    unknown = ~scores["id"].isin(task_of.index)
    if unknown.any():
        raise ValueError(f"task_uncertainty: score row id {scores.loc[unknown, 'id'].iloc[0]!r} is not in the pool")
    frame = pd.DataFrame({
        "task": task_of.loc[scores["id"].to_numpy()].to_numpy(),
        "u": pd.to_numeric(scores["prompt_uncertainty"], errors="raise").to_numpy(dtype="float64"),
    })
    named = frame[frame["task"] != ""]
    table = named.groupby("task").agg(n_rows=("u", "size"), n_scored=("u", "count"),
                                      prompt_uncertainty=("u", "mean")).reset_index()
    table = table.sort_values(["prompt_uncertainty", "task"], ascending=[False, True], kind="mergesort",
                              na_position="last").reset_index(drop=True)
    table["n_rows"] = table["n_rows"].astype("int64")
    table["n_scored"] = table["n_scored"].astype("int64")
    table.attrs["n_rows_without_task"] = int(len(frame) - len(named))
    return table
