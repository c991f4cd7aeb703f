"""instsel winning-score: judgement files made elsewhere (FastChat reviews, two-order JSON, AlpacaEval
annotations) read into win / tie / lose, the winning score, the win rate and position consistency."""

import json
from pathlib import Path

import pytest

from instsel_assets.cli import main
from instsel_assets.evaluation.judgement_files import read_judgements

LEGACY = Path(__file__).resolve().parents[2] / "data" / "eval" / "vicuna_80_legacy_answers"
GPT35 = LEGACY / "review_gpt35_vicuna-13b.jsonl"
ALPACA = LEGACY / "review_alpaca-13b_vicuna-13b.jsonl"

# Ten items, each (score_ab = (A, B) with A shown first, score_ba = (B, A) with B shown first).
# Verdict for A by hand (win = better twice or better + tie; lose = the mirror; else tie); consistent = both
# orders prefer the same side (tie-tie included):
#   1 win-win    ab 8>6 A,   ba 5<9 A      -> win,  consistent
#   2 win-tie    ab 8>6 A,   ba 7=7 tie    -> win,  not
#   3 tie-win    ab 7=7 tie, ba 6<8 A      -> win,  not
#   4 tie-tie    ab 7=7,     ba 8=8        -> tie,  consistent
#   5 win-lose   ab 9>5 A,   ba 9>5 B      -> tie,  not (the first answer shown wins both times)
#   6 lose-win   ab 5<9 B,   ba 5<9 A      -> tie,  not
#   7 lose-lose  ab 4<8 B,   ba 8>4 B      -> lose, consistent
#   8 lose-tie   ab 4<8 B,   ba 6=6 tie    -> lose, not
#   9 win-win    review texts "8.5 8" (A) and "Assistant 1: 7 / Assistant 2: 7.5" (A) -> win, consistent
#  10 lose-lose  ab 3<7 B,   ba 9>2 B      -> lose, consistent
# win = {1, 2, 3, 9} = 4, tie = {4, 5, 6} = 3, lose = {7, 8, 10} = 3, all = 10
# WS = 1 + (4 - 3) / 10 = 1.1; win rate = 4 / 10 = 0.4; consistent = {1, 4, 7, 9, 10} = 5 of 10 = 0.5
TEN = [
    {"id": "win-win", "score_ab": [8, 6], "score_ba": [5, 9]},
    {"id": "win-tie", "score_ab": [8, 6], "score_ba": [7, 7]},
    {"id": "tie-win", "score_ab": [7, 7], "score_ba": [6, 8]},
    {"id": "tie-tie", "score_ab": [7, 7], "score_ba": [8, 8]},
    {"id": "win-lose", "score_ab": [9, 5], "score_ba": [9, 5]},
    {"id": "lose-win", "score_ab": [5, 9], "score_ba": [5, 9]},
    {"id": "lose-lose", "score_ab": [4, 8], "score_ba": [8, 4]},
    {"id": "lose-tie", "score_ab": [4, 8], "score_ba": [6, 6]},
    {"id": "texts", "review_ab": "8.5 8\nAssistant 1 is a little more precise.",
     "review_ba": "Assistant 1: 7\nAssistant 2: 7.5\nAssistant 2 is better."},
    {"id": 10, "score_ab": [3, 7], "score_ba": [9, 2]},
]


def _write(path: Path, value) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def _run_json(capsys, *argv) -> dict:
    assert main(["winning-score", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _run_text(capsys, *argv) -> dict[str, str]:
    assert main(["winning-score", *map(str, argv)]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        if not line.startswith(" "):
            name, _, value = line.partition("  ")
            rows[name] = value.strip()
    return rows


def test_ten_hand_computed_items_json_and_text(tmp_path, capsys):
    path = _write(tmp_path / "ten.json", TEN)
    r = _run_json(capsys, path)
    assert r["format"] == "two-order-json" and r["file"] == str(path)
    assert (r["n_all"], r["n_win"], r["n_tie"], r["n_lose"]) == (10, 4, 3, 3)
    assert r["winning_score"] == pytest.approx(1.1, abs=1e-12)
    assert r["win_rate"] == pytest.approx(0.4, abs=1e-12)
    assert (r["n_two_orders"], r["n_one_order"], r["n_consistent"]) == (10, 0, 5)
    assert r["position_consistency"] == pytest.approx(0.5, abs=1e-12)
    assert (r["n_records"], r["n_unparsable"], r["unparsable_examples"]) == (10, 0, [])
    assert r["model_a"] is None and r["model_b"] is None

    rows = _run_text(capsys, path)
    assert rows["format"] == "two-order-json"
    assert rows["items"] == "10"
    assert rows["win / tie / lose"] == "4 / 3 / 3"
    assert rows["winning score (WS)"] == "1.1000"
    assert rows["win rate"] == "0.4000"
    assert rows["position consistency"] == "0.5000 (5 of 10)"
    assert rows["two-order items"] == "10" and rows["one-order items"] == "0"
    assert rows["unparsable judgements"] == "0"


def test_two_order_object_form_with_names_one_order_and_unparsable_texts(tmp_path, capsys):
    items = [*TEN,
             # 11: score_ab (9, 2) A wins; review_ba unreadable -> one order, win; 1 unparsable
             {"id": "one-order", "score_ab": [9, 2], "review_ba": "I cannot decide."},
             # 12: both texts unreadable -> left out; 2 unparsable
             {"id": "dropped", "review_ab": "no scores here", "review_ba": "Assistant 1: 7"},
             # 13: score_ba is FastChat's [-1, -1] marker, the review text decides: (B, A) = (4, 6) -> A wins
             {"id": "marker", "score_ba": [-1, -1], "review_ba": "4 6\n..."}]
    path = _write(tmp_path / "obj.json", {"model_a": "mine", "model_b": "base", "judgements": items})
    r = _run_json(capsys, path)
    # all = 12 (item 12 left out); win = 4 + 2 = 6, tie 3, lose 3; WS = 1 + (6 - 3) / 12 = 1.25
    assert (r["n_all"], r["n_win"], r["n_tie"], r["n_lose"]) == (12, 6, 3, 3)
    assert r["winning_score"] == pytest.approx(1.25, abs=1e-12)
    assert r["win_rate"] == pytest.approx(0.5, abs=1e-12)
    assert (r["n_two_orders"], r["n_one_order"], r["n_consistent"]) == (10, 2, 5)
    assert r["position_consistency"] == pytest.approx(0.5, abs=1e-12)
    assert (r["model_a"], r["model_b"]) == ("mine", "base")
    assert (r["n_records"], r["n_unparsable"]) == (13, 3)
    assert [e["record"] for e in r["unparsable_examples"]] == [11, 12, 12]
    assert "review_ba" in r["unparsable_examples"][0]["reason"]
    rows = _run_text(capsys, path)
    assert rows["models"] == "A = mine vs B = base"
    assert rows["unparsable judgements"] == "3"


def _plain_counts(path: Path) -> tuple[int, int, int]:
    wins = losses = ties = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            s1, s2 = json.loads(line)["score"]
            if s1 > s2:
                wins += 1
            elif s1 < s2:
                losses += 1
            else:
                ties += 1
    return wins, ties, losses


@pytest.mark.parametrize("path", [GPT35, ALPACA], ids=["gpt35", "alpaca-13b"])
def test_real_fastchat_review_files(path, capsys):
    wins, ties, losses = _plain_counts(path)
    assert wins + ties + losses == 80
    r = _run_json(capsys, path)
    assert r["format"] == "fastchat-review"
    assert (r["n_records"], r["n_unparsable"], r["n_all"]) == (80, 0, 80)
    assert (r["n_one_order"], r["n_two_orders"], r["position_consistency"]) == (80, 0, None)
    assert (r["n_win"], r["n_tie"], r["n_lose"]) == (wins, ties, losses)
    assert r["winning_score"] == pytest.approx(1 + (wins - losses) / 80, abs=1e-12)
    assert r["model_a"] is None and r["model_b"] is None  # answer ids alone do not name the models
    rows = _run_text(capsys, path)
    assert rows["position consistency"].startswith("n/a")
    assert rows["winning score (WS)"] == f"{1 + (wins - losses) / 80:.4f}"


def test_real_file_numbers():
    # gpt35 (answer 1) against vicuna-13b (answer 2): 44 / 22 / 14; alpaca-13b: 3 / 1 / 76.
    assert _plain_counts(GPT35) == (44, 22, 14)
    assert _plain_counts(ALPACA) == (3, 1, 76)


def _swapped(review: dict, score, text: str | None = None, drop_score: bool = False) -> dict:
    out = dict(review, answer1_id=review["answer2_id"], answer2_id=review["answer1_id"], score=score,
               review_id=review["review_id"] + "-swapped")
    if text is not None:
        out["text"] = text
    if drop_score:
        del out["score"]
    return out


def test_two_order_fastchat_file(tmp_path, capsys):
    lines = GPT35.read_text(encoding="utf-8").splitlines()
    reviews = {json.loads(line)["question_id"]: json.loads(line) for line in lines}
    # originals (A = gpt35 as answer 1): q1 9/8.5 win, q2 9/9 tie, q3 9/8 win, q4 9/8.5 win, q5 9/8.5 win,
    # q6 9/8 win. Swapped copies, (B, A) with B shown first:
    extra = [
        _swapped(reviews[1], [8, 9]),                 # A better again      -> win,  consistent
        _swapped(reviews[2], [9, 8]),                 # tie + A worse       -> lose, not
        _swapped(reviews[3], [9, 8]),                 # first shown wins    -> tie,  not
        _swapped(reviews[4], [-1, -1], "8.5 9\nok"),  # marker: text decides (B 8.5, A 9) -> win, consistent
        _swapped(reviews[5], [-1, -1], "No scores."),  # unparsable: q5 stays one order (win)
        _swapped(reviews[6], None, "7 7\ntie", drop_score=True),  # win + tie -> win, not
    ]
    path = tmp_path / "two_orders.jsonl"
    path.write_text("\n".join([*lines, *map(json.dumps, extra)]) + "\n", encoding="utf-8")
    wins, ties, losses = _plain_counts(GPT35)
    # changes against the one-order file: q2 tie -> lose, q3 win -> tie
    wins, ties, losses = wins - 1, ties - 1 + 1, losses + 1
    r = _run_json(capsys, path)
    assert (r["n_win"], r["n_tie"], r["n_lose"], r["n_all"]) == (wins, ties, losses, 80) == (43, 22, 15, 80)
    assert r["winning_score"] == pytest.approx(1 + (43 - 15) / 80, abs=1e-12)
    assert (r["n_two_orders"], r["n_one_order"], r["n_consistent"]) == (5, 75, 2)
    assert r["position_consistency"] == pytest.approx(0.4, abs=1e-12)
    assert (r["n_records"], r["n_unparsable"]) == (86, 1)
    assert r["unparsable_examples"][0]["record"] == 85 and "question_id 5" in r["unparsable_examples"][0]["reason"]
    items = {j.item: j for j in read_judgements(path).judgements}
    assert items["4"].score_ba == (8.5, 9.0) and items["5"].score_ba is None


def test_fastchat_model_fields_name_the_models(tmp_path, capsys):
    lines = [dict(json.loads(line), model_1="gpt35", model_2="vicuna-13b")
             for line in GPT35.read_text(encoding="utf-8").splitlines()[:3]]
    path = tmp_path / "named.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    r = _run_json(capsys, path)
    assert (r["model_a"], r["model_b"], r["n_all"]) == ("gpt35", "vicuna-13b", 3)


def _annotation(preference, g1="gpt4_turbo", g2="my-model"):
    return {"instruction": "Say hi.", "output_1": "Hi.", "output_2": "Hello!", "generator_1": g1,
            "generator_2": g2, "preference": preference}


def test_alpaca_eval_annotations(tmp_path, capsys):
    prefs = [1, 2, 1.5, 1.2, 1.8, None, 0, 1.9]
    # 1 -> output_1 (baseline B) preferred: lose; 2 -> win; 1.5 tie; 1.2 -> nearer 1: lose; 1.8 -> win;
    # null unparsable; 0 tie; 1.9 win. win 3, tie 2, lose 2, all 7: WS = 1 + (3 - 2) / 7
    path = _write(tmp_path / "annotations.json", [_annotation(p) for p in prefs])
    r = _run_json(capsys, path)
    assert r["format"] == "alpaca-eval-annotations"
    assert (r["n_all"], r["n_win"], r["n_tie"], r["n_lose"]) == (7, 3, 2, 2)
    assert r["winning_score"] == pytest.approx(1 + 1 / 7, abs=1e-12)
    assert r["win_rate"] == pytest.approx(3 / 7, abs=1e-12)
    assert (r["n_one_order"], r["n_two_orders"], r["position_consistency"]) == (7, 0, None)
    assert (r["n_records"], r["n_unparsable"]) == (8, 1)
    assert r["unparsable_examples"][0]["record"] == 6
    assert (r["model_a"], r["model_b"]) == ("my-model", "gpt4_turbo")

    mixed = _write(tmp_path / "mixed.json", [_annotation(2), _annotation(1, g2="other-model"), _annotation("2")])
    r = _run_json(capsys, mixed, "--format", "alpaca-eval-annotations")
    assert (r["model_a"], r["model_b"], r["n_all"], r["n_unparsable"]) == (None, "gpt4_turbo", 2, 1)


def _fastchat_line(qid, a1, a2, score=(8, 7)):
    return json.dumps({"question_id": qid, "answer1_id": a1, "answer2_id": a2, "score": list(score),
                       "text": f"{score[0]} {score[1]}\n..."})


BAD = {
    "missing": (None, "no such file"),
    "directory": ("DIR", "directory"),
    "empty": (b"", "empty file"),
    "blank": (b"  \n\n", "empty file"),
    "invalid-utf8": (b'{"question_id": 1}\n\xff\xfe\n', "line 2: not valid UTF-8"),
    "invalid-json": (b'[{"id": 1, "score_ab": [8, 7],\n  }', "line 2: invalid JSON"),
    "invalid-jsonl-line": ((_fastchat_line(1, "a", "b") + "\n" + _fastchat_line(2, "c", "d") + "\n{oops\n").encode(),
                           "line 3: invalid JSON"),
    "top-level-number": (b"42", "top-level JSON number"),
    "top-level-string": (b'"8 7"', "top-level JSON string"),
    "jsonl-not-fastchat": (b'{"id": 1, "score_ab": [8, 7]}\n{"id": 2, "score_ab": [8, 7]}\n', "line 1"),
    "list-of-numbers": (b"[1, 2, 3]", "item 1"),
    "jsonl-of-lists": (b"[8, 7]\n[6, 9]\n", "line 1: JSON Lines of list"),
    "list-no-format": (b'[{"question": "q", "answer": "a"}]', "matches no format"),
    "empty-list": (b"[]", "empty JSON list"),
    "object-without-judgements": (b'{"items": []}', "'judgements'"),
    "json-list-of-reviews": (("[" + _fastchat_line(1, "a", "b") + "]").encode(), "JSON Lines"),
    "same-order-twice": ((_fastchat_line(1, "a", "b") + "\n" + _fastchat_line(1, "a", "b") + "\n").encode(),
                         "line 2: question_id 1"),
    "three-reviews": (("\n".join([_fastchat_line(7, "a", "b"), _fastchat_line(7, "b", "a"),
                                  _fastchat_line(7, "b", "a")]) + "\n").encode(), "line 3: question_id 7"),
    "other-answer-ids": ((_fastchat_line(1, "a", "b") + "\n" + _fastchat_line(1, "a", "c") + "\n").encode(),
                         "line 2"),
    "fastchat-bad-score": (b'{"question_id": 1, "answer1_id": "a", "answer2_id": "b", "score": [8]}\n',
                           "line 1, field 'score'"),
    "fastchat-missing-field": ((_fastchat_line(1, "a", "b") + '\n{"question_id": 2, "answer1_id": "c"}\n').encode(),
                               "line 2"),
    "two-order-bad-score": (b'[{"id": 1, "score_ab": [8, "x"], "score_ba": [7, 8]}]', "item 1, field 'score_ab'"),
    "two-order-no-orders": (b'[{"id": 1, "score_ab": [8, 7]}, {"id": 2}]', "item 2"),
    "two-order-duplicate-id": (b'[{"id": 1, "score_ab": [8, 7]}, {"id": 1, "score_ab": [8, 7]}]', "item 2"),
    "alpaca-missing-preference": (b'[{"output_1": "a", "preference": 1}, {"output_1": "b"}]', "item 2"),
    "nothing-usable": (b'[{"id": 1, "review_ab": "no scores"}]', "no usable judgement"),
    "forced-fastchat-on-list": ("ARGS", "line 1: JSON Lines of list"),
    "format-mismatch": ("ARGS2", "asked for two-order-json, but the content is alpaca-eval-annotations"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_inputs_are_one_line_errors(name, tmp_path, capsys):
    content, expected = BAD[name]
    path = tmp_path / f"{name}.json"
    argv = ["winning-score", str(path)]
    if content == "DIR":
        path.mkdir()
    elif content == "ARGS":
        _write(path, TEN)
        argv += ["--format", "fastchat-review"]
    elif content == "ARGS2":
        _write(path, [_annotation(2)])
        argv += ["--format", "two-order-json"]
    elif content is not None:
        path.write_bytes(content)
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.rstrip("\n")
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("instsel winning-score: ") and str(path) in err
    assert expected in err


def test_errors_name_the_accepted_formats(tmp_path):
    path = _write(tmp_path / "x.json", {"items": []})
    with pytest.raises(ValueError, match="accepted formats: fastchat-review .* two-order-json .* "
                                         "alpaca-eval-annotations"):
        read_judgements(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_judgements(tmp_path / "absent.jsonl")
