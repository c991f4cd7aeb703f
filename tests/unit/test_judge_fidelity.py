"""Judge fidelity on LLMBar: accuracy, ties, position consistency, from fixed judgements."""

from pathlib import Path

import pandas as pd
import pytest

from instsel_assets.evaluation.judge_fidelity import fidelity_summary, load_llmbar_pairs

LLMBAR = Path(__file__).resolve().parents[2] / "data" / "labels" / "llmbar_natural" / "dataset.json"


def test_loads_the_bundled_pairs_in_file_order():
    pairs = load_llmbar_pairs(LLMBAR)
    assert len(pairs) == 100 and pairs["id"].is_unique and set(pairs["label"]) == {1, 2}
    assert len(load_llmbar_pairs(LLMBAR, limit=5)) == 5
    assert pairs.loc[0, "question"] and pairs.loc[0, "answer_a"] != pairs.loc[0, "answer_b"]


def test_bad_file_names_row_and_field(tmp_path):
    bad = tmp_path / "d.json"
    bad.write_text('[{"input": "q", "output_1": "a", "output_2": "b", "label": 3}]')
    with pytest.raises(ValueError, match="row 0: field 'label'"):
        load_llmbar_pairs(bad)


def test_summary_by_hand():
    rows = [  # (score_a_ab, score_b_ab, score_a_ba, score_b_ba, label, status)
        (8, 6, 8, 6, 1, "ok"),   # output_1 better twice: predicts 1, right, consistent
        (6, 8, 6, 8, 2, "ok"),   # predicts 2, right, consistent
        (8, 6, 6, 8, 1, "ok"),   # first shown wins both times: tie (wrong), inconsistent, prefers first
        (6, 8, 8, 6, 2, "ok"),   # second shown wins both times: tie (wrong), prefers second
        (8, 6, 8, 6, 2, "ok"),   # predicts 1, wrong, consistent
        (None, None, None, None, 1, "unparsable"),
    ]
    table = pd.DataFrame(rows, columns=["score_a_ab", "score_b_ab", "score_a_ba", "score_b_ba", "label",
                                        "judge_status"])
    table["verdict"] = ["win", "lose", "tie", "tie", "win", None]
    s = fidelity_summary(table)
    assert (s["n_pairs"], s["n_judged"], s["n_unparsable"], s["n_decided"]) == (6, 5, 1, 3)
    assert s["accuracy"] == 2 / 5 and s["accuracy_decided"] == 2 / 3 and s["tie_rate"] == 2 / 5
    assert s["position_consistency"] == 3 / 5
    assert s["prefers_first_shown"] == 1 / 5 and s["prefers_second_shown"] == 1 / 5
