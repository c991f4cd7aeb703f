"""Response perplexity scorer: formula, IFD's conditioned pair, one engine call, unscorable and bad rows;
behaviour with the packaged SmolLM2."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.models import chat
from instsel_assets.scoring import ifd as ifd_module
from instsel_assets.scoring import perplexity as ppl_module
from instsel_assets.scoring.loss_engine import answer_losses
from instsel_assets.scoring.perplexity import PERPLEXITY_COLUMNS, response_perplexity_scores
from chat_pools import conv, small_chat_pool


def test_loss_is_the_conditioned_answer_loss_and_ppl_its_exponential(tiny_lm):
    model, tok = tiny_lm
    pool = small_chat_pool()
    out = response_perplexity_scores(pool, model, tok, batch_size=3)
    assert list(out.columns) == ["id", *PERPLEXITY_COLUMNS]
    assert out["id"].tolist() == pool["id"].tolist()
    for i, c in enumerate(pool["conversations"]):
        q = chat.prefix_answer_pairs(tok, c, with_prefix=True)[0]
        res = answer_losses(model, tok, [(q.prefix_ids, q.answer_ids)], batch_size=1)
        assert out["response_loss"][i] == pytest.approx(res.mean_loss[0], abs=1e-5)
        assert out["response_ppl"][i] == pytest.approx(math.exp(res.mean_loss[0]), rel=1e-5)
        assert out["n_answer_tokens"][i] == len(q.answer_ids)
    assert (out["response_ppl"] > 1).all()
    assert out["response_loss"].nunique() == len(pool)  # the rows are really scored one by one
    assert out.attrs == {"n_unscorable": 0, "n_truncated": 0}


def test_same_pairs_as_ifd_conditioned_pass_and_one_engine_call(tiny_lm, monkeypatch):
    """The pairs (hence a shared cache's keys) are exactly IFD's s(A|Q) pairs; batch, progress and cache
    are passed through to a single engine call."""
    model, tok = tiny_lm
    sent = {}

    def spy(name, real):
        def call(model, tok, pairs, **kw):
            sent.setdefault(name, []).append((list(pairs), kw))
            return real(model, tok, pairs, **{k: v for k, v in kw.items() if k != "cache"})
        return call

    monkeypatch.setattr(ppl_module, "answer_losses", spy("ppl", ppl_module.answer_losses))
    monkeypatch.setattr(ifd_module, "answer_losses", spy("ifd", ifd_module.answer_losses))
    pool = small_chat_pool()
    marker = object()
    seen = []
    out = response_perplexity_scores(pool, model, tok, batch_size=2, max_length=512, cache=marker,
                                     progress=lambda d, t: seen.append((d, t)))
    ifd_out = ifd_module.ifd_scores(pool, model, tok)
    assert len(sent["ppl"]) == 1 and len(sent["ifd"]) == 1
    ppl_pairs, kw = sent["ppl"][0]
    assert kw["cache"] is marker and kw["batch_size"] == 2 and kw["max_length"] == 512
    assert ppl_pairs == sent["ifd"][0][0][0::2]
    assert seen[-1] == (4, 4)
    np.testing.assert_allclose(out["response_loss"], ifd_out["loss_answer_given_instruction"], atol=1e-5)


def test_first_assistant_turn_only_and_duckdb_arrays(tiny_lm):
    model, tok = tiny_lm
    pool = small_chat_pool()
    multi = pool.copy()
    multi["conversations"] = [np.array(list(c) + [{"role": "user", "content": "And more?"},
                                            {"role": "assistant", "content": "Drink water."}], dtype=object)
                              for c in pool["conversations"]]
    np.testing.assert_allclose(response_perplexity_scores(multi, model, tok)["response_loss"],
                               response_perplexity_scores(pool, model, tok)["response_loss"], atol=1e-6)


def test_unscorable_rows_are_nan_and_counted(tiny_lm):
    model, tok = tiny_lm
    pool = pd.DataFrame({"id": ["x", "y", "z", "w"], "conversations": [
        [{"role": "user", "content": "Hello?"}],
        conv("Hi", "Hello there."),
        [],
        None,
    ]})
    out = response_perplexity_scores(pool, model, tok)
    assert out["response_ppl"].isna().tolist() == [True, False, True, True]
    assert out["response_loss"].isna().tolist() == [True, False, True, True]
    assert out["n_answer_tokens"].tolist()[0] == 0 and out["n_answer_tokens"].tolist()[1] > 0
    assert out.attrs["n_unscorable"] == 3
    empty = response_perplexity_scores(pool.iloc[:0], model, tok)
    assert list(empty.columns) == ["id", *PERPLEXITY_COLUMNS] and len(empty) == 0
    assert empty.attrs["n_unscorable"] == 0


def test_truncated_rows_are_counted(tiny_lm):
    model, tok = tiny_lm
    pool = small_chat_pool()
    full = response_perplexity_scores(pool, model, tok)
    cut = response_perplexity_scores(pool, model, tok, max_length=8)
    assert full.attrs["n_truncated"] == 0 and cut.attrs["n_truncated"] == len(pool)
    assert (cut["n_answer_tokens"] <= 7).all()


def test_bad_rows_and_columns_raise_naming_them(tiny_lm):
    model, tok = tiny_lm
    bad_turn = pd.DataFrame({"id": ["ok", "broken"], "conversations": [
        conv("Hi", "Hello."), [{"content": "no role here"}, {"role": "assistant", "content": "x"}]]})
    with pytest.raises(ValueError, match=r"row 'broken'.*'conversations'"):
        response_perplexity_scores(bad_turn, model, tok)
    not_mapping = pd.DataFrame({"id": ["s"], "conversations": [["just a string turn"]]})
    with pytest.raises(ValueError, match=r"row 's'.*'conversations'"):
        response_perplexity_scores(not_mapping, model, tok)
    with pytest.raises(ValueError, match="conversations"):
        response_perplexity_scores(pd.DataFrame({"id": ["a"]}), model, tok)


def test_registered_as_trainable_llm_scorer():
    info = registry.SCORERS["response_perplexity"]
    assert info.family == "trainable-llm"
    assert info.columns == PERPLEXITY_COLUMNS
    assert "InstructMining" in info.paper
    assert info.fn is response_perplexity_scores


@pytest.mark.integration
def test_smollm2_fluent_answers_have_lower_perplexity_than_scrambled_ones(smollm2):
    model, tok = smollm2
    answers = [
        "The three primary colors are red, blue, and yellow.",
        "Paris is the capital and largest city of France.",
        "Water boils at 100 degrees Celsius at sea level.",
    ]
    questions = ["What are the three primary colors?", "What is the capital of France?",
                 "At what temperature does water boil?"]
    rng = np.random.default_rng(0)
    scrambled = [" ".join(rng.permutation(a.split())) for a in answers]
    pool = pd.DataFrame({
        "id": [f"fluent-{i}" for i in range(3)] + [f"scrambled-{i}" for i in range(3)],
        "conversations": [conv(q, a) for q, a in zip(questions, answers)]
                         + [conv(q, a) for q, a in zip(questions, scrambled)],
    })
    out = response_perplexity_scores(pool, model, tok, batch_size=6)
    ppl = out["response_ppl"].to_numpy()
    assert np.isfinite(ppl).all() and (ppl > 1).all()
    assert (ppl[:3] < ppl[3:]).all()
    assert ppl[:3].max() < 20  # an instruction-tuned model finds short factual answers unsurprising
