"""Cherry LLM's pre-experienced subset: k-means clusters, the middle-perplexity band, even spacing."""

import logging

import numpy as np
import pandas as pd
import pytest

from instsel_assets.registry import SCORERS, SELECTORS
from instsel_assets.scoring.loss_engine import answer_losses
from instsel_assets.selection.cherry_pre_experience import (INSTRUCTION_LOSS_COLUMNS, instruction_loss_scores,
                                                            pick_in_cluster, pre_experience_indices,
                                                            select_cherry_pre_experience)


def blobs(sizes, seed=0, dim=6):
    """Well-separated clusters of the given sizes, rows shuffled; returns (embeddings, cluster of each row)."""
    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(len(sizes)), sizes)
    centers = 10.0 * np.eye(len(sizes), dim)
    x = centers[label] + 0.1 * rng.standard_normal((len(label), dim))
    order = rng.permutation(len(label))
    return x[order].astype(np.float32), label[order]


def groups(picks, label):
    """Split the picks into runs of one cluster each; fails when a cluster shows up in two runs."""
    runs = []
    for p in picks:
        if runs and label[runs[-1][0]] == label[p]:
            runs[-1].append(p)
        else:
            runs.append([p])
    clusters = [label[r[0]] for r in runs]
    assert len(clusters) == len(set(clusters)), "picks are not grouped cluster by cluster"
    return {int(label[r[0]]): r for r in runs}


def test_evenly_spaced_in_row_order_without_losses():
    x, label = blobs([30, 25, 7])
    picks = pre_experience_indices(x, n_clusters=3, per_cluster=10)
    by_cluster = groups(picks, label)
    members = {c: np.flatnonzero(label == c) for c in range(3)}
    assert by_cluster[0] == members[0][::3][:10].tolist()  # 30 // 10 = every 3rd row
    assert by_cluster[1] == members[1][::2][:10].tolist()  # 25 // 10 = every 2nd row
    assert by_cluster[2] == members[2].tolist()  # fewer than 10 rows: all of them
    assert len(picks) == 27


def test_middle_band_of_the_instruction_loss():
    members = np.arange(12)
    loss = np.array([7.0, 1, 12, 4, 9, 5, 2, 11, 6, 3, 8, 10])
    # percentiles of 1..12: 25th = 3.75, 75th = 9.25 -> losses 4..9 are kept: rows 0, 3, 4, 5, 8, 10
    # 6 rows, 3 wanted: every 2nd -> rows 0, 4, 8
    assert pick_in_cluster(members, 3, loss).tolist() == [0, 4, 8]
    # fewer middle rows than wanted: all of them
    assert pick_in_cluster(members, 7, loss).tolist() == [0, 3, 4, 5, 8, 10]
    # a cluster of exactly M rows still goes through the filter (as in the reference code)
    assert pick_in_cluster(members, 12, loss).tolist() == [0, 3, 4, 5, 8, 10]
    # a cluster smaller than M: all rows, no filter
    assert pick_in_cluster(members, 13, loss).tolist() == members.tolist()
    # other bands
    assert pick_in_cluster(members, 2, loss, 0, 100).tolist() == [0, 6]
    assert pick_in_cluster(members, 2, loss, 50, 50).tolist() == []  # median 6.5 is no row's loss


def test_losses_filter_each_cluster_on_its_own_percentiles():
    x, label = blobs([20, 20])
    rng = np.random.default_rng(3)
    loss = np.where(label == 0, 100.0, 0.0) + rng.uniform(0, 1, len(label))  # cluster 0 is much harder
    picks = pre_experience_indices(x, n_clusters=2, per_cluster=4, instruction_loss=loss)
    by_cluster = groups(picks, label)
    for c in (0, 1):
        members = np.flatnonzero(label == c)
        lo, hi = np.percentile(loss[members], [25, 75])
        middle = members[(loss[members] >= lo) & (loss[members] <= hi)]
        assert by_cluster[c] == middle[:: len(middle) // 4][:4].tolist()
        assert all(lo <= loss[p] <= hi for p in by_cluster[c])
    # perplexity instead of loss: the same rows (a monotone map keeps the band)
    assert pre_experience_indices(x, n_clusters=2, per_cluster=4, instruction_loss=np.exp(loss)) == picks


def test_n_clusters_clamped_to_distinct_rows(caplog):
    x = np.repeat(np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]], dtype=np.float32), 4, axis=0)
    label = np.repeat([0, 1, 2], 4)
    with caplog.at_level(logging.WARNING):
        picks = pre_experience_indices(x, n_clusters=10, per_cluster=2)
    assert "3 distinct" in caplog.text
    by_cluster = groups(picks, label)
    assert by_cluster == {0: [0, 2], 1: [4, 6], 2: [8, 10]}
    assert pre_experience_indices(np.ones((5, 3)), n_clusters=4, per_cluster=2) == [0, 2]


def test_deterministic_and_seeded_kmeans():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((200, 4)).astype(np.float32)  # no real clusters: k-means depends on the seed
    a = pre_experience_indices(x, n_clusters=8, per_cluster=3, seed=1)
    assert a == pre_experience_indices(x, n_clusters=8, per_cluster=3, seed=1)
    assert len(set(a)) == len(a) == 24
    assert any(pre_experience_indices(x, n_clusters=8, per_cluster=3, seed=s) != a for s in range(2, 6))


@pytest.mark.parametrize("kwargs, name", [
    (dict(n_clusters=0), "n_clusters"),
    (dict(per_cluster=-1), "per_cluster"),
    (dict(per_cluster=2.5), "per_cluster"),
    (dict(n_init=0), "n_init"),
    (dict(low_percentile=-5), "low_percentile"),
    (dict(high_percentile=120), "high_percentile"),
    (dict(low_percentile=80, high_percentile=20), "low_percentile"),
])
def test_bad_parameters_name_the_parameter(kwargs, name):
    x, _ = blobs([5, 5])
    with pytest.raises(ValueError, match=name):
        pre_experience_indices(x, **kwargs)
    frame = pd.DataFrame({"id": [], "embedding": []})
    with pytest.raises(ValueError, match=name):  # also on an empty pool
        select_cherry_pre_experience(frame, 0, **kwargs)


def test_bad_embeddings_and_losses_name_the_row():
    x, _ = blobs([5, 5])
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        pre_experience_indices(x, n_clusters=2)
    x, _ = blobs([5, 5])
    loss = np.ones(10)
    loss[7] = np.inf
    with pytest.raises(ValueError, match="row 7"):
        pre_experience_indices(x, n_clusters=2, instruction_loss=loss)
    with pytest.raises(ValueError, match="9 values"):
        pre_experience_indices(x, n_clusters=2, instruction_loss=np.ones(9))
    assert pre_experience_indices(np.zeros((0, 4))) == []


def frame_of(x):
    return pd.DataFrame({"id": [f"p{i:03d}" for i in range(len(x))], "embedding": list(x)})


def test_selector_ids_cluster_by_cluster_and_budget_ignored():
    x, _ = blobs([30, 25, 7])
    frame = frame_of(x)
    ids = select_cherry_pre_experience(frame, 5, n_clusters=3, per_cluster=10)
    assert ids == [f"p{i:03d}" for i in pre_experience_indices(x, n_clusters=3, per_cluster=10)]
    assert select_cherry_pre_experience(frame, 500, n_clusters=3, per_cluster=10) == ids
    assert len(ids) == 27


def test_selector_uses_the_named_loss_column():
    x, _ = blobs([20, 20])
    frame = frame_of(x)
    frame["instruction_loss"] = np.random.default_rng(2).uniform(1, 5, len(frame))
    with_loss = select_cherry_pre_experience(frame, 0, n_clusters=2, per_cluster=4, loss_column="instruction_loss")
    expected = pre_experience_indices(x, n_clusters=2, per_cluster=4,
                                      instruction_loss=frame["instruction_loss"].to_numpy())
    assert with_loss == [f"p{i:03d}" for i in expected]
    assert with_loss != select_cherry_pre_experience(frame, 0, n_clusters=2, per_cluster=4)


def test_selector_bad_rows_name_the_id_and_field():
    x, _ = blobs([5, 5])
    frame = frame_of(x)
    frame["instruction_loss"] = 1.0
    frame.at[4, "instruction_loss"] = np.nan
    with pytest.raises(ValueError, match=r"'instruction_loss'.*p004"):
        select_cherry_pre_experience(frame, 0, n_clusters=2, loss_column="instruction_loss")
    with pytest.raises(ValueError, match="needs column"):
        select_cherry_pre_experience(frame, 0, n_clusters=2, loss_column="ppl")
    frame.at[6, "embedding"] = None
    with pytest.raises(ValueError, match=r"'embedding'.*p006"):
        select_cherry_pre_experience(frame, 0, n_clusters=2)
    with pytest.raises(ValueError, match="budget"):
        select_cherry_pre_experience(frame_of(x), -1, n_clusters=2)
    assert select_cherry_pre_experience(frame_of(x).iloc[:0], 10) == []


def test_registered():
    info = SELECTORS["cherry_pre_experience"]
    assert info.fn is select_cherry_pre_experience and info.family == "trainable-llm"
    assert info.columns == ("id", "embedding")
    scorer = SCORERS["cherry_instruction_loss"]
    assert scorer.fn is instruction_loss_scores and scorer.family == "trainable-llm"
    assert scorer.columns == INSTRUCTION_LOSS_COLUMNS


def test_instruction_loss_by_hand(tiny_lm):
    model, tok = tiny_lm
    pool = pd.DataFrame({
        "id": ["a", "b", "c", "d"],
        "conversations": [
            [{"role": "user", "content": "Give three tips for staying healthy."},
             {"role": "assistant", "content": "Eat well."}],
            np.array([{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "What are the three primary colors?"},
                      {"role": "assistant", "content": "Red, blue, yellow."},
                      {"role": "user", "content": "And in Chinese?"}], dtype=object),
            [{"role": "assistant", "content": "No question here."}],
            None,
        ],
        "instruction": ["", "", "", "Translate 'good morning' into French."],
        "input": ["", "", "", "Bonjour"],
    })
    out = instruction_loss_scores(pool, model, tok, batch_size=2)
    assert list(out.columns) == ["id", *INSTRUCTION_LOSS_COLUMNS] and out["id"].tolist() == ["a", "b", "c", "d"]
    texts = ["Give three tips for staying healthy.",
             "What are the three primary colors?\nAnd in Chinese?",  # every user turn, no system prompt
             None,
             "Translate 'good morning' into French.\nBonjour"]  # flat row: instruction and input
    for i, text in enumerate(texts):
        if text is None:
            continue
        ids = tok(text, add_special_tokens=False)["input_ids"]
        res = answer_losses(model, tok, [([], ids)], batch_size=1)  # the tiny tokenizer has no BOS
        assert out["instruction_loss"][i] == pytest.approx(res.mean_loss[0], abs=1e-5)
        assert out["n_instruction_tokens"][i] == len(ids) - 1  # the first token has no prediction
    assert np.isnan(out["instruction_loss"][2]) and out["n_instruction_tokens"][2] == 0
    assert out.attrs["n_unscorable"] == 1 and out.attrs["n_truncated"] == 0

    # with a BOS token every instruction token is scored, after the BOS
    tok.bos_token = "<|im_start|>"
    with_bos = instruction_loss_scores(pool.iloc[:1], model, tok)
    ids = tok(texts[0], add_special_tokens=False)["input_ids"]
    res = answer_losses(model, tok, [([tok.bos_token_id], ids)], batch_size=1)
    assert with_bos["n_instruction_tokens"][0] == len(ids)
    assert with_bos["instruction_loss"][0] == pytest.approx(res.mean_loss[0], abs=1e-5)


def test_instruction_loss_truncation_counted_and_passthrough(tiny_lm, monkeypatch):
    from instsel_assets.selection import cherry_pre_experience as module

    model, tok = tiny_lm
    pool = pd.DataFrame({"id": ["long", "short"], "conversations": [
        [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 6}],
        [{"role": "user", "content": "Hi there"}],
    ]})
    calls = []
    real = module.answer_losses

    def spy(model, tok, pairs, **kw):
        calls.append((len(pairs), kw))
        return real(model, tok, pairs, **kw)

    monkeypatch.setattr(module, "answer_losses", spy)
    seen = []
    out = instruction_loss_scores(pool, model, tok, batch_size=1, max_length=16, workers=1,
                                  progress=lambda d, t: seen.append(d))
    assert out.attrs["n_truncated"] == 1
    assert out["n_instruction_tokens"][0] == 15  # 16 tokens kept, the first one is not predicted
    assert len(calls) == 1 and calls[0][0] == 2  # one batched engine call for the whole pool
    assert calls[0][1]["batch_size"] == 1 and calls[0][1]["max_length"] == 16
    assert calls[0][1]["workers"] == 1 and "cache" in calls[0][1]
    assert seen[-1] == 2
    empty = instruction_loss_scores(pool.iloc[:0], model, tok)
    assert len(empty) == 0 and empty.attrs["n_unscorable"] == 0
