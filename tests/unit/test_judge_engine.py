"""The judge engine: deduplication, cache, bounded concurrency, retries with backoff, budgets, crash safety,
the dry run, and ``judge_pool``'s accounting.

The OpenAI path runs the real ``openai`` client against ``ScriptedOpenAIServer`` on 127.0.0.1. That scripted
server stands in for the upstream model at the HTTP boundary: it speaks the chat-completions JSON, counts
every answer it produces (an answer produced is an answer paid), and injects faults per request from a
script (a delay past the client timeout, 429 with Retry-After, 500, 503, truncated JSON, garbage text, 401).
A later test will run the real llama.cpp server behind a proxy. Waits between attempts go through the
injectable ``sleep`` and are recorded, never slept.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scripted_openai_server import TEST_API_KEY, ScriptedOpenAIServer, answer_for

from instsel_assets.judge.backends import FatalError, LocalBackend, OpenAIBackend, RetryableError, messages_text
from instsel_assets.judge.cache import JudgeCache
from instsel_assets.judge.engine import Budget, Price, cap_reply_tokens, estimate, judge_pool, run_requests
from instsel_assets.judge.types import JudgeReply, JudgeRequest, JudgeTemplate, RatingSpec, ReplyParseError

SECRET = TEST_API_KEY  # the key the shared `backend` fixture (tests/conftest.py) uses


def req(content: str, max_tokens: int = 8, **kw) -> JudgeRequest:
    return JudgeRequest(messages=({"role": "system", "content": "Rate the answer from 1 to 5."},
                                  {"role": "user", "content": content}), max_tokens=max_tokens, **kw)


class Waits(list):
    """The injectable ``sleep``: records every wait instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def assert_never_paid_twice(server: ScriptedOpenAIServer) -> None:
    assert max(server.answered.values(), default=0) == 1, "a request was answered (paid) twice"


# ------------------------------------------------------------------------------------------------ basics
def test_duplicates_are_sent_once_and_replies_keep_input_order(server, backend, tmp_path):
    contents = [f"item {i} rate:{1 + i % 5}" for i in range(8)]
    requests = [req(c) for c in contents * 3]
    random.Random(3).shuffle(requests)
    cache = JudgeCache(tmp_path)
    run = run_requests(requests, backend, cache=cache, concurrency=4, sleep=Waits())
    assert [r.text for r in run.replies] == [answer_for(list(r.messages)) for r in requests]
    assert (run.requested, run.unique, run.cache_hits, run.sent, run.succeeded) == (24, 8, 0, 8, 8)
    assert run.failed == {} and run.left_unsent == 0 and not run.stopped_by_budget and run.retries == 0
    assert server.answered_total == 8 and server.received == 8
    assert_never_paid_twice(server)
    assert run.prompt_tokens > 0 and run.completion_tokens == 8 * 2 and run.cost is None
    assert len(cache) == 8 and cache.stats()["written"] == 8


def test_no_more_than_concurrency_requests_in_flight(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with ScriptedOpenAIServer(answer_seconds=0.1) as srv:
        backend = OpenAIBackend("judge-model", base_url=srv.url, api_key=SECRET, timeout=2.0)
        run = run_requests([req(f"q{i}") for i in range(9)], backend, concurrency=3)
        assert run.succeeded == 9 and srv.max_in_flight == 3


def test_faults_are_retried_counted_and_never_paid_twice(server, backend, tmp_path):
    server.script("<A>", "429:7", "500")  # answered on the 3rd attempt, after waiting >= 7 s once
    server.script("<B>", "503")
    server.script("<C>", "delay")  # the client times out, then the retry is answered
    server.script("<D>", "truncated")
    server.script("<E>", "garbage")
    server.script("<F>", "401")
    server.script("<G>", "429", "429", "429")  # never answered within 3 attempts
    faulty = [req(f"{m} rate:3") for m in ("<A>", "<B>", "<C>", "<D>", "<E>", "<F>", "<G>")]
    normal = [req(f"fine {i} rate:5") for i in range(5)]
    requests = faulty + normal + faulty[:2]
    waits = Waits()
    cache = JudgeCache(tmp_path)
    run = run_requests(requests, backend, cache=cache, concurrency=4, max_attempts=3, backoff_base=0.5,
                       backoff_max=4.0, sleep=waits, rng=random.Random(0))

    texts = [r.text for r in run.replies]
    assert texts[:3] == ["Score: 3"] * 3 and texts[7:] == ["Score: 5"] * 5 + ["Score: 3"] * 2
    assert texts[3:7] == [None] * 4
    assert [run.replies[i].error.split(":")[0] for i in (3, 4, 5)] == ["invalid response", "invalid response",
                                                                       "http 401"]
    assert run.replies[6].error == "http 429 after 3 attempts"
    assert run.sent == 12 and run.succeeded == 8
    assert run.failed == {"invalid response": 2, "http 401": 1, "http 429": 1}
    assert run.succeeded + run.n_failed == run.sent
    assert run.retries == 2 + 1 + 1 + 2 == len(waits)
    assert max(waits) >= 7.0  # Retry-After honoured
    assert all(w <= 4.0 for w in waits if w != max(waits))
    # every answer produced by the server was paid once and is in the cache; no failure is cached
    assert server.answered_total == run.succeeded
    assert_never_paid_twice(server)
    assert len(cache) == 8 and all(faulty[i].key(backend.backend_id, backend.model) not in cache for i in (3, 4, 5, 6))


def test_backoff_is_exponential_with_full_jitter_and_respects_retry_after():
    class Flaky:
        backend_id, model = "fake:flaky", "m"

        def __init__(self):
            self.errors = [RetryableError(503), RetryableError(503), RetryableError(429, 50.0),
                           RetryableError(None, reason="timeout"), RetryableError(503)]

        def count_tokens(self, text):
            return 1

        def complete(self, request):
            if self.errors:
                raise self.errors.pop(0)
            return JudgeReply(text="ok", prompt_tokens=1, completion_tokens=1)

    waits = Waits()
    run = run_requests([req("x")], Flaky(), concurrency=1, max_attempts=6, backoff_base=1.0, backoff_max=5.0,
                       sleep=waits, rng=random.Random(42))
    jitter = random.Random(42)
    expected = [min(5.0, 1.0 * 2 ** a) * jitter.random() for a in range(5)]
    expected[2] = max(expected[2], 50.0)
    assert waits == pytest.approx(expected) and run.retries == 5 and run.replies[0].text == "ok"

    always = Flaky()
    always.errors = [RetryableError(429)] * 10
    run = run_requests([req("x")], always, sleep=Waits())  # the default: 5 attempts
    assert run.replies[0].error == "http 429 after 5 attempts" and run.failed == {"http 429": 1}
    assert run.retries == 4 and len(always.errors) == 5


# ------------------------------------------------------------------------------------------------ cache
def test_a_rerun_with_the_cache_sends_nothing(server, backend, tmp_path):
    requests = [req(f"q{i} rate:{i % 5 + 1}") for i in range(10)]
    first = run_requests(requests, backend, cache=JudgeCache(tmp_path))
    received = server.received
    again = run_requests(requests + requests[:3], backend, cache=JudgeCache(tmp_path))
    assert server.received == received and again.sent == 0 and again.cache_hits == 10
    assert [r.text for r in again.replies[:10]] == [r.text for r in first.replies]
    assert all(r.cached for r in again.replies)
    assert again.prompt_tokens == 0 and again.summary()["sent"] == 0


def test_a_crash_mid_run_loses_no_paid_answer(server, backend, tmp_path):
    requests = [req(f"q{i} rate:{i % 5 + 1}") for i in range(20)]

    def crash_after_five(done: int, total: int) -> None:
        if done == 5:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        run_requests(requests, backend, cache=JudgeCache(tmp_path), concurrency=3, progress=crash_after_five)
    paid = server.answered_total
    assert 5 <= paid < 20  # the answers in flight at the crash also arrived
    assert len(JudgeCache(tmp_path)) == paid  # every paid answer is on disk

    rerun = run_requests(requests, backend, cache=JudgeCache(tmp_path), concurrency=3)
    assert rerun.cache_hits == paid and rerun.sent == 20 - paid and rerun.succeeded == 20 - paid
    assert server.answered_total == 20
    assert_never_paid_twice(server)


# ------------------------------------------------------------------------------------------------ budget
def test_a_token_budget_is_never_exceeded_and_the_rest_is_left_unsent(server, backend, tmp_path):
    requests = [req(f"question number {i} rate:{i % 5 + 1}") for i in range(30)]
    cap = 400
    run = run_requests(requests, backend, cache=JudgeCache(tmp_path), concurrency=4, budget=Budget(max_tokens=cap))
    assert run.stopped_by_budget and 0 < run.left_unsent < 30
    assert run.budget["spent_tokens"] == run.prompt_tokens + run.completion_tokens <= cap
    assert run.budget["over_reservation"] == 0
    assert run.sent + run.left_unsent == 30 and run.succeeded == run.sent
    left = [r for r in run.replies if r.error == "budget"]
    assert len(left) == run.left_unsent and all(r.text is None for r in left)
    # it stopped because the next request's worst case did not fit, with nothing in flight
    first_left = requests[run.replies.index(left[0])]
    assert run.budget["spent_tokens"] + backend.prompt_token_bound(first_left) + first_left.max_tokens > cap
    assert server.answered_total == run.succeeded
    # budget stops are not cached: a run with more budget sends exactly those
    more = run_requests(requests, backend, cache=JudgeCache(tmp_path), budget=Budget(max_tokens=100_000))
    assert more.cache_hits == run.succeeded and more.sent == run.left_unsent and not more.stopped_by_budget
    assert_never_paid_twice(server)


def test_an_attempt_that_may_have_been_billed_is_charged_at_its_worst_case(server, backend):
    # "<C>" times out on the client while the server still works on it (a provider would bill that answer);
    # the engine never sees its usage, so it charges the attempt's reserved worst case, and the retry
    # reserves its own
    server.script("<C>", "delay")
    requests = [req("<C> rate:3")] + [req(f"fine {i} rate:5") for i in range(3)]
    worst = backend.prompt_token_bound(requests[0]) + requests[0].max_tokens
    run = run_requests(requests, backend, concurrency=2, budget=Budget(max_tokens=100_000), sleep=Waits())
    assert run.succeeded == 4 and run.retries == 1 and run.possibly_billed == 1 and run.retries_refused == 0
    assert run.budget["charged_unseen_tokens"] == worst
    assert run.budget["spent_tokens"] == run.prompt_tokens + run.completion_tokens + worst
    assert run.summary()["possibly_billed"] == 1


def test_a_retry_that_does_not_fit_the_budget_after_a_possibly_billed_attempt_is_refused():
    class TimesOutOnce:
        backend_id, model = "fake:billing", "m"

        def __init__(self):
            self.calls = 0
            self.billed_tokens = 0  # what a provider would bill: every attempt ran the model

        def count_tokens(self, text):
            return 10

        def complete(self, request):
            self.calls += 1
            self.billed_tokens += 10 + request.max_tokens
            if self.calls == 1:
                raise RetryableError(None, reason="timeout", detail="no response", possibly_billed=True)
            return JudgeReply(text="Score: 4", prompt_tokens=10, completion_tokens=request.max_tokens)

    backend = TimesOutOnce()
    worst = 10 + 8
    run = run_requests([req("a"), req("b")], backend, concurrency=1, budget=Budget(max_tokens=worst * 3 // 2),
                       sleep=Waits())
    # the first attempt is charged in full, so neither its retry nor the next request fits: nothing more is
    # sent, and the provider's bill equals what the engine spent, within the budget
    assert backend.calls == 1 and run.retries_refused == 1 and run.possibly_billed == 1
    assert run.failed == {"timeout": 1} and run.succeeded == 0 and run.left_unsent == 1
    assert run.replies[0].error == "timeout after 1 attempt; the budget cannot cover a retry"
    assert run.replies[1].error == "budget"
    assert backend.billed_tokens == run.budget["spent_tokens"] == worst <= run.budget["max_tokens"]
    # with room for the retry it is sent and answered, and the bill is still what the engine spent
    backend = TimesOutOnce()
    run = run_requests([req("a")], backend, concurrency=1, budget=Budget(max_tokens=worst * 2), sleep=Waits())
    assert backend.calls == 2 and run.succeeded == 1 and run.retries_refused == 0
    assert backend.billed_tokens == run.budget["spent_tokens"] == 2 * worst


def test_without_a_budget_possibly_billed_attempts_are_counted_only():
    class Truncates:
        backend_id, model = "fake:truncates", "m"

        def count_tokens(self, text):
            return 1

        def complete(self, request):
            raise FatalError("invalid response", "cut short", possibly_billed=True)

    run = run_requests([req("a")], Truncates(), sleep=Waits())
    assert run.possibly_billed == 1 and run.failed == {"invalid response": 1} and run.budget is None


def test_a_cost_budget_is_never_exceeded(server, backend):
    prices = {"judge-model": Price(input_per_million=2000.0, output_per_million=8000.0)}
    requests = [req(f"question number {i} rate:2") for i in range(20)]
    run = run_requests(requests, backend, budget=Budget(max_cost=0.8, prices=prices), concurrency=2)
    assert run.stopped_by_budget and run.left_unsent > 0
    assert run.cost == pytest.approx(prices["judge-model"].cost(run.prompt_tokens, run.completion_tokens))
    assert run.cost <= 0.8 and run.budget["spent_cost"] <= 0.8


def test_a_budget_too_small_for_one_request_sends_nothing(server, backend):
    run = run_requests([req("a"), req("b")], backend, budget=Budget(max_tokens=10))
    assert run.sent == 0 and run.left_unsent == 2 and server.received == 0
    assert [r.error for r in run.replies] == ["budget", "budget"]


def test_settings_are_checked(backend):
    with pytest.raises(ValueError, match="no Price for model 'judge-model'"):
        run_requests([req("a")], backend, budget=Budget(max_cost=1.0, prices={"other": Price(1, 1)}))
    with pytest.raises(ValueError, match="concurrency"):
        run_requests([req("a")], backend, concurrency=0)
    with pytest.raises(ValueError, match="max_attempts"):
        run_requests([req("a")], backend, max_attempts=0)
    with pytest.raises(ValueError, match="max_tokens"):
        Budget(max_tokens=-1)


# ------------------------------------------------------------------------------------------------ dry run
def test_estimate_sends_nothing_and_counts_what_would_be_sent(server, backend, tmp_path):
    requests = [req(f"q{i} rate:1", max_tokens=10) for i in range(4)]
    requests += requests[:2]
    prices = {"judge-model": Price(1.0, 3.0)}
    dry = estimate(requests, backend, cache=JudgeCache(tmp_path), prices=prices)
    assert server.received == 0
    prompt = sum(math.ceil(len(messages_text(r).encode()) / 4) for r in requests[:4])
    assert (dry.requests, dry.unique, dry.cached, dry.to_send) == (6, 4, 0, 4)
    assert (dry.prompt_tokens, dry.max_completion_tokens, dry.max_tokens) == (prompt, 40, prompt + 40)
    assert dry.max_cost == pytest.approx((prompt * 1.0 + 40 * 3.0) / 1e6)

    run_requests(requests[:1], backend, cache=JudgeCache(tmp_path))
    cache = JudgeCache(tmp_path)
    dry = estimate(requests, backend, cache=cache)
    assert (dry.cached, dry.to_send, dry.max_cost) == (1, 3, None)
    assert cache.stats()["hits"] == 0 and json.dumps(dry.summary())


def test_the_summary_is_plain_data_without_secrets(server, backend):
    server.script("<F>", "401")
    run = run_requests([req("<F> x"), req("y")], backend)
    text = json.dumps(run.summary())
    assert SECRET not in text and SECRET not in run.replies[0].error
    assert run.summary()["failed"] == {"http 401": 1} and run.summary()["n_failed"] == 1


def test_an_unexpected_backend_exception_is_raised_not_counted():
    class Broken:
        backend_id, model = "fake:broken", "m"

        def count_tokens(self, text):
            return 1

        def complete(self, request):
            raise KeyError("a bug in the backend")

    with pytest.raises(KeyError, match="a bug"):
        run_requests([req("a")], Broken())


# ------------------------------------------------------------------------------------------------ local
def test_local_backend_runs_batched_in_the_calling_thread(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    backend = LocalBackend(model, tokenizer, "tiny", batch_size=2)
    calls: list[tuple[int, int]] = []
    real = backend.complete_many

    def recording(requests):
        calls.append((threading.get_ident(), len(requests)))
        return real(requests)

    backend.complete_many = recording
    backend.complete = None  # the engine must not use the one-at-a-time path
    spec = RatingSpec(4, 9)
    requests = [req(f"Give {n} tips for staying healthy.", rating=spec) for n in ("two", "three", "four")]
    requests.append(req("Translate 'good morning' into French.", max_tokens=4))
    cache = JudgeCache(tmp_path)
    run = run_requests(requests + requests[:1], backend, cache=cache, budget=Budget(max_tokens=10_000))
    assert calls and all(ident == threading.get_ident() for ident, _ in calls)
    assert sum(n for _, n in calls) == 4 and run.sent == 4 and run.succeeded == 4
    direct = real(requests)
    for got, want in zip(run.replies, direct):
        assert got.text == want.text
    assert run.replies[4] == run.replies[0]
    assert all(sum(r.digit_probs.values()) == pytest.approx(1.0) for r in run.replies if r.digit_probs)
    again = run_requests(requests, backend, cache=JudgeCache(tmp_path))
    assert again.sent == 0 and len(calls) == 1
    assert again.replies[0].digit_probs == pytest.approx(run.replies[0].digit_probs)


def test_local_backend_respects_a_token_budget(tiny_lm):
    model, tokenizer = tiny_lm
    backend = LocalBackend(model, tokenizer, "tiny")
    requests = [req(f"Rate item {i}.", rating=RatingSpec(4, 9), max_tokens=1) for i in range(6)]
    each = backend.prompt_token_bound(requests[0]) + 1
    run = run_requests(requests, backend, budget=Budget(max_tokens=3 * each + 1))
    assert run.sent == 3 and run.left_unsent == 3 and run.budget["spent_tokens"] <= 3 * each + 1


# ------------------------------------------------------------------------------------------------ pool
class FakeBackend:
    """Answers like the scripted server, in memory; ``<FAIL>`` in a message is a fatal HTTP 400."""

    backend_id, model = "fake:pool", "fake-model"

    def __init__(self):
        self.calls: Counter[str] = Counter()

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def complete(self, request: JudgeRequest) -> JudgeReply:
        content = request.messages[-1]["content"]
        self.calls[content] += 1
        if "<FAIL>" in content:
            raise FatalError("http 400", "bad request", status=400)
        return JudgeReply(text=answer_for(list(request.messages)),
                          prompt_tokens=self.count_tokens(messages_text(request)), completion_tokens=2)


def parse_score(text: str) -> float:
    if not text.startswith("Score: "):
        raise ReplyParseError(f"no 'Score: ' in {text[:30]!r}")
    return float(text.removeprefix("Score: "))


def build(row) -> list[JudgeRequest]:
    users = [t["content"] for t in row["conversations"] if t["role"] == "user"]
    return [req(u) for u in users]  # one request per user turn; none for a row without one


TEMPLATE = JudgeTemplate(name="toy", columns=("toy_score", "toy_n"), build=build, parse=parse_score,
                         combine=lambda values: {"toy_score": float(np.mean(values)), "toy_n": len(values)})


def conv(*users: str) -> list[dict[str, str]]:
    turns = []
    for u in users:
        turns += [{"role": "user", "content": u}, {"role": "assistant", "content": "an answer"}]
    return turns or [{"role": "assistant", "content": "orphan"}]


def test_max_reply_tokens_caps_each_request_and_enters_its_key():
    long, short = req("a", max_tokens=300), req("b", max_tokens=16)
    capped = cap_reply_tokens([long, short], 64)
    assert [r.max_tokens for r in capped] == [64, 16] and capped[1] is short
    assert capped[0].key("x", "m") != long.key("x", "m")  # answers under another cap are not reused
    assert cap_reply_tokens([long], None) == [long]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_reply_tokens"):
            cap_reply_tokens([long], bad)
    pool = pd.DataFrame({"id": ["r"], "conversations": [conv("rate:4")]})
    backend = FakeBackend()
    seen = []
    backend.complete = lambda request, _c=backend.complete: seen.append(request.max_tokens) or _c(request)
    judge_pool(pool, TEMPLATE, backend, max_reply_tokens=3)
    assert seen == [3]


def test_judge_pool_accounts_for_every_row():
    pool = pd.DataFrame({
        "id": ["ok1", "pair", "unreadable", "nothing", "fails", "ok1-again", "late1", "late2"],
        "conversations": [conv("rate:4"), conv("rate:2", "rate:5"), conv("unreadable answer"), conv(),
                          conv("<FAIL> rate:3"), conv("rate:4"), conv("one more rate:1 " + "x " * 40),
                          conv("another rate:2 " + "y " * 40)],
    })
    backend = FakeBackend()
    budget = Budget(max_tokens=100)  # the two long rows at the end do not fit
    out = judge_pool(pool, TEMPLATE, backend, budget=budget, concurrency=1)

    assert list(out.columns) == ["id", "toy_score", "toy_n", "judge_status", "judge_error", "judge_raw"]
    assert out["id"].tolist() == pool["id"].tolist()
    assert out["judge_status"].tolist() == ["ok", "ok", "unparsable", "not_judgeable", "failed", "ok", "budget",
                                            "budget"]
    assert out["toy_score"].tolist()[:2] == [4.0, 3.5] and out["toy_n"].tolist()[:2] == [1, 2]
    assert out.loc[2:4, "toy_score"].isna().all()
    assert json.loads(out.loc[2, "judge_raw"]) == ["I would rather not say."]
    assert "no 'Score: '" in out.loc[2, "judge_error"] and out.loc[4, "judge_error"] == "http 400: bad request"
    assert json.loads(out.loc[6, "judge_raw"]) == [None] and out.loc[6, "judge_error"] == "budget"
    attrs = out.attrs
    counts = {k: attrs[f"n_{k}"] for k in ("ok", "unparsable", "failed", "budget", "not_judgeable")}
    assert counts == {"ok": 3, "unparsable": 1, "failed": 1, "budget": 2, "not_judgeable": 1}
    assert sum(counts.values()) == len(pool) and attrs["n_unparsable_replies"] == 1
    run = attrs["judge_run"]
    assert run["unique"] == 7 and run["failed"] == {"http 400": 1} and run["left_unsent"] == 2
    assert run["budget"]["spent_tokens"] <= 100
    assert backend.calls["rate:4"] == 1  # the duplicate row was not sent again


def test_a_failed_request_keeps_what_the_server_sent_back(server, backend):
    server.script("<A>", "500", "500")
    server.script("<B>", "garbage")
    server.script("<C>", "delay", "delay")
    run = run_requests([req("<A> rate:1"), req("<B> rate:2"), req("<C> rate:3")], backend, concurrency=1,
                       max_attempts=2, sleep=Waits())
    a, b, c = run.replies
    assert a.error == "http 500 after 2 attempts" and json.loads(a.raw) == {"error": {"message": "scripted 500"}}
    assert b.error.startswith("invalid response") and "<html>" in b.raw
    assert c.error == "timeout after 2 attempts" and c.raw is None  # nothing came back
    assert run.retries == 2 and server.received == 5


def test_max_requests_caps_every_http_request_retries_included(server, backend):
    server.script("<A>", "503", "503")
    requests = [req("<A> rate:1")] + [req(f"q{i} rate:2") for i in range(4)]
    run = run_requests(requests, backend, concurrency=1, max_attempts=3, budget=Budget(max_requests=4),
                       sleep=Waits())
    assert server.received == run.budget["requests"] == 4 == run.sent + run.retries
    assert run.replies[0].text == "Score: 1" and run.retries == 2
    assert run.succeeded == 2 and run.left_unsent == 3 and run.stopped_by_budget
    with pytest.raises(ValueError, match="max_requests"):
        Budget(max_requests=-1)
