"""How far a pairwise judge can be trusted: its agreement with human preferences on LLMBar Natural (100 pairs of
answers to one instruction, the human-preferred one labelled; ``data/labels/llmbar_natural``).

Each pair is judged exactly as an evaluation pair (the pairwise template, both orders) with output_1 as answer A.
The verdict predicts output_1 ("win"), output_2 ("lose") or neither ("tie"). Over the pairs that got two parsed
judgements:

- ``accuracy``: predictions that name the human-preferred output / judged pairs (a tie is wrong: the human
  annotators always chose);
- ``accuracy_decided``: the same over the pairs the judge decided (ties left out), None when it decided none;
- ``position_consistency``: the share of pairs whose two orders prefer the same side (``evaluation.winning``);
- ``tie_rate``: ties / judged pairs.

Chance is 0.5 for a judge that always decides; a judge that always prefers the first (or second) answer shown
decides nothing, ties every pair, and has consistency 0. Unparsable and failed pairs are counted, not scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from instsel_assets.evaluation.winning import Judgement


def load_llmbar_pairs(path: str | Path, limit: int = 0) -> pd.DataFrame:
    """``id, question, answer_a (output_1), answer_b (output_2), label`` (1 or 2: the human-preferred output), in
    file order; ``limit`` > 0 keeps the first ``limit`` pairs. Bad files raise errors naming file, row and field
    (``scoring.tegit_discriminator.labelled_pairs_from_llmbar`` validates them)."""
    from instsel_assets.scoring.tegit_discriminator import labelled_pairs_from_llmbar

    labelled = labelled_pairs_from_llmbar(path)
    rows = []
    for group, pair in labelled.groupby("group", sort=True):
        first, second = pair.iloc[0], pair.iloc[1]
        rows.append({"id": f"llmbar_natural/{int(group)}", "question": first["conversations"][0]["content"],
                     "answer_a": first["conversations"][1]["content"],
                     "answer_b": second["conversations"][1]["content"],
                     "label": 1 if int(first["label"]) == 1 else 2})
    frame = pd.DataFrame(rows, columns=["id", "question", "answer_a", "answer_b", "label"])
    return frame.head(limit).reset_index(drop=True) if limit and limit > 0 else frame


def prediction(verdict: str | None) -> int | None:
    """1 (output_1 preferred), 2 (output_2), 0 (a tie), None (not judged)."""
    return {"win": 1, "lose": 2, "tie": 0}.get(verdict) if isinstance(verdict, str) else None


def fidelity_summary(table: pd.DataFrame) -> dict[str, Any]:
    """The module docstring's numbers from a judged table (the pairwise template's columns, ``judge_status``,
    ``label``)."""
    ok = table[table["judge_status"] == "ok"]
    predicted = [prediction(v) for v in ok["verdict"]]
    labels = [int(x) for x in ok["label"]]
    correct = sum(p == y for p, y in zip(predicted, labels))
    decided = [(p, y) for p, y in zip(predicted, labels) if p in (1, 2)]
    consistent = [Judgement((r.score_a_ab, r.score_b_ab), (r.score_b_ba, r.score_a_ba)).consistent()
                  for r in ok.itertuples(index=False)]
    n = len(ok)
    return {
        "n_pairs": len(table), "n_judged": n,
        "n_unparsable": int((table["judge_status"] == "unparsable").sum()),
        "n_failed": int(table["judge_status"].isin(["failed", "budget", "not_judgeable"]).sum()),
        "accuracy": correct / n if n else None,
        "accuracy_decided": sum(p == y for p, y in decided) / len(decided) if decided else None,
        "n_decided": len(decided),
        "tie_rate": predicted.count(0) / n if n else None,
        "position_consistency": sum(bool(c) for c in consistent) / n if n else None,
        "prefers_first_shown": sum(1 for r in ok.itertuples(index=False)
                                   if r.score_a_ab > r.score_b_ab and r.score_b_ba > r.score_a_ba) / n if n else None,
        "prefers_second_shown": sum(1 for r in ok.itertuples(index=False)
                                    if r.score_a_ab < r.score_b_ab and r.score_b_ba < r.score_a_ba) / n if n else None,
    }
