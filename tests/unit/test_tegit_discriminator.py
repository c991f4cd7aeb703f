"""TEGIT-style task discriminator: labelled data, grouped split, training, save/load, scoring."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from instsel_assets import registry
from instsel_assets.models import chat
from instsel_assets.scoring.tegit_discriminator import (
    HEAD_WEIGHTS,
    MANIFEST_NAME,
    TEGIT_COLUMNS,
    Discriminator,
    DiscriminatorConfig,
    discriminator_scores,
    encode_first_turn,
    grouped_split,
    labelled_from_scores,
    labelled_pairs_from_llmbar,
    length_grouped_batches,
    load_discriminator,
    pairwise_accuracy,
    roc_auc,
    train_discriminator,
)
from instsel_assets.selection.tegit_accept import GOOD_PROB_COLUMN as SELECTOR_COLUMN

LLMBAR = Path(__file__).resolve().parents[2] / "data" / "labels" / "llmbar_natural" / "dataset.json"

QUESTIONS_AND_ANSWERS = [
    ("Give three tips for staying healthy.", "Eat a balanced diet, exercise regularly and sleep well."),
    ("What are the three primary colors?", "Red, blue, and yellow."),
    ("Describe the structure of an atom.", "A nucleus, and electrons that orbit it."),
    ("Write a short poem about the sea.", "The waves roll in, the gulls cry out."),
    ("Translate 'good morning' into French.", "Bonjour."),
    ("Explain why the sky is blue.", "Sunlight is scattered by the air, blue light the most."),
    ("List five animals that live in the ocean.", "Dolphin, shark, octopus, whale, and sea turtle."),
    ("三原色是什么？", "三原色是红色、蓝色和黄色。"),
    ("描述原子的结构。", "原子由原子核和围绕它运动的电子组成。"),
    ("Add two and three.", "Five."),
    ("Name a primary color.", "Red is a primary color."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("写一首关于大海的短诗。", "海浪拍打着沙滩，海鸥在天空中飞翔。"),
    ("Summarise: the quick brown fox jumps over the lazy dog.", "A fox jumps over a dog."),
    ("def add(a, b): what does it return?", "It returns a + b."),
    ("请把下面的句子翻译成英文：今天天气很好。", "The weather is nice today."),
]
# Enough steps and rates for the tiny model to separate the toy labelling; float32 so the numbers do
# not depend on whether the CPU has bf16.
TOY_CONFIG = dict(max_steps=40, batch_size=8, learning_rate=3e-3, head_learning_rate=3e-2,
                  validation_fraction=0.25, precision="float32", max_length=128)


def conv(user, answer):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def toy_labelled() -> pd.DataFrame:
    """A separable labelling: a real answer is a good task (1), the same question answered "N/A" is not (0)."""
    rows = []
    for group, (question, answer) in enumerate(QUESTIONS_AND_ANSWERS):
        rows.append({"conversations": conv(question, answer), "label": 1, "group": group})
        rows.append({"conversations": conv(question, "N/A"), "label": 0, "group": group})
    return pd.DataFrame(rows)


def scoring_pool(labelled: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"row-{i}" for i in range(len(labelled))],
                         "conversations": labelled["conversations"].tolist()})


@pytest.fixture(scope="module")
def trained(tiny_lm_factory, tmp_path_factory):
    """One toy training run shared by the tests that inspect its result: (result, tokenizer, base, labelled)."""
    base, tokenizer = tiny_lm_factory()
    labelled = toy_labelled()
    out_dir = tmp_path_factory.mktemp("tegit") / "discriminator"
    result = train_discriminator(copy.deepcopy(base), tokenizer, labelled, out_dir=out_dir,
                                 config=DiscriminatorConfig(**TOY_CONFIG), base_model_id="tiny-llama",
                                 label_source="toy: real answer vs N/A")
    return result, tokenizer, base, labelled


# ---------------------------------------------------------------------------------------------- labelled data
def test_llmbar_pairs_label_the_preferred_output():
    records = json.loads(LLMBAR.read_text(encoding="utf-8"))
    out = labelled_pairs_from_llmbar(LLMBAR)
    assert list(out.columns) == ["conversations", "label", "group"]
    assert len(out) == 2 * len(records) == 200
    for pair, record in enumerate(records):
        first, second = out.iloc[2 * pair], out.iloc[2 * pair + 1]
        assert first["group"] == second["group"] == pair
        assert first["conversations"] == conv(record["input"], record["output_1"])
        assert second["conversations"] == conv(record["input"], record["output_2"])
        assert (first["label"], second["label"]) == ((1, 0) if record["label"] == 1 else (0, 1))
    assert out["label"].sum() == 100
    assert out.attrs["label_source"]["n_pairs"] == 100


GOOD = {"input": "Say hi.", "output_1": "Hi!", "output_2": "No.", "label": 1}


@pytest.mark.parametrize("content, message", [
    ("{not json", r"not valid JSON"),
    (json.dumps({"pairs": [GOOD]}), r"expected a JSON list"),
    (json.dumps([]), r"holds no pairs"),
    (json.dumps([GOOD, "text"]), r"row 1: expected an object"),
    (json.dumps([GOOD, {k: v for k, v in GOOD.items() if k != "label"}]), r"row 1: field 'label' is missing"),
    (json.dumps([GOOD, {**GOOD, "label": 3}]), r"row 1: field 'label' must be 1 or 2"),
    (json.dumps([GOOD, {**GOOD, "label": True}]), r"row 1: field 'label' must be 1 or 2"),
    (json.dumps([GOOD, {**GOOD, "label": "2"}]), r"row 1: field 'label' must be 1 or 2"),
    (json.dumps([GOOD, {**GOOD, "output_2": None}]), r"row 1: field 'output_2' must be a string"),
    (json.dumps([GOOD, {**GOOD, "input": "  "}]), r"row 1: field 'input' is empty"),
])
def test_bad_llmbar_files_name_file_row_and_field(tmp_path, content, message):
    path = tmp_path / "pairs.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        labelled_pairs_from_llmbar(path)
    assert str(path) in str(info.value)


def test_missing_llmbar_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        labelled_pairs_from_llmbar(tmp_path / "nope.json")


def test_labelled_from_scores_threshold_and_unscored_rows():
    frame = pd.DataFrame({
        "id": ["a", "b", "c", "d", "e"],
        "conversations": [conv("q", x) for x in "abcde"],
        "judge_score": [4.5, 4.49, None, 5.0, np.nan],
    })
    out = labelled_from_scores(frame, "judge_score", 4.5)
    assert out["group"].tolist() == ["a", "b", "d"]  # the id is the group
    assert out["label"].tolist() == [1, 0, 1]  # score >= threshold
    assert out["conversations"].tolist() == [conv("q", "a"), conv("q", "b"), conv("q", "d")]
    assert out.attrs["n_unscored"] == 2  # left out, counted
    assert out.attrs["label_source"]["score_column"] == "judge_score"


def test_labelled_from_scores_bad_inputs():
    frame = pd.DataFrame({"id": ["a", "b"], "conversations": [conv("q", "a"), conv("q", "b")],
                          "judge_score": [1.0, "five"]})
    with pytest.raises(ValueError, match=r"row id 'b': column 'judge_score' is not a number"):
        labelled_from_scores(frame, "judge_score", 1.0)
    with pytest.raises(ValueError, match="score_column 'nope'"):
        labelled_from_scores(frame, "nope", 1.0)
    with pytest.raises(ValueError, match="threshold"):
        labelled_from_scores(frame.iloc[:1], "judge_score", math.nan)
    with pytest.raises(ValueError, match="conversations"):
        labelled_from_scores(frame.drop(columns=["conversations"]), "judge_score", 1.0)


# ---------------------------------------------------------------------------------------------- split
def test_grouped_split_keeps_groups_together_and_is_seeded():
    groups = [g for g in range(10) for _ in range(2)] + [10, 11, 11, 11]
    train, val = grouped_split(groups, 0.2, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(groups)))
    train_groups = {groups[i] for i in train}
    val_groups = {groups[i] for i in val}
    assert not train_groups & val_groups
    assert len(val_groups) == round(0.2 * 12)
    again_train, again_val = grouped_split(groups, 0.2, seed=0)
    assert again_val.tolist() == val.tolist() and again_train.tolist() == train.tolist()
    assert any(grouped_split(groups, 0.2, seed=s)[1].tolist() != val.tolist() for s in range(1, 6))


def test_grouped_split_edges():
    train, val = grouped_split(["a", "a", "b"], 0.0, seed=0)
    assert train.tolist() == [0, 1, 2] and val.tolist() == []
    train, val = grouped_split(["a", "b"], 0.01, seed=0)  # at least one group held out, one kept
    assert len(train) == 1 and len(val) == 1
    train, val = grouped_split(["a", "b", "c"], 0.9, seed=0)  # at most n_groups - 1 held out
    assert len(train) == 1 and len(val) == 2
    with pytest.raises(ValueError, match="at least 2 label groups"):
        grouped_split(["a", "a"], 0.2, seed=0)
    with pytest.raises(ValueError, match="validation_fraction"):
        grouped_split(["a", "b"], 1.0, seed=0)


# ---------------------------------------------------------------------------------------------- encoding, metrics
def test_encode_first_turn_uses_the_training_encoding_and_cuts_the_prefix_first(tiny_lm):
    _, tok = tiny_lm
    c = conv("Describe the structure of an atom in detail, please.", "A nucleus and electrons.")
    ids, mask = chat.encode_for_training(tok, c, 10_000)
    assert encode_first_turn(tok, c, 10_000) == (ids, 0)
    answer = [t for t, m in zip(ids, mask) if m]
    n_answer = len(answer)
    seq, dropped = encode_first_turn(tok, c, n_answer + 3)
    assert len(seq) == n_answer + 3 and dropped == len(ids) - n_answer - 3
    assert seq[-n_answer:] == answer  # the judged response is kept whole
    assert seq[:3] == ids[len(ids) - n_answer - 3: len(ids) - n_answer]  # the prefix lost its start
    # later turns are not judged; no assistant turn, or no turn at all, gives None
    longer = c + [{"role": "user", "content": "More?"}, {"role": "assistant", "content": "No."}]
    assert encode_first_turn(tok, np.array(longer, dtype=object), 10_000) == (ids, 0)
    assert encode_first_turn(tok, [{"role": "user", "content": "Hi"}], 100) is None
    assert encode_first_turn(tok, [], 100) is None


def test_length_grouped_batches_are_full_similar_and_cover_the_data():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 500, size=80).tolist()
    stream = length_grouped_batches(lengths, batch_size=8, seed=0, window=5)
    batches = [next(stream) for _ in range(20)]  # two epochs of 80 examples
    assert all(len(b) == 8 for b in batches)
    seen = [i for b in batches for i in b]
    assert sorted(seen) == sorted(list(range(80)) * 2)  # windows of 40 split 80 evenly: each epoch exact
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    random_spread = np.mean([np.ptp(rng.choice(lengths, 8, replace=False)) for _ in range(200)])
    assert spread < 0.5 * random_spread  # padding waste is what grouping removes
    again = length_grouped_batches(lengths, batch_size=8, seed=0, window=5)
    assert [next(again) for _ in range(20)] == batches
    # a set smaller than one window is not repeated inside a window
    small = length_grouped_batches([5, 1, 3, 2, 4, 6], batch_size=2, seed=0)
    assert sorted(i for _ in range(3) for i in next(small)) == list(range(6))


def test_roc_auc_and_pairwise_accuracy():
    labels = np.array([1, 0, 1, 0])
    assert roc_auc(labels, np.array([0.9, 0.1, 0.8, 0.2])) == 1.0
    assert roc_auc(labels, np.array([0.1, 0.9, 0.2, 0.8])) == 0.0
    assert roc_auc(labels, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))
    # group g1: positive above negative; group g2: below; the groups are not compared with each other
    acc, n = pairwise_accuracy(labels, np.array([0.9, 0.1, 0.05, 0.06]), ["g1", "g1", "g2", "g2"])
    assert (acc, n) == (0.5, 2)
    assert math.isnan(pairwise_accuracy(np.array([1, 0]), np.array([0.2, 0.3]), ["a", "b"])[0])


# ---------------------------------------------------------------------------------------------- training
def test_head_learns_a_separable_labelling(trained):
    result, _, _, _ = trained
    losses = result.train_losses
    assert len(losses) == TOY_CONFIG["max_steps"]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6)  # zero head: every example starts at 0.5
    assert np.mean(losses[-5:]) < 0.1
    # On the held-out groups (never trained on) an untrained discriminator scores 0.5 everywhere:
    # accuracy, ROC AUC and pair accuracy all 0.5, validation loss log(2).
    assert result.validation_roc_auc >= 0.9
    assert result.validation_pair_accuracy >= 0.75
    assert result.validation_accuracy >= 0.75 > result.validation_majority_accuracy == 0.5
    assert result.validation_loss < 0.5 * math.log(2)


def test_validation_is_honest_held_out_groups(trained):
    result, tok, _, labelled = trained
    all_groups = {str(g) for g in labelled["group"]}
    assert set(result.validation_groups) | set(result.train_groups) == all_groups
    assert not set(result.validation_groups) & set(result.train_groups)
    assert len(result.validation_groups) == round(0.25 * len(QUESTIONS_AND_ANSWERS))
    assert result.n_validation == 2 * len(result.validation_groups)
    # the reported numbers are those of the held-out rows under the trained discriminator
    held_out = labelled[labelled["group"].astype(str).isin(result.validation_groups)].reset_index(drop=True)
    probs = discriminator_scores(scoring_pool(held_out), result.discriminator, tok)["tegit_good_prob"].to_numpy()
    labels = held_out["label"].to_numpy()
    assert result.validation_accuracy == pytest.approx(((probs >= 0.5) == labels).mean())
    assert result.validation_roc_auc == pytest.approx(roc_auc(labels, probs))


def test_saved_directory_holds_adapter_head_manifest_not_full_weights(trained):
    result, _, base, _ = trained
    out_dir = result.out_dir
    manifest = json.loads((out_dir / MANIFEST_NAME).read_text())
    assert manifest["base_model"] == "tiny-llama"
    assert manifest["label_source"] == "toy: real answer vs N/A"
    assert manifest["config"]["max_steps"] == 40 and manifest["config"]["validation_fraction"] == 0.25
    assert manifest["metrics"]["validation_roc_auc"] == 1.0
    assert manifest["metrics"]["train_losses"] == pytest.approx(result.train_losses)
    assert manifest["head"]["pooling"] == "last_token"
    assert manifest == result.discriminator.manifest
    names = {p.name for p in out_dir.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", HEAD_WEIGHTS, MANIFEST_NAME} <= names
    assert not any(n.startswith(("model", "pytorch_model")) for n in names)
    full_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    assert sum(p.stat().st_size for p in out_dir.iterdir()) < full_bytes / 2
    assert not list(out_dir.parent.glob(f".{out_dir.name}.*"))  # no temporary directory left behind


def test_save_load_round_trip_gives_identical_probabilities(trained):
    result, tok, base, labelled = trained
    pool = scoring_pool(labelled.iloc[:12])
    before = discriminator_scores(pool, result.discriminator, tok, batch_size=5)
    asked = []

    def base_loader(name):
        asked.append(name)
        return copy.deepcopy(base), None

    loaded, loaded_tok = load_discriminator(result.out_dir, base_loader)
    assert asked == ["tiny-llama"]
    assert isinstance(loaded, Discriminator) and not loaded.training
    after = discriminator_scores(pool, loaded, loaded_tok, batch_size=5)
    np.testing.assert_array_equal(after["tegit_good_prob"].to_numpy(), before["tegit_good_prob"].to_numpy())
    assert loaded.manifest["metrics"] == result.discriminator.manifest["metrics"]


def test_load_rejects_incomplete_directories(trained, tmp_path):
    result, _, base, _ = trained
    with pytest.raises(FileNotFoundError, match="is not a discriminator directory"):
        load_discriminator(tmp_path, lambda name: (copy.deepcopy(base), None))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MANIFEST_NAME).write_text((result.out_dir / MANIFEST_NAME).read_text())
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_discriminator(broken, lambda name: (copy.deepcopy(base), None))
    manifest = json.loads((result.out_dir / MANIFEST_NAME).read_text())
    (broken / MANIFEST_NAME).write_text(json.dumps({**manifest, "format": "instsel-checkpoint"}))
    with pytest.raises(ValueError, match="format 'instsel-checkpoint', expected 'instsel-tegit-discriminator'"):
        load_discriminator(broken, lambda name: (copy.deepcopy(base), None))


def test_training_is_seeded(fresh_tiny_lm, tmp_path):
    make, tok = fresh_tiny_lm
    labelled = toy_labelled()

    def run(name, **changes):
        config = DiscriminatorConfig(**{**TOY_CONFIG, "max_steps": 3, **changes})
        return train_discriminator(make(), tok, labelled, out_dir=tmp_path / name, config=config,
                                   base_model_id="tiny").train_losses

    first = run("a", seed=0)
    assert run("b", seed=0) == first
    assert run("c", seed=1) != first
    plain = run("d", seed=0, group_by_length=False)  # plain shuffled batches: other batches, also seeded
    assert plain != first and run("e", seed=0, group_by_length=False) == plain


@pytest.mark.parametrize("change, message", [
    ({"label": [2] + [1, 0] * 15 + [0]}, r"labelled row 0 \(group 0\): field 'label' must be 0 or 1"),
    ({"label": [1] * 32}, r"all have label 1"),
])
def test_bad_labelled_data(fresh_tiny_lm, tmp_path, change, message):
    make, tok = fresh_tiny_lm
    labelled = toy_labelled().assign(**change)
    with pytest.raises(ValueError, match=message):
        train_discriminator(make(), tok, labelled, out_dir=tmp_path / "d", base_model_id="tiny",
                            config=DiscriminatorConfig(max_steps=1, precision="float32"))
    assert not (tmp_path / "d").exists()


def test_labelled_rows_without_assistant_turn_are_counted(fresh_tiny_lm, tmp_path):
    make, tok = fresh_tiny_lm
    labelled = pd.concat([toy_labelled(), pd.DataFrame({
        "conversations": [[{"role": "user", "content": "Hello?"}]], "label": [1], "group": [99]})],
        ignore_index=True)
    result = train_discriminator(make(), tok, labelled, out_dir=tmp_path / "d", base_model_id="tiny",
                                 config=DiscriminatorConfig(max_steps=1, precision="float32"))
    assert result.n_skipped == 1
    assert result.n_train + result.n_validation == len(labelled) - 1


@pytest.mark.parametrize("field, value", [
    ("max_steps", 0), ("batch_size", 0), ("learning_rate", 0.0), ("head_learning_rate", -1.0),
    ("validation_fraction", 1.0), ("validation_fraction", -0.1), ("max_length", 1), ("precision", "fp8"),
    ("target_modules", ()), ("lora_dropout", 1.0),
])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        DiscriminatorConfig(**{field: value}).validate()


# ---------------------------------------------------------------------------------------------- scoring
def test_scores_are_sigmoid_of_head_on_last_token(trained):
    result, tok, _, _ = trained
    disc = result.discriminator
    pool = pd.DataFrame({"id": ["long", "short", "none", "mid"], "conversations": [
        conv("Describe the structure of an atom, with many details please.", "A nucleus and electrons around it."),
        conv("Hi", "N/A"),
        [{"role": "user", "content": "No answer here."}],
        conv("Add two and three.", "Five."),
    ]})
    out = discriminator_scores(pool, disc, tok, batch_size=3)
    assert list(out.columns) == ["id", *TEGIT_COLUMNS]
    assert out["id"].tolist() == ["long", "short", "none", "mid"]
    assert out.attrs["n_unscorable"] == 1 and out.attrs["n_truncated"] == 0
    probs = out["tegit_good_prob"].to_numpy()
    assert math.isnan(probs[2]) and ((probs[[0, 1, 3]] > 0) & (probs[[0, 1, 3]] < 1)).all()
    # by hand, one row at a time without padding: sigmoid(w . h_last + b)
    decoder = disc.lm.get_base_model().get_decoder()
    for i in (0, 1, 3):
        ids, _ = encode_first_turn(tok, pool["conversations"][i], 1024)
        with torch.no_grad():
            hidden = decoder(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            expected = torch.sigmoid(disc.head.weight[0] @ hidden + disc.head.bias[0]).item()
        assert probs[i] == pytest.approx(expected, abs=1e-5)
    # the trained discriminator accepts the real answers and rejects "N/A"
    assert probs[0] > 0.5 > probs[1] and probs[3] > 0.5


def test_batch_size_progress_and_truncation(trained):
    result, tok, _, labelled = trained
    pool = scoring_pool(labelled.iloc[:10])
    seen = []
    one = discriminator_scores(pool, result.discriminator, tok, batch_size=1)
    many = discriminator_scores(pool, result.discriminator, tok, batch_size=7,
                                progress=lambda d, t: seen.append((d, t)))
    np.testing.assert_allclose(one["tegit_good_prob"], many["tegit_good_prob"], atol=1e-6)
    assert seen[0] == (0, len(pool)) and seen[-1] == (len(pool), len(pool))
    assert len(seen) == 1 + math.ceil(len(pool) / 7)
    cut = discriminator_scores(pool, result.discriminator, tok, max_length=12)
    assert cut.attrs["n_truncated"] == len(pool)
    assert np.isfinite(cut["tegit_good_prob"]).all()


def test_empty_pool_bad_arguments_and_plain_lm(trained, tiny_lm):
    result, tok, _, labelled = trained
    pool = scoring_pool(labelled)
    empty = discriminator_scores(pool.iloc[:0], result.discriminator, tok)
    assert list(empty.columns) == ["id", *TEGIT_COLUMNS] and len(empty) == 0
    assert empty.attrs["n_unscorable"] == 0
    with pytest.raises(ValueError, match="batch_size"):
        discriminator_scores(pool, result.discriminator, tok, batch_size=0)
    with pytest.raises(ValueError, match="max_length"):
        discriminator_scores(pool, result.discriminator, tok, max_length=1)
    plain_model, _ = tiny_lm
    with pytest.raises(TypeError, match="Discriminator"):
        discriminator_scores(pool, plain_model, tok)


def test_registered_as_trainable_llm_scorer():
    info = registry.SCORERS["tegit_discriminator"]
    assert info.family == "trainable-llm"
    assert info.columns == TEGIT_COLUMNS == ("tegit_good_prob",)
    assert "TeGit" in info.paper
    assert info.fn is discriminator_scores
    assert SELECTOR_COLUMN == TEGIT_COLUMNS[0]  # the selector reads what the scorer writes


@pytest.mark.integration
def test_smollm2_short_training_on_llmbar(smollm2, tmp_path):
    model, tok = smollm2
    labelled = labelled_pairs_from_llmbar(LLMBAR)
    labelled = labelled[labelled["group"] < 6].reset_index(drop=True)
    # train_discriminator takes ownership of its model: the shared fixture gets a private copy.
    config = DiscriminatorConfig(max_steps=2, batch_size=4, max_length=128)
    result = train_discriminator(copy.deepcopy(model), tok, labelled, out_dir=tmp_path / "d", config=config,
                                 base_model_id="packaged:smollm2-135m-instruct")
    assert result.n_train == 10 and result.n_validation == 2  # one held-out pair
    assert all(math.isfinite(x) and x > 0 for x in result.train_losses)
    assert result.train_losses[0] == pytest.approx(math.log(2), abs=1e-6)
    assert 0.0 <= result.validation_accuracy <= 1.0 and result.validation_pair_accuracy in (0.0, 0.5, 1.0)
    # LoRA on the attention projections + a 576 -> 1 head: well under 1% of the 135M parameters
    assert 0 < result.trainable_params < 0.01 * sum(p.numel() for p in model.parameters())
    out = discriminator_scores(scoring_pool(labelled.iloc[:4]), result.discriminator, tok, batch_size=4,
                               max_length=128)
    probs = out["tegit_good_prob"].to_numpy()
    assert ((probs > 0) & (probs < 1)).all()
    assert out.attrs["n_unscorable"] == 0 and out.attrs["n_truncated"] >= 1  # LLMBar inputs are long
