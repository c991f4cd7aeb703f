"""InstructionGPT-4, text form (scoring/instruction_gpt4.py, selection/instruction_gpt4.py): a selector trained only
on subset-level labels (the mean of its rows' true quality) recovers the per-row quality, deterministically."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.scoring.instruction_gpt4 import (InstructionGPT4Selector, RowFeaturizer, instruction_gpt4_scores,
                                                     train_instruction_gpt4_selector)
from instsel_assets.selection.instruction_gpt4 import select_instruction_gpt4
from instsel_assets.training.subset_experiments import draw_subsets


def spearman(a, b) -> float:
    return float(np.corrcoef(pd.Series(a).rank(), pd.Series(b).rank())[0, 1])


def synthetic_pool(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows with three indicators and a 16-d embedding driven by a 2-d latent; the true quality of a row mixes two
    indicators and one latent direction (so the selector needs both the indicators and the embedding's PCA)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 2))
    embedding = latent @ rng.normal(size=(2, 16)) + 0.01 * rng.normal(size=(n, 16))
    rows = pd.DataFrame({
        "id": [f"r{i:03d}" for i in range(n)],
        "output_tokens": rng.integers(5, 500, n).astype(float),
        "ttr": rng.uniform(0.2, 1.0, n),
        "mtld": rng.uniform(5, 100, n),  # irrelevant to quality
        "embedding": list(embedding),
    })
    quality = (0.8 * np.log1p(rows["output_tokens"].to_numpy()) / 1.2 + 1.5 * (rows["ttr"].to_numpy() - 0.6) / 0.23
               + latent[:, 0])
    return rows, quality


def experiments(rows: pd.DataFrame, quality: np.ndarray, n_subsets: int = 80, size: int = 10, seed: int = 1):
    """Subsets and their eval losses: higher mean quality, lower loss."""
    subsets = draw_subsets(rows["id"], n_subsets, size, seed=seed)
    q = dict(zip(rows["id"], quality))
    losses = {s: 2.0 - 0.05 * float(np.mean([q[m] for m in members])) for s, members in subsets.items()}
    return subsets, losses


KW = dict(indicators=["output_tokens", "ttr", "mtld"], n_components=4, hidden=16, epochs=400, learning_rate=1e-2,
          weight_decay=1e-4)


@pytest.fixture(scope="module")
def trained():
    rows, quality = synthetic_pool()
    subsets, losses = experiments(rows, quality)
    return rows, quality, subsets, losses, train_instruction_gpt4_selector(rows, subsets, losses, seed=0, **KW)


def test_subset_labels_teach_the_per_row_quality(trained):
    rows, quality, _, _, selector = trained
    assert selector.featurizer.feature_names == ["output_tokens", "ttr", "mtld", "pc1", "pc2", "pc3", "pc4"]
    assert selector.featurizer.n_components == 4 and selector.featurizer.log_indicators == ("output_tokens",)
    # the selector only ever saw subset means, yet ranks single rows by their true quality
    scores = instruction_gpt4_scores(rows, selector)
    assert list(scores.columns) == ["id", "instruction_gpt4_score"] and list(scores["id"]) == list(rows["id"])
    assert spearman(scores["instruction_gpt4_score"], quality) > 0.9
    assert selector.subset_spearman > 0.95 and selector.final_loss < 0.1
    # the training curve is recorded, goes down, and the best epoch's weights are kept
    curve = np.asarray(selector.curve)
    assert len(curve) == 400 and np.isfinite(curve).all() and curve[-1] < curve[0] / 5
    assert selector.final_loss == curve.min() == curve[selector.best_epoch]
    mse = np.mean((np.asarray(selector.subset_predictions) - np.asarray(selector.subset_labels)) ** 2)
    assert mse == pytest.approx(selector.final_loss, rel=1e-4)
    # top-m by the selector: mostly the truly best rows
    chosen = select_instruction_gpt4(scores, 30)
    best = rows.assign(q=quality).sort_values("q", ascending=False)["id"].head(30)
    assert len(set(chosen) & set(best)) >= 20


def test_the_label_is_the_standardised_negative_loss(trained):
    _, _, subsets, losses, selector = trained
    loss = np.array([losses[s] for s in subsets])
    np.testing.assert_allclose(selector.subset_labels, (-loss - (-loss).mean()) / loss.std())
    assert selector.label_mean == pytest.approx(-loss.mean()) and selector.subset_ids == tuple(subsets)


def test_training_is_seeded_and_the_selector_round_trips(trained):
    rows, quality, subsets, losses, selector = trained
    again = train_instruction_gpt4_selector(rows, subsets, losses, seed=0, **KW)
    np.testing.assert_array_equal(again.curve, selector.curve)
    other = train_instruction_gpt4_selector(rows, subsets, losses, seed=1, **KW)
    assert other.curve[0] != selector.curve[0]
    assert spearman(instruction_gpt4_scores(rows, other)["instruction_gpt4_score"], quality) > 0.85
    body = json.loads(json.dumps(selector.to_dict()))  # stored as JSON by the asset
    restored = InstructionGPT4Selector.from_dict(body)
    np.testing.assert_allclose(instruction_gpt4_scores(rows, restored)["instruction_gpt4_score"],
                               instruction_gpt4_scores(rows, selector)["instruction_gpt4_score"], rtol=1e-6)
    np.testing.assert_allclose(instruction_gpt4_scores(rows, body)["instruction_gpt4_score"],
                               instruction_gpt4_scores(rows, selector)["instruction_gpt4_score"], rtol=1e-6)


def test_indicators_only_and_missing_values_are_imputed_and_counted():
    rows, quality = synthetic_pool(n=200, seed=3)
    subsets, losses = experiments(rows, quality, n_subsets=40, seed=4)
    selector = train_instruction_gpt4_selector(rows, subsets, losses, indicators=["output_tokens", "ttr"],
                                               n_components=0, epochs=100, seed=0)
    assert selector.featurizer.feature_names == ["output_tokens", "ttr"]
    gaps = rows.copy()
    gaps.loc[0, "ttr"] = np.nan
    scored = instruction_gpt4_scores(gaps, selector)
    assert scored.attrs["n_rows_imputed"] == 1 and scored.attrs["n_unscorable"] == 0
    with_pca = train_instruction_gpt4_selector(rows, subsets, losses, indicators=["ttr"], n_components=3,
                                               epochs=20, seed=0)
    gaps["embedding"] = gaps["embedding"].astype(object)
    gaps.at[1, "embedding"] = None
    scored = instruction_gpt4_scores(gaps, with_pca)
    assert scored.attrs["n_rows_imputed"] == 2 and np.isfinite(scored["instruction_gpt4_score"]).all()


def test_default_indicators_are_those_the_table_holds():
    rows, quality = synthetic_pool(n=120, seed=5)
    subsets, losses = experiments(rows, quality, n_subsets=10, seed=6)
    selector = train_instruction_gpt4_selector(rows, subsets, losses, n_components=2, epochs=10)
    assert selector.settings["indicators"] == ["output_tokens", "ttr", "mtld"]  # of the default list, in its order


def test_more_components_than_the_embeddings_rank_are_cut():
    rows, _ = synthetic_pool(n=50, seed=7)
    rows["embedding"] = [np.r_[v[:2], np.zeros(6)] for v in rows["embedding"]]  # rank 2
    featurizer = RowFeaturizer.fit(rows, ["ttr"], n_components=5)
    assert featurizer.n_components == 2
    x, imputed = featurizer.transform(rows)
    assert x.shape == (50, 3) and not imputed.any()
    np.testing.assert_allclose(x[:, 1:].std(axis=0), 1.0, rtol=1e-4)  # unit variance over the pool


def test_clear_errors():
    rows, quality = synthetic_pool(n=60, seed=8)
    subsets, losses = experiments(rows, quality, n_subsets=6, seed=9)
    first = next(iter(subsets))
    with pytest.raises(ValueError, match="at least 2 subsets"):
        train_instruction_gpt4_selector(rows, {first: subsets[first]}, losses)
    with pytest.raises(ValueError, match="do not vary"):
        train_instruction_gpt4_selector(rows, subsets, {s: 1.5 for s in subsets})
    with pytest.raises(ValueError, match="no evaluation loss for subset"):
        train_instruction_gpt4_selector(rows, subsets, {s: v for s, v in losses.items() if s != first})
    with pytest.raises(ValueError, match="non-finite evaluation loss"):
        train_instruction_gpt4_selector(rows, subsets, {**losses, first: float("nan")})
    with pytest.raises(ValueError, match="id\\(s\\) not in the row table"):
        train_instruction_gpt4_selector(rows, {**subsets, "extra": ["nope"]}, {**losses, "extra": 1.0})
    with pytest.raises(ValueError, match="are not columns of the row table"):
        train_instruction_gpt4_selector(rows, subsets, losses, indicators=["ttr", "reward_score"])
    with pytest.raises(ValueError, match="embedding column 'emb' is not in the rows"):
        train_instruction_gpt4_selector(rows, subsets, losses, embedding_column="emb")
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        train_instruction_gpt4_selector(rows, subsets, losses, epochs=0)


# ------------------------------------------------------------------------------------------------- selector
def test_selector_is_top_m_by_score():
    candidates = pd.DataFrame({"id": ["a", "b", "c", "d"], "instruction_gpt4_score": [0.1, 2.0, np.nan, 0.1]})
    assert select_instruction_gpt4(candidates, 3) == ["b", "a", "d"]
    assert select_instruction_gpt4(candidates, 10) == ["b", "a", "d"]  # the unscored row is never selected
    assert select_instruction_gpt4(candidates, 0) == []
    with pytest.raises(ValueError, match="instruction_gpt4_score"):
        select_instruction_gpt4(candidates[["id"]], 2)


def test_registry_entries():
    registry.load_all()
    scorer = registry.get_scorer("instruction_gpt4")
    assert scorer.family == "metric-set" and scorer.columns == ("instruction_gpt4_score",)
    assert "Wei et al. 2023" in scorer.paper
    selector = registry.get_selector("instruction_gpt4")
    assert selector.columns == ("id", "instruction_gpt4_score") and selector.fills_budget is True
