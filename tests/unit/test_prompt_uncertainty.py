"""Prompt uncertainty (Active Instruction Tuning): word dropping, the per-row rule against the engine, one
engine call, input kept intact, seeding, task aggregation, bad input; behaviour with the packaged SmolLM2."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.models import chat
from instsel_assets.scoring import prompt_uncertainty as pu_module
from instsel_assets.scoring.ifd import first_turn_pairs
from instsel_assets.scoring.loss_engine import answer_losses
from instsel_assets.scoring.prompt_uncertainty import (
    PROMPT_UNCERTAINTY_COLUMNS,
    drop_words,
    prompt_uncertainty_scores,
    row_rng,
    split_instruction,
    split_words,
    task_uncertainty,
)


def conv(user, answer):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def make_pool():
    return pd.DataFrame({
        "id": ["a", "b", "c", "d", "e"],
        "conversations": [
            conv("Give three tips for staying healthy.", "Eat a balanced diet, exercise and sleep well."),
            conv("Summarise the following paragraph in one sentence.\n\nThe quick brown fox jumps over the dog.",
                 "A fox jumps over a dog."),
            conv("三原色是什么？", "三原色是红色、蓝色和黄色。"),
            conv("Write a short poem about the sea.", "The waves roll in, the gulls cry out."),
            conv("Translate", "Bonjour."),
        ],
        "input": ["", "The quick brown fox jumps over the dog.", "", "", ""],
        "category": ["qa", "summary", "qa", "poem", ""],
    })


# --- word dropping ------------------------------------------------------------------------------------

def test_split_words_whitespace_runs_and_cjk_characters():
    assert split_words("Give  three\ntips.") == [("", "Give"), ("  ", "three"), ("\n", "tips.")]
    assert [w for _, w in split_words("用Python写代码。")] == ["用", "Python", "写", "代", "码", "。"]
    assert split_words("   ") == []


def test_drop_words_rate_order_and_whitespace():
    text = " ".join(f"w{i}" for i in range(50))
    words = text.split()
    rng = np.random.default_rng(1)
    kept_counts = []
    for _ in range(200):
        out = drop_words(text, 0.2, rng)
        kept = out.split()
        it = iter(words)
        assert all(w in it for w in kept)  # a subsequence of the original words, in order
        assert out == " ".join(kept)  # single spaces stay single spaces
        kept_counts.append(len(kept))
    assert np.mean(kept_counts) / len(words) == pytest.approx(0.8, abs=0.02)
    # the whitespace before a kept word is its own: newlines and double spaces survive
    assert drop_words("a\n\nb  c", 1e-9, np.random.default_rng(0)) == "a\n\nb  c"


def test_drop_words_keeps_one_word_when_all_would_go():
    rng = np.random.default_rng(0)
    outs = {drop_words("alpha beta gamma", 0.999999, rng) for _ in range(60)}
    assert outs == {"alpha", "beta", "gamma"}  # exactly one word survives, each one in turn
    assert drop_words("alone", 0.999999, rng) == "alone"
    assert drop_words("", 0.5, rng) == ""


def test_row_rng_depends_on_id_and_seed_only():
    a1 = row_rng("row-1", 0).random(4)
    assert np.array_equal(a1, row_rng("row-1", 0).random(4))
    assert not np.array_equal(a1, row_rng("row-2", 0).random(4))
    assert not np.array_equal(a1, row_rng("row-1", 1).random(4))


def test_split_instruction_only_for_a_trailing_input():
    assert split_instruction("Summarise this.\n\nSome text.", "Some text.") == ("Summarise this.", "\n\nSome text.")
    assert split_instruction("Summarise this.", "") is None
    assert split_instruction("Some text.\n\nSummarise this.", "Some text.") is None


# --- the scorer ---------------------------------------------------------------------------------------

def expected_row(model, tok, conversation, row_id, k, drop_rate, seed, input_text=""):
    """The rule written out: original pair as IFD's, k perturbed prompts, one engine pass per pair."""
    prefix, answer = first_turn_pairs(tok, conversation)[0]
    rng = row_rng(row_id, seed)
    user = conversation[0]["content"]
    split = split_instruction(user, input_text)
    instruction, suffix = split if split else (user, "")
    pairs = [(prefix, answer)]
    for _ in range(k):
        perturbed = [dict(conversation[0], content=drop_words(instruction, drop_rate, rng) + suffix),
                     conversation[1]]
        q = chat.prefix_answer_pairs(tok, perturbed, with_prefix=True)[0]
        assert q.answer_ids == answer
        pairs.append((q.prefix_ids, q.answer_ids))
    losses = np.array([answer_losses(model, tok, [p], batch_size=1).mean_loss[0] for p in pairs])
    p = np.exp(-losses)
    return float(np.mean(np.abs(p[1:] - p[0]))), float(p[0])


def test_rule_against_engine_passes(tiny_lm):
    model, tok = tiny_lm
    pool = make_pool()
    out = prompt_uncertainty_scores(pool, model, tok, k=3, drop_rate=0.3, seed=5, batch_size=3)
    assert list(out.columns) == ["id", *PROMPT_UNCERTAINTY_COLUMNS]
    assert out["id"].tolist() == pool["id"].tolist()
    for i, row in pool.iterrows():
        u, p0 = expected_row(model, tok, row["conversations"], row["id"], 3, 0.3, 5, row["input"])
        assert out["prompt_uncertainty"][i] == pytest.approx(u, rel=1e-4, abs=1e-12)
        assert out["answer_likelihood"][i] == pytest.approx(p0, rel=1e-4)
    assert (out["n_perturbations"] == 3).all()
    assert (out["prompt_uncertainty"][:4] > 0).all()  # multi-word instructions do move the likelihood
    assert out["prompt_uncertainty"][4] == 0.0  # a one-word instruction has no other perturbation
    assert out.attrs["n_one_word_instruction"] == 1
    assert out.attrs["n_input_kept"] == 1 and out.attrs["n_input_not_in_prompt"] == 0
    assert out.attrs["n_unscorable"] == 0


def test_one_engine_call_deduplicated_pairs_and_passthrough(tiny_lm, monkeypatch):
    model, tok = tiny_lm
    calls = []
    real = pu_module.answer_losses

    def spy(model, tok, pairs, **kw):
        calls.append((list(pairs), kw))
        return real(model, tok, pairs, **{k: v for k, v in kw.items() if k != "cache"})

    monkeypatch.setattr(pu_module, "answer_losses", spy)
    pool = make_pool()
    marker = object()
    seen = []
    out = prompt_uncertainty_scores(pool, model, tok, k=10, batch_size=4, max_length=256, cache=marker,
                                    progress=lambda d, t: seen.append((d, t)))
    assert len(calls) == 1
    pairs, kw = calls[0]
    assert kw["cache"] is marker and kw["batch_size"] == 4 and kw["max_length"] == 256
    keys = [(tuple(p), tuple(a)) for p, a in pairs]
    assert len(set(keys)) == len(keys)  # every distinct pair once
    assert out.attrs["n_pairs_requested"] == 5 * 11
    assert len(pool) < out.attrs["n_pairs_scored"] == len(pairs) < 5 * 11  # "Translate" alone is 1 pair
    assert seen[-1] == (len(pairs), len(pairs))
    # the original pairs are IFD's conditioned pairs (a shared cache serves both scorers)
    for c in pool["conversations"]:
        assert first_turn_pairs(tok, c)[0] in pairs


def test_input_text_is_never_perturbed(tiny_lm, monkeypatch):
    model, tok = tiny_lm
    calls = []
    real = pu_module.answer_losses
    monkeypatch.setattr(pu_module, "answer_losses",
                        lambda m, t, pairs, **kw: calls.append(list(pairs)) or real(m, t, pairs, **kw))
    pool = make_pool().iloc[[1]].reset_index(drop=True)
    inp = pool["input"][0]
    prompt_uncertainty_scores(pool, model, tok, k=10, drop_rate=0.5)
    prefixes = [tok.decode(p) for p, _ in calls[0]]
    assert len(prefixes) > 2
    assert all(f"\n\n{inp}<|im_end|>" in text for text in prefixes)
    assert len({text.split("\n\n")[0] for text in prefixes}) == len(prefixes)  # the instruction part varies
    # without the input column the whole user turn is perturbed
    calls.clear()
    prompt_uncertainty_scores(pool.drop(columns=["input"]), model, tok, k=10, drop_rate=0.5)
    assert not all(f"\n\n{inp}<|im_end|>" in tok.decode(p) for p, _ in calls[0])


def test_rows_do_not_depend_on_pool_order_or_batch_size_and_seed_matters(tiny_lm):
    model, tok = tiny_lm
    pool = make_pool()
    cols = ["prompt_uncertainty", "answer_likelihood"]
    base = prompt_uncertainty_scores(pool, model, tok, k=3, batch_size=8).set_index("id")
    shuffled = pool.iloc[[3, 0, 4, 2, 1]].reset_index(drop=True)
    other = prompt_uncertainty_scores(shuffled, model, tok, k=3, batch_size=1).set_index("id")
    np.testing.assert_allclose(other.loc[base.index, cols].to_numpy(float), base[cols].to_numpy(float),
                               rtol=1e-4, atol=1e-12)
    reseeded = prompt_uncertainty_scores(pool, model, tok, k=3, seed=1).set_index("id")
    assert not np.allclose(reseeded["prompt_uncertainty"][:4], base["prompt_uncertainty"][:4])
    np.testing.assert_allclose(reseeded["answer_likelihood"], base["answer_likelihood"], rtol=1e-5)


def test_unscorable_rows_are_nan_and_counted(tiny_lm):
    model, tok = tiny_lm
    pool = pd.DataFrame({"id": ["no-answer", "ok", "empty", "no-user", "none"], "conversations": [
        [{"role": "user", "content": "Hello there?"}],
        conv("Say hello to me.", "Hello there."),
        [],
        [{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Hi."}],
        None,
    ]})
    out = prompt_uncertainty_scores(pool, model, tok, k=2)
    assert out["prompt_uncertainty"].isna().tolist() == [True, False, True, True, True]
    assert out["answer_likelihood"].isna().tolist() == [True, False, True, True, True]
    assert out["n_perturbations"].tolist() == [0, 2, 0, 0, 0]
    assert out.attrs["n_unscorable"] == 4
    empty = prompt_uncertainty_scores(pool.iloc[:0], model, tok)
    assert list(empty.columns) == ["id", *PROMPT_UNCERTAINTY_COLUMNS] and len(empty) == 0


def test_bad_parameters_and_rows_raise_naming_them(tiny_lm):
    model, tok = tiny_lm
    pool = make_pool()
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"^k "):
            prompt_uncertainty_scores(pool, model, tok, k=k)
    for rate in (0.0, 1.0, -0.2, math.nan, "0.2"):
        with pytest.raises(ValueError, match="drop_rate"):
            prompt_uncertainty_scores(pool, model, tok, drop_rate=rate)
    with pytest.raises(ValueError, match="seed"):
        prompt_uncertainty_scores(pool, model, tok, seed=0.5)
    broken = pd.DataFrame({"id": ["fine", "broken"], "conversations": [
        conv("Hi", "Hello."), [{"content": "no role"}, {"role": "assistant", "content": "x"}]]})
    with pytest.raises(ValueError, match=r"row 'broken'.*'conversations'"):
        prompt_uncertainty_scores(broken, model, tok)
    with pytest.raises(ValueError, match="conversations"):
        prompt_uncertainty_scores(pd.DataFrame({"id": ["a"]}), model, tok)


# --- task level ---------------------------------------------------------------------------------------

def test_task_column_and_table():
    pool = pd.DataFrame({"id": list("abcdefg"),
                         "category": ["qa", "qa", "qa", "poem", "", "", "empty-task"]})
    scores = pd.DataFrame({"id": list("abcdefg"),
                           "prompt_uncertainty": [0.1, 0.3, np.nan, 0.05, 0.7, np.nan, np.nan]})
    row_level = pu_module._task_means(scores["prompt_uncertainty"].to_numpy(), pool["category"].tolist())
    np.testing.assert_allclose(row_level, [0.2, 0.2, 0.2, 0.05, 0.7, np.nan, np.nan])
    table = task_uncertainty(scores, pool)
    assert table.columns.tolist() == ["task", "n_rows", "n_scored", "prompt_uncertainty"]
    assert table["task"].tolist() == ["qa", "poem", "empty-task"]
    assert table["n_rows"].tolist() == [3, 1, 1] and table["n_scored"].tolist() == [2, 1, 0]
    np.testing.assert_allclose(table["prompt_uncertainty"], [0.2, 0.05, np.nan])
    assert table.attrs["n_rows_without_task"] == 2
    other = task_uncertainty(scores.rename(columns={}), pool.rename(columns={"category": "source"}),
                             task_column="source")
    assert other["task"].tolist() == table["task"].tolist()
    with pytest.raises(ValueError, match="'zz' is not in the pool"):
        task_uncertainty(pd.DataFrame({"id": ["zz"], "prompt_uncertainty": [0.1]}), pool)
    with pytest.raises(ValueError, match="category"):
        task_uncertainty(scores, pool.drop(columns=["category"]))


def test_scorer_writes_task_means(tiny_lm):
    model, tok = tiny_lm
    pool = make_pool()
    out = prompt_uncertainty_scores(pool, model, tok, k=3)
    u = out["prompt_uncertainty"].to_numpy()
    t = out["task_prompt_uncertainty"].to_numpy()
    assert t[0] == pytest.approx((u[0] + u[2]) / 2) and t[2] == t[0]  # both "qa"
    assert t[1] == u[1] and t[3] == u[3] and t[4] == u[4]
    table = task_uncertainty(out, pool).set_index("task")
    assert table.loc["qa", "prompt_uncertainty"] == pytest.approx(t[0])
    # without a task column every row is its own task
    alone = prompt_uncertainty_scores(pool.drop(columns=["category"]), model, tok, k=3)
    np.testing.assert_allclose(alone["task_prompt_uncertainty"], alone["prompt_uncertainty"], rtol=1e-6)


def test_registered_as_trainable_llm_scorer():
    info = registry.SCORERS["prompt_uncertainty"]
    assert info.family == "trainable-llm"
    assert info.columns == PROMPT_UNCERTAINTY_COLUMNS
    assert "Active Instruction Tuning" in info.paper
    assert info.fn is prompt_uncertainty_scores


@pytest.mark.integration
def test_smollm2_answer_copied_from_the_instruction_is_prompt_sensitive(smollm2):
    model, tok = smollm2
    answer = "The mitochondria is the powerhouse of the cell, producing most of its chemical energy."
    pool = pd.DataFrame({"id": ["copy", "unrelated", "one-word"], "conversations": [
        conv(f"Repeat this sentence exactly: {answer}", answer),
        conv("Name a famous painting.", answer),
        conv("Mitochondria?", answer),
    ]})
    out = prompt_uncertainty_scores(pool, model, tok, batch_size=8)
    u = out.set_index("id")["prompt_uncertainty"]
    p = out.set_index("id")["answer_likelihood"]
    assert ((out["answer_likelihood"] > 0) & (out["answer_likelihood"] < 1)).all()
    assert ((out["prompt_uncertainty"] >= 0) & (out["prompt_uncertainty"] < 1)).all()
    assert p["copy"] > p["unrelated"]  # the instruction that holds the answer makes it likely...
    assert u["copy"] > 10 * u["unrelated"]  # ...and dropping its words moves that likelihood most
    assert u["one-word"] == 0.0
