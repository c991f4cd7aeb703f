"""InstructMining (scoring/instruct_mining.py, selection/instruct_mining.py): a known linear rule is recovered from
synthetic subset experiments, applied per row, and selected on; under-determined fits fall back to ridge and say so."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.scoring.instruct_mining import (DEFAULT_INDICATORS, INTERCEPT, InstructMiningRule,
                                                    fit_from_experiments, fit_instruct_mining_rule,
                                                    instruct_mining_scores)
from instsel_assets.selection.instruct_mining import select_instruct_mining
from instsel_assets.training.subset_experiments import MEAN_PREFIX, draw_subsets, subset_indicator_means

INDICATORS = ("output_tokens", "ttr", "mtld", "knn6_mean_distance", "reward_score")
TRUE_RAW = {"output_tokens": 0.002, "ttr": -0.8, "mtld": 0.01, "knn6_mean_distance": -1.5, "reward_score": -0.3}
TRUE_INTERCEPT = 2.0


def pool_rows(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": [f"r{i:04d}" for i in range(n)],
        "output_tokens": rng.integers(5, 400, n).astype(float),
        "ttr": rng.uniform(0.3, 1.0, n),
        "mtld": rng.uniform(10, 120, n),
        "knn6_mean_distance": rng.uniform(0.1, 0.9, n),
        "reward_score": rng.normal(0.0, 2.0, n),
    })


def true_loss(frame: pd.DataFrame, prefix: str = "") -> np.ndarray:
    return TRUE_INTERCEPT + sum(b * frame[f"{prefix}{c}"].to_numpy(dtype=float) for c, b in TRUE_RAW.items())


def experiments(rows: pd.DataFrame, n_subsets: int, size: int, noise: float = 1e-5, seed: int = 1,
                transform=lambda v: v) -> pd.DataFrame:
    subsets = draw_subsets(rows["id"], n_subsets, size, seed=seed)
    table = subset_indicator_means(subsets, rows, list(INDICATORS))
    rng = np.random.default_rng(seed + 100)
    table["eval_loss"] = transform(true_loss(table, MEAN_PREFIX) + rng.normal(0.0, noise, len(table)))
    return table


def test_least_squares_recovers_the_true_rule_and_applies_it_per_row():
    rows = pool_rows()
    table = experiments(rows, n_subsets=30, size=10)
    rule = fit_from_experiments(table, list(INDICATORS), target="loss")
    assert rule.method == "ols" and rule.least_squares_determined and rule.target == "loss"
    assert rule.indicators == INDICATORS and rule.dropped == {}
    np.testing.assert_allclose(rule.raw_coefficients, [TRUE_RAW[c] for c in INDICATORS], rtol=2e-3, atol=1e-6)
    assert rule.raw_intercept == pytest.approx(TRUE_INTERCEPT, abs=5e-3)
    assert rule.r2 > 0.9999 and rule.adjusted_r2 > 0.9999 and rule.loo_r2 > 0.999
    assert abs(rule.residuals.sum()) < 1e-9 and rule.residuals.shape == (30,)
    # every non-zero coefficient is significant; the OLS p-values are reported with the standard errors
    assert rule.p_values is not None and (rule.p_values[1:] < 1e-6).all()
    assert np.isfinite(rule.std_errors).all()

    scores = instruct_mining_scores(rows, rule)
    assert list(scores.columns) == ["id", "instruct_mining_score"] and list(scores["id"]) == list(rows["id"])
    np.testing.assert_allclose(scores["instruct_mining_score"], true_loss(rows), rtol=1e-3, atol=2e-3)
    assert scores.attrs["n_unscorable"] == 0

    # the selector keeps the rows the true rule predicts the lowest loss for
    candidates = rows[["id"]].assign(instruct_mining_score=scores["instruct_mining_score"])
    chosen = select_instruct_mining(candidates, 20)
    truth = rows.assign(loss=true_loss(rows)).sort_values("loss")["id"].head(20).tolist()
    assert len(set(chosen) & set(truth)) >= 19


def test_the_standardised_coefficients_are_the_raw_ones_times_the_spread():
    rows = pool_rows(seed=3)
    rule = fit_from_experiments(experiments(rows, 25, 12, seed=4), list(INDICATORS))
    np.testing.assert_allclose(rule.coefficients, rule.raw_coefficients * rule.scale)
    # the fitted values are the rule applied to the subsets' own means
    features = pd.DataFrame({c: experiments(rows, 25, 12, seed=4)[f"{MEAN_PREFIX}{c}"] for c in INDICATORS})
    np.testing.assert_allclose(rule.predict_target(features), rule.fitted, atol=1e-9)
    assert rule.formula().startswith("log(loss) ~ ") and "z(reward_score)" in rule.formula()


def test_the_papers_log_loss_target():
    rows = pool_rows(seed=5)
    table = experiments(rows, 30, 10, seed=6, transform=np.exp)  # log(loss) is the linear rule
    rule = fit_from_experiments(table, list(INDICATORS), target="log_loss")
    assert rule.target == "log_loss"
    np.testing.assert_allclose(rule.raw_coefficients, [TRUE_RAW[c] for c in INDICATORS], rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(rule.predict_loss(rows), np.exp(true_loss(rows)), rtol=5e-3)
    with pytest.raises(ValueError, match="needs positive losses"):
        fit_instruct_mining_rule(table[[f"{MEAN_PREFIX}ttr"]].rename(columns=lambda c: c[len(MEAN_PREFIX):]),
                                 -table["eval_loss"], target="log_loss", indicators=["ttr"])


def test_too_few_subsets_fall_back_to_ridge_and_say_so():
    rows = pool_rows(seed=7)
    table = experiments(rows, n_subsets=4, size=10, seed=8)  # 4 subsets for 5 indicators + intercept
    rule = fit_from_experiments(table, list(INDICATORS))
    assert rule.method == "ridge" and rule.ridge_alpha == 1.0 and not rule.least_squares_determined
    assert "no unique solution" in rule.method_reason and rule.summary()["method"] == "ridge"
    assert rule.p_values is None and np.isfinite(rule.coefficients).all() and math.isnan(rule.adjusted_r2)
    with pytest.raises(ValueError, match="ordinary least squares needs more subsets"):
        fit_from_experiments(table, list(INDICATORS), regularization="ols")
    # ridge on request, even when least squares is determined; a larger penalty shrinks the coefficients
    big = experiments(rows, 30, 10, seed=9)
    mild = fit_from_experiments(big, list(INDICATORS), regularization="ridge", ridge_alpha=0.1)
    strong = fit_from_experiments(big, list(INDICATORS), regularization="ridge", ridge_alpha=100.0)
    assert mild.method == strong.method == "ridge" and mild.least_squares_determined
    assert mild.method_reason == "ridge requested"
    assert np.linalg.norm(strong.coefficients) < np.linalg.norm(mild.coefficients)


def test_collinear_indicators_are_not_a_unique_least_squares_fit():
    rows = pool_rows(seed=11)
    rows["ttr_copy"] = 2.0 * rows["ttr"] + 1.0
    subsets = draw_subsets(rows["id"], 20, 10, seed=12)
    table = subset_indicator_means(subsets, rows, ["ttr", "ttr_copy", "mtld"])
    table["eval_loss"] = 1.0 + table[f"{MEAN_PREFIX}ttr"] - 0.01 * table[f"{MEAN_PREFIX}mtld"]
    rule = fit_from_experiments(table, ["ttr", "ttr_copy", "mtld"])
    assert rule.method == "ridge" and "collinear" in rule.method_reason


def test_indicators_default_to_those_available_and_unusable_ones_are_named():
    rows = pool_rows(seed=13)
    rows["n_turns"] = 1.0  # constant over every subset
    subsets = draw_subsets(rows["id"], 20, 10, seed=14)
    table = subset_indicator_means(subsets, rows, [*INDICATORS, "n_turns"])
    table["eval_loss"] = true_loss(table, MEAN_PREFIX)
    table.loc[3, f"{MEAN_PREFIX}reward_score"] = np.nan  # e.g. a subset whose rows were never scored
    rule = fit_from_experiments(table)  # the default list: whichever of DEFAULT_INDICATORS are there
    assert set(rule.indicators) == {"output_tokens", "ttr", "mtld", "knn6_mean_distance"}
    assert rule.dropped["reward_score"] == "missing for 1 subset(s)"
    assert rule.dropped["response_ppl"] == rule.dropped["instruction_tokens"] == "not in the tables"
    assert set(DEFAULT_INDICATORS) - set(rule.indicators) == set(rule.dropped)
    explicit = fit_from_experiments(table, ["ttr", "n_turns", "mtld"])
    assert explicit.indicators == ("ttr", "mtld") and explicit.dropped == {"n_turns": "constant across the subsets"}
    with pytest.raises(ValueError, match=r"indicator\(s\) \['ttr_typo'\] are not in the subset table"):
        fit_from_experiments(table, ["ttr", "ttr_typo"])
    with pytest.raises(ValueError, match="no indicator can be fitted"):
        fit_from_experiments(table, ["n_turns"])


def test_clear_errors_for_unusable_experiments():
    rows = pool_rows(seed=15)
    table = experiments(rows, 10, 10, seed=16)
    with pytest.raises(ValueError, match="do not vary"):
        fit_from_experiments(table.assign(eval_loss=1.7), list(INDICATORS))
    with pytest.raises(ValueError, match="finite evaluation loss"):
        fit_from_experiments(table.assign(eval_loss=[np.nan] + [1.0] * 9), list(INDICATORS))
    with pytest.raises(ValueError, match="at least 2 subsets"):
        fit_from_experiments(table.head(1), list(INDICATORS))
    with pytest.raises(ValueError, match="target must be one of"):
        fit_from_experiments(table, list(INDICATORS), target="loss2")
    with pytest.raises(ValueError, match="regularization must be one of"):
        fit_from_experiments(table, list(INDICATORS), regularization="lasso")
    with pytest.raises(ValueError, match="ridge_alpha must be a positive number"):
        fit_from_experiments(table, list(INDICATORS), ridge_alpha=0.0)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['eval_loss'\]"):
        fit_from_experiments(table.drop(columns=["eval_loss"]))


def test_the_coefficient_table_rebuilds_the_rule():
    rows = pool_rows(seed=17)
    rule = fit_from_experiments(experiments(rows, 20, 10, seed=18), list(INDICATORS))
    table = rule.coefficient_table()
    assert table["term"].tolist() == [INTERCEPT, *INDICATORS]
    assert (table["method"] == "ols").all() and (table["n_subsets"] == 20).all()
    rebuilt = InstructMiningRule.from_table(table)
    np.testing.assert_allclose(rebuilt.predict_loss(rows), rule.predict_loss(rows))
    via_table = instruct_mining_scores(rows, table)
    np.testing.assert_allclose(via_table["instruct_mining_score"], rule.predict_loss(rows))
    json.dumps(rule.summary())  # JSON-friendly metadata
    with pytest.raises(ValueError, match="not an InstructMining coefficient table"):
        InstructMiningRule.from_table(table.drop(columns=["scale"]))
    with pytest.raises(ValueError, match=r"lack indicator column\(s\) \['reward_score'\]"):
        rule.predict_loss(rows.drop(columns=["reward_score"]))


def test_rows_missing_an_indicator_are_not_scored_and_are_counted():
    rows = pool_rows(seed=19)
    rule = fit_from_experiments(experiments(rows, 20, 10, seed=20), list(INDICATORS))
    rows.loc[[0, 5], "reward_score"] = np.nan
    scores = instruct_mining_scores(rows, rule)
    assert scores.attrs["n_unscorable"] == 2 and scores["instruct_mining_score"].isna().sum() == 2
    chosen = select_instruct_mining(rows[["id"]].assign(instruct_mining_score=scores["instruct_mining_score"]), 400)
    assert len(chosen) == 398 and "r0000" not in chosen


# ------------------------------------------------------------------------------------------------- selector
def test_selector_keeps_the_lowest_predicted_loss_with_an_optional_threshold():
    candidates = pd.DataFrame({"id": ["a", "b", "c", "d", "e"],
                               "instruct_mining_score": [0.9, 0.5, np.nan, 0.5, 1.2]})
    assert select_instruct_mining(candidates, 3) == ["b", "d", "a"]  # ties by id
    assert select_instruct_mining(candidates.iloc[::-1], 3) == ["b", "d", "a"]  # not the row order
    assert select_instruct_mining(candidates, 10, max_predicted_loss=0.9) == ["b", "d", "a"]
    assert select_instruct_mining(candidates, 10, max_predicted_loss=0.1) == []
    assert select_instruct_mining(candidates, 0) == []
    with pytest.raises(ValueError, match="max_predicted_loss must be None or a finite number"):
        select_instruct_mining(candidates, 2, max_predicted_loss=float("nan"))
    with pytest.raises(ValueError, match="instruct_mining_score"):
        select_instruct_mining(candidates.drop(columns=["instruct_mining_score"]), 2)


def test_registry_entries():
    registry.load_all()
    scorer = registry.get_scorer("instruct_mining")
    assert scorer.family == "metric-set" and scorer.columns == ("instruct_mining_score",)
    assert "Cao et al. 2023" in scorer.paper
    selector = registry.get_selector("instruct_mining")
    assert selector.family == "metric-set" and selector.columns == ("id", "instruct_mining_score")
    assert selector.fills_budget is False  # a threshold may keep fewer rows
    assert registry.selector_parameters(selector.fn) == ["max_predicted_loss"]
