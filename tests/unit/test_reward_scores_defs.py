"""defs/scores.py reward_scores and the ``reward_model`` resource, materialised with ``dg.materialize``.

The real path runs a tiny random LlamaForSequenceClassification saved to a directory (what a user's reward model
is: a Hugging Face checkpoint of an AutoModelForSequenceClassification); the stand-in path runs a tiny random
causal Llama saved the same way, in place of the packaged SmolLM2 only to keep these unit tests fast: the code
path (``RewardModelResource.load`` -> ``load_causal_lm`` -> the stand-in rating) is the one the packaged default
takes. Its tokenizer is trained on conftest's corpus without "2, 3", so that every rating digit after "Score: " is
one token (the stock tiny tokenizer merges " 3", which the one-pass rating refuses).
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_CORPUS, build_tiny_tokenizer, save_tiny_causal_lm
from transformers import LlamaConfig, LlamaForSequenceClassification

from instsel_assets.defs.resources import RewardModelResource, default_resources
from instsel_assets.defs.scores import reward_scores
from instsel_assets.defs.selection import COLUMN_ASSETS, columns_and_assets
from instsel_assets.models.loading import PACKAGED_SMOLLM2
from instsel_assets.registry import get_selector
from instsel_assets.scoring.reward import STAND_IN_NAME, load_reward_model
from instsel_assets.scoring.reward import reward_scores as library_reward_scores
from instsel_assets.selection.plan import get_selection


def _row(i: int, instruction: str, output: str) -> dict:
    return {"id": f"r{i}", "source": "test", "instruction": instruction, "input": "", "output": output,
            "conversations": [{"role": "user", "content": instruction}, {"role": "assistant", "content": output}]}


def small_pool() -> pd.DataFrame:
    rows = [_row(0, "Give three tips for staying healthy.", "Eat well, exercise and sleep."),
            _row(1, "What are the three primary colors?", "Red, blue and yellow."),
            _row(2, "Translate 'good morning' into French.", "Bonjour."),
            _row(3, "三原色是什么？", "红色、蓝色和黄色。")]
    # A user turn without an answer: no (instruction, response) pair, so no reward score (NaN, counted).
    rows.append({"id": "r4", "source": "test", "instruction": "", "input": "", "output": "",
                 "conversations": [{"role": "user", "content": "Write a short poem about the sea."}]})
    return pd.DataFrame(rows)


def _tokenizer():
    return build_tiny_tokenizer([t.replace("2, 3", "two, three") for t in TINY_CORPUS])


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A tiny LlamaForSequenceClassification (one label: a reward head) + its ChatML tokenizer, on disk."""
    tok = _tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None, num_labels=1)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    directory = tmp_path_factory.mktemp("tiny-reward-model")
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def causal_lm_dir(tmp_path_factory):
    tok = _tokenizer()
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny-causal-lm"), tok)


@pytest.fixture(autouse=True)
def home(dagster_home):
    return dagster_home


def materialise(resource: RewardModelResource, pool: pd.DataFrame):
    @dg.asset(name="instruction_pool")
    def instruction_pool() -> pd.DataFrame:
        return pool.copy()

    return dg.materialize([instruction_pool, reward_scores], resources={"reward_model": resource},
                          instance=dg.DagsterInstance.ephemeral())


def output_metadata(result) -> dict:
    (mat,) = result.asset_materializations_for_node("reward_scores")
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def checks_of(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def resource(directory: str, **overrides) -> RewardModelResource:
    return RewardModelResource(model=directory, dtype="float32", device="cpu", batch_size=2, **overrides)


def test_a_sequence_classifier_is_scored_as_a_reward_model(classifier_dir):
    pool = small_pool()
    rm = resource(classifier_dir)
    assert rm.is_causal_lm() is False
    result = materialise(rm, pool)
    table = result.output_for_node("reward_scores")
    assert list(table.columns) == ["id", "reward_score", "reward_model"] and list(table["id"]) == list(pool["id"])
    assert (table["reward_model"] == classifier_dir).all()
    scores = table["reward_score"].to_numpy()
    assert np.isfinite(scores[:4]).all() and np.isnan(scores[4])
    model, tok = load_reward_model(classifier_dir, dtype="float32", device="cpu")
    np.testing.assert_allclose(scores, library_reward_scores(pool, model, tok)["reward_score"].to_numpy(),
                               rtol=1e-4, atol=1e-5)

    meta = output_metadata(result)
    assert meta["scorer"] == "reward_score" and meta["reward_model"] == classifier_dir
    assert meta["stand_in"] is False and "stand_in_note" not in meta
    assert not any("stand-in" in str(v) for v in meta.values())
    assert meta["scorer/mode"] == "reward_model" and meta["scorer/encoding"] == "chat_template"
    assert meta["scorer/n_unscorable"] == 1 and meta["rows_scored"] == 4
    assert meta["scorer_settings"]["model"] == classifier_dir and meta["scorer_settings"]["mode"] == "auto"
    assert meta["model"]["n_parameters"] > 0 and "reward from" in meta["score_histogram"]

    checks = checks_of(result)
    assert set(checks) == {"covers_pool", "scored_rows_finite", "great_expectations_suite"}
    assert all(c.passed for c in checks.values()), {k: c.metadata for k, c in checks.items()}
    assert checks["scored_rows_finite"].metadata["rows_counted_unscorable"].value == 1
    assert checks["great_expectations_suite"].metadata["expectations_evaluated"].value == 3


def test_a_causal_lm_is_the_stand_in_and_says_so(causal_lm_dir):
    pool = small_pool()
    rm = resource(causal_lm_dir)
    assert rm.is_causal_lm() is True  # read from the checkpoint's config: LlamaForCausalLM
    result = materialise(rm, pool)
    table = result.output_for_node("reward_scores")
    label = f"stand-in: {causal_lm_dir} rating, not a reward model"
    assert (table["reward_model"] == label).all()
    scores = table["reward_score"].to_numpy()
    assert ((scores[:4] >= 1.0) & (scores[:4] <= 5.0)).all() and np.isnan(scores[4])

    meta = output_metadata(result)
    assert meta["stand_in"] is True and meta["reward_model"] == label
    assert meta["stand_in_note"].startswith(label) and "reward_model resource" in meta["stand_in_note"]
    assert meta["scorer/mode"] == "stand_in" and meta["scorer/encoding"] == "stand_in_prompt"
    assert "expected rating from" in meta["score_histogram"]

    checks = checks_of(result)
    assert all(c.passed for c in checks.values()), {k: c.metadata for k, c in checks.items()}
    # the stand-in adds two expectations to the suite: ratings within 1-5, the label starting with "stand-in: "
    assert checks["great_expectations_suite"].metadata["expectations_evaluated"].value == 5

    forced = materialise(resource(causal_lm_dir, mode="stand_in"), pool).output_for_node("reward_scores")
    np.testing.assert_allclose(forced["reward_score"].to_numpy(), scores, atol=1e-6)


def test_the_default_resource_is_the_named_stand_in():
    default = default_resources()["reward_model"]
    assert isinstance(default, RewardModelResource) and default.model == PACKAGED_SMOLLM2
    assert default.is_causal_lm() is True  # no config read for the packaged model
    description = RewardModelResource.model_fields["model"].description
    assert "STAND-IN, not a reward model" in description and STAND_IN_NAME in description
    with pytest.raises(ValueError, match="mode must be one of"):
        RewardModelResource(mode="judge").is_causal_lm()


def test_reward_score_is_read_from_this_asset_by_the_reward_top_partition():
    assert COLUMN_ASSETS["reward_score"] == "reward_scores"
    spec = get_selection("reward_top")
    columns = get_selector(spec.selector).columns_read(spec.params)
    assert columns_and_assets(columns, "reward_top", spec.selector) == {"reward_scores": "reward_score"}
