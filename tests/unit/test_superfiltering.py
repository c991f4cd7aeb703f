"""Superfiltering scorer: the perplexity-ratio IFD from the shared IFD scorer and loss engine."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.models import chat
from instsel_assets.models.loading import PACKAGED_SMOLLM2
from instsel_assets.scoring import ifd as ifd_module
from instsel_assets.scoring import superfiltering as sf_module
from instsel_assets.scoring.loss_cache import LossCache
from instsel_assets.scoring.loss_engine import answer_losses
from instsel_assets.scoring.superfiltering import (DEFAULT_SCORER_MODEL, SUPERFILTERING_COLUMNS,
                                                   superfiltering_scores)
from chat_pools import conv, small_chat_pool

ALPACA = Path(__file__).resolve().parents[2] / "data" / "pools" / "alpaca" / "alpaca_sample.json"


def test_columns_and_the_perplexity_ratio_by_hand(tiny_lm):
    model, tok = tiny_lm
    pool = small_chat_pool()
    out = superfiltering_scores(pool, model, tok, batch_size=3)
    assert list(out.columns) == ["id", *SUPERFILTERING_COLUMNS]
    assert out["id"].tolist() == ["a", "b", "c", "d"]
    for i, c in enumerate(pool["conversations"]):
        q = chat.prefix_answer_pairs(tok, c, with_prefix=True)[0]
        a = chat.prefix_answer_pairs(tok, c, with_prefix=False)[0]
        res = answer_losses(model, tok, [(q.prefix_ids, q.answer_ids), (a.prefix_ids, a.answer_ids)], batch_size=1)
        loss_q, loss_a = res.mean_loss
        assert out["superfiltering_loss_given_instruction"][i] == pytest.approx(loss_q, abs=1e-5)
        assert out["superfiltering_loss_answer"][i] == pytest.approx(loss_a, abs=1e-5)
        # the paper's score: ppl(A|Q) / ppl(A)
        assert out["superfiltering_ifd"][i] == pytest.approx(math.exp(loss_q) / math.exp(loss_a), rel=1e-4)
        assert out["superfiltering_ifd_loss_ratio"][i] == pytest.approx(loss_q / loss_a, rel=1e-4)
        assert out["n_answer_tokens"][i] == len(q.answer_ids)
    assert out.attrs["n_unscorable"] == 0


def test_score_ranks_by_the_loss_difference(tiny_lm):
    model, tok = tiny_lm
    out = superfiltering_scores(small_chat_pool(), model, tok)
    diff = out["superfiltering_loss_given_instruction"] - out["superfiltering_loss_answer"]
    assert out["superfiltering_ifd"].rank().tolist() == diff.rank().tolist()
    # the two IFDs are on the same side of 1
    assert ((out["superfiltering_ifd"] < 1) == (out["superfiltering_ifd_loss_ratio"] < 1)).all()


def test_same_numbers_as_the_ifd_scorer(tiny_lm):
    model, tok = tiny_lm
    pool = small_chat_pool()
    sf = superfiltering_scores(pool, model, tok)
    ifd = ifd_module.ifd_scores(pool, model, tok)
    np.testing.assert_allclose(sf["superfiltering_ifd"], ifd["ifd_ppl_ratio"])
    np.testing.assert_allclose(sf["superfiltering_ifd_loss_ratio"], ifd["ifd"])


def test_one_engine_call_and_arguments_passed_through(tiny_lm, monkeypatch, tmp_path):
    model, tok = tiny_lm
    engine_calls, ifd_calls = [], []
    real_engine, real_ifd = ifd_module.answer_losses, ifd_module.ifd_scores

    def engine_spy(model, tok, pairs, **kw):
        engine_calls.append((len(pairs), kw["batch_size"], kw["max_length"]))
        return real_engine(model, tok, pairs, **kw)

    def ifd_spy(pool, model, tok, **kw):
        ifd_calls.append(kw)
        return real_ifd(pool, model, tok, **kw)

    monkeypatch.setattr(ifd_module, "answer_losses", engine_spy)
    seen = []
    superfiltering_scores(small_chat_pool(), model, tok, batch_size=3, max_length=64,
                          progress=lambda d, t: seen.append((d, t)))
    assert engine_calls == [(8, 3, 64)]  # both passes of all four rows in one batched call
    assert seen[-1] == (8, 8)

    monkeypatch.setattr(ifd_module, "ifd_scores", ifd_spy)
    cache = LossCache(tmp_path / "cache", "test-model")
    first = superfiltering_scores(small_chat_pool(), model, tok, batch_size=2, max_length=128, cache=cache, workers=1)
    assert ifd_calls[-1]["cache"] is cache and ifd_calls[-1]["workers"] == 1
    assert ifd_calls[-1]["batch_size"] == 2 and ifd_calls[-1]["max_length"] == 128
    # a second run reads every pair back from the cache: the engine computes nothing
    engine_calls.clear()
    seen.clear()
    again = superfiltering_scores(small_chat_pool(), model, tok, batch_size=2, max_length=128, cache=cache,
                                  progress=lambda d, t: seen.append((d, t)))
    assert seen == [(8, 8)]  # everything done before the first batch
    np.testing.assert_allclose(again["superfiltering_ifd"], first["superfiltering_ifd"])


def test_rows_without_an_answer_are_nan_and_counted(tiny_lm):
    model, tok = tiny_lm
    pool = pd.DataFrame({"id": ["x", "y", "z"], "conversations": [
        [{"role": "user", "content": "Hello?"}],
        conv("Hi", "Hello there."),
        [],
    ]})
    out = superfiltering_scores(pool, model, tok)
    assert out["superfiltering_ifd"].isna().tolist() == [True, False, True]
    assert out["n_answer_tokens"].tolist()[0] == 0 and out["n_answer_tokens"].tolist()[1] > 0
    assert out.attrs["n_unscorable"] == 2
    empty = superfiltering_scores(pool.iloc[:0], model, tok)
    assert list(empty.columns) == ["id", *SUPERFILTERING_COLUMNS] and len(empty) == 0


def test_registered_as_trainable_llm_scorer():
    info = registry.SCORERS["superfiltering"]
    assert info.family == "trainable-llm"
    assert info.columns == SUPERFILTERING_COLUMNS
    assert "Superfiltering" in info.paper
    assert info.fn is superfiltering_scores
    assert DEFAULT_SCORER_MODEL == PACKAGED_SMOLLM2
    assert sf_module.superfiltering_scores is superfiltering_scores


@pytest.mark.integration
def test_smollm2_as_the_small_scorer_model(smollm2):
    model, tok = smollm2
    rows = json.loads(ALPACA.read_text())[:4]
    answer = "The mitochondria is the powerhouse of the cell, producing most of its chemical energy."
    pool = pd.DataFrame({
        "id": [f"alpaca-{i}" for i in range(len(rows))] + ["copy", "unrelated"],
        "conversations": [conv(r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else ""), r["output"])
                          for r in rows] + [conv(f"Repeat this sentence exactly: {answer}", answer),
                                            conv("Name a famous painting.", answer)],
    })
    out = superfiltering_scores(pool, model, tok, batch_size=6).set_index("id")
    assert np.isfinite(out[list(SUPERFILTERING_COLUMNS)].to_numpy(float)).all()
    assert (out["superfiltering_ifd"] > 0).all() and (out["n_answer_tokens"] > 3).all()
    # an instruction that contains the answer makes it far easier to predict than an unrelated one
    assert out.at["copy", "superfiltering_ifd"] < 0.2 < out.at["unrelated", "superfiltering_ifd"]
    # the instruction helps on real Alpaca rows
    assert out.loc[[f"alpaca-{i}" for i in range(len(rows))], "superfiltering_ifd"].median() < 1.0
