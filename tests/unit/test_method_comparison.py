"""The method comparison report and the pairs the evaluation judges (internal and external baselines)."""

import json

import pandas as pd

from instsel_assets.defs.evaluation import judgement_pairs
from instsel_assets.evaluation.comparison import comparison_table, win_table, write_report


def answers(rows):
    return pd.DataFrame([{"method": m, "test_set": t, "item_id": i, "answer": json.dumps(a), "status": s}
                         for m, t, i, a, s in rows])


def test_pairs_name_internal_baselines_at_the_same_budget_and_external_models():
    generated = answers([
        ("ifd@5pct", "vicuna_80", "1", ["mine"], "ok"), ("random@5pct", "vicuna_80", "1", ["rand"], "ok"),
        ("random", "vicuna_80", "1", ["rand10"], "ok"), ("full", "vicuna_80", "1", ["all"], "ok"),
        ("ifd@5pct", "mt_bench", "81", ["t1", "t2"], "ok"), ("full", "mt_bench", "81", ["f1", "f2"], "ok"),
        ("ifd@5pct", "koala_180", "k", [], "failed"), ("full", "koala_180", "k", ["x"], "ok"),
    ])
    external = pd.DataFrame({"test_set": ["vicuna_80"], "item_id": ["1"], "model": ["gpt35"],
                             "answer": [json.dumps(["gpt"])]})
    tests = pd.DataFrame({"test_set": ["vicuna_80", "mt_bench", "koala_180"], "item_id": ["1", "81", "k"],
                          "turns": [json.dumps(["q"]), json.dumps(["q1", "q2"]), json.dumps(["k"])]})
    pairs = judgement_pairs(generated, external, tests).set_index("id")
    mine = pairs.loc["ifd@5pct|random@5pct|vicuna_80|1"]
    assert (mine["answer_a"], mine["answer_b"], mine["baseline_kind"]) == ("mine", "rand", "internal")
    assert pairs.loc["ifd@5pct|gpt35|vicuna_80|1", "baseline_kind"] == "external"
    assert "ifd@5pct|random|vicuna_80|1" not in pairs.index  # random at another budget is not its baseline
    two = pairs.loc["ifd@5pct|full|mt_bench|81"]  # MT-Bench judged as one two-turn conversation
    assert two["question"] == "[User turn 1]\nq1\n\n[User turn 2]\nq2" and "[Answer turn 2]\nt2" in two["answer_a"]
    assert not any(i.startswith("ifd@5pct|") and "koala" in i for i in pairs.index)  # its answer failed
    assert "full|random|vicuna_80|1" in pairs.index and "random|full|vicuna_80|1" in pairs.index
    internal_only = judgement_pairs(generated, external, tests, with_external=False)
    assert set(internal_only["baseline_kind"]) == {"internal"}


def test_report_has_every_section_and_plot(tmp_path):
    judged = pd.DataFrame([
        {"method": "ifd", "baseline": b, "baseline_kind": k, "test_set": "vicuna_80", "item_id": str(i),
         "judge_status": "ok", "score_a_ab": 8, "score_b_ab": 6, "score_a_ba": 7, "score_b_ba": 5, "verdict": "win"}
        for i in range(3) for b, k in (("random", "internal"), ("full", "internal"), ("gpt35", "external"))])
    losses = pd.DataFrame({"method": ["ifd"], "test_set": ["vicuna_80"], "mean_loss": [1.5], "subset_rows": [60]})
    wins = win_table(judged)
    table = comparison_table(losses, wins, {"ifd": {"subset_hash": "abc", "budget": "default", "subset_rows": 60}},
                             {"ifd": {"random": "random", "full": "full"}})
    fidelity = [{"judge_backend": "local:x", "n_pairs": 10, "n_judged": 9, "accuracy": 0.5, "accuracy_decided": 0.6,
                 "tie_rate": 0.2, "position_consistency": 0.7, "prefers_first_shown": 0.1,
                 "prefers_second_shown": 0.2, "n_unparsable": 1, "n_failed": 0}]
    md_path, pngs, inline = write_report(table, wins, judged, losses, fidelity, tmp_path, {"judge": "local:x"})
    text = md_path.read_text()
    for section in ("## Judge fidelity", "| local:x | 9 / 10 | 0.500", "## Every method x budget x test set",
                    "| ifd | default | 60 | `abc` | all | 1.500 | 2.000 / 1.00 (3) | 2.000 / 1.00 (3) | gpt35 2.00 |",
                    "## Lineage of each method", "## External comparison", "## Plots", "judge=local:x"):
        assert section in text, section
    assert len(pngs) == 3 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert inline.count("data:image/png;base64,") == 3
