"""defs/judge.py wiring: judge assets materialised with ``dg.materialize`` through the real engine, cache, budget,
checks and metadata, and the ``judge`` resource's handling of prices, budgets and the API key.

The local backend runs a tiny random Llama saved to a directory (conftest's builders) in place of the packaged
SmolLM2, only to keep these unit tests fast: the code path (``JudgeResource.backend_instance`` ->
``load_causal_lm`` -> ``LocalBackend``) is the one the packaged model takes. Its tokenizer is trained on
conftest's corpus without "2, 3", so that every rating digit after "Score: " is one token (the stock tiny
tokenizer merges " 3", which one-pass ratings refuse). The OpenAI path runs against the scripted server of the
judge backend tests.
"""

from __future__ import annotations

import json
import logging

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import scripted_openai_server
from conftest import TINY_CORPUS, build_tiny_llama, build_tiny_tokenizer
from scripted_openai_server import ScriptedOpenAIServer

from instsel_assets.defs.judge import alpagasus_scores, instag_tags, normalise_instag, tree_instruct_scores
from instsel_assets.defs.resources import EmbeddingModelResource, JudgeResource, judge_resource

SECRET = "sk-test-SECRET-0123456789abcdef"
ORGANIZATION = "org-SECRET-ORGANIZATION"


def _row(i: int, instruction: str, output: str, input_text: str = "") -> dict:
    user = instruction + (f"\n\n{input_text}" if input_text else "")
    return {"id": f"r{i}", "source": "test", "instruction": instruction, "input": input_text, "output": output,
            "conversations": [{"role": "user", "content": user}, {"role": "assistant", "content": output}]}


def local_pool() -> pd.DataFrame:
    rows = [_row(0, "Give three tips for staying healthy.", "Eat well, exercise and sleep."),
            _row(1, "What are the three primary colors?", "Red, blue and yellow."),
            _row(2, "Translate 'good morning' into French.", "Bonjour."),
            _row(3, "Summarise the paragraph.", "The fox jumps over the dog.", "The quick brown fox jumps."),
            _row(4, "三原色是什么？", "红色、蓝色和黄色。")]
    # A user turn without an answer: AlpaGasus cannot judge it (no response), Tree-Instruct can.
    rows.append({"id": "r5", "source": "test", "instruction": "", "input": "", "output": "",
                 "conversations": [{"role": "user", "content": "Write a short poem about the sea."}]})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tiny_judge_dir(tmp_path_factory):
    tokenizer = build_tiny_tokenizer([t.replace("2, 3", "two, three") for t in TINY_CORPUS])
    directory = tmp_path_factory.mktemp("tiny-judge")
    build_tiny_llama(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTSEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INSTSEL_JUDGE_CACHE", str(tmp_path / "judge-cache"))
    monkeypatch.delenv("INSTSEL_JUDGE_API_KEY", raising=False)
    monkeypatch.delenv("INSTSEL_JUDGE_ORGANIZATION", raising=False)
    return tmp_path


def local_judge(directory: str, **overrides) -> JudgeResource:
    return JudgeResource(model=directory, dtype="float32", device="cpu", batch_size=4, **overrides)


def materialise(asset, judge: JudgeResource, pool: pd.DataFrame, config: dict | None = None,
                instance: dg.DagsterInstance | None = None, raise_on_error: bool = True):
    @dg.asset(name="instruction_pool")
    def instruction_pool() -> pd.DataFrame:
        return pool.copy()

    name = asset.key.to_user_string()
    run_config = {"ops": {name: {"config": config}}} if config else None
    resources = {"judge": judge, "embedding_model": EmbeddingModelResource()}
    return dg.materialize([instruction_pool, asset], resources=resources, run_config=run_config,
                          instance=instance, raise_on_error=raise_on_error, selection=[name, "instruction_pool"])


def output_metadata(result, name: str) -> dict:
    (mat,) = result.asset_materializations_for_node(name)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def checks_of(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def observed_estimate(result) -> dict:
    (event,) = result.get_asset_observation_events()
    return event.asset_observation_data.asset_observation.metadata["estimate"].value


def cache_shards(home) -> list:
    return sorted((home / "judge-cache").glob("judge-*.jsonl"))


# ------------------------------------------------------------------------------------ local backend
def test_alpagasus_scores_through_the_local_judge_then_entirely_from_the_cache(tiny_judge_dir, home):
    pool = local_pool()
    judge = local_judge(tiny_judge_dir)
    first = materialise(alpagasus_scores, judge, pool)
    meta = output_metadata(first, "alpagasus_scores")
    assert {k: meta[f"n_{k}"] for k in ("ok", "unparsable", "failed", "budget", "not_judgeable")} == {
        "ok": 5, "unparsable": 0, "failed": 0, "budget": 0, "not_judgeable": 1}
    assert meta["sent"] == 5 and meta["cache_hits"] == 0 and meta["stopped_by_budget"] is False
    assert meta["estimate"]["to_send"] == 5 and meta["estimate"]["cached"] == 0
    assert observed_estimate(first) == meta["estimate"]  # recorded before anything was sent
    assert meta["scorer"] == "alpagasus" and meta["scorer_settings"]["backend"] == "local"
    assert meta["judge_backend"] == f"local:{tiny_judge_dir}@float32"
    assert "rating from" in meta["alpagasus_score_histogram"]
    checks = checks_of(first)
    assert set(checks) == {"covers_pool", "every_row_accounted", "unparsable_replies", "great_expectations_suite"}
    assert all(c.passed for c in checks.values()), {k: c.metadata for k, c in checks.items()}
    assert checks["unparsable_replies"].metadata["n_unparsable"].value == 0

    table = first.output_for_node("alpagasus_scores")
    assert list(table["id"]) == list(pool["id"])
    ok = table["judge_status"] == "ok"
    assert table.loc[ok, "alpagasus_score"].between(0, 5).all()
    assert table.loc[~ok, "alpagasus_score"].isna().all() and table.loc[~ok, "id"].tolist() == ["r5"]
    assert json.loads(table.loc[0, "judge_raw"])[0].startswith("Score: ")
    assert len(cache_shards(home)) == 1

    second = materialise(alpagasus_scores, judge, pool)
    again = output_metadata(second, "alpagasus_scores")
    assert again["sent"] == 0 and again["cache_hits"] == 5 and again["n_ok"] == 5
    assert again["estimate"]["to_send"] == 0 and again["estimate"]["cached"] == 5
    pd.testing.assert_series_equal(second.output_for_node("alpagasus_scores")["alpagasus_score"],
                                   table["alpagasus_score"])
    assert len(cache_shards(home)) == 1  # nothing new was written


def test_tree_instruct_keeps_unparsable_replies_and_reports_them(tiny_judge_dir, home):
    pool = local_pool()
    result = materialise(tree_instruct_scores, local_judge(tiny_judge_dir), pool)
    meta = output_metadata(result, "tree_instruct_scores")
    table = result.output_for_node("tree_instruct_scores")
    counts = {s: meta[f"n_{s}"] for s in ("ok", "unparsable", "failed", "budget", "not_judgeable")}
    assert sum(counts.values()) == len(pool) and counts["not_judgeable"] == 0
    assert counts["unparsable"] >= 4  # a random 2-layer model writes no bracket tree
    checks = checks_of(result)
    assert checks["covers_pool"].passed and checks["every_row_accounted"].passed
    unparsable = checks["unparsable_replies"]
    assert not unparsable.passed  # more than the default 0.5 of the replies could not be read
    assert unparsable.metadata["max_unparsable_fraction"].value == 0.5
    assert unparsable.metadata["n_unparsable"].value == counts["unparsable"]
    examples = unparsable.metadata["examples"].value
    assert len(examples) == min(5, counts["unparsable"])
    raw = dict(zip(table["id"], table["judge_raw"]))
    for example in examples:
        assert example["raw"].removesuffix("...") in raw[example["id"]] and example["error"]
    bad = table[table["judge_status"] == "unparsable"]
    assert bad["tree_nodes"].isna().all() and bad["judge_error"].notna().all()  # kept, not scored, not dropped
    assert all(json.loads(r)[0] is not None for r in bad["judge_raw"])


def test_a_token_budget_leaves_rows_unsent_and_accounted(tiny_judge_dir, home):
    result = materialise(alpagasus_scores, local_judge(tiny_judge_dir, max_tokens_budget=1500), local_pool())
    meta = output_metadata(result, "alpagasus_scores")
    assert meta["stopped_by_budget"] is True and meta["n_budget"] > 0 and meta["left_unsent"] == meta["n_budget"]
    assert meta["n_ok"] + meta["n_budget"] + meta["n_not_judgeable"] == 6
    assert meta["prompt_tokens"] + meta["completion_tokens"] <= 1500
    assert checks_of(result)["every_row_accounted"].passed


def test_a_dry_run_sends_nothing_writes_nothing_and_shows_the_estimate(tiny_judge_dir, home):
    result = materialise(alpagasus_scores, local_judge(tiny_judge_dir), local_pool(), config={"dry_run": True},
                         raise_on_error=False)
    assert not result.success
    assert not result.asset_materializations_for_node("alpagasus_scores")
    assert not result.get_asset_check_evaluations()
    estimate = observed_estimate(result)
    assert estimate["requests"] == 5 and estimate["to_send"] == 5 and estimate["cached"] == 0
    assert estimate["prompt_tokens"] > 0 and estimate["max_completion_tokens"] == 5 * 256
    assert estimate["max_cost"] is None  # no price: cost unknown
    (failure,) = result.get_step_failure_events()
    user_failure = failure.step_failure_data.user_failure_data
    assert "Nothing was sent" in user_failure.description
    assert user_failure.metadata["estimate"].value == estimate
    assert cache_shards(home) == []


def test_max_reply_tokens_caps_every_request_in_the_estimate_and_the_run(tiny_judge_dir, home):
    # Tree-Instruct asks for 512 tokens; the cap lowers that in the dry run's worst case and in what is sent
    dry = materialise(tree_instruct_scores, local_judge(tiny_judge_dir, max_reply_tokens=7), local_pool(),
                      config={"dry_run": True}, raise_on_error=False)
    assert observed_estimate(dry)["max_completion_tokens"] == 6 * 7  # six rows, one request each
    result = materialise(tree_instruct_scores, local_judge(tiny_judge_dir, max_reply_tokens=7), local_pool())
    meta = output_metadata(result, "tree_instruct_scores")
    assert 0 < meta["completion_tokens"] <= 6 * 7
    assert meta["scorer_settings"]["max_reply_tokens"] == 7
    with pytest.raises(ValueError, match="max_reply_tokens must be a positive"):
        JudgeResource(max_reply_tokens=0).backend_instance()


# ------------------------------------------------------------------------------------ OpenAI backend
def test_the_api_key_from_the_environment_never_reaches_metadata_or_logs(home, monkeypatch, caplog):
    monkeypatch.setenv("INSTSEL_JUDGE_API_KEY", SECRET)
    monkeypatch.setenv("INSTSEL_JUDGE_ORGANIZATION", ORGANIZATION)
    default = judge_resource()
    assert isinstance(default.api_key, dg.EnvVar) and default.api_key.env_var_name == "INSTSEL_JUDGE_API_KEY"
    pool = pd.DataFrame([_row(0, "Rate this one rate:5", "ok"), _row(1, "And this one rate:3", "fine"),
                         _row(2, "unreadable on purpose", "x"), _row(3, "Fail with 401 please", "y")])
    instance = dg.DagsterInstance.ephemeral()
    with ScriptedOpenAIServer() as server, caplog.at_level(logging.DEBUG):
        server.script("401 please", "401")  # a careless server echoes the bearer token in its error
        judge = JudgeResource(backend="openai", model="judge-test", base_url=server.url,
                              api_key=dg.EnvVar("INSTSEL_JUDGE_API_KEY"),
                              organization=dg.EnvVar("INSTSEL_JUDGE_ORGANIZATION"), concurrency=2)
        result = materialise(alpagasus_scores, judge, pool, instance=instance)
    assert f"Bearer {SECRET}" in server.auth_headers  # the key was used...
    meta = output_metadata(result, "alpagasus_scores")
    assert (meta["n_ok"], meta["n_unparsable"], meta["n_failed"]) == (2, 1, 1)
    assert meta["scorer_settings"]["api_key_set"] is True and meta["scorer_settings"]["organization_set"] is True
    table = result.output_for_node("alpagasus_scores")
    assert table.set_index("id").loc["r3", "judge_error"].startswith("http 401")
    logs = "\n".join(repr(entry) for entry in instance.all_logs(result.run_id))
    everything = [logs, repr(meta), table.to_json(), caplog.text, repr(judge), json.dumps(judge.settings_dict()),
                  repr(instance.get_run_by_id(result.run_id))]
    for text in everything:  # ...and appears nowhere else
        assert SECRET not in text and ORGANIZATION not in text


def test_launchpad_config_for_the_judge_keeps_the_key_from_the_environment(home, monkeypatch):
    """Run config that picks the backend, model and endpoint (as the launchpad or ``instsel demo --judge-base-url``
    does) replaces the resource's config as a whole, EnvVar included: the key must still come from
    INSTSEL_JUDGE_API_KEY, not from OPENAI_API_KEY, and never be part of the stored run config."""
    monkeypatch.setenv("INSTSEL_JUDGE_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-the-other-key-0000")
    pool = pd.DataFrame([_row(0, "Rate this one rate:4", "ok")])

    @dg.asset(name="instruction_pool")
    def instruction_pool() -> pd.DataFrame:
        return pool.copy()

    instance = dg.DagsterInstance.ephemeral()
    with ScriptedOpenAIServer() as server:
        config = {"backend": "openai", "model": "judge-test", "base_url": server.url}
        result = dg.materialize([instruction_pool, alpagasus_scores], instance=instance,
                                resources={"judge": judge_resource(), "embedding_model": EmbeddingModelResource()},
                                run_config={"resources": {"judge": {"config": config}}})
    assert server.auth_headers == [f"Bearer {SECRET}"]
    assert output_metadata(result, "alpagasus_scores")["scorer_settings"]["api_key_set"] is True
    assert SECRET not in json.dumps(instance.get_run_by_id(result.run_id).run_config)


TAGS = {"healthy": ["Health advice", "List"], "primary colors": ["knowledge", "Lists"],
        "good morning": ["translation", "knowledge"]}


def tagging_answer(messages) -> str:
    """The scripted server's InsTag judge: JSON tags by query, prose for any other query."""
    content = str(messages[-1]["content"])
    for marker, tags in TAGS.items():
        if marker in content:
            return json.dumps([{"tag": t, "explanation": "scripted"} for t in tags])
    return "This query has no tags I can name."


def test_instag_tags_keeps_the_raw_tags_and_normalises_over_the_pool(home, monkeypatch):
    monkeypatch.setattr(scripted_openai_server, "answer_for", tagging_answer)
    pool = local_pool().head(4)
    with ScriptedOpenAIServer() as server:
        judge = JudgeResource(backend="openai", model="tagger", base_url=server.url)
        result = materialise(instag_tags, judge, pool, config={"semantic_merging": False})
    table = result.output_for_node("instag_tags").set_index("id")
    assert table.loc["r1", "instag_tags_raw"] == ["knowledge", "Lists"]
    # alpha=2: only "knowledge" is carried by two rows; r3's reply is prose, so it has no tags at all (null).
    assert [table.loc[i, "instag_tags"] for i in ("r0", "r1", "r2")] == [[], ["knowledge"], ["knowledge"]]
    assert table.loc["r3", "instag_tags"] is None and table.loc["r3", "judge_status"] == "unparsable"
    assert table["instag_n_tags"].tolist()[:3] == [0, 1, 1] and np.isnan(table.loc["r3", "instag_n_tags"])
    meta = output_metadata(result, "instag_tags")
    assert (meta["distinct_tags_raw"], meta["distinct_tags"], meta["n_ok"], meta["n_unparsable"]) == (5, 1, 3, 1)
    assert meta["normalisation"]["semantic_merging"] is False and meta["embedding_model"] is None
    assert "knowledge" in meta["top_tags"]
    assert all(c.passed for c in checks_of(result).values())


# ------------------------------------------------------------------------------------ the resource
def test_the_default_judge_needs_no_key(monkeypatch):
    monkeypatch.delenv("INSTSEL_JUDGE_API_KEY", raising=False)
    monkeypatch.delenv("INSTSEL_JUDGE_ORGANIZATION", raising=False)
    judge = judge_resource()
    assert judge.backend == "local" and judge.model == "packaged:smollm2-135m-instruct"
    assert judge.api_key is None and judge.organization is None and judge.budget() is None


def test_prices_budgets_and_settings():
    judge = JudgeResource(backend="openai", model="gpt-4o-mini", api_key=SECRET,
                          base_url="https://user:pw@proxy.example/v1", max_cost_budget=0.5,
                          prices='{"gpt-4o-mini": {"input_per_million": 0.15, "output_per_million": 0.6}}')
    budget = judge.budget("gpt-4o-mini")
    assert budget.max_cost == 0.5 and budget.prices["gpt-4o-mini"].output_per_million == 0.6
    settings = judge.settings_dict()
    assert settings["base_url"] == "https://proxy.example/v1" and settings["api_key_set"] is True
    assert SECRET not in json.dumps(settings) and SECRET not in repr(judge) and "pw" not in json.dumps(settings)
    local = JudgeResource(prices={"packaged:smollm2-135m-instruct": {"input_per_million": 0,
                                                                     "output_per_million": 0}})
    assert "packaged:smollm2-135m-instruct@float32" in local.budget("packaged:smollm2-135m-instruct@float32").prices
    with pytest.raises(ValueError, match="no entry for model 'gpt-4o'"):
        JudgeResource(backend="openai", model="gpt-4o", max_cost_budget=1.0).budget("gpt-4o")
    with pytest.raises(ValueError, match=r"prices\['m'\] must be"):
        JudgeResource(prices={"m": {"input": 1}}).price_table()
    with pytest.raises(ValueError, match="not valid JSON"):
        JudgeResource(prices="{nope").price_table()
    with pytest.raises(ValueError, match="API model name"):
        JudgeResource(backend="openai").backend_instance()
    with pytest.raises(ValueError, match="backend must be one of"):
        JudgeResource(backend="anthropic").backend_instance()


# ------------------------------------------------------------------------------------ InsTag normalisation
def test_instag_normalisation_keeps_raw_tags_and_leaves_unjudged_rows_null():
    judged = pd.DataFrame({
        "id": ["a", "b", "c", "d"],
        "instag_tags": [["Math", "Coding"], ["math problems", "coding"], ["Poetry"], None],
        "instag_n_tags": [2, 2, 1, np.nan],
        "judge_status": ["ok", "ok", "ok", "unparsable"],
        "judge_error": [None, None, None, "no JSON"], "judge_raw": ["[]"] * 4,
    })
    embedded = []

    def embed(tags):
        embedded.append(list(tags))
        return np.eye(len(tags))

    table = normalise_instag(judged, alpha=1, semantic_threshold=0.95, min_support=5, min_confidence=0.99,
                             embed=embed)
    assert list(table.columns[:5]) == ["id", "instag_tags", "instag_n_tags", "instag_tags_raw", "instag_n_tags_raw"]
    assert table["instag_tags"].tolist()[:3] == [["math", "coding"], ["math problem", "coding"], ["poetry"]]
    assert table["instag_tags"].iloc[3] is None and np.isnan(table["instag_n_tags"].iloc[3])
    assert table["instag_tags_raw"].tolist()[0] == ["Math", "Coding"]
    assert embedded and table.attrs["instag_normalization"]["n_raw"] == 5
