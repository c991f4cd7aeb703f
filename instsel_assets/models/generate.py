"""Greedy answers of a causal LM to plain instructions, batched: a thin public wrapper of the local judge backend.

The judge's ``LocalBackend`` already generates replies in length-sorted, left-padded batches with the model's
chat template (``judge/backends.py``); this module hands it plain instructions as one-turn user requests, so
every stage that needs a model's own answers (MoDS's necessity step, for one) generates them the same way,
with no second generation loop to keep in step.

- Each instruction becomes one user turn; the model's chat template (ChatML when it has none) opens the
  assistant turn and the model continues greedily (``do_sample=False``) for at most ``max_new_tokens``.
- Instructions are sorted by length (longest first) and handed to the backend ``chunk`` at a time, so the
  batches inside a chunk hold prompts of similar length and progress can be reported between chunks; the
  answers come back in input order.
- An instruction whose prompt is longer than ``max_length`` tokens is not cut: its answer has ``text=None``
  and ``error`` "prompt too long: ...".
- No judge cache is used: the answers of a freshly trained model are not worth keeping between runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from instsel_assets.judge.types import JudgeReply, JudgeRequest


def greedy_answers(model, tokenizer, instructions: Sequence[str], *, max_new_tokens: int = 256,
                   batch_size: int = 8, max_length: int = 2048, model_name: str = "model",
                   progress: Callable[[int, int], None] | None = None) -> list[JudgeReply]:
    """One ``JudgeReply`` per instruction, in input order: ``text`` (the decoded answer, special tokens
    removed), ``finish_reason`` ("stop" at the end-of-sequence token, "length" when ``max_new_tokens`` cut
    it), ``completion_tokens``; or ``text=None`` with ``error`` set when the prompt does not fit
    ``max_length``. ``progress(done, total)`` is called after every chunk of ``8 * batch_size`` answers."""
    from instsel_assets.judge.backends import LocalBackend

    for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"greedy_answers: {name} must be a positive integer, got {value!r}")
    backend = LocalBackend(model, tokenizer, model_name, max_length=max_length, batch_size=batch_size)
    n = len(instructions)
    order = sorted(range(n), key=lambda i: (-len(instructions[i]), i))
    replies: list[JudgeReply | None] = [None] * n
    chunk = 8 * batch_size
    if progress is not None:
        progress(0, n)
    for start in range(0, n, chunk):
        members = order[start:start + chunk]
        requests = [JudgeRequest(messages=({"role": "user", "content": str(instructions[i])},),
                                 max_tokens=max_new_tokens) for i in members]
        for i, reply in zip(members, backend.complete_many(requests)):
            replies[i] = reply
        if progress is not None:
            progress(min(start + chunk, n), n)
    return [r for r in replies if r is not None]
