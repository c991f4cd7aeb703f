"""Winning score, win rate and position consistency from fixed judgements, by hand; the per-method table."""

import math

import pandas as pd
import pytest

from instsel_assets.evaluation.comparison import ALL, comparison_table, win_table
from instsel_assets.evaluation.winning import Judgement, summarise

# (score_ab = (A, B) with A shown first, score_ba = (B, A) with B shown first) -> verdict, consistent
CASES = [
    ((8, 6), (5, 9), "win", True),     # A better twice
    ((8, 6), (7, 7), "win", False),    # better, then tied
    ((7, 7), (6, 8), "win", False),    # tied, then better
    ((7, 7), (7, 7), "tie", True),     # tied twice
    ((8, 6), (8, 6), "tie", False),    # position bias: the first shown wins both times
    ((6, 8), (9, 5), "lose", True),    # B better twice
    ((6, 8), (7, 7), "lose", False),   # worse, then tied
    ((5, 9), (6, 8), "tie", False),    # second shown wins both times
]


@pytest.mark.parametrize(("ab", "ba", "verdict", "consistent"), CASES)
def test_each_rule(ab, ba, verdict, consistent):
    judgement = Judgement(ab, ba)
    assert judgement.verdict() == verdict and judgement.consistent() is consistent


def test_winning_score_by_hand():
    summary = summarise(Judgement(ab, ba) for ab, ba, _, _ in CASES)
    # 3 wins, 3 ties, 2 losses of 8: WS = 1 + (3 - 2) / 8 = 1.125; win rate 3/8; consistent 3 of 8
    assert (summary["n_win"], summary["n_tie"], summary["n_lose"], summary["n_all"]) == (3, 3, 2, 8)
    assert summary["winning_score"] == 1.125 and summary["win_rate"] == 0.375
    assert summary["position_consistency"] == 3 / 8 and summary["n_one_order"] == 0


def test_one_order_items_have_a_verdict_but_no_consistency():
    summary = summarise([Judgement((8, 6), None), Judgement(None, (8, 6)), Judgement((7, 7), None)])
    # A better / B better (B shown first, rated 8) / tied: 1 win, 1 loss, 1 tie; WS = 1 + 0 / 3
    assert (summary["n_win"], summary["n_lose"], summary["n_tie"]) == (1, 1, 1)
    assert summary["winning_score"] == 1.0 and summary["position_consistency"] is None
    with pytest.raises(ValueError, match="neither order"):
        Judgement(None, None)
    with pytest.raises(ValueError, match="finite"):
        Judgement((float("nan"), 1), None)


def judged_rows():
    rows = []
    for k, (ab, ba, _, _) in enumerate(CASES):
        for baseline in ("random", "full"):
            rows.append({"method": "ifd", "baseline": baseline, "baseline_kind": "internal",
                         "test_set": "vicuna_80" if k < 4 else "koala_180", "item_id": str(k), "judge_status": "ok",
                         "score_a_ab": ab[0], "score_b_ab": ab[1], "score_a_ba": ba[1], "score_b_ba": ba[0]})
    rows.append({"method": "ifd", "baseline": "gpt35", "baseline_kind": "external", "test_set": "vicuna_80",
                 "item_id": "0", "judge_status": "unparsable", "score_a_ab": None, "score_b_ab": None,
                 "score_a_ba": None, "score_b_ba": None})
    return pd.DataFrame(rows)


def test_win_table_pools_test_sets_and_counts_unjudged_pairs():
    wins = win_table(judged_rows()).set_index(["baseline", "test_set"])
    assert wins.loc[("random", ALL), "winning_score"] == 1.125
    # vicuna: the first four cases: 3 wins, 1 tie -> 1.75; koala: 0 wins, 2 ties, 2 losses -> 0.5
    assert wins.loc[("random", "vicuna_80"), "winning_score"] == 1.75
    assert wins.loc[("full", "koala_180"), "winning_score"] == 0.5
    assert wins.loc[("gpt35", "vicuna_80"), "n_not_ok"] == 1 and wins.loc[("gpt35", "vicuna_80"), "n_all"] == 0
    assert math.isnan(wins.loc[("gpt35", "vicuna_80"), "winning_score"])  # nothing judged: no WS


def test_comparison_rows_carry_ws_loss_and_lineage():
    losses = pd.DataFrame({"method": ["base", "ifd", "ifd"], "test_set": ["vicuna_80", "vicuna_80", "mt_bench"],
                           "mean_loss": [2.0, 1.5, 2.5], "subset_rows": [0, 60, 60]})
    table = comparison_table(losses, win_table(judged_rows()),
                             {"ifd": {"selection": "ifd", "budget": "default", "subset_rows": 60, "subset_hash": "abc",
                                      "scorer_settings": {"ifd": {"asset": "ifd_scores"}}, "selection_run_id": "r1"}},
                             {"ifd": {"random": "random", "full": "full"}}).set_index("test_set")
    assert set(table.index) == {"vicuna_80", "koala_180", "mt_bench", ALL}
    assert table.loc[ALL, "ws_vs_random"] == 1.125 and table.loc[ALL, "n_vs_random"] == 8
    assert table.loc["vicuna_80", "heldout_loss"] == 1.5 and math.isnan(table.loc["koala_180", "heldout_loss"])
    assert table.loc[ALL, "heldout_loss"] == 2.0  # mean of the per-set losses
    assert table.loc["mt_bench", "n_vs_random"] == 0 and table.loc["mt_bench", "ws_vs_random"] != 1.0
    assert table.loc[ALL, "subset_hash"] == "abc" and '"ifd_scores"' in table.loc[ALL, "scorer_settings"]
    assert table.loc["vicuna_80", "ws_vs_external"] == '{"gpt35": null}'
