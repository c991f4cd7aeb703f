"""The interface between the judge engine and the judge templates.

A template turns one pool row into one or more ``JudgeRequest`` (a chat request to a judge model),
parses each reply text into a value (raising ``ReplyParseError`` when the text cannot be read), and
combines the parsed values of one row into that row's score columns. The engine sends the requests
(through a backend, a cache, a budget), and hands every reply, cached or new, to the template's parser.
An unparsable reply is counted and kept with its raw text; it never becomes a score.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class ReplyParseError(ValueError):
    """A judge reply that a template's parser cannot read; the message says why (shown in the
    quarantine of unparsable replies)."""


@dataclass(frozen=True)
class RatingSpec:
    """How the in-process local backend answers a rating request without free generation.

    The local backend renders the messages with the chat template, opens the assistant turn, appends
    ``reply_prefix`` (e.g. ``"Score: "``) and reads the next-token probabilities of the digits
    ``low..high``; its reply text is ``f"{reply_prefix}{expected:.4f}"`` where ``expected`` is the
    probability-weighted mean digit (DEITA's scorer), so the template's own parser reads it like an API
    reply. The digit probabilities are returned beside the text.
    """

    low: int
    high: int
    reply_prefix: str = "Score: "
    # Two ratings in one reply (the pairwise judge's "8 7"): after the first digit is read, its most likely
    # digit and ``second_prefix`` are appended and a second forward pass reads the next rating; the reply is
    # ``f"{reply_prefix}{first:.4f}{second_prefix}{second:.4f}"`` and ``digit_probs`` holds the first's.
    second_prefix: str | None = None

    def __post_init__(self) -> None:
        if not (0 <= self.low < self.high <= 9):
            raise ValueError(f"RatingSpec digits must satisfy 0 <= low < high <= 9, got {self.low}..{self.high}")
        if self.second_prefix is not None and not self.second_prefix:
            raise ValueError("RatingSpec.second_prefix must be None or a non-empty separator, e.g. ' '")

    def cache_fields(self) -> list:
        """What identifies the rating in a request's cache key (the second prefix only when set, so that the
        keys of single ratings are those they always had)."""
        fields: list = [self.low, self.high, self.reply_prefix]
        return fields if self.second_prefix is None else [*fields, self.second_prefix]


@dataclass(frozen=True)
class JudgeRequest:
    """One chat request. ``payload()`` is exactly what an OpenAI-compatible endpoint receives (minus the
    stream flag); ``key()`` hashes it with the backend identity, so the same request to the same model is
    never paid twice."""

    messages: tuple[Mapping[str, str], ...]
    max_tokens: int = 256
    temperature: float = 0.0
    rating: RatingSpec | None = None  # used by the local backend only (see RatingSpec)
    extra: Mapping[str, Any] = field(default_factory=dict)  # further OpenAI parameters (e.g. top_p, seed)

    def payload(self, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in self.messages],
            "max_tokens": int(self.max_tokens),
            "temperature": float(self.temperature),
        }
        body.update(dict(self.extra))
        return body

    def key(self, backend_id: str, model: str) -> str:
        """sha256 of the canonical JSON of (backend id, payload, rating spec)."""
        blob = {"backend": backend_id, "payload": self.payload(model),
                "rating": None if self.rating is None else self.rating.cache_fields()}
        text = json.dumps(blob, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class JudgeReply:
    """What came back for one request (from the backend or from the cache)."""

    text: str | None  # None when no answer was obtained (error, or the budget stopped the run)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    cached: bool = False
    error: str | None = None  # why there is no text: "budget", "http 500 after 5 attempts", ...
    digit_probs: Mapping[int, float] | None = None  # local backend rating mode
    # For a failed request: what the server sent back on the last attempt when it was not an answer (an error
    # body, a body that is not JSON, a completion without choices), secrets redacted, at most
    # ``backends.MAX_RAW_CHARS`` characters; None when nothing came back (timeout, broken connection).
    raw: str | None = None


@dataclass(frozen=True)
class JudgeTemplate:
    """A powerful-LLM method's prompt(s) and parser.

    - ``build(row)``: the requests for one pool row (``row`` is a mapping with at least ``id`` and
      ``conversations``); an empty list means the row cannot be judged (counted, not an error).
    - ``parse(text)``: one reply text -> a parsed value; ``ReplyParseError`` when unreadable.
    - ``combine(values)``: the parsed values of one row's requests, in request order, -> the row's
      ``columns`` (a dict). Called only when every request of the row parsed; otherwise the row's columns
      are NaN/None and the row is counted as unparsable.
    - ``validate(row, values)`` (optional): checks the parsed values against the row they judge (e.g.
      WaveCoder: the reply answers the requirements of the row's own task type) and raises
      ``ReplyParseError`` when they do not fit it; the row is then unparsable, with that message.
    """

    name: str
    columns: tuple[str, ...]
    build: Callable[[Mapping[str, Any]], Sequence[JudgeRequest]]
    parse: Callable[[str], Any]
    combine: Callable[[Sequence[Any]], dict[str, Any]]
    description: str = ""
    validate: Callable[[Mapping[str, Any], Sequence[Any]], None] | None = None
