"""Answers of a (fine-tuned) model to the test prompts, for pairwise judging (docs/METHODS.md, "Evaluation").

Generation runs on the judge engine (``judge.engine.run_requests``) with an in-process ``LocalBackend`` over
the model: the same left-padded, length-sorted greedy batches, the same content-hash cache (a re-run of the
same model on the same prompts with the same settings generates nothing; an interrupted run resumes), the
same accounting (an item that got no answer is counted with its reason, never dropped).

Settings, recorded with every table: greedy decoding (``do_sample=False``; temperature 0 in the request),
``max_new_tokens`` per turn, the model's own chat template with no system prompt, and prompts longer than the
backend's ``max_length`` tokens refused ("prompt too long", counted as failed) rather than cut.

Multi-turn items (MT-Bench) are answered turn by turn: turn k's request holds the user turns 1..k and the
model's own answers to turns 1..k-1, as FastChat's ``gen_model_answer`` does. An item whose turn k failed is
not sent turn k+1 (the whole item is "failed").

The model's name in the cache key must identify its weights: :func:`checkpoint_model_name` hashes a
checkpoint's adapter and manifest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from instsel_assets.judge.types import JudgeRequest

GENERATION_COLUMNS = ("key", "answer", "n_new_tokens", "finish_reasons", "status", "error")


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # greedy: the local backend never samples; the value enters the cache key

    def as_dict(self) -> dict[str, Any]:
        return {"decoding": "greedy", "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "system_prompt": None, "chat_template": "the model's own"}


def checkpoint_model_name(checkpoint_dir: str | Path, base_model: str) -> str:
    """``<base>+ckpt:<sha256 of the checkpoint's adapter weights and manifest, 16 hex>``: a cache-key name that
    changes whenever the checkpoint does (a re-trained partition is a new model)."""
    digest = hashlib.sha256()
    root = Path(checkpoint_dir)
    for name in ("adapter_model.safetensors", "instsel_checkpoint.json"):
        path = root / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return f"{base_model}+ckpt:{digest.hexdigest()[:16]}"


def turn_request(turns: Sequence[str], answers: Sequence[str], settings: GenerationSettings) -> JudgeRequest:
    """The request for turn ``len(answers) + 1`` of a conversation: user turns interleaved with the answers."""
    messages: list[dict[str, str]] = []
    for k, user in enumerate(turns[: len(answers) + 1]):
        messages.append({"role": "user", "content": user})
        if k < len(answers):
            messages.append({"role": "assistant", "content": answers[k]})
    return JudgeRequest(messages=tuple(messages), max_tokens=settings.max_new_tokens,
                        temperature=settings.temperature)


def generate_answers(items: Sequence[tuple[str, Sequence[str]]], backend, settings: GenerationSettings, *,
                     cache=None, progress: Callable[[int, int], None] | None = None, log: Any = None
                     ) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Answer every ``(key, user turns)`` item; return ``(table, runs)``.

    ``table``: one row per item, in input order, with ``key``, ``answer`` (list of turn answers; empty when
    failed), ``n_new_tokens`` (summed over turns), ``finish_reasons`` (list: "stop" or "length" per turn),
    ``status`` ("ok" or "failed") and ``error``. ``runs``: the engine's ``JudgeRun.summary()`` of each turn round.
    """
    from instsel_assets.judge.engine import run_requests

    answers: list[list[str]] = [[] for _ in items]
    tokens = [0] * len(items)
    reasons: list[list[str]] = [[] for _ in items]
    errors: list[str | None] = [None] * len(items)
    for k, (key, turns) in enumerate(items):
        if not turns or any(not isinstance(t, str) or not t.strip() for t in turns):
            errors[k] = f"item {key!r}: empty user turn"
    runs = []
    depth = max((len(t) for _, t in items), default=0)
    for turn in range(depth):
        todo = [k for k, (_, turns) in enumerate(items) if errors[k] is None and len(turns) > turn]
        if not todo:
            break
        requests = [turn_request(items[k][1], answers[k], settings) for k in todo]
        run = run_requests(requests, backend, cache=cache, concurrency=1, progress=progress, log=log)
        runs.append(run.summary())
        for k, reply in zip(todo, run.replies):
            if reply.error is not None or reply.text is None:
                errors[k] = f"turn {turn + 1}: {reply.error or 'no text'}"
                continue
            answers[k].append(reply.text.strip())
            tokens[k] += int(reply.completion_tokens)
            reasons[k].append(reply.finish_reason or "")
    table = pd.DataFrame({
        "key": [key for key, _ in items],
        "answer": [a if e is None else [] for a, e in zip(answers, errors)],
        "n_new_tokens": tokens,
        "finish_reasons": reasons,
        "status": ["ok" if e is None else "failed" for e in errors],
        "error": errors,
    }, columns=list(GENERATION_COLUMNS))
    return table, runs
