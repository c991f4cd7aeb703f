"""Turn conversations into token ids with the model's chat template, marking answer tokens.

Every language-model stage (scoring, fine-tuning, evaluation) goes through these two functions,
so "which tokens are the answer" is decided in one place:

- ``prefix_answer_pairs`` gives, for each assistant turn, the token ids of everything before it
  (rendered with the chat template and the generation prompt) and the ids of the reply itself
  (up to and including the template's end-of-turn marker). This is the (Q, A) pair of IFD.
- ``encode_for_training`` concatenates those pieces into one sequence with a label mask that is
  true on assistant tokens only (loss on answer tokens only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# ChatML, the template SmolLM2 ships with; used when a tokenizer carries no template of its own
# (tiny test tokenizers, plain base models).
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def as_messages(conversations: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Plain ``[{"role", "content"}]`` dicts from any sequence of mappings (DuckDB returns numpy arrays)."""
    return [{"role": str(t["role"]), "content": str(t["content"])} for t in conversations]


def ensure_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE


def render(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    ensure_chat_template(tokenizer)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class PrefixAnswer:
    turn: int  # index of the assistant turn in the conversation
    prefix_ids: list[int]
    answer_ids: list[int]


def assistant_header(tokenizer, history: list[dict[str, str]] | None = None) -> str:
    """The text a template puts before an assistant reply when there is no context at all: its leading
    BOS text (when the template renders one, e.g. Llama 3's ``<|begin_of_text|>``) plus the generation
    prompt (``<|im_start|>assistant\\n`` for ChatML).

    Found as the difference between rendering ``history`` with and without ``add_generation_prompt``
    (a one-message dummy conversation when there is no history): transformers 5 refuses to render an
    empty conversation, and templates such as SmolLM2's inject a default system prompt into any
    non-empty one, so ``render([], ...)`` cannot be used.
    """
    probe = history if history else [{"role": "user", "content": "x"}]
    with_prompt = render(tokenizer, probe, add_generation_prompt=True)
    without = render(tokenizer, probe, add_generation_prompt=False)
    if not with_prompt.startswith(without):
        raise ValueError("chat template does not render the generation prompt as a suffix of the conversation")
    header = with_prompt[len(without):]
    bos = getattr(tokenizer, "bos_token", None)
    if bos and with_prompt.startswith(bos) and not header.startswith(bos):
        header = bos + header
    return header


def prefix_answer_pairs(tokenizer, conversations: Sequence[Mapping[str, Any]], *,
                        with_prefix: bool = True) -> list[PrefixAnswer]:
    """One (prefix, answer) pair per assistant turn.

    ``with_prefix=True``: the prefix is the whole conversation before the turn (with the template's
    system prompt, if it injects one) and the generation prompt.
    ``with_prefix=False`` gives the answer with an empty context: only the template's assistant
    header as prefix (``assistant_header``), which is IFD's s(A) in the chat-template setting. The
    answer ids are exactly those of the ``with_prefix=True`` pair (the answer text is cut from the
    full rendering and tokenised on its own), so s(A|Q) and s(A) score the same tokens.
    """
    messages = as_messages(conversations)
    pairs: list[PrefixAnswer] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        history = messages[:i]
        prefix_text = render(tokenizer, history, add_generation_prompt=True) if history else assistant_header(
            tokenizer)
        full_text = render(tokenizer, history + [message], add_generation_prompt=False)
        if not full_text.startswith(prefix_text):
            raise ValueError("chat template does not render the prefix as a prefix of the full conversation")
        answer_ids = _ids(tokenizer, full_text[len(prefix_text):])
        if not with_prefix:
            prefix_text = assistant_header(tokenizer, history)
        pairs.append(PrefixAnswer(i, _ids(tokenizer, prefix_text), answer_ids))
    return pairs


def encode_for_training(tokenizer, conversations: Sequence[Mapping[str, Any]],
                        max_length: int) -> tuple[list[int], list[bool]]:
    """Token ids of the whole conversation and a mask that is true on assistant tokens.

    Built from the same pieces as ``prefix_answer_pairs``; truncated on the right to ``max_length``.
    """
    messages = as_messages(conversations)
    ids: list[int] = []
    mask: list[bool] = []
    rendered = ""
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            prefix_text = render(tokenizer, messages[:i], add_generation_prompt=True) if i else assistant_header(
                tokenizer)
            full_text = render(tokenizer, messages[: i + 1], add_generation_prompt=False)
            if not (prefix_text.startswith(rendered) and full_text.startswith(prefix_text)):
                raise ValueError("chat template does not render earlier turns as a prefix of later ones")
            head = _ids(tokenizer, prefix_text[len(rendered):])
            body = _ids(tokenizer, full_text[len(prefix_text):])
            ids += head + body
            mask += [False] * len(head) + [True] * len(body)
        else:
            full_text = render(tokenizer, messages[: i + 1], add_generation_prompt=False)
            if not full_text.startswith(rendered):
                raise ValueError("chat template does not render earlier turns as a prefix of later ones")
            piece = _ids(tokenizer, full_text[len(rendered):])
            ids += piece
            mask += [False] * len(piece)
        rendered = full_text
    return ids[:max_length], mask[:max_length]
