"""Held-out loss of reference answers: AlpacaEval loading, the engine path, the summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from instsel_assets.evaluation import heldout
from instsel_assets.evaluation.heldout import heldout_loss, load_alpaca_eval, summarise_heldout
from instsel_assets.models import chat
from instsel_assets.scoring.loss_engine import answer_losses

ALPACA_EVAL = heldout.default_alpaca_eval_path()


def test_load_alpaca_eval_reference_file():
    df = load_alpaca_eval(ALPACA_EVAL, limit=None)
    assert list(df.columns) == ["id", "instruction", "reference"]
    assert len(df) == 805
    assert df["instruction"][0].startswith("What are the names of some famous actors")
    assert (df["reference"].str.len() > 0).sum() == 803  # two references are empty strings in the source file
    assert df["id"].str.len().eq(16).all()
    head = load_alpaca_eval(ALPACA_EVAL, limit=5)
    assert len(head) == 5 and head["id"].tolist() == df["id"][:5].tolist()


def test_load_alpaca_eval_rejects_bad_records(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"instruction": "Q1", "output": "A1", "generator": "x"},
                                {"instruction": "Q2", "output": "A2"}]))
    df = load_alpaca_eval(good, limit=1)
    assert df.to_dict("records") == [{"id": heldout._text_id("Q1"), "instruction": "Q1", "reference": "A1"}]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "Q1"}]))
    with pytest.raises(ValueError, match="record 0"):
        load_alpaca_eval(bad, limit=None)
    not_list = tmp_path / "dict.json"
    not_list.write_text(json.dumps({"instruction": "Q1", "output": "A1"}))
    with pytest.raises(ValueError):
        load_alpaca_eval(not_list, limit=None)


def test_heldout_loss_goes_through_the_engine(tiny_lm):
    model, tok = tiny_lm
    prompts = ["What are the three primary colors?", "三原色是什么？", "Say hi."]
    refs = ["Red, blue, and yellow.", "红色、蓝色和黄色。", "Hi!"]
    out = heldout_loss(model, tok, prompts, refs, batch_size=2)
    assert list(out.columns) == ["mean_loss", "n_answer_tokens"]
    pairs = []
    for p, r in zip(prompts, refs):
        pa = chat.prefix_answer_pairs(tok, [{"role": "user", "content": p}, {"role": "assistant", "content": r}])[0]
        assert tok.decode(pa.answer_ids) == r + "<|im_end|>\n"
        pairs.append((pa.prefix_ids, pa.answer_ids))
    ref = answer_losses(model, tok, pairs, batch_size=1)
    np.testing.assert_allclose(out["mean_loss"], ref.mean_loss, atol=1e-5)
    assert out["n_answer_tokens"].tolist() == ref.n_answer_tokens.tolist()
    with pytest.raises(ValueError):
        heldout_loss(model, tok, prompts, refs[:2])


def test_summary_is_token_weighted():
    df = pd.DataFrame({"mean_loss": [1.0, 2.0, np.nan], "n_answer_tokens": [1, 3, 0]})
    s = summarise_heldout(df)
    assert s["mean_loss"] == pytest.approx(7 / 4)
    assert s["perplexity"] == pytest.approx(math.exp(7 / 4))
    assert s["n_examples"] == 2 and s["n_tokens"] == 4
    empty = summarise_heldout(df.iloc[2:])
    assert math.isnan(empty["mean_loss"]) and empty["n_examples"] == 0


@pytest.mark.integration
def test_smollm2_heldout_loss_on_alpaca_eval(smollm2):
    model, tok = smollm2
    df = load_alpaca_eval(ALPACA_EVAL, limit=4)
    out = heldout_loss(model, tok, df["instruction"].tolist(), df["reference"].tolist(), batch_size=4,
                       max_length=256)
    s = summarise_heldout(out)
    assert s["n_examples"] == 4
    assert 0.3 < s["mean_loss"] < 5.0  # far below uniform (ln 49152 = 10.8)
    # a mismatched reference is less likely than the right one
    shuffled = heldout_loss(model, tok, df["instruction"].tolist(), df["reference"].tolist()[::-1],
                            batch_size=4, max_length=256)
    assert summarise_heldout(shuffled)["mean_loss"] > s["mean_loss"]
