"""Reward score: the real AutoModelForSequenceClassification path (a tiny Llama classifier with a chat template
and a tiny BERT classifier with text-pair encoding, saved and loaded from disk) gives the same scores in
batches as one pair at a time and whatever the tokenizer's padding side; the stand-in rating (tiny causal LM)
matches a direct computation and is labelled as a stand-in."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import BertWordPieceTokenizer, Tokenizer, processors
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from conftest import TINY_CORPUS, build_tiny_tokenizer
from instsel_assets.models.loading import PACKAGED_SMOLLM2
from instsel_assets.registry import SCORERS
from instsel_assets.scoring.reward import (
    REWARD_COLUMNS,
    STAND_IN_NAME,
    classifier_encoder,
    load_reward_model,
    reward_pair,
    reward_scores,
    scoring_mode,
    stand_in_encoder,
    stand_in_label,
)
from instsel_assets.scoring.self_curation import digit_token_ids


def conv(user: str, assistant: str | None, system: str | None = None) -> list[dict]:
    turns = [{"role": "system", "content": system}] if system else []
    turns.append({"role": "user", "content": user})
    if assistant is not None:
        turns.append({"role": "assistant", "content": assistant})
    return turns


POOL = pd.DataFrame({
    "id": ["a", "b", "c", "d", "e", "f"],
    "conversations": [
        conv("Give three tips for staying healthy.", "Eat a balanced diet, exercise regularly and sleep well."),
        conv("What are the three primary colors?", "Red, blue, and yellow."),
        conv("Describe the structure of an atom.", "An atom is made up of a nucleus and electrons that orbit it. "
             "The nucleus holds protons and neutrons.", system="You are a helpful assistant."),
        conv("三原色是什么？", "三原色是红色、蓝色和黄色。"),
        conv("Translate 'good morning' into French.", "Bonjour."),
        conv("List five animals that live in the ocean.", "Dolphin, shark, octopus, whale, and sea turtle."),
    ],
})


# ------------------------------------------------------------------------------------------------ fixtures
def tiny_bert_tokenizer():
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(TINY_CORPUS * 4, vocab_size=300, show_progress=False)
    t = wp._tokenizer
    t.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", t.token_to_id("[CLS]")), ("[SEP]", t.token_to_id("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=t, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                   unk_token="[UNK]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def scaled_init(model, seed: int = 0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    return model.float().eval()


@pytest.fixture(scope="module")
def llama_rm_dir(tmp_path_factory):
    """A tiny LlamaForSequenceClassification (1 label) + the tiny ChatML tokenizer, saved to disk."""
    tok = build_tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None, num_labels=1)
    torch.manual_seed(0)
    model = scaled_init(LlamaForSequenceClassification(cfg))
    out = tmp_path_factory.mktemp("llama_rm")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def bert_rm_dir(tmp_path_factory):
    """A tiny BertForSequenceClassification (1 label) + a WordPiece tokenizer without chat template, on disk."""
    tok = tiny_bert_tokenizer()
    cfg = BertConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                     num_labels=1)
    torch.manual_seed(1)
    model = scaled_init(BertForSequenceClassification(cfg), seed=1)
    out = tmp_path_factory.mktemp("bert_rm")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def split_digits(tok):
    """A copy of the tiny tokenizer with " 1".." 5" never merged (same vocabulary), so every rating is one
    token after "Score: " (the stock tiny BPE merges " 3" only)."""
    spec = json.loads(tok.backend_tokenizer.to_str())
    spec["model"]["merges"] = [m for m in spec["model"]["merges"] if m not in [["Ġ", d] for d in "12345"]]
    new = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token=None,
                                  eos_token="<|im_end|>", pad_token="<|pad|>",
                                  additional_special_tokens=["<|im_start|>"])
    new.chat_template = tok.chat_template
    return new


def direct_logit(model, enc: dict) -> float:
    kwargs = {k: torch.tensor([v]) for k, v in enc.items()}
    with torch.no_grad():
        return float(model(**kwargs).logits[0, 0])


# ------------------------------------------------------------------------------------------------ reward model
@pytest.mark.parametrize("which", ["llama", "bert"])
def test_reward_model_batches_equal_single_pairs_and_padding_side_does_not_matter(which, llama_rm_dir, bert_rm_dir):
    path = llama_rm_dir if which == "llama" else bert_rm_dir
    model, tok = load_reward_model(str(path), dtype="float32", device="cpu")
    assert scoring_mode(model) == "reward_model"
    single = reward_scores(POOL, model, tok, batch_size=1)
    assert list(single.columns) == ["id", *REWARD_COLUMNS]
    assert single.attrs["encoding"] == ("chat_template" if which == "llama" else "text_pair")
    assert (single["reward_model"] == str(path)).all() and single.attrs["n_unscorable"] == 0
    s = single["reward_score"].to_numpy()
    assert np.isfinite(s).all() and np.ptp(s) > 1e-3  # a random head still separates the pairs
    for side in ("right", "left"):
        tok.padding_side = side
        for bs in (2, 4, 8):
            batched = reward_scores(POOL, model, tok, batch_size=bs)
            np.testing.assert_allclose(batched["reward_score"].to_numpy(), s, rtol=1e-4, atol=1e-5)
    # the scores are this model's logit of each row's own encoding, in pool order
    encode, _ = classifier_encoder(tok)
    for i, row in enumerate(POOL.to_dict("records")):
        q, a = reward_pair(row)
        assert s[i] == pytest.approx(direct_logit(model, encode(q, a)), abs=1e-5)


def test_chat_template_and_text_pair_encodings(llama_rm_dir, bert_rm_dir):
    _, ltok = load_reward_model(str(llama_rm_dir), dtype="float32", device="cpu")
    enc, how = classifier_encoder(ltok)
    text = ltok.decode(enc("Q?", "A.")["input_ids"])
    assert how == "chat_template"
    assert text == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\nA.<|im_end|>\n"
    _, btok = load_reward_model(str(bert_rm_dir), dtype="float32", device="cpu")
    enc, how = classifier_encoder(btok)
    e = enc("what are colors?", "red and blue.")
    assert how == "text_pair" and e["token_type_ids"][-1] == 1 and e["token_type_ids"][0] == 0
    assert btok.convert_ids_to_tokens(e["input_ids"])[0] == "[CLS]"


def test_model_without_pad_id_runs_one_pair_per_pass(llama_rm_dir):
    model, tok = load_reward_model(str(llama_rm_dir), dtype="float32", device="cpu")
    expected = reward_scores(POOL, model, tok, batch_size=1)["reward_score"].to_numpy()
    model.config.pad_token_id = None
    got = reward_scores(POOL, model, tok, batch_size=4)["reward_score"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_unscorable_rows_truncation_and_flat_rows(llama_rm_dir):
    model, tok = load_reward_model(str(llama_rm_dir), dtype="float32", device="cpu")
    long_answer = " ".join(["The waves roll in, the gulls cry out, the tide goes back again."] * 40)
    pool = pd.DataFrame({
        "id": ["ok", "no_answer", "long"],
        "conversations": [conv("Say hi.", "Hi."), conv("Say hi.", None), conv("Write a poem.", long_answer)],
    })
    out = reward_scores(pool, model, tok, max_length=64)
    assert np.isfinite(out.loc[[0, 2], "reward_score"]).all() and np.isnan(out.loc[1, "reward_score"])
    assert out.attrs["n_unscorable"] == 1 and out.attrs["n_truncated"] == 1
    flat = pd.DataFrame({"id": ["x"], "instruction": ["Summarise."], "input": ["Some text."], "output": ["Text."]})
    assert reward_pair(flat.iloc[0].to_dict()) == ("Summarise.\n\nSome text.", "Text.")
    as_conv = pd.DataFrame({"id": ["x"], "conversations": [conv("Summarise.\n\nSome text.", "Text.")]})
    assert reward_scores(flat, model, tok)["reward_score"].iloc[0] == pytest.approx(
        reward_scores(as_conv, model, tok)["reward_score"].iloc[0], abs=1e-6)


def test_several_labels_need_label_index(tmp_path):
    tok = build_tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id, num_labels=2)
    torch.manual_seed(0)
    scaled_init(LlamaForSequenceClassification(cfg)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model, tok = load_reward_model(str(tmp_path), dtype="float32", device="cpu")
    with pytest.raises(ValueError, match="label_index"):
        reward_scores(POOL, model, tok)
    with pytest.raises(ValueError, match="outside"):
        reward_scores(POOL, model, tok, label_index=2)
    one = reward_scores(POOL, model, tok, label_index=1, model_name="my-rm")
    assert one.attrs["label_index"] == 1 and (one["reward_model"] == "my-rm").all()
    assert np.isfinite(one["reward_score"]).all()


# ------------------------------------------------------------------------------------------------ stand-in
@pytest.fixture
def lm(tiny_lm):
    model, tok = tiny_lm
    return model, split_digits(tok)


def test_stand_in_matches_a_direct_expected_rating_and_is_labelled(lm):
    model, tok = lm
    assert scoring_mode(model) == "stand_in"
    out = reward_scores(POOL, model, tok, batch_size=4, max_length=4096)
    assert out.attrs["mode"] == "stand_in" and out.attrs["encoding"] == "stand_in_prompt"
    label = out["reward_model"].iloc[0]
    assert label.startswith("stand-in: ") and label.endswith("rating, not a reward model")
    s = out["reward_score"].to_numpy()
    assert ((s >= 1.0) & (s <= 5.0)).all()
    digits = digit_token_ids(tok)
    encode = stand_in_encoder(tok, digits)
    for i, row in enumerate(POOL.to_dict("records")):
        ids = encode(*reward_pair(row))["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
        p = torch.softmax(logits[digits], dim=0).numpy()
        assert s[i] == pytest.approx(float(p @ np.arange(1, 6)), abs=1e-5)
    single = reward_scores(POOL, model, tok, batch_size=1, max_length=4096)["reward_score"].to_numpy()
    np.testing.assert_allclose(single, s, atol=1e-5)


def test_stand_in_label_names_the_packaged_model(lm):
    model, tok = lm
    out = reward_scores(POOL.head(2), model, tok, model_name=PACKAGED_SMOLLM2, max_length=4096)
    assert (out["reward_model"] == STAND_IN_NAME).all()
    assert STAND_IN_NAME == "stand-in: packaged SmolLM2 rating, not a reward model"
    assert stand_in_label(model, "some/causal-lm") == "stand-in: some/causal-lm rating, not a reward model"
    with pytest.raises(ValueError, match="mode"):
        reward_scores(POOL, model, tok, mode="judge")


def test_registration():
    info = SCORERS["reward_score"]
    assert info.fn is reward_scores and info.family == "small-model" and info.columns == REWARD_COLUMNS
    assert STAND_IN_NAME in info.summary and "MoDS" in info.paper


@pytest.mark.integration
def test_packaged_smollm2_stand_in(smollm2):
    model, tok = smollm2
    out = reward_scores(POOL.head(3), model, tok, batch_size=3)
    assert (out["reward_model"] == STAND_IN_NAME).all()
    s = out["reward_score"].to_numpy()
    assert ((s >= 1.0) & (s <= 5.0)).all()
