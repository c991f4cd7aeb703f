"""Self-curation scorer (Humpback): the paper's prompt, digit-token derivation, the expected-rating rule
checked against the loss engine, counted low-mass and unscorable rows, long rows, and the iteration."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from instsel_assets import registry
from instsel_assets.models import chat
from instsel_assets.scoring import self_curation as sc
from instsel_assets.scoring.loss_engine import answer_losses
from instsel_assets.scoring.self_curation import (
    ROUND_SCORES_COLUMN,
    SELF_CURATION_COLUMNS,
    SELF_CURATION_PROMPT,
    digit_token_ids,
    expected_rating,
    iterate_self_curation,
    rating_prompt_ids,
    self_curation_scores,
)
from instsel_assets.training.sft import SFTConfig
from chat_pools import conv, small_chat_pool

# The tiny tokenizer's rating prompt is ~1,500 tokens (its BPE knows few English words).
TINY_MAX_LENGTH = 2048
ALPACA = Path(__file__).resolve().parents[2] / "data" / "pools" / "alpaca" / "alpaca_sample.json"


def with_digit_merges(tok, merged: bool):
    """A copy of the tiny tokenizer whose " 1".." 5" are all merged into one token (``merged``) or all
    left as " " + digit. The stock tiny tokenizer merges " 3" only."""
    spec = json.loads(tok.backend_tokenizer.to_str())
    bpe = spec["model"]
    digit_merges = [["Ġ", d] for d in "12345"]
    bpe["merges"] = [m for m in bpe["merges"] if m not in digit_merges]
    if merged:
        for d in "12345":
            bpe["vocab"].setdefault("Ġ" + d, len(bpe["vocab"]))
        bpe["merges"] += digit_merges
    new = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token=None,
                                  eos_token="<|im_end|>", pad_token="<|pad|>",
                                  additional_special_tokens=["<|im_start|>"])
    new.chat_template = tok.chat_template
    return new


@pytest.fixture
def lm(tiny_lm):
    """Tiny Llama + the tiny tokenizer with " 1".." 5" all split (same vocabulary as the model)."""
    model, tok = tiny_lm
    return model, with_digit_merges(tok, merged=False)


def engine_expectation(model, tok, instruction, answer, prompt_suffix, digit_texts):
    """Score, top and mass built independently: the chat-rendered prompt + ``prompt_suffix``, then
    log p(d) = -(loss of the one-token answer d) from the loss engine."""
    text = chat.render(tok, [{"role": "user", "content": SELF_CURATION_PROMPT.format(
        instruction=instruction, answer=answer)}], add_generation_prompt=True) + prompt_suffix
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    digit_ids = [tok.convert_tokens_to_ids(t) for t in digit_texts]
    res = answer_losses(model, tok, [(prompt, [d]) for d in digit_ids], batch_size=5, max_length=TINY_MAX_LENGTH)
    p = np.exp(-res.mean_loss)
    return float((p / p.sum()) @ np.arange(1, 6)), int(np.argmax(p) + 1), float(p.sum())


# ------------------------------------------------------------------------------------------------ prompt
def test_prompt_is_the_papers_five_point_scale():
    assert SELF_CURATION_PROMPT.startswith(
        "Below is an instruction from an user and a candidate answer. Evaluate whether or not the answer is a "
        "good example of how AI Assistant should respond to the user's instruction. Please assign a score using "
        "the following 5-point scale:\n1: It means the answer is incomplete, vague, off-topic,")
    lines = SELF_CURATION_PROMPT.split("\n")
    assert [line[:3] for line in lines[1:6]] == ["1: ", "2: ", "3: ", "4: ", "5: "]
    assert lines[5].endswith("engaging and insightful.")
    assert 'then write "Score: <rating>" in the last line.' in SELF_CURATION_PROMPT
    assert SELF_CURATION_PROMPT.endswith("\n\n{instruction}\n{answer}")
    filled = SELF_CURATION_PROMPT.format(instruction="Fill {x}", answer="a}b{")
    assert filled.endswith("\n\nFill {x}\na}b{")
    assert sc.ANSWER_PREFIX == "Score: "


# ---------------------------------------------------------------------------------------------- digit ids
def test_digit_ids_refuse_a_tokenizer_that_merges_some_digits_with_the_space(tiny_lm):
    _, tok = tiny_lm  # the stock tiny BPE has a " 3" token and no " 1"
    with pytest.raises(ValueError, match="ratings '1' and '3' are not single tokens after the same text"):
        digit_token_ids(tok)
    with pytest.raises(ValueError, match="'3'"):
        self_curation_scores(small_chat_pool(), tiny_lm[0], tok, max_length=TINY_MAX_LENGTH)


def test_digit_ids_for_split_and_merged_digits(tiny_lm):
    _, tok = tiny_lm
    split = with_digit_merges(tok, merged=False)
    assert [split.convert_ids_to_tokens(i) for i in digit_token_ids(split)] == list("12345")
    merged = with_digit_merges(tok, merged=True)
    assert [merged.convert_ids_to_tokens(i) for i in digit_token_ids(merged)] == ["Ġ1", "Ġ2", "Ġ3", "Ġ4", "Ġ5"]
    ids, shortened = rating_prompt_ids(merged, "Hi", "Hello.", digit_token_ids(merged), TINY_MAX_LENGTH)
    assert not shortened and merged.decode(ids).endswith("<|im_start|>assistant\nScore:")
    ids, _ = rating_prompt_ids(split, "Hi", "Hello.", digit_token_ids(split), TINY_MAX_LENGTH)
    assert split.decode(ids).endswith("<|im_start|>assistant\nScore: ")


def test_digit_that_is_not_one_token_is_refused(tiny_lm):
    _, tok = tiny_lm

    class NoDigits:  # a tokenizer whose last token never decodes to the bare digit (e.g. '5' is cut in bytes)
        chat_template = tok.chat_template
        bos_token = None

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [7, 8, 9]}

        def apply_chat_template(self, *a, **k):
            return tok.apply_chat_template(*a, **k)

        def decode(self, ids):
            return "x"

    with pytest.raises(ValueError, match="rating '1' is not exactly one token"):
        digit_token_ids(NoDigits())


# ---------------------------------------------------------------------------------------------- the rule
def test_expected_rating_by_hand():
    p = np.array([[0.08, 0.08, 0.08, 0.16, 0.40],  # mass 0.8
                  [0.01, 0.01, 0.01, 0.01, 0.01],  # mass 0.05: uniform after renormalisation
                  [np.nan] * 5])
    with np.errstate(divide="ignore"):
        score, top, mass = expected_rating(np.log(p))
    assert score[0] == pytest.approx((0.1 * 1 + 0.1 * 2 + 0.1 * 3 + 0.2 * 4 + 0.5 * 5))
    assert score[1] == pytest.approx(3.0)
    assert top.tolist() == [5, 1, -1]
    np.testing.assert_allclose(mass[:2], [0.8, 0.05])
    assert np.isnan(score[2]) and np.isnan(mass[2])
    # tiny masses renormalise without underflow
    s, t, m = expected_rating(np.log(p[:1]) - 800.0)
    assert s[0] == pytest.approx(score[0]) and t[0] == 5 and m[0] == 0.0
    with pytest.raises(ValueError, match="shape"):
        expected_rating(np.zeros((2, 4)))


@pytest.mark.parametrize("merged", [False, True])
def test_scores_match_the_loss_engine_one_digit_at_a_time(tiny_lm_factory, merged):
    _, stock = tiny_lm_factory()
    tok = with_digit_merges(stock, merged=merged)
    model, _ = tiny_lm_factory(vocab_size=len(tok))
    pool = small_chat_pool()
    out = self_curation_scores(pool, model, tok, batch_size=3, max_length=TINY_MAX_LENGTH)
    assert list(out.columns) == ["id", *SELF_CURATION_COLUMNS]
    assert out["id"].tolist() == pool["id"].tolist()
    assert str(out["self_curation_top"].dtype) == "Int64"
    suffix, digits = ("Score:", ["Ġ" + d for d in "12345"]) if merged else ("Score: ", list("12345"))
    for i, c in enumerate(pool["conversations"]):
        score, top, mass = engine_expectation(model, tok, c[0]["content"], c[1]["content"], suffix, digits)
        assert out["self_curation_score"][i] == pytest.approx(score, abs=1e-5)
        assert out["self_curation_top"][i] == top
        assert out["digit_mass"][i] == pytest.approx(mass, rel=1e-4)
    assert out["self_curation_score"].between(1, 5).all()
    assert out["self_curation_score"].nunique() == len(pool)


def test_low_digit_mass_is_counted_and_logged(lm, monkeypatch, caplog):
    model, tok = lm
    # a random tiny model spreads its probability over 600 tokens: almost none on the digits
    out = self_curation_scores(small_chat_pool(), model, tok, max_length=TINY_MAX_LENGTH)
    assert (out["digit_mass"] < 0.1).all() and out.attrs["n_low_digit_mass"] == 4

    rows = np.log(np.array([[0.0, 0.0, 0.1, 0.2, 0.6], [0.05, 0.05, 0.1, 0.1, 0.1], [0.2] * 5, [0.1] * 5]) + 1e-300)
    monkeypatch.setattr(sc, "candidate_logprobs", lambda *a, **k: rows)
    with caplog.at_level(logging.WARNING, logger=sc.__name__):
        out = self_curation_scores(small_chat_pool(), model, tok, max_length=TINY_MAX_LENGTH)
    np.testing.assert_allclose(out["digit_mass"], [0.9, 0.4, 1.0, 0.5])
    assert out.attrs["n_low_digit_mass"] == 1 and out.attrs["low_digit_mass"] == 0.5
    assert "1 of 4 rated rows" in caplog.text and "'b'" in caplog.text
    assert out["self_curation_top"].tolist() == [5, 3, 1, 1]
    assert out["self_curation_score"][0] == pytest.approx((0.3 + 0.8 + 3.0) / 0.9)
    strict = self_curation_scores(small_chat_pool(), model, tok, max_length=TINY_MAX_LENGTH, low_digit_mass=0.95)
    assert strict.attrs["n_low_digit_mass"] == 3


# ------------------------------------------------------------------------------------------------ edges
def test_rows_without_a_rated_pair_are_nan_and_counted(lm):
    model, tok = lm
    pool = pd.DataFrame({"id": ["no-answer", "ok", "empty", "no-user"], "conversations": [
        [{"role": "user", "content": "Hello?"}],
        conv("Hi", "Hello there."),
        [],
        [{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Hello."}],
    ]})
    out = self_curation_scores(pool, model, tok, max_length=TINY_MAX_LENGTH)
    assert out["self_curation_score"].isna().tolist() == [True, False, True, True]
    assert out["digit_mass"].isna().tolist() == [True, False, True, True]
    assert out["self_curation_top"].isna().tolist() == [True, False, True, True]
    assert out.attrs["n_unscorable"] == 3 and out.attrs["n_low_digit_mass"] == 1
    empty = self_curation_scores(pool.iloc[:0], model, tok, max_length=TINY_MAX_LENGTH)
    assert list(empty.columns) == ["id", *SELF_CURATION_COLUMNS] and len(empty) == 0
    assert empty.attrs["n_unscorable"] == 0


def test_malformed_turn_names_the_row(lm):
    model, tok = lm
    pool = pd.DataFrame({"id": ["fine", "broken"], "conversations": [
        conv("Hi", "Hello."), [{"role": "user", "text": "no content key"}, {"role": "assistant", "content": "x"}]]})
    with pytest.raises(ValueError, match="row 'broken', field 'conversations'"):
        self_curation_scores(pool, model, tok, max_length=TINY_MAX_LENGTH)
    with pytest.raises(ValueError, match="'conversations'"):
        self_curation_scores(pool[["id"]], model, tok)


def test_bad_parameters_name_the_parameter(lm):
    model, tok = lm
    pool = small_chat_pool()
    for kwargs, name in [({"batch_size": 0}, "batch_size"), ({"max_length": 0}, "max_length"),
                         ({"low_digit_mass": 1.5}, "low_digit_mass"), ({"batch_size": 2.5}, "batch_size")]:
        with pytest.raises(ValueError, match=name):
            self_curation_scores(pool, model, tok, **kwargs)


def test_first_turn_batching_and_duckdb_arrays_do_not_change_scores(lm):
    model, tok = lm
    pool = small_chat_pool()
    multi = pool.copy()
    multi["conversations"] = [np.array(list(c) + [{"role": "user", "content": "And more?"},
                                            {"role": "assistant", "content": "Drink water."}], dtype=object)
                              for c in pool["conversations"]]
    a = self_curation_scores(pool, model, tok, batch_size=1, max_length=TINY_MAX_LENGTH)
    b = self_curation_scores(multi, model, tok, batch_size=8, max_length=TINY_MAX_LENGTH)
    np.testing.assert_allclose(a["self_curation_score"], b["self_curation_score"], atol=1e-5)
    np.testing.assert_allclose(a["digit_mass"], b["digit_mass"], rtol=1e-4)


def test_long_rows_are_shortened_from_the_answer_so_the_scale_stays(lm):
    model, tok = lm
    digits = digit_token_ids(tok)
    short_ids, _ = rating_prompt_ids(tok, "Name a color.", "Red.", digits, TINY_MAX_LENGTH)
    long_answer = "The quick brown fox jumps over the lazy dog. " * 10
    full_ids, shortened = rating_prompt_ids(tok, "Name a color.", long_answer, digits, TINY_MAX_LENGTH)
    assert not shortened
    limit = len(short_ids) + 30
    assert len(full_ids) > limit
    ids, shortened = rating_prompt_ids(tok, "Name a color.", long_answer, digits, limit)
    assert shortened and len(ids) <= limit
    text = tok.decode(ids)
    assert "Below is an instruction from an user" in text and text.endswith("<|im_start|>assistant\nScore: ")
    assert "Name a color.\nThe quick brown fox" in text
    pool = pd.DataFrame({"id": ["short", "long"], "conversations": [conv("Name a color.", "Red."),
                                                                     conv("Name a color.", long_answer)]})
    out = self_curation_scores(pool, model, tok, max_length=limit)
    assert out.attrs["n_truncated"] == 1 and out["self_curation_score"].notna().all()
    with pytest.raises(ValueError, match="max_length=100 cannot hold the self-curation prompt of row 'short'"):
        self_curation_scores(pool, model, tok, max_length=100)


def test_registered_as_trainable_llm_scorer():
    info = registry.SCORERS["self_curation"]
    assert info.family == "trainable-llm"
    assert info.columns == SELF_CURATION_COLUMNS == ("self_curation_score", "self_curation_top", "digit_mass")
    assert "Backtranslation" in info.paper
    assert info.fn is self_curation_scores


# -------------------------------------------------------------------------------------------- iteration
@pytest.fixture
def curation_setup(fresh_tiny_lm, monkeypatch):
    make_model, stock = fresh_tiny_lm
    tok = with_digit_merges(stock, merged=False)
    calls = {"factory": 0, "train_sets": []}

    def factory():
        calls["factory"] += 1
        return make_model()

    import instsel_assets.training.sft as sft

    real = sft.finetune_lora

    def spy(model, tokenizer, conversations_list, out_dir, config, **kw):
        calls["train_sets"].append([c[0]["content"] for c in conversations_list])
        return real(model, tokenizer, conversations_list, out_dir, config, **kw)

    monkeypatch.setattr(sft, "finetune_lora", spy)
    config = SFTConfig(max_steps=2, batch_size=2, max_length=64, learning_rate=5e-2, log_every=1)
    return make_model, factory, tok, calls, config


def test_iteration_rates_trains_on_the_kept_rows_and_rerates(curation_setup, tmp_path):
    make_model, factory, tok, calls, config = curation_setup
    pool = small_chat_pool().iloc[:3]
    base_scores = self_curation_scores(pool, make_model(), tok, max_length=TINY_MAX_LENGTH)
    threshold = float(np.median(base_scores["self_curation_score"]))
    kept = pool["conversations"][base_scores["self_curation_score"] >= threshold].tolist()
    assert 0 < len(kept) < len(pool)

    out = iterate_self_curation(pool, factory, tok, iterations=2, threshold=threshold, train_config=config,
                                out_dir=tmp_path, base_model_id="tiny", max_length=TINY_MAX_LENGTH)
    assert list(out.columns) == ["id", *SELF_CURATION_COLUMNS, ROUND_SCORES_COLUMN]
    assert calls["factory"] == 1  # the round-1 rating model is the first fine-tuning's base
    assert calls["train_sets"] == [[c[0]["content"] for c in kept]]
    rounds = np.array(out[ROUND_SCORES_COLUMN].tolist())
    assert rounds.shape == (len(pool), 2)
    np.testing.assert_allclose(rounds[:, 0], base_scores["self_curation_score"], atol=1e-5)
    np.testing.assert_allclose(rounds[:, 1], out["self_curation_score"])
    assert np.abs(rounds[:, 1] - rounds[:, 0]).max() > 1e-4  # the fine-tuned model rates differently
    # the last round is exactly the fine-tuned checkpoint's rating
    from instsel_assets.training.checkpoint import load_checkpoint

    tuned, _, _ = load_checkpoint(tmp_path / "round2", base_loader=lambda _id: (make_model(), tok))
    np.testing.assert_allclose(self_curation_scores(pool, tuned, tok, max_length=TINY_MAX_LENGTH)[
        "self_curation_score"], out["self_curation_score"], atol=1e-5)
    info = out.attrs
    assert info["iterations_completed"] == 2 and info["stopped_early"] is None
    assert [r["round"] for r in info["rounds"]] == [1, 2]
    assert info["rounds"][0]["n_kept"] == len(kept) and info["rounds"][1]["n_trained"] == len(kept)
    assert info["rounds"][1]["checkpoint_dir"] == str(tmp_path / "round2")
    assert info["n_low_digit_mass"] == len(pool)


def test_iteration_stops_when_nothing_is_kept_and_uses_seed_data(curation_setup, tmp_path, caplog):
    _, factory, tok, calls, config = curation_setup
    pool = small_chat_pool().iloc[:2]
    with caplog.at_level(logging.WARNING, logger=sc.__name__):
        out = iterate_self_curation(pool, factory, tok, iterations=3, threshold=5.0, train_config=config,
                                    out_dir=tmp_path / "a", base_model_id="tiny", max_length=TINY_MAX_LENGTH)
    assert out.attrs["iterations_completed"] == 1 and "nothing to fine-tune on" in out.attrs["stopped_early"]
    assert "iteration stopped" in caplog.text
    assert calls["train_sets"] == [] and len(out[ROUND_SCORES_COLUMN][0]) == 1

    seed = [conv("Translate 'good morning' into French.", "Bonjour.")]
    out = iterate_self_curation(pool, factory, tok, iterations=3, threshold=5.0, train_config=config,
                                out_dir=tmp_path / "b", base_model_id="tiny", seed_conversations=seed,
                                max_length=TINY_MAX_LENGTH)
    assert out.attrs["iterations_completed"] == 3
    assert calls["train_sets"] == [[seed[0][0]["content"]]] * 2
    assert calls["factory"] == 1 + 2  # first call of this test, then one fresh base for round 3
    assert (tmp_path / "b" / "round2").is_dir() and (tmp_path / "b" / "round3").is_dir()


def test_iteration_bad_parameters(curation_setup, tmp_path):
    _, factory, tok, _, config = curation_setup
    common = dict(out_dir=tmp_path, base_model_id="tiny")
    with pytest.raises(ValueError, match="iterations"):
        iterate_self_curation(small_chat_pool(), factory, tok, iterations=0, train_config=config, **common)
    for bad in (5.5, float("nan"), "4.5"):
        with pytest.raises(ValueError, match="threshold"):
            iterate_self_curation(small_chat_pool(), factory, tok, threshold=bad, train_config=config, **common)
    with pytest.raises(ValueError, match="train_config"):
        iterate_self_curation(small_chat_pool(), factory, tok, train_config={"max_steps": 2}, **common)
    with pytest.raises(ValueError, match="max_steps"):
        iterate_self_curation(small_chat_pool(), factory, tok, train_config=SFTConfig(max_steps=0), **common)


# ------------------------------------------------------------------------------------------ real model
@pytest.mark.integration
def test_smollm2_answers_with_a_rating_after_score_prefix(smollm2):
    model, tok = smollm2
    rows = json.loads(ALPACA.read_text())[:3]
    pool = pd.DataFrame({"id": [f"alpaca-{i}" for i in range(len(rows))], "conversations": [
        conv(r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else ""), r["output"]) for r in rows]})
    pool.loc[len(pool)] = ["off-topic", conv(rows[0]["instruction"], "Click here to subscribe to my channel!")]
    out = self_curation_scores(pool, model, tok, batch_size=4)
    assert [tok.decode([i]) for i in out.attrs["digit_token_ids"]] == list("12345")
    # conditioned on "Score: ", the model writes a digit: most of its mass is on the five ratings
    assert (out["digit_mass"] > 0.5).all() and out.attrs["n_low_digit_mass"] == 0
    assert out["self_curation_score"].between(1, 5).all()
    assert out["self_curation_top"].isin([1, 2, 3, 4, 5]).all()
    assert out["self_curation_score"].std() > 0.01  # the rating depends on the pair
    assert out.attrs["n_unscorable"] == 0 and out.attrs["n_truncated"] == 0
