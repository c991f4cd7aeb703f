"""Nuggets golden score (Li et al. 2023c, "One Shot Learning as Instruction Data Prospector for LLMs").

The paper's rule: take a set of anchor tasks (the "predefined task set"). For each anchor ``a``, the
zero-shot score is the model's likelihood of ``a``'s answer given ``a``'s instruction; for each candidate
``c`` and anchor ``a``, the one-shot score is the likelihood of the same answer when ``c`` is given first
as a one-shot demonstration. The golden score of ``c`` is the share of anchors whose answer becomes more
likely with ``c`` as demonstration:

    golden_score(c) = (1 / |A|) * sum over anchors a of [ loss_one_shot(a | c) < loss_zero_shot(a) ]

The comparison is strict (a tie is not an improvement). Both losses are mean cross-entropies over the
same answer token ids, so comparing means is comparing summed log-probabilities, which is what the
reference code compares (``lm_log_p``). Candidates are then ranked by golden score (selector ``nuggets``).

How it is computed here (chat-template setting):

- an example's task is its conversation up to the FIRST assistant turn: the leading system turns, the
  other turns before the assistant turn (the prompt, which must contain a user turn) and the answer;
- zero-shot: ``system + prompt + [answer]`` rendered with the model's chat template; the answer ids are
  the last pair of ``chat.prefix_answer_pairs`` (they include the template's end-of-turn marker);
- one-shot: the demonstration ``c`` is a previous exchange in the same conversation,
  ``a.system + [c.user, c.assistant] + a.prompt + [a.answer]``, and the last pair of
  ``chat.prefix_answer_pairs`` is scored. ``c.user`` is the last user turn before ``c``'s first
  assistant turn and ``c.assistant`` that assistant turn; ``c``'s own system turns and any earlier user
  turns are not part of the demonstration;
- the anchor zero-shot pairs and every (candidate, anchor) one-shot pair go through ONE
  ``loss_engine.answer_losses`` call, so the engine length-buckets and batches all of them (and its
  result cache sees all of them);
- ``mean_loss_delta(c)`` = mean over the anchors used of ``loss_one_shot - loss_zero_shot``
  (negative: the demonstration helps on average); ``n_anchors_used(c)`` is that number of anchors.

Anchors: ``n_anchors`` (default 100) are drawn from the pool with a seeded uniform sample (numpy
``default_rng(seed)`` over the eligible rows sorted by id, so the draw does not depend on row order), or
from an explicit ``anchors`` frame (e.g. a test set; all of its rows when ``n_anchors`` is None or not
smaller). Only rows with a user turn before their first assistant turn can be anchors.

Differences from the paper and its reference code (github.com/pldlgb/nuggets), all deliberate:

- prompt format: the reference code scores raw text with an Alpaca-like "Instruction:/Input:/Response:"
  prompt and feeds the demonstration as a precomputed key/value cache of its text (with
  ``kv_iter=1`` that is plain conditioning on the demonstration); here both are turns of a conversation
  rendered with the model's chat template;
- anchor set: the reference run uses 100 anchors, one instruction per k-means cluster of the pool's
  instruction embeddings (``alpaca_gpt4_kmeans_100.json``). The default here is a seeded uniform sample;
  pass the k-means choice (or a test set) as ``anchors`` to reproduce it;
- self-pairs: when a candidate is itself one of the anchors (same ``id``), that anchor is skipped for
  that candidate (a demonstration that contains the answer says nothing about its value for other
  tasks) and the golden score is taken over the remaining anchors. The reference code, whose anchors
  come from the pool, does not skip it;
- demonstration length: the paper scores full demonstrations. Here the text of the demonstration's turns
  is cut to at most ``max_demo_tokens`` tokens (default 256) so that the cost of the
  ``n_candidates x n_anchors`` passes is bounded: the answer is cut on the right first; when the
  instruction alone would leave the answer less than half of the budget, the instruction is cut on the
  right too (the answer keeps at least half). No ellipsis or marker is added; the cut text ends where the
  kept tokens end. ``max_demo_tokens=None`` scores full demonstrations. Anchors are never cut by this
  rule, but every pair is still subject to the engine's ``max_length`` (the prefix is cut from the left,
  which removes the demonstration before the anchor's own prompt).

Rows that cannot be a demonstration (no assistant turn, no user turn before it, or a conversation the
chat template cannot render) get NaN scores and ``n_anchors_used = 0`` and are counted in
``out.attrs["n_unscorable"]``; a scorable row with no anchor left to compare against (e.g. the only
anchor is the row itself) also gets NaN and is counted in ``out.attrs["n_without_anchors"]``.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import TemplateError

from instsel_assets.models import chat
from instsel_assets.registry import register_scorer
from instsel_assets.scoring.loss_engine import answer_losses

log = logging.getLogger(__name__)

NUGGETS_COLUMNS = ("golden_score", "n_anchors_used", "mean_loss_delta")
DEFAULT_N_ANCHORS = 100
DEFAULT_MAX_DEMO_TOKENS = 256

Message = dict[str, str]


@dataclass(frozen=True)
class FirstTurnTask:
    """A conversation cut at its first assistant turn."""

    system: list[Message]  # leading system turns
    prompt: list[Message]  # the turns between them and the answer; contains at least one user turn
    answer: Message  # the first assistant turn

    @property
    def demonstration(self) -> tuple[str, str]:
        """``(user text, assistant text)``: the last user turn before the answer, and the answer."""
        user = next(m for m in reversed(self.prompt) if m["role"] == "user")
        return user["content"], self.answer["content"]


def _turns(conversations: Any, row_id: Any, frame: str) -> list[Message] | None:
    """The turns as plain dicts; None when the row has no conversation at all.

    ``ValueError`` naming the row and the field when ``conversations`` is not a sequence of
    ``{role, content}`` mappings.
    """
    if conversations is None or (isinstance(conversations, float) and math.isnan(conversations)):
        return None
    if isinstance(conversations, (str, bytes, Mapping)) or not hasattr(conversations, "__len__"):
        raise ValueError(f"{frame} row {row_id!r}: 'conversations' must be a sequence of {{role, content}} "
                         f"mappings, got {type(conversations).__name__}")
    turns = []
    for k, turn in enumerate(conversations):
        if not isinstance(turn, Mapping) or "role" not in turn or "content" not in turn:
            raise ValueError(f"{frame} row {row_id!r}: 'conversations' turn {k} is not a {{role, content}} "
                             f"mapping: {turn!r}")
        turns.append({"role": str(turn["role"]), "content": str(turn["content"])})
    return turns


def first_turn_task(conversations: Any, row_id: Any = None, frame: str = "pool") -> FirstTurnTask | None:
    """The row's task (see the module docstring), or None when it has no assistant turn or no user turn
    before it."""
    turns = _turns(conversations, row_id, frame)
    if not turns:
        return None
    roles = [t["role"] for t in turns]
    if "assistant" not in roles:
        return None
    first = roles.index("assistant")
    n_system = 0
    while n_system < first and roles[n_system] == "system":
        n_system += 1
    prompt = turns[n_system:first]
    if not any(m["role"] == "user" for m in prompt):
        return None
    return FirstTurnTask(turns[:n_system], prompt, turns[first])


def _cut_text(tokenizer, text: str, n_tokens: int) -> str:
    """The longest prefix of ``text`` made of its first ``n_tokens`` tokens that re-tokenises into at most
    ``n_tokens`` tokens. Uses the fast tokenizer's character offsets (an exact cut of the original text);
    tokenizers without offsets decode the kept ids instead."""
    if n_tokens <= 0:
        return ""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        ids = enc["input_ids"]
    except NotImplementedError:  # slow (Python) tokenizers have no offsets
        offsets = None
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= n_tokens:
        return text
    keep = n_tokens
    while keep > 0:
        if offsets is not None:
            cut = text[: offsets[keep - 1][1]]
        else:
            # a cut inside a multi-byte character decodes to U+FFFD; drop it
            cut = tokenizer.decode(ids[:keep], skip_special_tokens=False).rstrip("\ufffd")
        # token boundaries can merge differently once the text ends earlier: check the real count
        if len(tokenizer(cut, add_special_tokens=False)["input_ids"]) <= n_tokens:
            return cut
        keep -= 1
    return ""


def cut_demonstration(tokenizer, user: str, answer: str, max_demo_tokens: int | None) -> tuple[str, str, bool]:
    """``(user, answer, was_cut)`` with at most ``max_demo_tokens`` tokens in the two texts together.

    The answer is cut on the right first; the answer keeps at least half of the budget (or all of itself
    when shorter), the instruction gets the rest and is cut on the right when it does not fit.
    """
    if max_demo_tokens is None:
        return user, answer, False
    n_user = len(tokenizer(user, add_special_tokens=False)["input_ids"])
    n_answer = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if n_user + n_answer <= max_demo_tokens:
        return user, answer, False
    answer_keep = min(n_answer, max(max_demo_tokens - n_user, max_demo_tokens // 2))
    user_keep = min(n_user, max_demo_tokens - answer_keep)
    return _cut_text(tokenizer, user, user_keep), _cut_text(tokenizer, answer, answer_keep), True


def zero_shot_conversation(anchor: FirstTurnTask) -> list[Message]:
    return [*anchor.system, *anchor.prompt, anchor.answer]


def one_shot_conversation(demo_user: str, demo_answer: str, anchor: FirstTurnTask) -> list[Message]:
    """The anchor's conversation with the demonstration as an earlier exchange (after its system turns)."""
    return [*anchor.system, {"role": "user", "content": demo_user}, {"role": "assistant", "content": demo_answer},
            *anchor.prompt, anchor.answer]


def last_pair(tokenizer, conversation: list[Message]) -> tuple[list[int], list[int]]:
    """``(prefix_ids, answer_ids)`` of the conversation's last assistant turn."""
    pair = chat.prefix_answer_pairs(tokenizer, conversation)[-1]
    return pair.prefix_ids, pair.answer_ids


def _check_count(name: str, value: Any, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be None or an integer >= {minimum}, got {value!r}")


def _require(frame: Any, columns: Sequence[str], name: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} needs column(s) {missing}; it has {list(frame.columns)}")


def draw_anchors(pool: pd.DataFrame, n_anchors: int | None, seed: int = 0, *,
                 frame: str = "pool") -> tuple[list[str], list[FirstTurnTask]]:
    """``(ids, tasks)`` of ``n_anchors`` rows drawn uniformly without replacement from the rows of ``pool``
    that can be anchors (all of them when ``n_anchors`` is None or not smaller), in id order.

    The eligible rows are sorted by id before the draw, so the anchors depend on ``seed`` and on the set
    of rows, not on their order.
    """
    _check_count("n_anchors", n_anchors, 1)
    eligible: dict[str, FirstTurnTask] = {}
    for row_id, conv in zip(pool["id"].astype(str).tolist(), pool["conversations"].tolist()):
        task = first_turn_task(conv, row_id, frame)
        if task is not None:
            eligible.setdefault(row_id, task)
    ids = sorted(eligible)
    if n_anchors is not None and n_anchors < len(ids):
        picks = np.sort(np.random.default_rng(seed).choice(len(ids), size=n_anchors, replace=False))
        ids = [ids[i] for i in picks]
    return ids, [eligible[i] for i in ids]


def explicit_anchors(anchors: pd.DataFrame, n_anchors: int | None,
                     seed: int = 0) -> tuple[list[str], list[FirstTurnTask]]:
    """Anchors from an explicit frame (``id``, ``conversations``): every row must be usable as an anchor
    and ids must be unique (``ValueError`` naming the row otherwise); more rows than ``n_anchors`` are
    subsampled as in :func:`draw_anchors`."""
    _require(anchors, ("id", "conversations"), "anchors")
    if len(anchors) == 0:
        raise ValueError("anchors is empty; pass None to draw anchors from the pool")
    ids = anchors["id"].astype(str)
    duplicated = ids[ids.duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"anchors has duplicate id(s) {duplicated[:5]}")
    for row_id, conv in zip(ids.tolist(), anchors["conversations"].tolist()):
        if first_turn_task(conv, row_id, "anchors") is None:
            raise ValueError(f"anchors row {row_id!r}: 'conversations' has no assistant turn with a user turn "
                             f"before it, so it cannot be an anchor")
    return draw_anchors(anchors, n_anchors, seed, frame="anchors")


@register_scorer(
    "nuggets",
    family="trainable-llm",
    paper="Li et al. 2023c, One Shot Learning as Instruction Data Prospector (Nuggets)",
    summary="Golden score: share of anchor tasks whose answer loss drops when the row is given as a "
            "one-shot demonstration (chat template), plus the mean loss change; anchors are a seeded "
            "sample of the pool or an explicit set.",
    writes=NUGGETS_COLUMNS,
)
def nuggets_scores(pool: pd.DataFrame, model, tokenizer, *, batch_size: int = 8, max_length: int = 1024,
                   progress: Callable[[int, int], None] | None = None, cache=None,
                   workers: int | str = "auto",
                   n_anchors: int | None = DEFAULT_N_ANCHORS, anchors: pd.DataFrame | None = None,
                   seed: int = 0, max_demo_tokens: int | None = DEFAULT_MAX_DEMO_TOKENS) -> pd.DataFrame:
    """One row per pool row (same order): ``id`` and ``NUGGETS_COLUMNS`` (rule in the module docstring).

    ``pool`` needs ``id`` and ``conversations``. ``anchors``: an optional frame with ``id`` and
    ``conversations`` used instead of pool rows. ``n_anchors``: anchors drawn (seeded by ``seed``) from
    the pool or from ``anchors``; None for all. ``max_demo_tokens``: token budget of a demonstration's
    text; None for no cut. ``progress(done, total)`` counts loss pairs (one zero-shot pair per anchor,
    one one-shot pair per candidate and anchor).

    ``out.attrs``: ``anchor_ids`` (list, in id order), ``n_unscorable``, ``n_without_anchors``,
    ``n_demo_truncated`` (rows whose demonstration was cut to ``max_demo_tokens``), ``n_truncated``
    (pairs cut by ``max_length``), ``n_pairs``.
    """
    _require(pool, ("id", "conversations"), "pool")
    _check_count("n_anchors", n_anchors, 1)
    _check_count("max_demo_tokens", max_demo_tokens, 2)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")

    if anchors is not None:
        anchor_ids, anchor_tasks = explicit_anchors(anchors, n_anchors, seed)
    else:
        anchor_ids, anchor_tasks = draw_anchors(pool, n_anchors, seed)

    pairs: list[tuple[list[int], list[int]]] = []
    for anchor_id, task in zip(anchor_ids, anchor_tasks):
        try:
            pairs.append(last_pair(tokenizer, zero_shot_conversation(task)))
        except (ValueError, TemplateError) as exc:
            raise ValueError(f"anchor {anchor_id!r}: the chat template cannot render its 'conversations': "
                             f"{exc}") from exc
    n_zero = len(pairs)

    n = len(pool)
    row_ids = pool["id"].astype(str).tolist()
    scorable = np.zeros(n, dtype=bool)
    n_demo_truncated = 0
    owner_rows: list[int] = []  # per one-shot pair: the candidate's row
    owner_anchors: list[int] = []  # per one-shot pair: the anchor's index
    for i, (row_id, conv) in enumerate(zip(row_ids, pool["conversations"].tolist())):
        task = first_turn_task(conv, row_id)
        if task is None:
            continue
        demo_user, demo_answer, was_cut = cut_demonstration(tokenizer, *task.demonstration, max_demo_tokens)
        row_pairs, row_anchors = [], []
        try:
            for j, (anchor_id, anchor) in enumerate(zip(anchor_ids, anchor_tasks)):
                if anchor_id == row_id:
                    continue  # a candidate is not scored on its own task
                row_pairs.append(last_pair(tokenizer, one_shot_conversation(demo_user, demo_answer, anchor)))
                row_anchors.append(j)
        except (ValueError, TemplateError) as exc:
            log.warning("row %r cannot be rendered as a demonstration: %s", row_id, exc)
            continue
        scorable[i] = True
        n_demo_truncated += int(was_cut)
        pairs.extend(row_pairs)
        owner_rows.extend([i] * len(row_pairs))
        owner_anchors.extend(row_anchors)

    if not owner_rows:
        pairs = pairs[:0]  # no candidate to compare: the zero-shot losses would not be used
        n_zero = 0
    res = answer_losses(model, tokenizer, pairs, batch_size=batch_size, max_length=max_length,
                        progress=progress, cache=cache, workers=workers)

    zero = res.mean_loss[:n_zero]
    rows = np.asarray(owner_rows, dtype=np.int64)
    delta = res.mean_loss[n_zero:] - zero[np.asarray(owner_anchors, dtype=np.int64)]
    valid = np.isfinite(delta)
    n_used = np.bincount(rows[valid], minlength=n).astype(np.int64)
    wins = np.bincount(rows[valid], weights=(delta[valid] < 0).astype(np.float64), minlength=n)
    delta_sum = np.bincount(rows[valid], weights=delta[valid], minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        golden = np.where(n_used > 0, wins / n_used, np.nan)
        mean_delta = np.where(n_used > 0, delta_sum / n_used, np.nan)

    out = pd.DataFrame({
        "id": pool["id"].to_numpy(),
        "golden_score": golden,
        "n_anchors_used": n_used,
        "mean_loss_delta": mean_delta,
    })
    out.attrs["anchor_ids"] = list(anchor_ids)
    out.attrs["n_unscorable"] = int(n - scorable.sum())
    out.attrs["n_without_anchors"] = int((scorable & (n_used == 0)).sum())
    out.attrs["n_demo_truncated"] = n_demo_truncated
    out.attrs["n_truncated"] = int((res.n_truncated > 0).sum())
    out.attrs["n_pairs"] = len(pairs)
    return out
