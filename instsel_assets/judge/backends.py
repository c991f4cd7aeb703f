"""Judge backends: where a ``JudgeRequest`` gets its answer.

A backend answers one request at a time (``complete``) and counts tokens for the dry run
(``count_tokens``); the engine (``engine.run_requests``) owns everything around it: caching, concurrency,
retries, budgets. Two backends:

- ``OpenAIBackend``: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp server, any
  ``base_url``) through the ``openai`` client, with the client's own retries switched off
  (``max_retries=0``) so that every retry is decided, counted and budgeted by the engine.
- ``LocalBackend``: an in-process transformers causal LM (the packaged SmolLM2 by default). A request with
  a ``RatingSpec`` is answered from ONE forward pass: the expected digit under the next-token distribution
  after the reply prefix (DEITA's scorer); a request without one is answered by greedy generation.

Failures are raised as one of two exceptions, so the engine needs no knowledge of HTTP:

- ``RetryableError``: the same request may succeed later (timeouts, connection errors, HTTP 429 and 5xx);
  it carries the server's ``Retry-After`` when there was one.
- ``FatalError``: sending the same request again would fail again (HTTP 4xx other than 429, a response that
  is not valid JSON, a response without choices, a prompt longer than the local model's window).

Either carries ``possibly_billed`` (``BackendError``): whether the server may have run, and billed, the request
although no answer came back; the engine charges those attempts to the budget.

Secrets: the API key is handed to the ``openai`` client and to nothing else. Error messages are built here
from the status code and the server's own message with the key redacted (a misbehaving server may echo
it), and the client's exception (which holds the request and its ``Authorization`` header) is neither
chained nor kept: every exception is raised outside the ``except`` block that caught the client's error.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from instsel_assets.judge.types import JudgeReply, JudgeRequest, RatingSpec

log = logging.getLogger(__name__)

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"

# Upper bound of the tokens a server's chat template adds around the messages (role markers, separators,
# an injected default system prompt), used by ``OpenAIBackend.prompt_token_bound``.
PROMPT_OVERHEAD_PER_MESSAGE = 8
PROMPT_OVERHEAD_PER_REQUEST = 64

# How much of a server's error message is kept in an exception (after redaction).
_MAX_SERVER_MESSAGE = 300
# How much of a reply that is not an answer (an error body, a body that is not JSON) is kept, after redaction,
# in ``BackendError.raw`` / ``JudgeReply.raw``.
MAX_RAW_CHARS = 4000
_REDACTED = "[redacted]"
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}")


# ---------------------------------------------------------------------------------------------- errors
class BackendError(Exception):
    """A request that got no answer. ``reason`` is a short category used for counting ("http 429",
    "timeout", "invalid response", ...); ``detail`` says more (never a secret).

    ``possibly_billed``: the request reached the server and the server may have run the model (and billed it)
    although no readable answer came back: a read timeout, a connection that broke after the request was
    sent, a 200 response that cannot be read. The engine charges such an attempt's worst case to the budget,
    because the provider's bill will hold it. False for failures that cannot have been billed: the connection
    could not be opened, or the server answered with an error status.

    ``raw``: what the server sent back when it was not an answer (the error body, the unreadable body), with
    secrets redacted and at most ``MAX_RAW_CHARS`` characters; None when nothing came back. The engine keeps it
    in the failed request's reply (``JudgeReply.raw``), so a failure can be inspected after the run."""

    def __init__(self, reason: str, detail: str = "", *, possibly_billed: bool = False,
                 raw: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.possibly_billed = bool(possibly_billed)
        self.raw = raw


class RetryableError(BackendError):
    """The same request may succeed later: a timeout, a connection error, HTTP 429 or 5xx.

    ``status`` is the HTTP status (None when no response came back); ``retry_after_seconds`` is the wait
    the server asked for (``Retry-After`` / ``retry-after-ms``), or None.
    """

    def __init__(self, status: int | None, retry_after_seconds: float | None = None, *, reason: str | None = None,
                 detail: str = "", possibly_billed: bool = False, raw: str | None = None) -> None:
        super().__init__(reason or (f"http {status}" if status is not None else "connection error"), detail,
                         possibly_billed=possibly_billed, raw=raw)
        self.status = status
        self.retry_after_seconds = retry_after_seconds


class FatalError(BackendError):
    """Sending the same request again would fail again: HTTP 4xx other than 429, an invalid response, a
    prompt the local model cannot hold. ``status`` is the HTTP status when there was one."""

    def __init__(self, reason: str, detail: str = "", *, status: int | None = None,
                 possibly_billed: bool = False, raw: str | None = None) -> None:
        super().__init__(reason, detail, possibly_billed=possibly_billed, raw=raw)
        self.status = status


def _request_was_sent(exc: BaseException) -> bool:
    """Whether the HTTP request behind an ``openai`` timeout / connection error may have reached the server:
    False only when the connection itself could not be opened (the HTTP library's ``ConnectError`` /
    ``ConnectTimeout``), so an unreachable server does not eat the budget; anything else (read timeout,
    connection closed mid-body) may have been answered and billed. Matched by class name because the
    ``openai`` client's HTTP library (``httpx`` or ``httpx2``) depends on its version."""
    cause = exc.__cause__
    names = {cls.__name__ for cls in type(cause).__mro__} if cause is not None else set()
    return not names & {"ConnectError", "ConnectTimeout"}


# -------------------------------------------------------------------------------------------- protocol
@runtime_checkable
class Backend(Protocol):
    """What the engine needs from a backend.

    ``backend_id`` and ``model`` enter every request's cache key (``JudgeRequest.key``): two backends with
    the same id and model must give the same answer to the same payload. ``complete`` answers one request
    or raises ``RetryableError`` / ``FatalError``. ``count_tokens`` estimates the tokens of a text (dry run).

    Optional, used by the engine when present: ``prompt_token_bound(request) -> int`` (an upper bound of the
    prompt tokens the request will be billed, reserved against a budget before sending) and
    ``complete_many(requests) -> list[JudgeReply]`` (batched answers in the calling thread; a per-request
    failure is a reply with ``error`` set).
    """

    backend_id: str
    model: str

    def complete(self, request: JudgeRequest) -> JudgeReply: ...

    def count_tokens(self, text: str) -> int: ...


def messages_text(request: JudgeRequest) -> str:
    """The text whose tokens a dry run counts for a request: every message as ``role\\ncontent``, one
    after another. (Chat templates add a few marker tokens per message; ``prompt_token_bound`` covers them
    where a bound matters.)"""
    return "\n".join(f"{m['role']}\n{m['content']}" for m in request.messages)


def bytes_token_estimate(text: str) -> int:
    """``ceil(len(utf-8 bytes) / 4)``: OpenAI's rule of thumb of about four bytes of English per token.
    Chinese text (three bytes a character, often one or two tokens each) is underestimated; pass a tokenizer
    to ``OpenAIBackend`` for exact counts."""
    return math.ceil(len(text.encode("utf-8")) / 4)


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from a response's headers: ``retry-after-ms`` (milliseconds), ``Retry-After`` as
    seconds or as an HTTP-date (then measured from ``now``, default ``time.time()``, never negative).
    None when absent or unreadable."""
    if headers is None:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            value = float(lowered["retry-after-ms"]) / 1000.0
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _public_url(url: str) -> str:
    """``url`` without user info (``https://user:secret@host`` -> ``https://host``)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url.rstrip("/")
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)).rstrip("/")


# ---------------------------------------------------------------------------------------- OpenAI backend
class OpenAIBackend:
    """An OpenAI-compatible chat-completions endpoint.

    - ``base_url``: default ``https://api.openai.com/v1``; ``backend_id`` is ``"openai:" + base_url`` (any
      user info in the URL removed), so answers from different servers never share cache entries.
    - ``api_key``: default the ``OPENAI_API_KEY`` environment variable. Required for the default OpenAI URL;
      for any other ``base_url`` a placeholder is sent when there is none (llama.cpp and vLLM servers
      without ``--api-key`` ignore it).
    - ``timeout``: seconds per attempt. The client never retries by itself (``max_retries=0``).
    - ``tokenizer``: optional, anything with ``encode(text) -> list``; with it ``count_tokens`` is exact for
      that tokenizer, without it ``count_tokens`` is ``bytes_token_estimate`` (a rule of thumb).

    Errors map to ``RetryableError`` (timeouts, connection errors, 429, 5xx, with ``Retry-After``) and
    ``FatalError`` (other 4xx; a 200 response that is not valid JSON, is not a chat completion, or has no
    choices: the ``reason`` is "invalid response" and the detail says which). A choice whose content is
    empty or None is an answer with text ``""`` (the model did answer, and was paid): the template's parser
    decides what it means.
    """

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 organization: str | None = None, timeout: float = 60.0, *, tokenizer: Any = None) -> None:
        import openai

        if not model:
            raise ValueError("OpenAIBackend: model must be a non-empty model name")
        if timeout is None or not timeout > 0:
            raise ValueError(f"OpenAIBackend: timeout must be a positive number of seconds, got {timeout!r}")
        base = (base_url or DEFAULT_OPENAI_BASE_URL).rstrip("/")
        key = api_key if api_key else os.environ.get("OPENAI_API_KEY") or None
        if key is None:
            if base == DEFAULT_OPENAI_BASE_URL:
                raise ValueError("OpenAIBackend: no API key for https://api.openai.com/v1: pass api_key or set "
                                 "OPENAI_API_KEY")
            key = "no-key"
        self.model = model
        self.base_url = base
        self.backend_id = "openai:" + _public_url(base)
        self.timeout = float(timeout)
        self.tokenizer = tokenizer
        self._secrets = tuple(s for s in (key, api_key, organization) if s and s != "no-key")
        self._client = openai.OpenAI(api_key=key, base_url=base, organization=organization, timeout=self.timeout,
                                     max_retries=0)
        self._warned_no_usage = False

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, backend_id={self.backend_id!r}, timeout={self.timeout})"

    # -------------------------------------------------------------------------------------- tokens
    def count_tokens(self, text: str) -> int:
        """Tokens of ``text``: exact with the tokenizer given, else ``bytes_token_estimate``."""
        if self.tokenizer is not None:
            return len(self.tokenizer.encode(text))
        return bytes_token_estimate(text)

    def prompt_token_bound(self, request: JudgeRequest) -> int:
        """An upper bound of the prompt tokens the server will bill, reserved against a budget before the
        request is sent.

        Without a tokenizer: one token per UTF-8 byte of ``messages_text`` (no byte-level BPE or
        byte-fallback SentencePiece tokenizer makes more tokens than bytes), plus
        ``PROMPT_OVERHEAD_PER_MESSAGE`` per message and ``PROMPT_OVERHEAD_PER_REQUEST`` for the server's
        chat template. With a tokenizer: its count plus the same overheads. Loose on purpose: a budget must
        never be overrun, and the reservation is released for the real usage as soon as the answer arrives.
        """
        text = messages_text(request)
        body = self.count_tokens(text) if self.tokenizer is not None else len(text.encode("utf-8"))
        return body + PROMPT_OVERHEAD_PER_MESSAGE * len(request.messages) + PROMPT_OVERHEAD_PER_REQUEST

    # -------------------------------------------------------------------------------------- secrets
    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        return _KEY_LIKE.sub(_REDACTED, text)

    def _raw(self, body: object) -> str | None:
        """A reply that is not an answer, as text, secrets redacted, cut to ``MAX_RAW_CHARS`` characters."""
        if body is None:
            return None
        if isinstance(body, bytes):
            body = body.decode("utf-8", errors="replace")
        text = self._redact(str(body))
        return text if len(text) <= MAX_RAW_CHARS else text[:MAX_RAW_CHARS] + f"... [{len(text)} characters]"

    @staticmethod
    def _body_text(response: Any) -> str | None:
        try:
            return response.text
        except Exception:  # noqa: BLE001 - a body that cannot be read is simply not kept
            return None

    def _server_message(self, body: object) -> str:
        if isinstance(body, Mapping):
            message = body.get("message")
            if message is None and isinstance(body.get("error"), Mapping):
                message = body["error"].get("message")
            text = str(message) if message is not None else json.dumps(body, default=str)[:_MAX_SERVER_MESSAGE]
        else:
            text = "" if body is None else str(body)
        text = self._redact(" ".join(text.split()))
        return text[:_MAX_SERVER_MESSAGE]

    # -------------------------------------------------------------------------------------- complete
    def complete(self, request: JudgeRequest) -> JudgeReply:
        """Send one request; raise ``RetryableError`` or ``FatalError`` on failure (class docstring)."""
        import openai
        from openai.types.chat import ChatCompletion

        payload = request.payload(self.model)
        failure: BackendError | None = None
        response: Any = None
        try:
            response = self._client.chat.completions.create(**payload)
        except openai.APITimeoutError as exc:
            sent = _request_was_sent(exc)
            failure = RetryableError(None, reason="timeout", possibly_billed=sent,
                                     detail=(f"no response within {self.timeout:g} s" if sent else
                                             f"could not connect within {self.timeout:g} s"))
        except openai.APIConnectionError as exc:
            sent = _request_was_sent(exc)
            failure = RetryableError(None, reason="connection error", possibly_billed=sent,
                                     detail=(f"the connection to {self.backend_id} broke before the response was "
                                             f"complete" if sent else f"could not reach {self.backend_id}"))
        except openai.APIStatusError as exc:
            status = int(exc.status_code)
            message = self._server_message(exc.body)
            raw = self._raw(self._body_text(exc.response))
            if status == 429 or status >= 500:
                failure = RetryableError(status, parse_retry_after(dict(exc.response.headers)), detail=message,
                                         raw=raw)
            else:
                failure = FatalError(f"http {status}", message, status=status, raw=raw)
        except openai.APIResponseValidationError as exc:
            failure = FatalError("invalid response", "the response does not match the chat-completion schema",
                                 possibly_billed=True, raw=self._raw(self._body_text(exc.response)))
        except json.JSONDecodeError as exc:  # a body announced as JSON that does not parse (e.g. cut short)
            failure = FatalError("invalid response", f"the response body is not valid JSON (parse error at "
                                                     f"character {exc.pos})", possibly_billed=True,
                                 raw=self._raw(exc.doc))
        if failure is not None:
            raise failure  # outside the except blocks: the client's exception (with its headers) is not chained
        if not isinstance(response, ChatCompletion):
            kind = "text" if isinstance(response, str) else type(response).__name__
            raise FatalError("invalid response", f"the response body is not valid JSON for a chat completion "
                                                 f"(got {kind})", possibly_billed=True,
                             raw=self._raw(response if isinstance(response, (str, bytes)) else repr(response)))
        if not response.choices:
            raise FatalError("invalid response", "the response has no choices", possibly_billed=True,
                             raw=self._raw(response.to_json(indent=None)))
        choice = response.choices[0]
        message = choice.message
        text = (message.content if message is not None and message.content is not None
                else (getattr(message, "refusal", None) or ""))
        usage = response.usage
        if usage is None:
            if not self._warned_no_usage:
                log.warning("%s reports no token usage; each answer is counted at its worst case (prompt bound + "
                            "max_tokens)", self.backend_id)
                self._warned_no_usage = True
            prompt_tokens, completion_tokens = self.prompt_token_bound(request), int(request.max_tokens)
        else:
            prompt_tokens, completion_tokens = int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
        return JudgeReply(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          finish_reason=choice.finish_reason)

    def close(self) -> None:
        self._client.close()


# ----------------------------------------------------------------------------------------- local backend
class LocalBackend:
    """An in-process transformers causal LM (e.g. ``loading.load_causal_lm(PACKAGED_SMOLLM2)``).

    ``model`` is the torch model (kept as ``self.lm``); ``model_name`` names it in the cache key
    (``self.model``, ``backend_id = "local:" + model_name``). The cache key does not hash the weights:
    give a fine-tuned model its own name (``loading.model_fingerprint`` is one).

    Rating requests (``request.rating`` set): the messages are rendered with the chat template and the
    generation prompt, ``rating.reply_prefix`` is appended, and ONE forward pass reads the next-token
    log-probabilities of the digits ``low..high`` (``next_token.candidate_logprobs``, batched and
    length-sorted). They are renormalised over those digits (softmax in log space), the expected digit is
    ``sum d * p(d)``, and the reply is ``f"{reply_prefix}{expected:.4f}"`` with ``digit_probs`` (summing to
    1), ``prompt_tokens`` = prompt length, ``completion_tokens`` = 0, ``finish_reason`` = "rating".
    The digit token ids are found as in ``scoring.self_curation``: each digit must be exactly one token
    right after the same text (prefix + digit tokenised together); a tokenizer that merges the prefix's
    trailing space with some digits only is refused with a ``ValueError`` naming them. A request with
    ``rating.second_prefix`` (two ratings in one reply, the pairwise judge's "8 7") takes a second forward pass
    after the first rating's most likely digit and the separator; its reply holds both expected digits.

    Other requests: greedy generation in left-padded, length-sorted batches of ``batch_size``
    (``model.generate``, ``do_sample=False``, ``max_new_tokens = request.max_tokens``), decoded without special tokens; ``finish_reason`` "stop" when the model emitted
    its end-of-sequence token, else "length". The local backend is deterministic: ``temperature`` and
    ``extra`` are not used (they still enter the cache key).

    A prompt longer than ``max_length`` tokens is not cut (a left cut would drop the judge's instructions):
    its reply is an error "prompt too long" (``complete`` raises it as a ``FatalError``). The model is used
    by one thread at a time.
    """

    def __init__(self, model, tokenizer, model_name: str, max_length: int = 2048, batch_size: int = 8) -> None:
        from instsel_assets.models import chat

        if not model_name:
            raise ValueError("LocalBackend: model_name must be a non-empty name for the cache key")
        for name, value in (("max_length", max_length), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LocalBackend: {name} must be a positive integer, got {value!r}")
        chat.ensure_chat_template(tokenizer)
        self.lm = model
        self.tokenizer = tokenizer
        self.model = model_name
        self.backend_id = "local:" + model_name
        self.max_length = max_length
        self.batch_size = batch_size
        self._digit_ids: dict[tuple[int, int, str], list[int]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalBackend(backend_id={self.backend_id!r}, max_length={self.max_length})"

    # -------------------------------------------------------------------------------------- tokens
    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self._ids(text))

    def _rendered(self, request: JudgeRequest) -> str:
        from instsel_assets.models import chat

        return chat.render(self.tokenizer, chat.as_messages(request.messages), add_generation_prompt=True)

    def prompt_token_bound(self, request: JudgeRequest) -> int:
        """The exact prompt length (rendered with the chat template, plus the rating prefix)."""
        text = self._rendered(request)
        if request.rating is not None:
            text += request.rating.reply_prefix
        return len(self._ids(text))

    def digit_token_ids(self, rating: RatingSpec) -> list[int]:
        """Token ids of the digits ``rating.low..rating.high`` right after ``rating.reply_prefix`` (class
        docstring); ``ValueError`` when a digit is not one token there, or the digits do not follow the
        same preceding tokens."""
        spec = (rating.low, rating.high, rating.reply_prefix)
        if spec in self._digit_ids:
            return self._digit_ids[spec]
        probe = self._rendered(JudgeRequest(messages=({"role": "user", "content": "x"},))) + rating.reply_prefix
        digits = range(rating.low, rating.high + 1)
        heads, ids = [], []
        for d in digits:
            full = self._ids(probe + str(d))
            last = full[-1] if full else None
            if last is None or self.tokenizer.decode([last]).strip() != str(d):
                tail = [self.tokenizer.decode([i]) for i in full[-3:]]
                raise ValueError(f"{self.backend_id}: digit '{d}' is not exactly one token after "
                                 f"{rating.reply_prefix!r} in this tokenizer (the text ends with tokens {tail}); "
                                 f"one forward pass cannot read ratings {rating.low}..{rating.high}")
            heads.append(full[:-1])
            ids.append(last)
        odd = [d for d, head in zip(digits, heads) if head != heads[0]]
        if odd:
            raise ValueError(f"{self.backend_id}: digits {odd} are tokenised together with the end of "
                             f"{rating.reply_prefix!r} while '{rating.low}' is not; one forward pass cannot read "
                             f"ratings {rating.low}..{rating.high} (choose a RatingSpec range or reply_prefix "
                             f"that this tokenizer splits the same way)")
        self._digit_ids[spec] = ids
        return ids

    # -------------------------------------------------------------------------------------- complete
    def complete(self, request: JudgeRequest) -> JudgeReply:
        """One request; a failure (prompt too long, ...) is raised as ``FatalError``."""
        reply = self.complete_many([request])[0]
        if reply.error is not None:
            reason, _, detail = reply.error.partition(": ")
            raise FatalError(reason, detail)
        return reply

    def complete_many(self, requests: Sequence[JudgeRequest]) -> list[JudgeReply]:
        """Answers in input order. Rating requests are batched through ``candidate_logprobs`` (one batch
        per digit range); other requests are generated in batches of ``batch_size``. A request the model
        cannot answer gets a reply with ``error`` set ("prompt too long: ...", "rating tokenization: ...")."""
        with self._lock:
            replies: list[JudgeReply | None] = [None] * len(requests)
            groups: dict[tuple[int, int, str], list[tuple[int, list[int]]]] = {}
            generations: list[tuple[int, list[int], int]] = []  # (index, prompt ids, max new tokens)
            for i, request in enumerate(requests):
                if request.rating is None:
                    ids = self._ids(self._rendered(request))
                    if len(ids) > self.max_length:
                        replies[i] = self._too_long(len(ids), i)
                    else:
                        generations.append((i, ids, int(request.max_tokens)))
                    continue
                prompt_or_error = self._rating_prompt(request, i)
                if isinstance(prompt_or_error, JudgeReply):
                    replies[i] = prompt_or_error
                else:
                    spec = (request.rating.low, request.rating.high, request.rating.reply_prefix)
                    groups.setdefault(spec, []).append((i, prompt_or_error))
            for (low, high, prefix), members in groups.items():
                for i, reply in zip((m[0] for m in members), self._rate(low, high, prefix, [m[1] for m in members])):
                    replies[i] = reply
            self._second_ratings(requests, replies)
            for i, reply in self._generate_many(generations).items():
                replies[i] = reply
            return [r for r in replies if r is not None]

    def _second_ratings(self, requests: Sequence[JudgeRequest], replies: list[JudgeReply | None]) -> None:
        """Two-rating requests (``RatingSpec.second_prefix``): append the first rating's most likely digit and
        the separator, read the second rating in one more forward pass, and write both into the reply."""
        groups: dict[tuple[int, int, str], list[tuple[int, list[int]]]] = {}
        for i, request in enumerate(requests):
            rating, first = request.rating, replies[i]
            if rating is None or rating.second_prefix is None or first is None or first.error is not None:
                continue
            likely = max(first.digit_probs, key=lambda d: (first.digit_probs[d], -d))
            follow = RatingSpec(rating.low, rating.high, f"{rating.reply_prefix}{likely}{rating.second_prefix}")
            try:
                prompt_or_error = self._rating_prompt(dataclasses.replace(request, rating=follow), i)
            except ValueError as exc:  # this tokenizer merges the separator with some digits
                replies[i] = JudgeReply(text=None, error=f"rating tokenization: request {i}: {exc}")
                continue
            if isinstance(prompt_or_error, JudgeReply):
                replies[i] = prompt_or_error
            else:
                groups.setdefault((follow.low, follow.high, follow.reply_prefix), []).append((i, prompt_or_error))
        for (low, high, prefix), members in groups.items():
            for (i, _), second in zip(members, self._rate(low, high, prefix, [m[1] for m in members])):
                rating, first = requests[i].rating, replies[i]
                first_value = first.text[len(rating.reply_prefix):]
                second_value = second.text[len(prefix):]
                replies[i] = dataclasses.replace(
                    first, text=f"{rating.reply_prefix}{first_value}{rating.second_prefix}{second_value}")

    def _too_long(self, n_tokens: int, index: int) -> JudgeReply:
        return JudgeReply(text=None, error=f"prompt too long: request {index} has {n_tokens} prompt tokens, "
                                           f"more than max_length={self.max_length} of {self.backend_id}")

    def _rating_prompt(self, request: JudgeRequest, index: int) -> list[int] | JudgeReply:
        rating = request.rating
        assert rating is not None
        digit_ids = self.digit_token_ids(rating)
        full = self._ids(self._rendered(request) + rating.reply_prefix + str(rating.low))
        if not full or full[-1] != digit_ids[0]:
            tail = [self.tokenizer.decode([i]) for i in full[-3:]]
            return JudgeReply(text=None, error=f"rating tokenization: request {index}: its text changes how "
                                               f"{rating.reply_prefix!r} + '{rating.low}' is tokenised (it ends "
                                               f"with {tail})")
        prompt = full[:-1]
        if len(prompt) > self.max_length:
            return self._too_long(len(prompt), index)
        return prompt

    def _rate(self, low: int, high: int, prefix: str, prompts: list[list[int]]) -> list[JudgeReply]:
        from instsel_assets.scoring.next_token import candidate_logprobs

        digit_ids = self._digit_ids[(low, high, prefix)]
        logprobs = candidate_logprobs(self.lm, self.tokenizer, prompts, digit_ids, batch_size=self.batch_size,
                                      max_length=self.max_length)
        digits = np.arange(low, high + 1, dtype=np.float64)
        out = []
        for prompt, row in zip(prompts, logprobs):
            weights = np.exp(row - row.max())  # renormalise over the digits in log space (no underflow)
            p = weights / weights.sum()
            expected = float(p @ digits)
            out.append(JudgeReply(text=f"{prefix}{expected:.4f}", prompt_tokens=len(prompt), completion_tokens=0,
                                  finish_reason="rating",
                                  digit_probs={int(d): float(q) for d, q in zip(range(low, high + 1), p)}))
        return out

    def _generate_many(self, items: list[tuple[int, list[int], int]]) -> dict[int, JudgeReply]:
        """Greedy replies for ``(index, prompt ids, max new tokens)``: prompts of the same ``max new tokens``
        are sorted by length and generated ``batch_size`` at a time, LEFT-padded with an attention mask (so
        every row's next token follows its own last token; the model derives positions from the mask). A
        row stops at its end-of-sequence token; the tokens generated after it in the batch are dropped."""
        import torch

        from instsel_assets.scoring.loss_engine import _input_device, attention_backends

        out: dict[int, JudgeReply] = {}
        if not items:
            return out
        device = _input_device(self.lm)
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        if pad is None:
            pad = 0
        by_budget: dict[int, list[tuple[int, list[int]]]] = {}
        for index, ids, max_new in items:
            by_budget.setdefault(max_new, []).append((index, ids))
        was_training = self.lm.training
        self.lm.eval()
        try:
            for max_new, members in by_budget.items():
                members.sort(key=lambda m: (-len(m[1]), m[0]))
                for b in range(0, len(members), self.batch_size):
                    batch = members[b: b + self.batch_size]
                    width = max(len(ids) for _, ids in batch)
                    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
                    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                    for r, (_, ids) in enumerate(batch):
                        input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                        attention_mask[r, width - len(ids):] = 1
                    with torch.inference_mode(), attention_backends(device):  # no cuDNN per-shape plans
                        generated = self.lm.generate(input_ids=input_ids.to(device),
                                                     attention_mask=attention_mask.to(device),
                                                     max_new_tokens=max_new, do_sample=False,
                                                     pad_token_id=pad, eos_token_id=eos)
                    for r, (index, ids) in enumerate(batch):
                        new = [int(t) for t in generated[r, width:].tolist()]
                        finish = "length"
                        if eos is not None and eos in new:
                            new = new[: new.index(eos) + 1]
                            finish = "stop"
                        text = self.tokenizer.decode(new, skip_special_tokens=True)
                        out[index] = JudgeReply(text=text, prompt_tokens=len(ids), completion_tokens=len(new),
                                                finish_reason=finish)
        finally:
            if was_training:
                self.lm.train()
        return out
