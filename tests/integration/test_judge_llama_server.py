"""The OpenAI judge backend against a real OpenAI-compatible server: llama-cpp-python's server on 127.0.0.1
serving the packaged SmolLM2-135M-Instruct GGUF, with a fault-injecting proxy between client and server
(``llama_server.py`` beside this file: what each fault does and whether the model was asked).

Everything runs through the real engine (``OpenAIBackend`` + ``judge_pool`` / ``run_requests`` / ``estimate``)
with the AlpaGasus template on the first rows of ``data/bench/alpaca_500.json``, a ``JudgeCache`` in
``tmp_path`` and the template's prompt as is, with ``max_tokens`` cut to ``MAX_TOKENS`` to keep the model's
answers short. Waits between attempts go through an injectable ``sleep`` that records them.

The accounting rule these tests hold the engine to, counted by the proxy per request body:

- the model answering a request is a paid answer (``paid``); the proxy handing that answer to the client
  whole is ``delivered``; no request is ever delivered twice, and every delivered answer is in the cache with
  the text the model wrote (no answer lost);
- paid but lost (``paid - delivered``) happens only where the proxy injected a ``timeout`` (the model
  answered, the client timed out first), a ``cut`` (the connection closed in the middle of the answer) or
  ``truncated`` (a complete response holding half of the JSON); each one is reported by the engine: a timeout
  or a cut as a retry (the retry pays again: the only way to get that answer), a truncation as a failed
  request ("invalid response": the backend does not retry an invalid body; not cached, the next run asks
  again). The engine never sees the usage of a lost answer, so its token counts (and a budget) cover the
  answers it received; the proxy's ``usage_lost`` is the difference;
- every request the engine sent ends as an answer or a counted failure: ``succeeded + failed == sent``;
- a second run with the same cache asks only for what has no answer yet, and a run with everything cached
  sends nothing: a paid answer is never paid again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
from collections import Counter

import dagster as dg
import pandas as pd
import pytest
from llama_server import MODEL, PAID_FAULTS, RETRY_AFTER_SECONDS, FaultProxy, LlamaServer, body_key

from instsel_assets import settings
from instsel_assets.bench import bench_pool
from instsel_assets.judge.backends import OpenAIBackend
from instsel_assets.judge.cache import JudgeCache
from instsel_assets.judge.engine import Budget, estimate, judge_pool, run_requests
from instsel_assets.judge.templates.alpagasus import TEMPLATE

pytestmark = pytest.mark.integration

ROWS = 10
MAX_TOKENS = 24
API_KEY = "sk-test-not-secret-7f3a91c2"


class Waits(list):
    """The injectable ``sleep``: records every wait instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def short(template=TEMPLATE, max_tokens: int = MAX_TOKENS):
    """``template`` with its requests' ``max_tokens`` cut (the prompt is the template's own)."""
    return dataclasses.replace(template, build=lambda row: [dataclasses.replace(r, max_tokens=max_tokens)
                                                            for r in template.build(row)])


JUDGE = short()


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """Started once for this file's tests and stopped after them (only this file uses it)."""
    server = LlamaServer(n_ctx=2048, n_threads=2, seed=0, start_timeout=60,
                         log_dir=tmp_path_factory.mktemp("llama-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def no_proxy_env(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def client_timeout(llama_server) -> float:
    """Seconds per attempt: well above a real answer's latency on this machine (measured by the warm-up; the
    server answers one request at a time, so a request may wait for one other), so that only the injected
    ``timeout`` fault times out."""
    return max(8.0, 8 * llama_server.answer_seconds * MAX_TOKENS / 16)


@pytest.fixture
def proxy(llama_server, client_timeout, no_proxy_env):
    with FaultProxy(llama_server.url, hold_seconds=client_timeout + 1.0) as p:
        yield p


@pytest.fixture(scope="module")
def pool() -> pd.DataFrame:
    out = bench_pool(settings.PROJECT_ROOT / "data" / "bench" / "alpaca_500.json", ROWS)
    users = [c[0]["content"] for c in out["conversations"]]
    for i, user in enumerate(users):  # each row's marker is in its own request only
        assert [j for j, other in enumerate(users) if user[:40] in other] == [i]
    return out


def marker(pool: pd.DataFrame, i: int) -> str:
    """A piece of row ``i``'s instruction that only its request contains."""
    return pool["conversations"].iloc[i][0]["content"][:40]


def payload_keys(pool: pd.DataFrame, backend: OpenAIBackend) -> list[str]:
    """The proxy's key (canonical body) of each row's single request."""
    out = []
    for row in pool.to_dict("records"):
        (request,) = JUDGE.build(row)
        out.append(body_key(request.payload(backend.model)))
    return out


def cache_keys(pool: pd.DataFrame, backend: OpenAIBackend) -> list[str]:
    return [JUDGE.build(row)[0].key(backend.backend_id, backend.model) for row in pool.to_dict("records")]


def assert_counts_sum(table: pd.DataFrame, rows: int) -> None:
    attrs = table.attrs
    counts = {s: attrs[f"n_{s}"] for s in ("ok", "unparsable", "failed", "budget", "not_judgeable")}
    assert sum(counts.values()) == rows == len(table)
    assert Counter(table["judge_status"]) == Counter({s: n for s, n in counts.items() if n})


# ------------------------------------------------------------------------------------------ a) clean run
def test_every_row_gets_a_real_answer_through_the_proxy(llama_server, proxy, client_timeout, pool, tmp_path):
    backend = OpenAIBackend(MODEL, base_url=proxy.url, api_key=API_KEY, timeout=client_timeout)
    cache = JudgeCache(tmp_path / "cache")
    waits = Waits()
    try:
        table = judge_pool(pool, JUDGE, backend, cache=cache, concurrency=2, max_attempts=3, sleep=waits)
    finally:
        backend.close()
        cache.close()
    run = table.attrs["judge_run"]
    assert_counts_sum(table, ROWS)
    assert table.attrs["n_failed"] == table.attrs["n_budget"] == table.attrs["n_not_judgeable"] == 0
    assert table.attrs["n_ok"] + table.attrs["n_unparsable"] == ROWS
    assert (run["sent"], run["succeeded"], run["n_failed"], run["retries"], run["left_unsent"]) == (ROWS, ROWS, 0, 0, 0)
    assert waits == []
    # the replies are the model's: non-empty text, the server's own token usage
    raws = [json.loads(r) for r in table["judge_raw"]]
    assert all(len(r) == 1 and isinstance(r[0], str) and r[0].strip() for r in raws)
    assert run["prompt_tokens"] > 0 and 0 < run["completion_tokens"] <= ROWS * MAX_TOKENS
    entries = JudgeCache(tmp_path / "cache").lookup(cache_keys(pool, backend))
    assert len(entries) == ROWS
    assert all(e.prompt_tokens > 50 and 0 < e.completion_tokens <= MAX_TOKENS for e in entries.values())
    assert run["prompt_tokens"] + run["completion_tokens"] == proxy.usage_paid == proxy.usage_delivered
    # one request per row, each answered once and delivered once, with the text the model wrote
    keys = payload_keys(pool, backend)
    assert proxy.received == ROWS and set(proxy.forwarded) == set(keys)
    assert all(proxy.paid[k] == proxy.delivered[k] == 1 for k in keys) and not proxy.paid_but_lost
    assert [proxy.texts_delivered[k] for k in keys] == [r[0] for r in raws]
    scored = table.loc[table["judge_status"] == "ok", "alpagasus_score"]
    assert scored.between(0, 5).all()
    assert f"Bearer {API_KEY}" in proxy.auth_headers


# ------------------------------------------------------------------------------------------ b) faults
FAULT_SCRIPT = {  # row -> the faults its request meets, in order (then it passes through)
    0: ("429", "500"),  # answered on the 3rd attempt, after waiting >= Retry-After once
    1: ("timeout",),  # the model answers, the client times out (paid but lost), the retry is answered
    2: ("truncated",),  # the model answers, the client gets half of the JSON (paid but lost): failed
    3: ("garbage",),  # a 200 HTML page, the model is never asked: failed
    4: ("429", "500", "429"),  # 3 attempts, none answered: failed "http 429"
    5: ("500",),  # answered on the 2nd attempt
    6: ("cut",),  # the model answers, the connection closes mid-body (paid but lost), the retry is answered
}
MAX_ATTEMPTS = 3


def test_faults_lose_no_answer_pay_nothing_twice_and_count_every_failure(llama_server, proxy, client_timeout, pool,
                                                                         tmp_path):
    for row, faults in FAULT_SCRIPT.items():
        proxy.script(marker(pool, row), *faults)
    backend = OpenAIBackend(MODEL, base_url=proxy.url, api_key=API_KEY, timeout=client_timeout)
    keys = payload_keys(pool, backend)
    ckeys = cache_keys(pool, backend)
    waits = Waits()
    cache = JudgeCache(tmp_path / "cache")
    try:
        table = judge_pool(pool, JUDGE, backend, cache=cache, concurrency=2, max_attempts=MAX_ATTEMPTS,
                           backoff_base=0.01, backoff_max=0.05, sleep=waits, rng=random.Random(0))
    finally:
        cache.close()
    run = table.attrs["judge_run"]
    status = table["judge_status"].tolist()

    # every row is answered or counted; the engine's counts add up
    assert_counts_sum(table, ROWS)
    failed_rows = {2, 3, 4}
    assert [i for i, s in enumerate(status) if s == "failed"] == sorted(failed_rows)
    assert all(s in ("ok", "unparsable") for i, s in enumerate(status) if i not in failed_rows)
    errors = table["judge_error"].tolist()
    assert errors[2].startswith("invalid response") and errors[3].startswith("invalid response")
    assert errors[4] == f"http 429 after {MAX_ATTEMPTS} attempts"
    assert run["sent"] == ROWS and run["succeeded"] + run["n_failed"] == run["sent"]
    assert run["succeeded"] == ROWS - len(failed_rows)
    assert run["failed"] == {"invalid response": 2, "http 429": 1}
    # attempts that may have been billed unseen: the timeout, the truncation, the cut, and the garbage 200
    # (the client cannot tell that the proxy made it up)
    assert run["possibly_billed"] == 4
    # retries: one per retryable fault that was followed by another attempt
    assert run["retries"] == 2 + 1 + 2 + 1 + 1 == len(waits)
    # Retry-After honoured (the jittered backoff is capped at 0.05 s, so the long waits are the server's)
    assert sorted(w for w in waits if w >= 1.0) == [float(RETRY_AFTER_SECONDS)] * 2
    assert all(w <= 0.05 for w in waits if w < 1.0)

    # the proxy's side: what was asked of the model, paid, delivered, lost
    assert sum(proxy.faults.values()) == sum(len(f) for f in FAULT_SCRIPT.values())
    assert proxy.received == sum(len(f) for f in FAULT_SCRIPT.values()) + ROWS - len(failed_rows)
    assert max(proxy.delivered.values()) == 1  # no request got two answers
    delivered = {k for k in keys if proxy.delivered[k]}
    answered = {keys[i] for i, s in enumerate(status) if s in ("ok", "unparsable")}
    assert delivered == answered  # every answer handed over was kept...
    lost = proxy.paid_but_lost
    for k in keys:  # ...and paid but lost only where a timeout / truncation was injected
        assert lost.get(k, 0) == sum(f in PAID_FAULTS for f in proxy.faults_by_body.get(k, []))
    assert set(lost) == {keys[1], keys[2], keys[6]}
    # the lost answers are reported: the timeout and the cut as retries that were answered, the truncation as
    # a failure
    assert status[1] in ("ok", "unparsable") and proxy.paid[keys[1]] == 2
    assert status[6] in ("ok", "unparsable") and proxy.paid[keys[6]] == 2
    assert status[2] == "failed" and proxy.paid[keys[2]] == 1 and not proxy.delivered[keys[2]]
    assert proxy.forwarded[keys[3]] == 0 and proxy.forwarded[keys[4]] == 0  # never reached the model
    # the engine's tokens are exactly the delivered answers' usage; the lost ones are the proxy's difference
    assert run["prompt_tokens"] + run["completion_tokens"] == proxy.usage_delivered
    assert proxy.usage_paid == proxy.usage_delivered + proxy.usage_lost and proxy.usage_lost > 0
    # the cache holds exactly the answers, with the text the model wrote
    again = JudgeCache(tmp_path / "cache")
    held = again.lookup(ckeys)
    assert set(held) == {ckeys[i] for i, s in enumerate(status) if s != "failed"} and len(again) == len(held)
    for i, ck in enumerate(ckeys):
        if ck in held:
            assert held[ck].text == proxy.texts_delivered[keys[i]] == json.loads(table["judge_raw"].iloc[i])[0]

    # a second run with the same cache asks only for the failed rows, and gets them (no faults left)
    before = Counter(proxy.forwarded)
    received = proxy.received
    second = judge_pool(pool, JUDGE, backend, cache=again, concurrency=2, max_attempts=MAX_ATTEMPTS, sleep=Waits())
    run2 = second.attrs["judge_run"]
    assert (run2["cache_hits"], run2["sent"], run2["succeeded"]) == (ROWS - 3, 3, 3)
    assert proxy.received - received == 3
    assert set(proxy.forwarded - before) == {keys[i] for i in failed_rows}
    assert second.attrs["n_failed"] == 0 and (second["judge_status"] != "failed").all()
    # the truncated row was paid once more (reported above as a failure); nothing answered was asked again
    assert proxy.paid[keys[2]] == 2 and all(proxy.delivered[k] == 1 for k in keys)
    # a third run: everything is cached, nothing reaches the proxy
    received = proxy.received
    again.close()
    third = judge_pool(pool, JUDGE, backend, cache=JudgeCache(tmp_path / "cache"), sleep=Waits())
    backend.close()
    assert proxy.received == received and third.attrs["judge_run"]["sent"] == 0
    assert third.attrs["judge_run"]["cache_hits"] == ROWS
    pd.testing.assert_series_equal(third["judge_raw"], second["judge_raw"])


# ------------------------------------------------------------------------------------------ c) budget
def test_a_token_budget_is_never_exceeded_and_the_rest_is_left_unsent(llama_server, proxy, client_timeout, pool,
                                                                     tmp_path):
    proxy.script(marker(pool, 0), "cut")  # one answer paid but lost on the way, then asked again
    backend = OpenAIBackend(MODEL, base_url=proxy.url, api_key=API_KEY, timeout=client_timeout)
    requests = [r for row in pool.to_dict("records") for r in JUDGE.build(row)]
    bounds = [backend.prompt_token_bound(r) + r.max_tokens for r in requests]
    # the cut attempt is charged its worst case (bounds[0]); on top of that a few answers fit (the real prompts
    # are far below the byte bound), not all. One request in flight, so the retry of the cut one has room.
    cap = bounds[0] + 3 * max(bounds) // 2
    try:
        table = judge_pool(pool, JUDGE, backend, cache=JudgeCache(tmp_path / "cache"), concurrency=1,
                           budget=Budget(max_tokens=cap), sleep=Waits())
    finally:
        backend.close()
    run = table.attrs["judge_run"]
    spent = run["budget"]["spent_tokens"]
    assert_counts_sum(table, ROWS)
    assert 0 < run["succeeded"] < ROWS and run["n_failed"] == 0 and run["retries"] == 1
    assert table["judge_status"].iloc[0] != "budget"  # the cut request was sent first, and answered
    assert run["stopped_by_budget"] and run["left_unsent"] == ROWS - run["succeeded"] == table.attrs["n_budget"]
    assert (table["judge_status"] == "budget").sum() == run["left_unsent"]
    assert table.loc[table["judge_status"] == "budget", "judge_error"].eq("budget").all()
    # the engine counted the server's own usage of the answers received...
    assert proxy.usage_delivered == run["prompt_tokens"] + run["completion_tokens"]
    assert run["budget"]["over_reservation"] == 0 and run["budget"]["max_tokens"] == cap
    # ...and charged the attempt lost to the cut (billed by the server, never seen by the engine) at its
    # reserved worst case, so what the server billed in all is within what the engine spent, within the cap
    assert run["possibly_billed"] == 1 and proxy.usage_lost > 0
    assert spent == proxy.usage_delivered + run["budget"]["charged_unseen_tokens"]
    assert run["budget"]["charged_unseen_tokens"] >= proxy.usage_lost
    assert proxy.usage_paid == proxy.usage_delivered + proxy.usage_lost <= spent <= cap
    # the rows left unsent never reached the proxy
    assert proxy.received == sum(proxy.forwarded.values()) == run["succeeded"] + 1
    keys = payload_keys(pool, backend)
    left = [keys[i] for i, s in enumerate(table["judge_status"]) if s == "budget"]
    assert not any(proxy.forwarded[k] for k in left)


# ------------------------------------------------------------------------------------------ d) dry run
def test_the_dry_run_sends_nothing(llama_server, proxy, client_timeout, pool, tmp_path):
    backend = OpenAIBackend(MODEL, base_url=proxy.url, api_key=API_KEY, timeout=client_timeout)
    requests = [r for row in pool.to_dict("records") for r in JUDGE.build(row)]
    cache = JudgeCache(tmp_path / "cache")
    est = estimate(requests, backend, cache=cache)
    assert (est.requests, est.unique, est.cached, est.to_send) == (ROWS, ROWS, 0, ROWS)
    assert est.max_completion_tokens == ROWS * MAX_TOKENS and est.prompt_tokens > 0
    assert proxy.received == 0 and cache.stats()["misses"] == 0 and len(cache) == 0
    # after a real run of half the rows, the estimate counts them as cached, and still sends nothing
    run = run_requests(requests[: ROWS // 2], backend, cache=cache, concurrency=2, sleep=Waits())
    assert run.succeeded == ROWS // 2 and proxy.received == ROWS // 2
    est = estimate(requests, backend, cache=cache)
    backend.close()
    assert (est.cached, est.to_send) == (ROWS // 2, ROWS - ROWS // 2)
    assert proxy.received == ROWS // 2


# ------------------------------------------------------------------------------------------ the Dagster asset
def test_the_alpagasus_asset_through_the_proxy(llama_server, proxy, client_timeout, pool, tmp_path, monkeypatch,
                                               caplog):
    """``alpagasus_scores`` materialised with the ``judge`` resource on the OpenAI backend, the key from
    ``INSTSEL_JUDGE_API_KEY``; one 429 on the way (the engine's real sleep waits its Retry-After)."""
    from instsel_assets.defs.judge import alpagasus_scores
    from instsel_assets.defs.resources import EmbeddingModelResource, JudgeResource
    from instsel_assets.judge.templates import alpagasus

    monkeypatch.setattr(alpagasus, "MAX_TOKENS", MAX_TOKENS)  # the template's own build, shorter answers
    monkeypatch.setenv("INSTSEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INSTSEL_JUDGE_CACHE", str(tmp_path / "judge-cache"))
    monkeypatch.setenv("INSTSEL_JUDGE_API_KEY", API_KEY)
    monkeypatch.delenv("INSTSEL_JUDGE_ORGANIZATION", raising=False)
    rows = pool.head(8)
    proxy.script(marker(rows, 0), "429")

    @dg.asset(name="instruction_pool")
    def instruction_pool() -> pd.DataFrame:
        return rows.copy()

    judge = JudgeResource(backend="openai", model=MODEL, base_url=proxy.url,
                          api_key=dg.EnvVar("INSTSEL_JUDGE_API_KEY"), concurrency=2, max_attempts=3,
                          timeout_s=client_timeout)
    instance = dg.DagsterInstance.ephemeral()
    # a 135M judge writes many replies without a readable score: the check's bound is opened for it
    run_config = {"ops": {"alpagasus_scores": {"config": {"max_unparsable_fraction": 1.0}}}}
    with caplog.at_level(logging.DEBUG):
        result = dg.materialize([instruction_pool, alpagasus_scores], instance=instance, run_config=run_config,
                                resources={"judge": judge, "embedding_model": EmbeddingModelResource()})
    assert result.success
    (mat,) = result.asset_materializations_for_node("alpagasus_scores")
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    counts = {s: meta[f"n_{s}"] for s in ("ok", "unparsable", "failed", "budget", "not_judgeable")}
    assert sum(counts.values()) == len(rows) and counts["ok"] + counts["unparsable"] == len(rows)
    assert (meta["sent"], meta["retries"], meta["cache_hits"], meta["left_unsent"]) == (len(rows), 1, 0, 0)
    assert meta["judge_backend"] == f"openai:{proxy.url}" and meta["scorer_settings"]["api_key_set"] is True
    assert meta["prompt_tokens"] + meta["completion_tokens"] == proxy.usage_paid > 0
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) >= {"covers_pool", "every_row_accounted", "unparsable_replies"}
    assert all(e.passed for e in checks.values()), {n: e.passed for n, e in checks.items()}
    table = result.output_for_node("alpagasus_scores")
    assert table["id"].tolist() == rows["id"].tolist()
    # the key reached the server, and nothing else
    assert f"Bearer {API_KEY}" in proxy.auth_headers
    logs = "\n".join(repr(entry) for entry in instance.all_logs(result.run_id))
    assert f"retrying in {RETRY_AFTER_SECONDS:.2f} s" in logs  # the engine's real sleep waited Retry-After
    for text in (repr(meta), logs, table.to_json(), caplog.text, repr(judge), json.dumps(judge.settings_dict()),
                 repr(instance.get_run_by_id(result.run_id)),
                 repr([{k: getattr(v, "value", v) for k, v in e.metadata.items()} for e in checks.values()])):
        assert API_KEY not in text
    assert math.isfinite(meta["seconds"]) and meta["seconds"] >= RETRY_AFTER_SECONDS


def test_judge_fidelity_measures_the_local_and_the_configured_openai_judge(llama_server, proxy, client_timeout,
                                                                           tmp_path, monkeypatch):
    """``judge_fidelity`` with the ``judge`` resource on the OpenAI backend measures both judges on the same LLMBar
    pairs: the local packaged one (always) and the configured endpoint; no key in what it records."""
    from instsel_assets.defs.evaluation import judge_fidelity
    from instsel_assets.defs.resources import JudgeResource

    monkeypatch.setenv("INSTSEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INSTSEL_JUDGE_CACHE", str(tmp_path / "judge-cache"))
    monkeypatch.setenv("INSTSEL_JUDGE_API_KEY", API_KEY)
    judge = JudgeResource(backend="openai", model=MODEL, base_url=proxy.url, api_key=dg.EnvVar("INSTSEL_JUDGE_API_KEY"),
                          concurrency=2, max_attempts=3, timeout_s=client_timeout, max_reply_tokens=MAX_TOKENS)
    instance = dg.DagsterInstance.ephemeral()
    run_config = {"ops": {"judge_fidelity": {"config": {"limit": 2, "max_unparsable_fraction": 1.0}}}}
    result = dg.materialize([judge_fidelity], instance=instance, run_config=run_config, resources={"judge": judge})
    assert result.success
    table = result.output_for_node("judge_fidelity")
    backends = sorted(set(table["judge_backend"]))
    assert len(table) == 4 and len(backends) == 2 and f"openai:{proxy.url}" in backends
    assert any(b.startswith("local:packaged:smollm2-135m-instruct") for b in backends)
    assert set(table["judge_status"]) <= {"ok", "unparsable", "failed"} and set(table["label"]) <= {1, 2}
    (mat,) = result.asset_materializations_for_node("judge_fidelity")
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    assert [s["judge_backend"] for s in meta["fidelity"]] == [b for b in meta["runs"]]
    assert all(s["n_pairs"] == 2 for s in meta["fidelity"])
    assert proxy.usage_paid > 0 and f"Bearer {API_KEY}" in proxy.auth_headers
    logs = "\n".join(repr(entry) for entry in instance.all_logs(result.run_id))
    for text in (repr(meta), logs, table.to_json()):
        assert API_KEY not in text
