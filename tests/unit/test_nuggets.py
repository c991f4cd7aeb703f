"""Nuggets scorer: the golden-score rule against hand-computed engine losses, anchors, demonstrations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.models import chat
from instsel_assets.scoring import nuggets as nuggets_module
from instsel_assets.scoring.loss_engine import answer_losses
from instsel_assets.scoring.nuggets import (
    NUGGETS_COLUMNS,
    cut_demonstration,
    draw_anchors,
    first_turn_task,
    nuggets_scores,
    one_shot_conversation,
)

ALPACA_SAMPLE = Path(__file__).resolve().parents[2] / "data" / "pools" / "alpaca" / "alpaca_sample.json"

TEXTS = [
    ("Give three tips for staying healthy.", "Eat a balanced diet, exercise and sleep well."),
    ("What are the three primary colors?", "Red, blue, and yellow."),
    ("三原色是什么？", "三原色是红色、蓝色和黄色。"),
    ("Write a short poem about the sea.", "The waves roll in, the gulls cry out."),
    ("Translate 'good morning' into French.", "Bonjour."),
    ("List five animals that live in the ocean.", "Dolphin, shark, octopus, whale, and sea turtle."),
    ("Describe the structure of an atom.", "A nucleus and electrons that orbit it."),
    ("Explain why the sky is blue.", "Sunlight is scattered by the air, blue light the most."),
]


def conv(user, answer):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def make_pool(n=4, prefix="p"):
    return pd.DataFrame({
        "id": [f"{prefix}{i}" for i in range(n)],
        "conversations": [conv(*TEXTS[i]) for i in range(n)],
    })


def engine_loss(model, tok, conversation):
    """The engine's loss of the conversation's last assistant turn, computed alone."""
    pair = chat.prefix_answer_pairs(tok, conversation)[-1]
    return float(answer_losses(model, tok, [(pair.prefix_ids, pair.answer_ids)], batch_size=1).mean_loss[0])


def hand_scores(model, tok, candidates, anchors):
    """(golden, n_used, mean_delta) per candidate, from one engine call per pair."""
    zero = {aid: engine_loss(model, tok, a) for aid, a in anchors.items()}
    out = {}
    for cid, (user, answer) in candidates.items():
        deltas = [engine_loss(model, tok, [{"role": "user", "content": user},
                                           {"role": "assistant", "content": answer}, *a]) - zero[aid]
                  for aid, a in anchors.items() if aid != cid]
        out[cid] = (sum(d < 0 for d in deltas) / len(deltas), len(deltas), float(np.mean(deltas)))
    return out


def test_golden_score_matches_hand_computation(tiny_lm):
    model, tok = tiny_lm
    pool = make_pool(4)
    out = nuggets_scores(pool, model, tok, n_anchors=None, max_demo_tokens=None, batch_size=3)
    assert list(out.columns) == ["id", *NUGGETS_COLUMNS]
    assert out["id"].tolist() == pool["id"].tolist()
    assert out.attrs["anchor_ids"] == pool["id"].tolist()  # every row is an anchor, in id order
    expected = hand_scores(model, tok, {r.id: TEXTS[i] for i, r in enumerate(pool.itertuples())},
                           dict(zip(pool["id"], pool["conversations"])))
    for row in out.itertuples():
        golden, n_used, delta = expected[row.id]
        assert row.golden_score == pytest.approx(golden)
        assert row.n_anchors_used == n_used == 3  # its own task is skipped
        assert row.mean_loss_delta == pytest.approx(delta, abs=1e-5)
    # the fixture's random model gives a spread of golden scores, so the comparison above means something
    assert out["golden_score"].nunique() > 1
    assert out.attrs["n_unscorable"] == 0 and out.attrs["n_without_anchors"] == 0
    assert out.attrs["n_pairs"] == 4 + 4 * 3


def test_all_pairs_in_one_engine_call_with_progress_and_cache(tiny_lm, monkeypatch):
    model, tok = tiny_lm
    calls = []
    real = nuggets_module.answer_losses

    def spy(model, tok, pairs, **kw):
        calls.append((len(pairs), kw["batch_size"], kw["max_length"], kw["cache"]))
        return real(model, tok, pairs, **{**kw, "cache": None})

    monkeypatch.setattr(nuggets_module, "answer_losses", spy)
    seen = []
    cache = object()
    nuggets_scores(make_pool(6), model, tok, n_anchors=2, batch_size=4, max_length=300, cache=cache,
                   progress=lambda d, t: seen.append((d, t)))
    # 2 zero-shot pairs + 6 candidates x 2 anchors - the 2 self-pairs of the anchor rows
    assert calls == [(2 + 6 * 2 - 2, 4, 300, cache)]
    assert seen[-1] == (12, 12)


def test_anchor_rows_skip_their_own_task(tiny_lm):
    model, tok = tiny_lm
    pool = make_pool(6)
    out = nuggets_scores(pool, model, tok, n_anchors=3, seed=1)
    anchors = out.attrs["anchor_ids"]
    assert len(anchors) == 3 and set(anchors) <= set(pool["id"])
    used = dict(zip(out["id"], out["n_anchors_used"]))
    assert all(used[i] == (2 if i in anchors else 3) for i in pool["id"])
    # the golden score of an anchor row is over the two other anchors
    anchor_convs = {i: c for i, c in zip(pool["id"], pool["conversations"]) if i in anchors}
    cid = anchors[0]
    golden, n_used, delta = hand_scores(model, tok, {cid: TEXTS[int(cid[1:])]}, anchor_convs)[cid]
    row = out.set_index("id").loc[cid]
    assert row["golden_score"] == pytest.approx(golden) and n_used == 2
    assert row["mean_loss_delta"] == pytest.approx(delta, abs=1e-5)


def test_explicit_anchors(tiny_lm):
    model, tok = tiny_lm
    pool = make_pool(3)
    test_set = pd.DataFrame({"id": ["t0", "t1", "p2"],  # "p2" is also a pool row: skipped for it
                             "conversations": [conv(*TEXTS[5]), conv(*TEXTS[6]), conv(*TEXTS[2])]})
    out = nuggets_scores(pool, model, tok, anchors=test_set)
    assert out.attrs["anchor_ids"] == ["p2", "t0", "t1"]
    assert out["n_anchors_used"].tolist() == [3, 3, 2]
    expected = hand_scores(model, tok, {f"p{i}": TEXTS[i] for i in range(3)},
                           dict(zip(test_set["id"], test_set["conversations"])))
    for row in out.itertuples():
        assert row.golden_score == pytest.approx(expected[row.id][0])
        assert row.mean_loss_delta == pytest.approx(expected[row.id][2], abs=1e-5)
    # a larger anchor set is subsampled to n_anchors with the seed
    big = pd.DataFrame({"id": [f"t{i}" for i in range(8)], "conversations": [conv(*t) for t in TEXTS]})
    sub = nuggets_scores(pool, model, tok, anchors=big, n_anchors=3, seed=4)
    assert len(sub.attrs["anchor_ids"]) == 3 and set(sub.attrs["anchor_ids"]) <= set(big["id"])
    assert (sub["n_anchors_used"] == 3).all()


def test_explicit_anchor_errors(tiny_lm):
    model, tok = tiny_lm
    pool = make_pool(2)
    with pytest.raises(ValueError, match=r"anchors needs column\(s\) \['conversations'\]"):
        nuggets_scores(pool, model, tok, anchors=pd.DataFrame({"id": ["a"]}))
    with pytest.raises(ValueError, match="anchors is empty"):
        nuggets_scores(pool, model, tok, anchors=pool.iloc[:0])
    with pytest.raises(ValueError, match="duplicate id"):
        nuggets_scores(pool, model, tok, anchors=pd.concat([pool, pool]))
    no_answer = pd.DataFrame({"id": ["q"], "conversations": [[{"role": "user", "content": "Hi?"}]]})
    with pytest.raises(ValueError, match="anchors row 'q': 'conversations'"):
        nuggets_scores(pool, model, tok, anchors=no_answer)


def test_seeded_anchor_draw_is_deterministic_and_order_free(tiny_lm):
    model, tok = tiny_lm
    pool = make_pool(8)
    a = nuggets_scores(pool, model, tok, n_anchors=3, seed=7)
    b = nuggets_scores(pool.iloc[::-1].reset_index(drop=True), model, tok, n_anchors=3, seed=7)
    assert a.attrs["anchor_ids"] == b.attrs["anchor_ids"]
    merged = a.merge(b, on="id", suffixes=("_a", "_b"))
    np.testing.assert_allclose(merged["golden_score_a"], merged["golden_score_b"])
    np.testing.assert_allclose(merged["mean_loss_delta_a"], merged["mean_loss_delta_b"], atol=1e-5)
    draws = {tuple(draw_anchors(pool, 3, seed)[0]) for seed in range(6)}
    assert len(draws) > 1  # the seed matters
    assert draw_anchors(pool, 3, 2)[0] == draw_anchors(pool, 3, 2)[0]
    assert draw_anchors(pool, 100, 0)[0] == sorted(pool["id"])  # fewer rows than asked: all of them


def test_rows_that_cannot_be_demonstrations(tiny_lm):
    model, tok = tiny_lm
    pool = pd.DataFrame({"id": ["none", "user_only", "ok1", "empty", "assistant_first", "ok2", "nan"],
                         "conversations": [None, [{"role": "user", "content": "Hello?"}], conv(*TEXTS[0]), [],
                                           [{"role": "assistant", "content": "Hi."}], conv(*TEXTS[1]),
                                           float("nan")]})
    out = nuggets_scores(pool, model, tok)
    assert out.attrs["anchor_ids"] == ["ok1", "ok2"]  # only rows with a user turn and an answer
    assert out["golden_score"].notna().tolist() == [False, False, True, False, False, True, False]
    assert out["n_anchors_used"].tolist() == [0, 0, 1, 0, 0, 1, 0]
    assert out.attrs["n_unscorable"] == 5 and out.attrs["n_without_anchors"] == 0
    # a single usable row is its own only anchor: nothing to compare against, counted
    single = nuggets_scores(pool.iloc[:3], model, tok)
    assert np.isnan(single["golden_score"]).all() and single.attrs["n_without_anchors"] == 1
    assert single.attrs["n_unscorable"] == 2 and single.attrs["n_pairs"] == 0
    empty = nuggets_scores(pool.iloc[:0], model, tok)
    assert list(empty.columns) == ["id", *NUGGETS_COLUMNS] and len(empty) == 0
    assert empty.attrs["anchor_ids"] == [] and empty.attrs["n_unscorable"] == 0


def test_bad_parameters_and_malformed_rows(tiny_lm):
    model, tok = tiny_lm
    pool = make_pool(3)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n_anchors"):
            nuggets_scores(pool, model, tok, n_anchors=bad)
    for bad in (1, 0, 64.0):
        with pytest.raises(ValueError, match="max_demo_tokens"):
            nuggets_scores(pool, model, tok, max_demo_tokens=bad)
    with pytest.raises(ValueError, match="seed"):
        nuggets_scores(pool, model, tok, seed="x")
    with pytest.raises(ValueError, match=r"pool needs column\(s\) \['conversations'\]"):
        nuggets_scores(pool[["id"]], model, tok)
    broken = pool.copy()
    broken.at[1, "conversations"] = [{"role": "user", "content": "Hi"}, {"from": "gpt", "value": "Hello"}]
    with pytest.raises(ValueError, match=r"row 'p1': 'conversations' turn 1"):
        nuggets_scores(broken, model, tok)
    broken.at[1, "conversations"] = "user: Hi"
    with pytest.raises(ValueError, match=r"row 'p1': 'conversations' must be a sequence"):
        nuggets_scores(broken, model, tok)


def test_demonstration_cut_rule(tiny_lm):
    _, tok = tiny_lm

    def n_tokens(text):
        return len(tok(text, add_special_tokens=False)["input_ids"])

    user, answer = TEXTS[0]
    n_user, n_answer = n_tokens(user), n_tokens(answer)
    assert cut_demonstration(tok, user, answer, None) == (user, answer, False)
    assert cut_demonstration(tok, user, answer, n_user + n_answer) == (user, answer, False)
    # a short instruction: the answer alone is cut, on the right, to what the instruction leaves
    budget = n_tokens("Hi") + 10
    u, a, cut = cut_demonstration(tok, "Hi", answer, budget)
    assert cut and u == "Hi" and answer.startswith(a) and a != answer
    assert n_tokens(a) == 10
    # an instruction longer than half the budget is cut so the answer keeps half: 13 + 19 tokens into 22
    assert (n_user, n_answer) == (13, 19)
    u, a, cut = cut_demonstration(tok, user, answer, 22)
    assert cut and user.startswith(u) and answer.startswith(a)
    assert (n_tokens(u), n_tokens(a)) == (11, 11)
    # a long instruction is cut too, and the answer keeps half of the budget
    long_user, long_answer = " ".join(t[0] for t in TEXTS), " ".join(t[1] for t in TEXTS)
    u, a, cut = cut_demonstration(tok, long_user, long_answer, 40)
    assert cut and long_user.startswith(u) and long_answer.startswith(a)
    assert n_tokens(a) == 20 and 0 < n_tokens(u) <= 20
    # a cut inside a multi-byte character never leaves a broken character behind
    zh = TEXTS[2][1] * 5
    u, a, cut = cut_demonstration(tok, "Hi", zh, n_tokens("Hi") + 7)
    assert cut and u == "Hi" and zh.startswith(a) and "\ufffd" not in a and 0 < n_tokens(a) <= 7


def test_demonstration_cut_without_offsets_decodes(tiny_lm):
    _, tok = tiny_lm

    class NoOffsets:
        """A tokenizer without character offsets, as slow tokenizers are."""

        def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
            if return_offsets_mapping:
                raise NotImplementedError("no offsets")
            return tok(text, add_special_tokens=add_special_tokens)

        def decode(self, ids, skip_special_tokens=False):
            return tok.decode(ids, skip_special_tokens=skip_special_tokens)

    long_answer = " ".join(t[1] for t in TEXTS)
    assert cut_demonstration(NoOffsets(), "Hi", long_answer, 30) == cut_demonstration(tok, "Hi", long_answer, 30)
    u, a, _ = cut_demonstration(NoOffsets(), "Hi", TEXTS[2][1] * 5, 9)
    assert "\ufffd" not in a and len(a) > 0 and (TEXTS[2][1] * 5).startswith(a)


def test_scorer_scores_the_cut_demonstration(tiny_lm):
    model, tok = tiny_lm
    long_answer = " ".join(t[1] for t in TEXTS)
    pool = pd.DataFrame({"id": ["long", "short"], "conversations": [conv("Tell me everything.", long_answer),
                                                                    conv(*TEXTS[1])]})
    anchors = make_pool(3, prefix="a").assign(conversations=[conv(*TEXTS[i]) for i in (4, 5, 6)])
    cut = nuggets_scores(pool, model, tok, anchors=anchors, max_demo_tokens=24)
    full = nuggets_scores(pool, model, tok, anchors=anchors, max_demo_tokens=None)
    assert cut.attrs["n_demo_truncated"] == 1 and full.attrs["n_demo_truncated"] == 0
    user, answer, _ = cut_demonstration(tok, "Tell me everything.", long_answer, 24)
    precut = nuggets_scores(pool.assign(conversations=[conv(user, answer), conv(*TEXTS[1])]), model, tok,
                            anchors=anchors, max_demo_tokens=None)
    np.testing.assert_allclose(cut["mean_loss_delta"], precut["mean_loss_delta"], atol=1e-5)
    assert cut["mean_loss_delta"][0] != pytest.approx(full["mean_loss_delta"][0], abs=1e-4)
    assert cut["mean_loss_delta"][1] == pytest.approx(full["mean_loss_delta"][1], abs=1e-5)


def test_first_exchange_is_the_demonstration_and_system_turns(tiny_lm):
    model, tok = tiny_lm
    pool = make_pool(3)
    multi = pool.assign(conversations=[
        np.array([{"role": "system", "content": "Be brief."}, *c, {"role": "user", "content": "And more?"},
                  {"role": "assistant", "content": "Drink water."}], dtype=object)
        for c in pool["conversations"]])
    anchors = make_pool(2, prefix="a").assign(conversations=[conv(*TEXTS[i]) for i in (4, 5)])
    a = nuggets_scores(pool, model, tok, anchors=anchors)
    b = nuggets_scores(multi, model, tok, anchors=anchors)
    np.testing.assert_allclose(a["mean_loss_delta"], b["mean_loss_delta"], atol=1e-5)
    # an anchor's system turns stay first; the demonstration comes right after them
    anchor = first_turn_task([{"role": "system", "content": "S"}, *conv("Q", "A")])
    assert [m["content"] for m in one_shot_conversation("dq", "da", anchor)] == ["S", "dq", "da", "Q", "A"]
    assert first_turn_task([{"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}]) is None


def test_registered_as_trainable_llm_scorer():
    info = registry.SCORERS["nuggets"]
    assert info.family == "trainable-llm"
    assert info.columns == NUGGETS_COLUMNS
    assert "Nuggets" in info.paper
    assert info.fn is nuggets_scores


@pytest.mark.integration
def test_smollm2_golden_scores_on_alpaca_rows(smollm2):
    model, tok = smollm2
    rows = json.loads(ALPACA_SAMPLE.read_text())[:6]
    convs = [conv(r["instruction"] + (f"\n\n{r['input']}" if r["input"] else ""), r["output"]) for r in rows]
    anchors = pd.DataFrame({"id": ["a0", "a1", "a2"], "conversations": convs[:3]})
    pool = pd.DataFrame({
        "id": ["copy_of_a0", "c3", "c4", "noise"],
        "conversations": [convs[0], convs[3], convs[4], conv("zq xv", "plk wot fnar qqz vvb")],
    })
    out = nuggets_scores(pool, model, tok, anchors=anchors, batch_size=4).set_index("id")
    assert (out["n_anchors_used"] == 3).all()
    assert out["golden_score"].between(0, 1).all() and np.isfinite(out["mean_loss_delta"]).all()
    # a demonstration that contains an anchor's answer helps that anchor a lot: more than noise helps
    assert out.loc["copy_of_a0", "golden_score"] >= 1 / 3
    assert out.loc["copy_of_a0", "mean_loss_delta"] < out.loc["noise", "mean_loss_delta"]
    assert out.loc["copy_of_a0", "mean_loss_delta"] < -0.1
