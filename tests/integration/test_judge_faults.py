"""Judge API faults through a fault-injecting proxy on loopback (``fault_proxy.py``): nothing lost, nothing
silently dropped, the budget never exceeded.

The real engine (``judge_pool`` with the AlpaGasus template, ``OpenAIBackend`` built by ``JudgeResource`` with a
short ``timeout_s``, a ``JudgeCache``) sends to ``FaultProxy``, which forwards to the scripted OpenAI-compatible
server (``tests/unit/scripted_openai_server.py``: a response holding ``rate:K`` is answered ``Score: K``) or
injects the fault scripted for that request. Waits between attempts are real (short backoff settings), so the
proxy measures them.

- One test per fault: the request either succeeds after retries (the proxy counts the attempts; after a 429
  with ``Retry-After`` the next attempt comes no sooner than asked) or ends as a counted failure whose raw
  reply is kept in ``judge_raw`` (the error body, the body that is not JSON, the completion without choices;
  null only when nothing came back); a refusal or an empty answer is a paid answer, counted as unparsable with
  its text kept. Every row is accounted for, and the other rows of the pool are untouched. A second run with
  the same cache sends only the failed request.
- With a budget (``max_requests`` / ``max_tokens`` / ``max_cost``) and a mix of faults, the requests the proxy
  receives, and the tokens and cost it bills, never exceed the caps.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from fault_proxy import REFUSAL, FaultProxy
from scripted_openai_server import ScriptedOpenAIServer

from instsel_assets.defs.resources import JudgeResource
from instsel_assets.judge.cache import JudgeCache
from instsel_assets.judge.engine import JUDGE_STATUSES, Budget, Price, judge_pool
from instsel_assets.judge.templates.alpagasus import TEMPLATE

pytestmark = pytest.mark.integration

API_KEY = "sk-test-faults-DO-NOT-LEAK-93b1e7"
TIMEOUT_S = 0.5  # the client's timeout per attempt (JudgeResource.timeout_s)
HOLD_S = 1.0  # how long the proxy holds back a "delay" answer: past the client's timeout
MAX_ATTEMPTS = 3
BACKOFF = {"backoff_base": 0.05, "backoff_max": 0.2}  # fast retries where the server asks for no wait
MAX_REPLY_TOKENS = 16
RETRY_AFTER_S = 1.0


def pool_of(rows: int, marked: dict[int, str] | None = None) -> pd.DataFrame:
    """``rows`` single-turn rows whose responses end in ``rate:K`` (K = row % 6); row i of ``marked`` also
    carries its marker."""
    marked = marked or {}
    return pd.DataFrame({
        "id": [f"r{i}" for i in range(rows)],
        "conversations": [[{"role": "user", "content": f"Question {i}: name a colour."},
                           {"role": "assistant", "content": f"Blue. {marked.get(i, '')} rate:{i % 6}"}]
                          for i in range(rows)],
    })


@pytest.fixture
def proxy(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with ScriptedOpenAIServer() as upstream, FaultProxy(upstream.url, hold_seconds=HOLD_S) as fault_proxy:
        yield fault_proxy


def resource(proxy: FaultProxy, **settings) -> JudgeResource:
    return JudgeResource(backend="openai", model="judge-model", base_url=proxy.url, api_key=API_KEY,
                         timeout_s=TIMEOUT_S, max_attempts=MAX_ATTEMPTS, concurrency=2, use_cache=False, **settings)


def run_pool(pool: pd.DataFrame, judge: JudgeResource, cache: JudgeCache, budget=None) -> pd.DataFrame:
    backend = judge.backend_instance()
    try:
        return judge_pool(pool, TEMPLATE, backend, cache=cache, concurrency=judge.concurrency,
                          max_attempts=judge.max_attempts, budget=budget, max_reply_tokens=MAX_REPLY_TOKENS,
                          **BACKOFF)
    finally:
        backend.close()


def assert_every_row_accounted(table: pd.DataFrame) -> None:
    counts = {s: table.attrs[f"n_{s}"] for s in JUDGE_STATUSES}
    assert sum(counts.values()) == len(table)
    assert table["judge_status"].value_counts().to_dict() == {s: n for s, n in counts.items() if n}
    run = table.attrs["judge_run"]
    assert run["succeeded"] + run["n_failed"] == run["sent"]
    assert run["cache_hits"] + run["sent"] + run["left_unsent"] == run["unique"]
    for raw in table["judge_raw"]:
        assert len(json.loads(raw)) == 1  # one request per row, its raw reply (or null) kept


# ------------------------------------------------------------------------------------------------ per fault
# (faults of the marked request, in order; its final status; the attempts the proxy sees; the failure reason;
#  what judge_raw keeps: a substring of the raw reply, None for "nothing came back")
CASES = {
    "timeout-then-answer": (("delay",), "ok", 2, None, "Score: 1"),
    "reset-then-answer": (("reset",), "ok", 2, None, "Score: 1"),
    "429-retry-after": ((f"429:{RETRY_AFTER_S:g}",), "ok", 2, None, "Score: 1"),
    "429-no-retry-after": (("429",), "ok", 2, None, "Score: 1"),
    "500-then-answer": (("500",), "ok", 2, None, "Score: 1"),
    "503-then-answer": (("503",), "ok", 2, None, "Score: 1"),
    "500-always": (("500",) * MAX_ATTEMPTS, "failed", MAX_ATTEMPTS, "http 500", "injected internal error"),
    "503-always": (("503",) * MAX_ATTEMPTS, "failed", MAX_ATTEMPTS, "http 503", "overloaded"),
    "429-always": (("429:0.1",) * MAX_ATTEMPTS, "failed", MAX_ATTEMPTS, "http 429", "Rate limit reached"),
    "timeout-always": (("delay",) * MAX_ATTEMPTS, "failed", MAX_ATTEMPTS, "timeout", None),
    "reset-always": (("reset",) * MAX_ATTEMPTS, "failed", MAX_ATTEMPTS, "connection error", None),
    "not-json": (("notjson",), "failed", 1, "invalid response", "upstream hiccup"),
    "html-page": (("html",), "failed", 1, "invalid response", "<html>"),
    "empty-choices": (("nochoices",), "failed", 1, "invalid response", '"choices":[]'),
    "refusal-text": (("refusal",), "unparsable", 1, None, REFUSAL),
    "refusal-field": (("refusal_field",), "unparsable", 1, None, REFUSAL),
    "empty-answer": (("empty",), "unparsable", 1, None, ""),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_fault_ends_in_an_answer_after_retries_or_a_counted_failure_with_its_raw_reply(case, proxy, tmp_path):
    faults, status, attempts, reason, raw_expected = CASES[case]
    proxy.script("<FAULT>", *faults)
    pool = pool_of(4, {1: "<FAULT>"})
    cache = JudgeCache(tmp_path / "cache")
    table = run_pool(pool, resource(proxy), cache)

    assert_every_row_accounted(table)
    assert table["judge_status"].tolist() == ["ok", status, "ok", "ok"]
    assert table.loc[[0, 2, 3], "alpagasus_score"].tolist() == [0.0, 2.0, 3.0]
    marked = proxy.attempts_for("<FAULT>")
    assert len(marked) == attempts and proxy.faults.total() == len(faults[:attempts])
    assert proxy.received == len(pool) - 1 + attempts  # the other rows: one attempt each
    run = table.attrs["judge_run"]
    assert run["sent"] == len(pool) and run["retries"] == attempts - 1
    assert run["failed"] == ({reason: 1} if status == "failed" else {})

    raw = json.loads(table.loc[1, "judge_raw"])[0]
    if raw_expected is None:
        assert raw is None  # nothing came back
    else:
        assert raw_expected in raw.replace(" ", "") if raw_expected.startswith('"') else raw_expected in raw
    if raw_expected == "":
        assert raw == ""
    if status == "ok":
        assert table.loc[1, "alpagasus_score"] == 1.0 and table.loc[1, "judge_error"] is None
    else:
        assert pd.isna(table.loc[1, "alpagasus_score"]) and table.loc[1, "judge_error"]
    if status == "failed":
        assert reason in table.loc[1, "judge_error"]
    if status == "unparsable":
        assert table.attrs["n_unparsable_replies"] == 1
    assert API_KEY not in table.to_json() and API_KEY not in json.dumps(run)

    waits = FaultProxy.waits(marked)
    if case == "429-retry-after":
        assert waits[0] >= RETRY_AFTER_S - 0.02, waits  # Retry-After honoured (measured at the proxy)
    if case == "429-no-retry-after":
        assert waits[0] <= BACKOFF["backoff_max"] + 0.3, waits  # the engine's own (short) backoff
    print(f"\n{case}: attempts {len(marked)}, waits between attempts {[round(w, 3) for w in waits]} s, "
          f"status {status}, raw kept {raw!r:.60}")

    # a failure is never cached: the next run with the same cache sends exactly that request, once
    before = proxy.received
    again = run_pool(pool, resource(proxy), cache)
    resent = proxy.received - before
    assert resent == (1 if status == "failed" else 0)
    assert again["judge_status"].tolist() == ["ok", "ok" if status == "failed" else status, "ok", "ok"]


# ------------------------------------------------------------------------------------------------ budgets
MIXED = {0: ("delay",), 1: ("reset", "reset"), 2: ("429:0.1",), 3: ("500", "503"), 4: ("notjson",),
         5: ("nochoices",), 6: ("refusal",), 7: ("500",) * MAX_ATTEMPTS, 8: ("delay", "delay")}
BUDGET_ROWS = 16
PRICE = Price(input_per_million=1.0, output_per_million=4.0)


@pytest.mark.parametrize("cap", ["max_requests", "max_tokens", "max_cost"])
def test_with_faults_the_requests_tokens_and_cost_never_exceed_the_budget(cap, proxy, tmp_path):
    for row, faults in MIXED.items():
        proxy.script(f"<M{row}>", *faults)
    pool = pool_of(BUDGET_ROWS, {row: f"<M{row}>" for row in MIXED})
    judge = resource(proxy)
    backend = judge.backend_instance()
    first = TEMPLATE.build(pool.iloc[0].to_dict())[0]
    worst = backend.prompt_token_bound(first) + MAX_REPLY_TOKENS  # one attempt's reserved worst case
    backend.close()
    if cap == "max_requests":
        budget = Budget(max_requests=12)
    elif cap == "max_tokens":
        judge = resource(proxy, max_tokens_budget=8 * worst)
        budget = judge.budget("judge-model")
    else:
        max_cost = 8 * PRICE.cost(worst - MAX_REPLY_TOKENS, MAX_REPLY_TOKENS)
        judge = resource(proxy, max_cost_budget=max_cost, prices={"judge-model": {
            "input_per_million": PRICE.input_per_million, "output_per_million": PRICE.output_per_million}})
        budget = judge.budget("judge-model")
    table = run_pool(pool, judge, JudgeCache(tmp_path / "cache"), budget=budget)

    assert_every_row_accounted(table)
    run = table.attrs["judge_run"]
    assert run["stopped_by_budget"] and run["left_unsent"] > 0 and table.attrs["n_budget"] == run["left_unsent"]
    assert all(json.loads(r) == [None] for r in table.loc[table["judge_status"] == "budget", "judge_raw"])
    assert proxy.received == run["budget"]["requests"] == run["sent"] + run["retries"]
    billed_cost = PRICE.cost(proxy.billed_prompt, proxy.billed_completion)
    if cap == "max_requests":
        assert proxy.received <= budget.max_requests
    elif cap == "max_tokens":
        assert proxy.billed_tokens <= run["budget"]["spent_tokens"] <= budget.max_tokens
    else:
        assert billed_cost <= run["budget"]["spent_cost"] + 1e-9 and run["budget"]["spent_cost"] <= budget.max_cost
    print(f"\nbudget {cap}: {proxy.received} HTTP requests ({run['sent']} sent + {run['retries']} retries), "
          f"{proxy.billed_tokens} tokens billed at the proxy (engine charged {run['budget']['spent_tokens']}), "
          f"statuses {table['judge_status'].value_counts().to_dict()}, {run['left_unsent']} left unsent")
