"""defs/experiments.py materialised with ``dg.materialize`` on a tiny random Llama saved to a directory: subset
experiments (LoRA fine-tune + held-out loss per subset), the InstructMining rule and scores, the InstructionGPT-4
selector and scores, and the selectors run on those scores."""

from __future__ import annotations

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
from conftest import build_tiny_tokenizer, save_tiny_causal_lm

from instsel_assets.defs.duckdb_io import InstselDuckDBIOManager
from instsel_assets.defs.experiments import EXPERIMENT_ASSETS, row_indicator_table
from instsel_assets.defs.resources import LanguageModelResource
from instsel_assets.registry import get_selector
from instsel_assets.training.subset_experiments import MEAN_PREFIX, non_finite_losses

TOPICS = ["the sea", "a cat", "the moon", "bread", "a river", "winter", "music", "a garden", "trains", "rain"]


def small_pool(n: int = 30) -> pd.DataFrame:
    rows = []
    for i in range(n):
        instruction = f"Write {1 + i % 4} short sentences about {TOPICS[i % len(TOPICS)]}."
        output = " ".join(["The quick brown fox jumps over the lazy dog."] * (1 + i % 3)) + f" Item {i}."
        rows.append({"id": f"r{i:02d}", "source": "test", "instruction": instruction, "input": "", "output": output,
                     "n_turns": 1, "conversations": [{"role": "user", "content": instruction},
                                                     {"role": "assistant", "content": output}]})
    return pd.DataFrame(rows)


def small_features(pool: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(pool), 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return pd.DataFrame({
        "id": pool["id"], "language": "en",
        "instruction_tokens": pool["instruction"].str.split().str.len(), "input_tokens": 0,
        "output_tokens": pool["output"].str.split().str.len(),
        "total_tokens": pool["instruction"].str.split().str.len() + pool["output"].str.split().str.len(),
        "ttr": rng.uniform(0.4, 1.0, len(pool)), "mtld": rng.uniform(10, 80, len(pool)),
        "embedding": list(emb.astype(np.float32)), "knn6_mean_distance": rng.uniform(0.2, 0.8, len(pool)),
    })


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    tok = build_tiny_tokenizer()
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"), tok)


@pytest.fixture(autouse=True)
def home(dagster_home, monkeypatch):
    monkeypatch.setenv("INSTSEL_DUCKDB", str(dagster_home / "tables.duckdb"))
    return dagster_home


RUN_CONFIG = {"ops": {
    "subset_experiments": {"config": {"n_subsets": 5, "subset_size": 6, "max_steps": 2, "batch_size": 2,
                                      "max_length": 96, "eval_limit": 3, "eval_max_length": 96, "learning_rate": 5e-3}},
    "instruction_gpt4_selector_model": {"config": {"n_components": 3, "hidden": 8, "epochs": 60}},
}}


@pytest.fixture(scope="module")
def materialised(tiny_lm_dir, tmp_path_factory):
    """One materialisation shared by the tests below (the reward table exists, the perplexity table does not)."""
    tmp = tmp_path_factory.mktemp("experiments-run")
    mp = pytest.MonkeyPatch()
    mp.setenv("INSTSEL_HOME", str(tmp / "home"))
    mp.setenv("INSTSEL_DUCKDB", str(tmp / "tables.duckdb"))
    pool = small_pool()
    features = small_features(pool)
    reward = pd.DataFrame({"id": pool["id"], "reward_score": np.linspace(1.0, 4.0, len(pool)),  # noqa: F841
                           "reward_model": "test"})
    con = duckdb.connect(str(tmp / "tables.duckdb"))
    con.execute("create schema if not exists public")
    con.execute("create table public.reward_scores as select * from reward")
    con.close()

    @dg.asset(name="instruction_pool")
    def instruction_pool() -> pd.DataFrame:
        return pool.copy()

    @dg.asset(name="metric_features")
    def metric_features() -> pd.DataFrame:
        return features.copy()

    instance = dg.DagsterInstance.ephemeral()
    lm = LanguageModelResource(model=tiny_lm_dir, dtype="float32", device="cpu", batch_size=4, max_length=256,
                               use_loss_cache=False)
    # the tables go through the project's DuckDB IO manager, as in a deployment (member ids, embeddings, ...)
    result = dg.materialize([instruction_pool, metric_features, *EXPERIMENT_ASSETS], instance=instance,
                            resources={"language_model": lm,
                                       "io_manager": InstselDuckDBIOManager(database=str(tmp / "tables.duckdb")),
                                       "artifact_io_manager": dg.FilesystemIOManager(base_dir=str(tmp / "art"))},
                            run_config=RUN_CONFIG)
    yield result, instance, pool, features, tmp
    mp.undo()


def meta(result, asset: str) -> dict:
    (mat,) = result.asset_materializations_for_node(asset)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def checks(result) -> dict:
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def test_subset_experiments_table(materialised):
    result, instance, pool, features, tmp = materialised
    assert result.success
    table = result.output_for_node("subset_experiments")
    assert list(table["subset_id"]) == ["s00", "s01", "s02", "s03", "s04"]
    assert all(len(m) == 6 and len(set(m)) == 6 and set(m) <= set(pool["id"]) for m in table["member_ids"])
    assert (table["steps"] == 2).all() and (table["n_rows"] == 6).all() and (table["eval_examples"] == 3).all()
    assert np.isfinite(table["eval_loss"]).all() and table["eval_loss"].nunique() == 5
    # the subset means of every indicator, the reward table's included; the pool's turn count too
    for column in ("instruction_tokens", "output_tokens", "ttr", "mtld", "knn6_mean_distance", "reward_score",
                   "n_turns"):
        assert f"{MEAN_PREFIX}{column}" in table.columns
    rows = features.set_index("id")
    first = list(table["member_ids"].iloc[0])
    assert table[f"{MEAN_PREFIX}ttr"].iloc[0] == pytest.approx(rows.loc[first, "ttr"].mean())
    assert f"{MEAN_PREFIX}response_ppl" not in table.columns  # perplexity_scores was never materialised

    m = meta(result, "subset_experiments")
    assert m["n_subsets"] == 5 and m["eval_examples"] == 3 and np.isfinite(m["base_eval_loss"])
    assert m["indicator_sources"]["reward_score"] == "reward_scores"
    assert m["indicator_sources"]["response_ppl"] == "perplexity_scores (not materialised)"
    assert m["sft_config"]["max_steps"] == 2 and "| s04 " in m["subsets"]
    c = checks(result)
    assert c[("subset_experiments", "every_subset_loss_finite")].passed
    assert c[("subset_experiments", "great_expectations_suite")].passed
    # one progress line per subset, and the adapters are on disk
    messages = [e.message for e in instance.all_logs(result.run_id) if e.message]
    for k in range(1, 6):
        assert any(f"subset {k}/5" in msg and "held-out loss" in msg for msg in messages), k
    assert all((tmp / "home" / "experiments" / "subset_experiments" / s / "adapter_config.json").is_file()
               for s in table["subset_id"])


def test_instruct_mining_rule_and_scores(materialised):
    result, _, pool, _, _ = materialised
    rule = result.output_for_node("instruct_mining_rule")
    # 5 subsets for the 6 default indicators available (no perplexity): ridge, and the metadata says so
    assert rule["term"].tolist() == ["(intercept)", "instruction_tokens", "output_tokens", "ttr", "mtld",
                                     "knn6_mean_distance", "reward_score"]
    m = meta(result, "instruct_mining_rule")
    assert m["method"] == "ridge" and "no unique solution" in m["method_reason"] and m["n_subsets"] == 5
    assert m["dropped_indicators"] == {"response_ppl": "not in the tables"}
    assert "raw_coefficient" in m["coefficients"] and "| s00 " in m["residuals"] and m["formula"].startswith("log(loss) ~")
    c = checks(result)
    assert c[("instruct_mining_rule", "coefficients_finite")].passed
    determined = c[("instruct_mining_rule", "least_squares_determined")]
    assert not determined.passed and determined.severity == dg.AssetCheckSeverity.WARN

    scores = result.output_for_node("instruct_mining_scores")
    assert list(scores["id"]) == list(pool["id"]) and np.isfinite(scores["instruct_mining_score"]).all()
    assert all(c[("instruct_mining_scores", name)].passed
               for name in ("covers_pool", "scored_rows_finite", "great_expectations_suite"))
    chosen = get_selector("instruct_mining").fn(scores, 5)
    assert chosen == scores.sort_values(["instruct_mining_score", "id"])["id"].head(5).tolist()


def test_instruction_gpt4_selector_and_scores(materialised):
    result, _, pool, _, tmp = materialised
    model = result.output_for_node("instruction_gpt4_selector_model")
    assert model["path"].endswith("selector.json") and (tmp / "home" / "selectors" / "instruction_gpt4"
                                                        / "selector.json").is_file()
    m = meta(result, "instruction_gpt4_selector_model")
    assert m["features"] == ["instruction_tokens", "output_tokens", "ttr", "mtld", "knn6_mean_distance",
                             "reward_score", "pc1", "pc2", "pc3"]
    assert m["indicators_absent"] == ["response_ppl"] and m["n_subsets"] == 5
    assert len(m["training_curve"]) >= 60 and all(np.isfinite(list(m["training_curve"].values())))
    c = checks(result)
    assert c[("instruction_gpt4_selector_model", "training_loss_finite")].passed
    assert c[("instruction_gpt4_selector_model", "beats_constant_prediction")].passed

    scores = result.output_for_node("instruction_gpt4_scores")
    assert list(scores["id"]) == list(pool["id"]) and np.isfinite(scores["instruction_gpt4_score"]).all()
    assert all(c[("instruction_gpt4_scores", name)].passed
               for name in ("covers_pool", "scored_rows_finite", "great_expectations_suite"))
    chosen = get_selector("instruction_gpt4").fn(scores, 4)
    assert chosen == scores.sort_values(["instruction_gpt4_score", "id"], ascending=[False, True])["id"].head(4).tolist()


def test_row_indicator_table_without_any_score_table():
    pool = small_pool(6)
    rows, sources = row_indicator_table(pool, small_features(pool))
    assert list(rows["id"]) == list(pool["id"]) and "embedding" in rows.columns
    assert sources["ttr"] == "metric_features" and sources["n_turns"] == "instruction_pool"
    assert sources["reward_score"] == "reward_scores (not materialised)" and "reward_score" not in rows.columns


def test_a_non_finite_loss_is_named():
    table = pd.DataFrame({"subset_id": ["s00", "s01", "s02"], "eval_loss": [1.0, float("nan"), float("inf")]})
    assert non_finite_losses(table) == ["s01", "s02"]


def test_too_large_subsets_are_a_clear_error(tiny_lm_dir):
    pool = small_pool(8)

    @dg.asset(name="instruction_pool")
    def instruction_pool() -> pd.DataFrame:
        return pool

    @dg.asset(name="metric_features")
    def metric_features() -> pd.DataFrame:
        return small_features(pool)

    lm = LanguageModelResource(model=tiny_lm_dir, dtype="float32", device="cpu", use_loss_cache=False)
    with pytest.raises(Exception, match="subset_size 20 exceeds the 8 rows of the pool"):
        dg.materialize([instruction_pool, metric_features, EXPERIMENT_ASSETS[0]], resources={"language_model": lm},
                       run_config={"ops": {"subset_experiments": {"config": {"subset_size": 20}}}},
                       instance=dg.DagsterInstance.ephemeral())
