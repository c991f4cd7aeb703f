"""IFD scorer: shapes, formulas, first-turn choice, one engine call; behaviour with the packaged SmolLM2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.models import chat
from instsel_assets.scoring import ifd as ifd_module
from instsel_assets.scoring.ifd import IFD_COLUMNS, ifd_scores
from instsel_assets.scoring.loss_engine import answer_losses
from chat_pools import conv, small_chat_pool

ALPACA_CANDIDATES = [
    Path(__file__).resolve().parents[2] / "data" / "pools" / "alpaca" / "alpaca_sample.json",
]


def test_columns_formulas_and_order(tiny_lm):
    model, tok = tiny_lm
    pool = small_chat_pool()
    out = ifd_scores(pool, model, tok, batch_size=3)
    assert list(out.columns) == ["id", *IFD_COLUMNS]
    assert out["id"].tolist() == pool["id"].tolist()
    np.testing.assert_allclose(out["ifd"], out["loss_answer_given_instruction"] / out["loss_answer"])
    np.testing.assert_allclose(out["ifd_ppl_ratio"],
                               np.exp(out["loss_answer_given_instruction"]) / np.exp(out["loss_answer"]))
    # the same numbers as asking the engine directly for each pass
    for i, c in enumerate(pool["conversations"]):
        q = chat.prefix_answer_pairs(tok, c, with_prefix=True)[0]
        a = chat.prefix_answer_pairs(tok, c, with_prefix=False)[0]
        res = answer_losses(model, tok, [(q.prefix_ids, q.answer_ids), (a.prefix_ids, a.answer_ids)], batch_size=1)
        assert out["loss_answer_given_instruction"][i] == pytest.approx(res.mean_loss[0], abs=1e-5)
        assert out["loss_answer"][i] == pytest.approx(res.mean_loss[1], abs=1e-5)
        assert out["n_answer_tokens"][i] == len(q.answer_ids) == res.n_answer_tokens[0]
    assert (out["loss_answer_given_instruction"] != out["loss_answer"]).all()


def test_batch_size_does_not_change_scores(tiny_lm):
    model, tok = tiny_lm
    pool = small_chat_pool()
    a = ifd_scores(pool, model, tok, batch_size=1)
    b = ifd_scores(pool, model, tok, batch_size=8)
    np.testing.assert_allclose(a[list(IFD_COLUMNS)].to_numpy(float), b[list(IFD_COLUMNS)].to_numpy(float),
                               atol=1e-5)


def test_both_passes_share_one_engine_call(tiny_lm, monkeypatch):
    model, tok = tiny_lm
    calls = []
    real = ifd_module.answer_losses

    def spy(model, tok, pairs, **kw):
        calls.append(len(pairs))
        return real(model, tok, pairs, **kw)

    monkeypatch.setattr(ifd_module, "answer_losses", spy)
    seen = []
    ifd_scores(small_chat_pool(), model, tok, progress=lambda d, t: seen.append((d, t)))
    assert calls == [8]
    assert seen[-1] == (8, 8)


def test_first_assistant_turn_only_and_duckdb_arrays(tiny_lm):
    model, tok = tiny_lm
    pool = small_chat_pool()
    multi = pool.copy()
    multi["conversations"] = [np.array(list(c) + [{"role": "user", "content": "And more?"},
                                            {"role": "assistant", "content": "Drink water."}], dtype=object)
                              for c in pool["conversations"]]
    np.testing.assert_allclose(ifd_scores(multi, model, tok)["ifd"], ifd_scores(pool, model, tok)["ifd"],
                               atol=1e-6)


def test_rows_without_answer_are_nan(tiny_lm):
    model, tok = tiny_lm
    pool = pd.DataFrame({"id": ["x", "y", "z"], "conversations": [
        [{"role": "user", "content": "Hello?"}],
        conv("Hi", "Hello there."),
        [],
    ]})
    out = ifd_scores(pool, model, tok)
    assert out["ifd"].isna().tolist() == [True, False, True]
    assert out["n_answer_tokens"].tolist()[0] == 0 and out["n_answer_tokens"].tolist()[1] > 0
    assert out.attrs["n_unscorable"] == 2
    empty = ifd_scores(pool.iloc[:0], model, tok)
    assert list(empty.columns) == ["id", *IFD_COLUMNS] and len(empty) == 0


def test_registered_as_trainable_llm_scorer():
    info = registry.SCORERS["ifd"]
    assert info.family == "trainable-llm"
    assert info.columns == IFD_COLUMNS
    assert "Cherry" in info.paper
    assert info.fn is ifd_scores


def alpaca_rows(n):
    path = next(p for p in ALPACA_CANDIDATES if p.exists())
    rows = json.loads(path.read_text())[:n]
    return pd.DataFrame({
        "id": [f"alpaca-{i}" for i in range(len(rows))],
        "conversations": [conv(r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else ""), r["output"])
                          for r in rows],
    })


@pytest.mark.integration
def test_smollm2_ifd_on_real_alpaca_rows(smollm2):
    model, tok = smollm2
    out = ifd_scores(alpaca_rows(6), model, tok, batch_size=4)
    assert np.isfinite(out[list(IFD_COLUMNS)].to_numpy(float)).all()
    assert (out["ifd"] > 0).all() and (out["ifd_ppl_ratio"] > 0).all()
    assert (out["n_answer_tokens"] > 3).all()
    # a sensible instruction-tuned model is helped by the instruction on real data
    assert (out["ifd"] < 1.5).all() and out["ifd"].median() < 1.0
    # an instruction that contains the answer helps much more than an unrelated one
    answer = "The mitochondria is the powerhouse of the cell, producing most of its chemical energy."
    pool = pd.DataFrame({"id": ["copy", "unrelated"], "conversations": [
        conv(f"Repeat this sentence exactly: {answer}", answer),
        conv("Name a famous painting.", answer),
    ]})
    scored = ifd_scores(pool, model, tok)
    assert scored["ifd"][0] < scored["ifd"][1]
    assert scored["ifd"][0] < 0.5
    assert not math.isclose(scored["loss_answer"][0], scored["loss_answer_given_instruction"][0])
