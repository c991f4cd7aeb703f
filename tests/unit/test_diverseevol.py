"""DiverseEvol scorer: growth schedule, k-center picks on each round's embeddings, fresh base per round,
embeddings from the trained model, determinism, ineligible rows, parameters; behaviour on SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.models.hidden_embeddings import hidden_state_embeddings
from instsel_assets.scoring import diverseevol as de
from instsel_assets.scoring.diverseevol import (
    DIVERSEEVOL_COLUMNS,
    diverseevol_ranks,
    expected_rounds,
    growth_schedule,
)
from instsel_assets.training.checkpoint import load_checkpoint
from instsel_assets.training.sft import SFTConfig

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

ALPACA = Path(__file__).resolve().parents[2] / "data" / "pools" / "alpaca" / "alpaca_sample.json"


def conv(user, answer):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


QA = [
    ("Give three tips for staying healthy.", "Eat a balanced diet, exercise regularly and sleep well."),
    ("What are the three primary colors?", "Red, blue, and yellow."),
    ("Describe the structure of an atom.", "A nucleus and electrons that orbit it."),
    ("Write a short poem about the sea.", "The waves roll in, the gulls cry out."),
    ("Translate 'good morning' into French.", "Bonjour."),
    ("Summarise: the quick brown fox jumps over the lazy dog.", "A fox jumps over a dog."),
    ("Explain why the sky is blue.", "Sunlight is scattered by the air, blue light the most."),
    ("List five animals that live in the ocean.", "Dolphin, shark, octopus, whale, and sea turtle."),
    ("def add(a, b): what does it return for 2 and 3?", "It returns 5."),
    ("三原色是什么？", "三原色是红色、蓝色和黄色。"),
    ("描述原子的结构。", "原子由原子核和围绕它运动的电子组成。"),
    ("写一首关于大海的短诗。", "海浪拍打着沙滩，海鸥在天空中飞翔。"),
]


def make_pool(n=12):
    return pd.DataFrame({"id": [f"r{i:02d}" for i in range(n)],
                         "conversations": [conv(q, a) for q, a in QA[:n]]})


def sft(**overrides):
    cfg = dict(max_steps=2, batch_size=2, learning_rate=5e-2, lora_dropout=0.0, log_every=1,
               precision="float32", max_length=256)
    cfg.update(overrides)
    return SFTConfig(**cfg)


def farthest_first(x, chosen, k):
    """Independent k-center greedy in float64: each pick maximises the distance to its nearest chosen row."""
    x = np.asarray(x, dtype=np.float64)
    chosen = list(chosen)
    picks = []
    for _ in range(k):
        d = np.sqrt(((x[:, None, :] - x[None, chosen, :]) ** 2).sum(-1)).min(axis=1)
        d[chosen] = -np.inf
        p = int(np.argmax(d))
        picks.append(p)
        chosen.append(p)
    return picks


def run(make, tok, tmp_path, *, pool=None, budget=10, initial_size=4, step_size=3, seed=0, **kw):
    seen = {}

    def hook(r, rows, x):
        seen[r] = (rows.copy(), x.copy())

    out = diverseevol_ranks(make_pool() if pool is None else pool, make, tok, budget=budget,
                            initial_size=initial_size, step_size=step_size, sft_config=kw.pop("sft_config", sft()),
                            out_dir=tmp_path, seed=seed, batch_size=4, max_length=256, on_embeddings=hook,
                            base_model_id="tiny-test", **kw)
    return out, seen


def test_growth_schedule():
    assert growth_schedule(10, 4, 3) == [4, 3, 3]
    assert growth_schedule(11, 4, 3) == [4, 3, 3, 1]
    assert growth_schedule(4, 4, 3) == [4]
    assert growth_schedule(3, 4, 3) == [3]  # fewer eligible rows than initial_size
    assert growth_schedule(0, 4, 3) == []
    assert growth_schedule(1100, 100, 100) == [100] * 11  # the paper's Dolly setting: 10 rounds of 100
    assert expected_rounds(1100, 100, 100) == 10 and expected_rounds(10, 4, 3) == 2 and expected_rounds(4, 4, 1) == 0


def test_rounds_ranks_kcenter_picks_and_fresh_base_per_round(fresh_tiny_lm, tmp_path, monkeypatch):
    make, tok = fresh_tiny_lm
    calls, trained = [], []
    real = de.finetune_lora

    def factory():
        model = make()
        calls.append(model)
        return model

    def spy(model, tokenizer, conversations_list, out_dir, config, **kw):
        assert not de._has_lora_layers(model)  # a pristine base, not last round's model
        trained.append(([c[0]["content"] for c in conversations_list], Path(out_dir), model))
        return real(model, tokenizer, conversations_list, out_dir, config, **kw)

    monkeypatch.setattr(de, "finetune_lora", spy)
    pool = make_pool()
    progress = []
    out, seen = run(factory, tok, tmp_path, pool=pool, progress=lambda d, t: progress.append((d, t)))

    assert list(out.columns) == ["id", *DIVERSEEVOL_COLUMNS]
    assert out["id"].tolist() == pool["id"].tolist()
    assert out["diverseevol_rank"].dtype == np.int64 and out["diverseevol_round"].dtype == np.int64
    rank, rnd = out["diverseevol_rank"].to_numpy(), out["diverseevol_round"].to_numpy()
    assert sorted(rank[rank >= 0].tolist()) == list(range(10))
    assert (rank == -1).sum() == 2 and (rnd[rank == -1] == -1).all()
    assert [int((rnd == r).sum()) for r in range(3)] == [4, 3, 3]
    by_rank = [int(np.flatnonzero(rank == k)[0]) for k in range(10)]
    assert rnd[by_rank].tolist() == [0] * 4 + [1] * 3 + [2] * 3  # ranks follow the rounds

    # round 0: the seeded random draw, in draw order
    assert by_rank[:4] == np.random.default_rng(0).choice(np.arange(12), size=4, replace=False).tolist()

    # rounds 1, 2: farthest-first on that round's embeddings, starting from every row chosen before
    assert sorted(seen) == [1, 2]
    for r in (1, 2):
        rows, x = seen[r]
        assert rows.tolist() == list(range(12)) and x.shape == (12, 64) and np.isfinite(x).all()
        before = by_rank[: 4 + 3 * (r - 1)]
        added = by_rank[4 + 3 * (r - 1): 4 + 3 * r]
        assert added == farthest_first(x, before, 3)
        # each pick is at least as far from its nearest chosen row as any row left unchosen
        chosen = list(before)
        for p in added:
            d = np.sqrt(((x[:, None, :].astype(np.float64) - x[None, chosen, :]) ** 2).sum(-1)).min(axis=1)
            rest = [i for i in range(12) if i not in chosen]
            assert d[p] >= d[rest].max() - 1e-6
            chosen.append(p)

    # one fresh base per training round, trained on the cumulative subset, checkpoint in round_<r>
    assert len(calls) == 2 and calls[0] is not calls[1]
    users = [c[0]["content"] for c in pool["conversations"]]
    for r, (contents, path, model) in enumerate(trained):
        assert contents == [users[i] for i in by_rank if rnd[i] <= r]  # rows of rounds 0..r, in rank order
        assert path == tmp_path / f"round_{r}"
        assert model is calls[r]
    # the embeddings of round r + 1 are those of the model trained in round r, and differ from the base
    base_x = hidden_state_embeddings(make(), tok, pool["conversations"].tolist(), max_length=256)
    for r in (0, 1):
        loaded, _, manifest = load_checkpoint(tmp_path / f"round_{r}", base_loader=lambda mid: (make(), tok))
        assert manifest["base_model"] == "tiny-test" and manifest["diverseevol_round"] == r
        x = hidden_state_embeddings(loaded, tok, pool["conversations"].tolist(), max_length=256)
        np.testing.assert_allclose(seen[r + 1][1], x, atol=1e-4, rtol=0)
        assert np.abs(seen[r + 1][1] - base_x).max() > 1e-3
    assert progress[0] == (0, 24) and progress[-1] == (24, 24)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)

    rounds = out.attrs["rounds"]
    assert [s["round"] for s in rounds] == [0, 1, 2]
    assert [s["added"] for s in rounds] == [4, 3, 3]
    assert [s["subset_size"] for s in rounds] == [4, 7, 10]
    assert [s["trained"] for s in rounds] == [True, True, False]
    for s in rounds[:2]:
        assert s["train_steps"] == 2 and np.isfinite([s["train_first_loss"], s["train_last_loss"]]).all()
        assert s["seconds"] >= s["train_seconds"] + s["embed_seconds"] > 0
        assert Path(s["checkpoint"]) == tmp_path / f"round_{s['round']}"
    assert rounds[2]["checkpoint"] is None and rounds[2]["train_first_loss"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round_0", "round_1"]
    assert out.attrs["n_ranked"] == 10 and out.attrs["n_eligible"] == 12 and out.attrs["n_unrankable"] == 0
    assert out.attrs["budget_capped"] is False


def test_same_seed_same_ranks_other_seed_other_start(fresh_tiny_lm, tmp_path):
    make, tok = fresh_tiny_lm
    a, _ = run(make, tok, tmp_path / "a", budget=7)
    b, _ = run(make, tok, tmp_path / "b", budget=7)
    assert a["diverseevol_rank"].tolist() == b["diverseevol_rank"].tolist()
    assert a["diverseevol_round"].tolist() == b["diverseevol_round"].tolist()
    assert a.attrs["rounds"][0]["train_last_loss"] == b.attrs["rounds"][0]["train_last_loss"]
    start0 = set(np.random.default_rng(0).choice(12, size=4, replace=False).tolist())
    start5 = set(np.random.default_rng(5).choice(12, size=4, replace=False).tolist())
    assert start0 != start5
    c, _ = run(make, tok, tmp_path / "c", budget=7, seed=5)
    assert set(np.flatnonzero(c["diverseevol_round"].to_numpy() == 0).tolist()) == start5
    assert set(np.flatnonzero(a["diverseevol_round"].to_numpy() == 0).tolist()) == start0


def test_ineligible_rows_are_counted_never_ranked(fresh_tiny_lm, tmp_path, monkeypatch):
    make, tok = fresh_tiny_lm
    pool = make_pool(6)
    extra = pd.DataFrame({"id": ["no-answer", "empty", "cut", "unrenderable"], "conversations": [
        np.array([{"role": "user", "content": "Hello?"}], dtype=object),
        [],
        conv("word " * 300, "The answer is beyond the fine-tuning length."),
        conv("UNRENDERABLE", "x"),
    ]})
    pool = pd.concat([pool.iloc[:3], extra, pool.iloc[3:]], ignore_index=True)
    real = de.encode_example

    def encode(tokenizer, conversations, max_length):
        if conversations[0]["content"] == "UNRENDERABLE":
            raise ValueError("chat template does not render earlier turns as a prefix of later ones")
        return real(tokenizer, conversations, max_length)

    monkeypatch.setattr(de, "encode_example", encode)
    # 'cut' fits the embedding length (1024) but not SFTConfig.max_length (256): not trainable, not eligible
    out = diverseevol_ranks(pool, make, tok, budget=8, initial_size=3, step_size=3, sft_config=sft(),
                            out_dir=tmp_path, max_length=1024)
    rank = dict(zip(out["id"], out["diverseevol_rank"]))
    assert all(rank[i] == -1 for i in extra["id"])
    assert sorted(v for v in rank.values() if v >= 0) == list(range(6))  # capped to the 6 eligible rows
    assert out.attrs["n_no_assistant_turn"] == 2
    assert out.attrs["n_answer_truncated"] == 1
    assert out.attrs["n_unrenderable"] == 1
    assert out.attrs["n_unrankable"] == 4 and out.attrs["n_eligible"] == 6 and out.attrs["n_rows"] == 10
    assert out.attrs["budget_capped"] is True and out.attrs["n_ranked"] == 6
    assert [s["added"] for s in out.attrs["rounds"]] == [3, 3]


def test_malformed_conversation_names_row_and_field(fresh_tiny_lm, tmp_path):
    make, tok = fresh_tiny_lm
    pool = make_pool(3)
    pool.loc[1, "conversations"] = [{"speaker": "user", "text": "hi"}]
    with pytest.raises(ValueError, match=r"id='r01'.*'conversations'"):
        diverseevol_ranks(pool, make, tok, budget=2, initial_size=1, step_size=1, sft_config=sft(), out_dir=tmp_path)


def test_empty_pool_and_budget_equal_to_initial_size_do_not_train(tiny_lm, tmp_path):
    _, tok = tiny_lm

    def factory():
        raise AssertionError("no fine-tuning expected")

    empty = diverseevol_ranks(make_pool().iloc[:0], factory, tok, budget=5, initial_size=2, step_size=1,
                              sft_config=sft(), out_dir=tmp_path)
    assert list(empty.columns) == ["id", *DIVERSEEVOL_COLUMNS] and len(empty) == 0
    assert empty.attrs["rounds"] == [] and empty.attrs["n_ranked"] == 0
    random_only = diverseevol_ranks(make_pool(), factory, tok, budget=4, initial_size=4, step_size=1,
                                    sft_config=sft(), out_dir=tmp_path, seed=3)
    rank = random_only["diverseevol_rank"].to_numpy()
    expected = np.random.default_rng(3).choice(12, size=4, replace=False).tolist()
    assert [int(np.flatnonzero(rank == k)[0]) for k in range(4)] == expected  # draw order
    assert (rank >= 0).sum() == 4 and (random_only["diverseevol_round"].to_numpy()[expected] == 0).all()
    assert [s["trained"] for s in random_only.attrs["rounds"]] == [False]
    assert not any(tmp_path.iterdir())


def test_model_factory_must_return_a_fresh_base(fresh_tiny_lm, tmp_path):
    make, tok = fresh_tiny_lm
    shared = make()
    with pytest.raises(ValueError, match="model_factory"):
        diverseevol_ranks(make_pool(), lambda: shared, tok, budget=6, initial_size=2, step_size=2,
                          sft_config=sft(max_steps=1), out_dir=tmp_path)


@pytest.mark.parametrize("kwargs, name", [
    (dict(budget=0), "budget"), (dict(budget=-3), "budget"), (dict(budget=2.5), "budget"),
    (dict(budget=True), "budget"),
    (dict(initial_size=0), "initial_size"), (dict(initial_size=6), "initial_size"),
    (dict(step_size=0), "step_size"), (dict(step_size=None), "step_size"),
    (dict(batch_size=0), "batch_size"), (dict(max_length=1), "max_length"),
    (dict(sft_config={"max_steps": 2}), "sft_config"), (dict(sft_config=SFTConfig(max_steps=0)), "max_steps"),
])
def test_bad_parameters_name_the_parameter(tiny_lm, tmp_path, kwargs, name):
    _, tok = tiny_lm
    args = dict(budget=5, initial_size=2, step_size=1, sft_config=sft(), out_dir=tmp_path)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        diverseevol_ranks(make_pool(), lambda: None, tok, **args)


def test_missing_pool_column(tiny_lm, tmp_path):
    _, tok = tiny_lm
    with pytest.raises(ValueError, match="conversations"):
        diverseevol_ranks(make_pool()[["id"]], lambda: None, tok, budget=2, initial_size=1, step_size=1,
                          sft_config=sft(), out_dir=tmp_path)


def test_registered_as_trainable_llm_scorer():
    info = registry.SCORERS["diverseevol"]
    assert info.family == "trainable-llm"
    assert info.columns == DIVERSEEVOL_COLUMNS
    assert "Wu et al. 2023" in info.paper
    assert info.fn is diverseevol_ranks


@pytest.mark.integration
def test_smollm2_growth_skips_duplicates_of_chosen_rows(smollm2, tmp_path):
    import copy

    model, tok = smollm2
    rows = json.loads(ALPACA.read_text())[:4]
    convs = [conv(r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else ""), r["output"]) for r in rows]
    # three identical copies of one example: once one copy is chosen the others are at distance 0
    pool = pd.DataFrame({"id": [f"a{i}" for i in range(6)], "conversations": [convs[0]] * 3 + convs[1:]})
    out = diverseevol_ranks(pool, lambda: copy.deepcopy(model), tok, budget=4, initial_size=1, step_size=3,
                            sft_config=SFTConfig(max_steps=2, batch_size=2, max_length=256, log_every=1),
                            out_dir=tmp_path, batch_size=4, max_length=256, base_model_id="packaged:smollm2")
    rank = out["diverseevol_rank"].to_numpy()
    assert sorted(rank[rank >= 0].tolist()) == [0, 1, 2, 3]
    assert int((rank[:3] >= 0).sum()) == 1 and (rank[3:] >= 0).all()  # one copy and every distinct row
    first = out.attrs["rounds"][0]
    assert first["trained"] and 0.0 < first["train_first_loss"] < 10.0 and np.isfinite(first["train_last_loss"])
