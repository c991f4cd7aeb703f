"""defs/mods.py: the four MoDS assets materialised with ``dg.materialize`` on a small pool with a tiny model.

The pool, its embeddings and its reward scores are stand-in upstream assets (hand-made, so D_h is known); the
language model and the reward model are one tiny random causal Llama saved to a directory, so the reward of the
seed model's answers takes the stand-in path (expected 1-5 rating) that the packaged default takes. Its tokenizer
is trained without "2, 3" so every rating digit after "Score: " is one token (as in test_reward_scores_defs.py).
The tables go through the project's DuckDB IO manager, as in a real run, and the ``mods`` selector reads the
step-4 table back from DuckDB.
"""

from __future__ import annotations

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_CORPUS, build_tiny_tokenizer, save_tiny_causal_lm

from instsel_assets.defs.duckdb_io import InstselDuckDBIOManager
from instsel_assets.defs.mods import MODS_ASSETS
from instsel_assets.defs.resources import LanguageModelResource, RewardModelResource
from instsel_assets.selection.mods import select_mods

QUESTIONS = [
    ("Give three tips for staying healthy.", "Eat a balanced diet, exercise regularly and sleep well."),
    ("What are the three primary colors?", "The three primary colors are red, blue, and yellow."),
    ("Describe the structure of an atom.", "An atom is made up of a nucleus and electrons that orbit it."),
    ("Write a short poem about the sea.", "The waves roll in, the gulls cry out, the tide goes back again."),
    ("Translate 'good morning' into French.", "Bonjour."),
    ("Explain why the sky is blue.", "Sunlight is scattered by the molecules of the air, blue light the most."),
    ("List five animals that live in the ocean.", "Dolphin, shark, octopus, whale, and sea turtle."),
    ("给出三个保持健康的建议。", "均衡饮食，经常锻炼，保证充足的睡眠。"),
    ("三原色是什么？", "三原色是红色、蓝色和黄色。"),
    ("描述原子的结构。", "原子由原子核和围绕它运动的电子组成。"),
    ("Summarise the following paragraph in one sentence.", "The fox jumps over the lazy dog."),
    ("写一首关于大海的短诗。", "海浪拍打着沙滩，海鸥在天空中飞翔。"),
]
# Hand-made reward scores on the stand-in's 1-5 scale; one row unscorable. With the stand-in default threshold
# 3.0, D_h is the 7 rows scoring >= 3.0.
REWARDS = [4.5, 2.0, 3.0, 3.8, 1.2, 4.9, np.nan, 3.3, 2.9, 4.1, 1.0, 3.6]
DH_ROWS = 7


def pool_frame() -> pd.DataFrame:
    return pd.DataFrame([{"id": f"r{i:02d}", "source": "test", "instruction": q, "input": "", "output": a,
                          "conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                          "n_turns": 1} for i, (q, a) in enumerate(QUESTIONS)])


def upstream_assets(model_dir: str):
    """The pool, its embeddings, and reward scores labelled as the stand-in rating of ``model_dir`` (what
    ``reward_scores`` writes for that reward model)."""
    pool = pool_frame()
    label = f"stand-in: {model_dir} rating, not a reward model"
    rng = np.random.default_rng(0)

    @dg.asset(name="instruction_pool")
    def instruction_pool() -> pd.DataFrame:
        return pool.copy()

    @dg.asset(name="metric_features")
    def metric_features() -> pd.DataFrame:
        vectors = rng.normal(size=(len(pool), 8)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return pd.DataFrame({"id": pool["id"], "embedding": list(vectors)})

    @dg.asset(name="reward_scores")
    def reward_scores() -> pd.DataFrame:
        return pd.DataFrame({"id": pool["id"], "reward_score": REWARDS, "reward_model": label})

    return [instruction_pool, metric_features, reward_scores]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    tok = build_tiny_tokenizer([t.replace("2, 3", "two, three") for t in TINY_CORPUS])
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny-causal-lm"), tok)


@pytest.fixture(autouse=True)
def home(dagster_home):
    return dagster_home


def resources(model_dir: str, tmp_path) -> dict:
    return {
        "io_manager": InstselDuckDBIOManager(database=str(tmp_path / "instsel.duckdb")),
        "artifact_io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "artifacts")),
        "language_model": LanguageModelResource(model=model_dir, dtype="float32", device="cpu", use_loss_cache=False),
        # the tiny causal LM as the reward model: the stand-in path, whose label starts with "stand-in: "
        "reward_model": RewardModelResource(model=model_dir, dtype="float32", device="cpu", batch_size=4),
    }


def metadata_of(result, asset: str) -> dict:
    (mat,) = result.asset_materializations_for_node(asset)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


RUN_CONFIG = {"ops": {
    "mods_seed_instructions": {"config": {"n_seeds": 2}},
    "mods_seed_model": {"config": {"max_steps": 2, "batch_size": 2, "max_length": 128}},
    # every answer of the random tiny model rates below 5: all D_h rows are necessary
    "mods_necessary_instructions": {"config": {"n_augmented": 3, "necessity_threshold": 5.0, "max_new_tokens": 6,
                                               "batch_size": 4}},
}}


def test_the_four_steps_chain_and_their_checks_pass(tiny_model_dir, tmp_path):
    result = dg.materialize([*upstream_assets(tiny_model_dir), *MODS_ASSETS],
                            resources=resources(tiny_model_dir, tmp_path), run_config=RUN_CONFIG,
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    checks = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    assert {a for a, _ in checks} == {"mods_quality_set", "mods_seed_instructions", "mods_seed_model",
                                      "mods_necessary_instructions"}
    assert len(checks) == 10  # 2 + 2 + 2 + 4
    assert all(c.passed for c in checks.values()), {k: c.metadata for k, c in checks.items() if not c.passed}

    # 1. D_h: the stand-in default threshold 3.0 (the tie at 3.0 kept, the unscorable row never)
    dh = result.output_for_node("mods_quality_set")
    quality = metadata_of(result, "mods_quality_set")
    assert quality["quality_threshold"] == 3.0 and quality["threshold_source"] == "stand-in default"
    assert quality["stand_in"] is True and quality["dh_rows"] == DH_ROWS == len(dh)
    assert quality["scored_rows"] == 11 and quality["unscored_rows"] == 1
    expected = {f"r{i:02d}" for i, r in enumerate(REWARDS) if r >= 3.0}
    assert set(dh["id"]) == expected and list(dh["reward_score"]) == sorted(dh["reward_score"], reverse=True)
    assert checks[("mods_quality_set", "great_expectations_suite")].metadata["expectations_evaluated"].value == 6

    # 2. seeds: n_seeds of D_h
    seeds = result.output_for_node("mods_seed_instructions")
    assert len(seeds) == 2 and set(seeds["id"]) <= set(dh["id"]) and list(seeds["seed_order"]) == [0, 1]
    assert metadata_of(result, "mods_seed_instructions")["dh_rows"] == DH_ROWS

    # 3. the seed model was trained on exactly the seeds
    manifest = result.output_for_node("mods_seed_model")
    assert manifest["n_seeds"] == 2 and manifest["subset_ids"] == list(seeds.sort_values("seed_order")["id"])
    assert manifest["steps"] == 2

    # 4. one row per D_h row; all answers necessary, so min(3, D_h - seeds) = 3 augmented rows
    table = result.output_for_node("mods_necessary_instructions")
    necessity = metadata_of(result, "mods_necessary_instructions")
    assert len(table) == DH_ROWS and set(table["id"]) == set(dh["id"])
    assert necessity["answered"] == DH_ROWS and necessity["failed"] == 0
    assert necessity["necessary"] == DH_ROWS and necessity["necessary_non_seed"] == DH_ROWS - 2
    assert necessity["augmented"] == 3 and necessity["selected"] == 5 and necessity["seeds"] == 2
    assert necessity["role_counts"] == {"seed": 2, "augmented": 3, "necessary": DH_ROWS - 5, "not_necessary": 0,
                                        "failed": 0}
    assert necessity["necessity_threshold"] == 5.0 and necessity["threshold_source"] == "config"
    assert necessity["quality_threshold"] == 3.0
    assert necessity["reward_model"] == f"stand-in: {tiny_model_dir} rating, not a reward model"
    rewards = table["generated_reward"].to_numpy()
    assert ((rewards >= 1.0) & (rewards <= 5.0)).all()
    assert table["generated_answer"].map(lambda t: isinstance(t, str)).all()
    assert set(table["generation_finish"]) <= {"stop", "length"}
    seeds_in_table = table[table["mods_role"] == "seed"].sort_values("mods_order")
    assert list(seeds_in_table["id"]) == list(seeds.sort_values("seed_order")["id"])

    # the selector on the table as DuckDB stores it
    con = duckdb.connect(str(tmp_path / "instsel.duckdb"))
    try:
        stored = con.execute('select * from public."mods_necessary_instructions"').df()
    finally:
        con.close()
    candidates = pool_frame()[["id"]].merge(stored[["id", "mods_role", "mods_order"]], on="id", how="left")
    picked = select_mods(candidates, 10)
    assert picked == list(table[table["mods_order"] >= 0].sort_values("mods_order")["id"]) and len(picked) == 5
    assert picked[:2] == list(seeds_in_table["id"])
    assert select_mods(candidates, 4) == picked[:4]


def test_a_threshold_no_row_reaches_fails_with_a_clear_error(tiny_model_dir, tmp_path):
    result = dg.materialize(
        [*upstream_assets(tiny_model_dir), MODS_ASSETS[0]], resources=resources(tiny_model_dir, tmp_path),
        run_config={"ops": {"mods_quality_set": {"config": {"quality_threshold": 9.0}}}},
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        selection=["instruction_pool", "metric_features", "reward_scores", "mods_quality_set"])
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.step_failure_data.error)
    assert "no row has reward_score >= 9" in message and "quality_quantile" in message
