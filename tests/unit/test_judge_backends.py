"""Judge backends: the OpenAI-compatible backend against a real HTTP server, and the in-process local backend.

The OpenAI backend talks through the real ``openai`` client to ``ScriptedOpenAIServer`` on 127.0.0.1: that
scripted server stands in for the upstream model at the HTTP boundary and injects faults per request (a
delay past the client timeout, 429 with Retry-After, 500, 503, truncated JSON, garbage text, 401). A later
test will run the real llama.cpp server behind a proxy. The local backend uses the tiny random Llama of
``conftest.tiny_lm``; its ratings are checked against ``candidate_logprobs`` computed directly.
"""

from __future__ import annotations

import email.utils
import logging
import math
import socket

import numpy as np
import pytest
import torch
from scripted_openai_server import TEST_API_KEY, ScriptedOpenAIServer, usage_for

from instsel_assets.judge.backends import (
    Backend,
    FatalError,
    LocalBackend,
    OpenAIBackend,
    RetryableError,
    bytes_token_estimate,
    messages_text,
    parse_retry_after,
)
from instsel_assets.judge.types import JudgeRequest, RatingSpec
from instsel_assets.models import chat
from instsel_assets.scoring.next_token import candidate_logprobs

SECRET = TEST_API_KEY  # the key the shared `backend` fixture (tests/conftest.py) uses


def req(content: str, **kw) -> JudgeRequest:
    return JudgeRequest(messages=({"role": "system", "content": "You are a judge."},
                                  {"role": "user", "content": content}), **kw)


# ------------------------------------------------------------------------------------------------ OpenAI
def test_openai_backend_sends_the_exact_payload_and_reads_the_answer(server, backend):
    request = req("rate:4 this answer", max_tokens=12, temperature=0.0, extra={"seed": 7, "top_p": 1.0})
    reply = backend.complete(request)
    assert reply.text == "Score: 4" and reply.error is None and not reply.cached
    assert reply.finish_reason == "stop"
    assert (reply.prompt_tokens, reply.completion_tokens) == tuple(
        usage_for(list(request.payload("judge-model")["messages"]), "Score: 4", 12)[k]
        for k in ("prompt_tokens", "completion_tokens"))
    assert server.bodies == [request.payload("judge-model")]  # byte-for-byte what the cache key hashes
    assert server.auth_headers == [f"Bearer {SECRET}"]
    assert isinstance(backend, Backend)


def test_openai_backend_identity(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert OpenAIBackend("m", api_key="k").backend_id == "openai:https://api.openai.com/v1"
    local = OpenAIBackend("m", base_url="http://user:pw@127.0.0.1:8080/v1/")
    assert local.backend_id == "openai:http://127.0.0.1:8080/v1"  # no credentials in ids, keys or metadata
    with pytest.raises(ValueError, match="no API key"):
        OpenAIBackend("m")
    assert SECRET not in repr(OpenAIBackend("m", api_key=SECRET))


@pytest.mark.parametrize("fault, status, retry_after", [
    ("429", 429, None), ("429:7", 429, 7.0), ("500", 500, None), ("503", 503, None),
])
def test_openai_backend_retryable_statuses(server, backend, fault, status, retry_after):
    server.script("x", fault)
    with pytest.raises(RetryableError) as info:
        backend.complete(req("x"))
    assert info.value.status == status and info.value.reason == f"http {status}"
    assert info.value.retry_after_seconds == retry_after
    assert backend.complete(req("x")).text == "echo: x"  # the script is spent: the next one is answered


def test_openai_backend_reads_retry_after_as_http_date(server, backend):
    server.script("x", "429:date:30")
    with pytest.raises(RetryableError) as info:
        backend.complete(req("x"))
    assert 25.0 <= info.value.retry_after_seconds <= 31.0


def test_openai_backend_timeout_and_connection_errors_are_retryable(server, backend, monkeypatch):
    server.script("slow", "delay")
    with pytest.raises(RetryableError) as info:
        backend.complete(req("slow"))
    assert info.value.reason == "timeout" and info.value.status is None
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = OpenAIBackend("m", base_url=f"http://127.0.0.1:{port}/v1", api_key=SECRET, timeout=0.3)
    with pytest.raises(RetryableError) as info:
        closed.complete(req("x"))
    assert info.value.reason == "connection error"


@pytest.mark.parametrize("fault, possibly_billed", [
    ("delay", True),  # the request reached the server, which may have run it: billed unseen
    ("truncated", True), ("garbage", True), ("nochoices", True),  # a 200 came back: the server may bill it
    ("429", False), ("500", False), ("503", False), ("400", False), ("401", False),  # error statuses
])
def test_openai_backend_says_which_failures_may_have_been_billed(server, backend, fault, possibly_billed):
    server.script("x", fault)
    with pytest.raises((RetryableError, FatalError)) as info:
        backend.complete(req("x"))
    assert info.value.possibly_billed is possibly_billed


def test_a_server_that_cannot_be_reached_has_billed_nothing():
    with socket.socket() as s:  # a port nobody listens on: the connection is refused, nothing was sent
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = OpenAIBackend("m", base_url=f"http://127.0.0.1:{port}/v1", api_key=SECRET, timeout=0.3)
    with pytest.raises(RetryableError) as info:
        closed.complete(req("x"))
    assert info.value.reason == "connection error" and info.value.possibly_billed is False
    assert "could not reach" in str(info.value)


@pytest.mark.parametrize("fault, detail", [
    ("truncated", "not valid JSON"), ("garbage", "not valid JSON"), ("nochoices", "no choices"),
])
def test_openai_backend_invalid_responses_are_fatal_and_say_which(server, backend, fault, detail):
    server.script("x", fault)
    with pytest.raises(FatalError) as info:
        backend.complete(req("x"))
    assert info.value.reason == "invalid response" and detail in str(info.value)


def test_openai_backend_other_4xx_are_fatal(server, backend):
    server.script("x", "400")
    with pytest.raises(FatalError) as info:
        backend.complete(req("x"))
    assert info.value.status == 400 and str(info.value) == "http 400: scripted 400"


def test_openai_backend_counts_the_worst_case_when_the_server_reports_no_usage(server, backend):
    server.script("x", "nousage")
    request = req("x", max_tokens=9)
    reply = backend.complete(request)
    assert reply.text == "echo: x"
    assert (reply.prompt_tokens, reply.completion_tokens) == (backend.prompt_token_bound(request), 9)


def test_the_api_key_never_leaks_into_errors_or_logs(server, backend, caplog):
    """A 401 whose body echoes the key, a 500 and a timeout: the key is in no exception text, args, cause,
    context, attribute string, nor in any log record of any logger at DEBUG."""
    server.script("x", "401", "500", "delay")
    caplog.set_level(logging.DEBUG)
    caught = []
    for expected in (FatalError, RetryableError, RetryableError):
        with pytest.raises(expected) as info:
            backend.complete(req("x"))
        caught.append(info.value)
    assert server.auth_headers[0] == f"Bearer {SECRET}"  # the key was really sent
    assert caught[0].status == 401 and "[redacted]" in str(caught[0])
    for exc in caught:
        texts = [str(exc), repr(exc), *map(str, exc.args), *map(repr, exc.args), repr(vars(exc))]
        assert exc.__cause__ is None and exc.__context__ is None
        assert not any(SECRET in t for t in texts), texts
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    assert SECRET not in logged and SECRET not in caplog.text


def test_count_tokens_heuristic_and_prompt_bound(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    b = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    assert b.count_tokens("abcd" * 10) == 10 == bytes_token_estimate("abcd" * 10)
    assert b.count_tokens("abcde") == 2
    assert b.count_tokens("三原色") == math.ceil(9 / 4)
    request = req("三原色是什么？")
    assert b.prompt_token_bound(request) >= len(messages_text(request).encode()) + 2

    class WordTokenizer:
        def encode(self, text):
            return text.split()

    assert OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", tokenizer=WordTokenizer()).count_tokens("a b c") == 3


def test_parse_retry_after():
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"Retry-After": email.utils.formatdate(1000.0 + 20, usegmt=True)}, now=1000.0) == 20.0
    assert parse_retry_after({"Retry-After": email.utils.formatdate(900.0, usegmt=True)}, now=1000.0) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


# ------------------------------------------------------------------------------------------------ local
RATING = RatingSpec(4, 9, "Score: ")  # the tiny tokenizer merges " 3" after "Score:", so 1..5 is refused


def direct_rating(model, tokenizer, request: JudgeRequest, spec: RatingSpec):
    """The expected digit computed straight from candidate_logprobs, independently of the backend."""
    text = chat.render(tokenizer, [dict(m) for m in request.messages], add_generation_prompt=True) + spec.reply_prefix
    digit_ids = [tokenizer(text + str(d), add_special_tokens=False)["input_ids"][-1]
                 for d in range(spec.low, spec.high + 1)]
    prompt = tokenizer(text + str(spec.low), add_special_tokens=False)["input_ids"][:-1]
    lp = candidate_logprobs(model, tokenizer, [prompt], digit_ids)[0]
    p = np.exp(lp) / np.exp(lp).sum()
    return float(p @ np.arange(spec.low, spec.high + 1)), p, len(prompt)


def test_local_rating_is_the_expected_digit_from_candidate_logprobs(tiny_lm):
    model, tokenizer = tiny_lm
    backend = LocalBackend(model, tokenizer, "tiny")
    assert backend.backend_id == "local:tiny" and backend.model == "tiny" and isinstance(backend, Backend)
    request = req("Give three tips for staying healthy.", rating=RATING)
    reply = backend.complete(request)
    expected, p, n_prompt = direct_rating(model, tokenizer, request, RATING)
    assert reply.text == f"Score: {expected:.4f}"
    assert sorted(reply.digit_probs) == list(range(4, 10))
    assert sum(reply.digit_probs.values()) == pytest.approx(1.0, abs=1e-12)
    assert [reply.digit_probs[d] for d in range(4, 10)] == pytest.approx(p, abs=1e-9)
    assert sum(d * q for d, q in reply.digit_probs.items()) == pytest.approx(expected, abs=1e-9)
    assert (reply.prompt_tokens, reply.completion_tokens, reply.finish_reason) == (n_prompt, 0, "rating")
    assert backend.prompt_token_bound(request) == n_prompt


def test_local_complete_many_batches_and_keeps_order(tiny_lm):
    model, tokenizer = tiny_lm
    backend = LocalBackend(model, tokenizer, "tiny", batch_size=2)
    requests = [req("What are the three primary colors?", rating=RATING),
                req("Translate 'good morning' into French.", max_tokens=5),
                req("Describe the structure of an atom in a few words.", rating=RATING),
                req("短诗", rating=RatingSpec(0, 2, "Score: ")),
                req("List five animals that live in the ocean.", rating=RATING)]
    batched = backend.complete_many(requests)
    one_by_one = [backend.complete(r) for r in requests]
    assert [r.text for r in batched[1:2]] == [r.text for r in one_by_one[1:2]]
    for a, b in zip(batched, one_by_one):
        if a.digit_probs is not None:
            assert a.digit_probs == pytest.approx(b.digit_probs, abs=1e-5)
    assert batched[3].text.startswith("Score: ") and sorted(batched[3].digit_probs) == [0, 1, 2]


def test_local_generation_is_greedy(tiny_lm):
    model, tokenizer = tiny_lm
    backend = LocalBackend(model, tokenizer, "tiny")
    request = req("Write a short poem about the sea.", max_tokens=6)
    reply = backend.complete(request)
    text = chat.render(tokenizer, [dict(m) for m in request.messages], add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    new = out[0, ids.shape[1]:].tolist()
    if tokenizer.eos_token_id in new:
        new = new[: new.index(tokenizer.eos_token_id) + 1]
    assert reply.text == tokenizer.decode(new, skip_special_tokens=True)
    assert reply.completion_tokens == len(new) <= 6 and reply.prompt_tokens == ids.shape[1]
    assert reply.finish_reason in ("stop", "length")
    assert backend.complete(request) == reply  # deterministic


def test_local_generation_in_left_padded_batches_equals_one_at_a_time(tiny_lm):
    model, tokenizer = tiny_lm
    prompts = ["Write a short poem about the sea.", "Red?", "三原色是什么？", "List five animals that live in the ocean.",
               "def add(a, b):"]
    requests = [req(p, max_tokens=5) for p in prompts] + [req("Bonjour.", max_tokens=3)]
    batched = LocalBackend(model, tokenizer, "tiny", batch_size=4).complete_many(requests)
    alone = [LocalBackend(model, tokenizer, "tiny", batch_size=1).complete(r) for r in requests]
    assert [r.text for r in batched] == [r.text for r in alone]  # padding never changes a greedy reply
    assert [r.completion_tokens for r in batched] == [r.completion_tokens for r in alone]
    assert batched[-1].completion_tokens <= 3


def test_local_refuses_what_it_cannot_answer(tiny_lm):
    model, tokenizer = tiny_lm
    backend = LocalBackend(model, tokenizer, "tiny", max_length=50)
    with pytest.raises(ValueError, match=r"digits \[3\]"):
        backend.complete(req("x", rating=RatingSpec(1, 5)))
    with pytest.raises(FatalError) as info:
        backend.complete(req("a long prompt " * 40, rating=RATING))
    assert info.value.reason == "prompt too long"
    replies = backend.complete_many([req("a long prompt " * 40, max_tokens=3), req("ok", rating=RATING)])
    assert replies[0].text is None and replies[0].error.startswith("prompt too long: request 0")
    assert replies[1].error is None


def test_local_two_ratings_read_the_second_after_the_first_likely_digit(tiny_lm):
    model, tokenizer = tiny_lm
    backend = LocalBackend(model, tokenizer, "tiny")
    # the tiny test tokenizer merges " " with a following digit after the chat template (SmolLM2 does not):
    # "\n" separates the two ratings here
    pair = RatingSpec(1, 9, reply_prefix="", second_prefix="\n")
    request = req("Which answer is better?", rating=pair)
    reply = backend.complete(request)
    first, p, _ = direct_rating(model, tokenizer, request, RatingSpec(1, 9, reply_prefix=""))
    likely = int(np.argmax(p)) + 1
    second, _, _ = direct_rating(model, tokenizer, request, RatingSpec(1, 9, reply_prefix=f"{likely}\n"))
    assert reply.text == f"{first:.4f}\n{second:.4f}"
    assert reply.digit_probs == pytest.approx({d: q for d, q in zip(range(1, 10), p)}, abs=1e-9)
    # the second prefix is part of the cache key; a single rating keeps the key it always had
    assert request.key("local:tiny", "tiny") != req("Which answer is better?",
                                                     rating=RatingSpec(1, 9, reply_prefix="")).key("local:tiny", "tiny")
    with pytest.raises(ValueError, match="second_prefix"):
        RatingSpec(1, 9, second_prefix="")
    batched = backend.complete_many([request, req("Another question?", rating=pair), request])
    assert batched[0].text == batched[2].text == reply.text and len(batched[1].text.split()) == 2
    # a separator this tokenizer merges with the digits is an error reply for that request, not a crash
    merged = backend.complete_many([req("Which answer is better?", rating=RatingSpec(1, 9, "", " "))])[0]
    assert merged.text is None and merged.error.startswith("rating tokenization")
