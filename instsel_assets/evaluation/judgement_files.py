"""Reading pairwise judgements made elsewhere (``instsel winning-score FILE``) into :class:`Judgement` items, so
that :func:`summarise` gives their win / tie / lose counts, winning score, win rate and position consistency with
the project's rules (``evaluation/winning.py``).

Model A is the model being evaluated and B the baseline; a score pair is always in presentation order:
``score_ab = (A, B)`` when A was shown first, ``score_ba = (B, A)`` when B was shown first. Three formats are
accepted, detected from the content (or named with ``--format``):

1. ``fastchat-review``: FastChat's legacy review JSON Lines (``fastchat/eval/eval_gpt_review.py``), one JSON
   object per non-blank line with ``question_id``, ``answer1_id``, ``answer2_id`` and ``score`` (the pair
   ``[assistant 1, assistant 2]``) and/or ``text`` (the review, whose first line holds the two scores)::

       {"question_id": 1, "answer1_id": "a1", "answer2_id": "b1", "text": "9 8.5\\nBoth ...", "score": [9.0, 8.5]}

   The ``score`` pair is used when present; when it is missing, null or FastChat's ``[-1, -1]`` "could not
   parse" marker, the ``text`` is read with ``judge.templates.pairwise.parse``; a review that yields no pair
   either way is counted unparsable and never scored. Reviews are grouped by ``question_id``: the first
   review of a question fixes A = its ``answer1_id`` and B = its ``answer2_id``; a second review of that
   question with the two answer ids swapped is the other order (``score_ba``). A second review in the same
   order, one with other answer ids, or a third review is an error naming the line and the question. The
   model names are known only when every review carries ``model_1`` and ``model_2`` (the models of answer 1
   and answer 2) and they name one A and one B over the file; answer ids alone do not say which model wrote
   an answer, so otherwise the names are unknown.

2. ``two-order-json``: a JSON list of items, or an object ``{"model_a": ..., "model_b": ..., "judgements":
   [...]}`` (the names optional, text or null). An item holds the scores of one or both orders, as pairs or
   as review texts read with ``pairwise.parse``::

       [{"id": "q1", "score_ab": [8, 7], "score_ba": [6, 9]},
        {"id": "q2", "review_ab": "8 7\\nAssistant 1 ...", "review_ba": "6 9\\nAssistant 1 ..."}]

   ``id`` is optional (an item is then named by its position) and must not repeat. For each order the
   ``score_*`` pair is used when it is present and neither null nor ``[-1, -1]``, else the ``review_*`` text;
   a text that cannot be read makes that order missing and is counted unparsable; an item with neither order
   usable is left out. An item with none of the four fields, or a score that is not a pair of finite numbers,
   is an error.

3. ``alpaca-eval-annotations``: AlpacaEval's annotation JSON, a list of records with ``preference`` and the
   outputs (``instruction``, ``output_1``, ``output_2``, ``generator_1``, ``generator_2``)::

       [{"instruction": "...", "output_1": "...", "output_2": "...", "generator_1": "gpt4_turbo",
         "generator_2": "my-model", "preference": 2}]

   As in AlpacaEval, ``output_1`` is the baseline (B) and ``output_2`` the evaluated model (A).
   ``preference`` 1 means output_1 preferred (a loss for A), 2 output_2 preferred (a win), 1.5 or 0 a tie; a
   continuous preference in [1, 2] goes to the nearer side (exactly 1.5 is a tie); null or any other value is
   counted unparsable. A record is one judgement in one order: ``score_ba = (output_1, output_2)`` with the
   preferred side scored higher (AlpacaEval may have randomised the order shown to its judge, so no position
   consistency can be computed). ``model_a`` = ``generator_2`` when it is the same text in every record, and
   ``model_b`` = ``generator_1`` likewise (each None otherwise).

Counts: ``n_records`` is the number of records read (non-blank lines, list items); ``n_unparsable`` the number
of judgements that could not be read (a FastChat line, an AlpacaEval record, or one order of a two-order
item, so an item with both orders unreadable counts twice); ``unparsable_examples`` the first five, each
``{"record": n, "reason": ...}`` with ``n`` the line number (JSON Lines) or the 1-based position in the list.

Anything else (a missing file, a directory, an empty file, invalid UTF-8, invalid JSON, a top-level value of
another type, JSON Lines that are not FastChat reviews, a list whose items match no format) raises
``FileNotFoundError`` or ``ValueError`` with a one-line message naming the file, the line or item and field
where it applies, and the accepted formats.
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instsel_assets.evaluation.winning import Judgement, summarise
from instsel_assets.judge.templates.pairwise import parse
from instsel_assets.judge.types import ReplyParseError

FORMATS = ("fastchat-review", "two-order-json", "alpaca-eval-annotations")
ACCEPTED = ("accepted formats: fastchat-review (FastChat review JSON Lines with question_id, answer1_id, answer2_id, "
            "score/text), two-order-json (a JSON list, or {\"judgements\": [...]}, of items with score_ab/score_ba "
            "pairs or review_ab/review_ba texts), alpaca-eval-annotations (AlpacaEval annotation JSON list with "
            "preference, output_1, output_2)")
MAX_EXAMPLES = 5
_FASTCHAT_KEYS = ("question_id", "answer1_id", "answer2_id")
_TWO_ORDER_KEYS = ("score_ab", "score_ba", "review_ab", "review_ba")
_FAILED = (-1.0, -1.0)  # FastChat's "could not parse the review" score


@dataclass
class JudgementFile:
    """What :func:`read_judgements` read (module docstring)."""

    format: str
    judgements: list[Judgement]
    model_a: str | None = None
    model_b: str | None = None
    n_records: int = 0
    n_unparsable: int = 0
    unparsable_examples: list[dict[str, Any]] = field(default_factory=list)

    def unparsable(self, record: int, reason: str) -> None:
        self.n_unparsable += 1
        if len(self.unparsable_examples) < MAX_EXAMPLES:
            self.unparsable_examples.append({"record": record, "reason": _one_line(reason)})


class _Bad(ValueError):
    """A malformed file; the reader turns it into a ``ValueError`` naming the file and the accepted formats."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, numbers.Real) else type(value).__name__)


def _score_pair(value: Any, where: str) -> tuple[float, float]:
    """A pair of finite numbers (booleans refused); ``_Bad`` naming ``where`` otherwise."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v)) for v in value):
        return float(value[0]), float(value[1])
    raise _Bad(f"{where}: expected a pair of finite numbers, got {_short(value)}")


def _review(value: Any, where: str) -> tuple[float, float]:
    """``pairwise.parse`` of a review text (``ReplyParseError`` when unreadable; ``_Bad`` when not text)."""
    if not isinstance(value, str):
        raise _Bad(f"{where}: expected the review text, got {_type_name(value)}")
    return parse(value)


# ------------------------------------------------------------------------------------------------ loading
def _read_text(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file ({ACCEPTED})")
    if path.is_dir():
        raise _Bad("is a directory, not a judgement file")
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise _Bad(f"line {line}: not valid UTF-8 (byte {err.start})") from None
    if not text.strip():
        raise _Bad("empty file")
    return text


def _json_error(err: json.JSONDecodeError) -> _Bad:
    return _Bad(f"line {err.lineno}: invalid JSON ({err.msg}, column {err.colno})")


def _json_lines(text: str) -> list[tuple[int, Any]]:
    """Every non-blank line as ``(line number, value)``; ``_Bad`` naming the first line that is not JSON."""
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise _Bad(f"line {number}: invalid JSON ({err.msg}, column {err.colno})") from None
    return out


def _structure(text: str) -> tuple[str, Any]:
    """``("json", value)`` for one JSON document, ``("jsonl", [(line, value), ...])`` for JSON Lines."""
    try:
        return "json", json.loads(text)
    except json.JSONDecodeError as err:
        whole_error = err
    if whole_error.msg == "Extra data":  # one JSON value per line
        return "jsonl", _json_lines(text)
    first_line = next(line for line in text.splitlines() if line.strip())
    if first_line.lstrip().startswith("{"):
        try:
            json.loads(first_line)
        except json.JSONDecodeError:
            pass
        else:  # the first line is a JSON object of its own: JSON Lines
            return "jsonl", _json_lines(text)
    raise _json_error(whole_error)


def _looks_fastchat(value: Any) -> bool:
    return isinstance(value, dict) and all(k in value for k in _FASTCHAT_KEYS)


def _list_format(items: list) -> str:
    if not items:
        raise _Bad("an empty JSON list: no judgements")
    first = items[0]
    if not isinstance(first, dict):
        raise _Bad(f"item 1: expected a JSON object, got {_type_name(first)}")
    if any(k in first for k in _TWO_ORDER_KEYS):
        return "two-order-json"
    if "preference" in first:
        return "alpaca-eval-annotations"
    if _looks_fastchat(first):
        raise _Bad("a JSON list of FastChat reviews: fastchat-review files are JSON Lines, one review per line")
    raise _Bad(f"item 1 matches no format (fields: {', '.join(sorted(map(str, first))) or 'none'})")


def _detect(kind: str, value: Any) -> str:
    if kind == "jsonl":
        number, first = value[0]
        if _looks_fastchat(first):
            return "fastchat-review"
        if isinstance(first, dict):
            missing = [k for k in _FASTCHAT_KEYS if k not in first]
            raise _Bad(f"line {number}: JSON Lines that are not FastChat reviews (missing {', '.join(missing)})")
        raise _Bad(f"line {number}: JSON Lines of {_type_name(first)}, not FastChat review objects")
    if isinstance(value, list):
        return _list_format(value)
    if isinstance(value, dict):
        if "judgements" in value:
            return "two-order-json"
        if _looks_fastchat(value):
            return "fastchat-review"
        raise _Bad("a JSON object without a 'judgements' list")
    raise _Bad(f"top-level JSON {_type_name(value)}: expected a list, an object or JSON Lines")


def read_judgements(path: str | Path, fmt: str = "auto") -> JudgementFile:
    """Read a file of pairwise judgements (module docstring); ``fmt`` is ``"auto"`` or one of :data:`FORMATS`."""
    path = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose auto or one of {', '.join(FORMATS)}")
    try:
        text = _read_text(path)
        if fmt == "fastchat-review":
            kind, value = "jsonl", _json_lines(text)
        else:
            kind, value = _structure(text)
            if kind == "json" and _looks_fastchat(value):  # JSON Lines of one review
                if sum(1 for line in text.splitlines() if line.strip()) > 1:
                    raise _Bad("a FastChat review spread over several lines: fastchat-review files hold one "
                               "review per line")
                kind, value = "jsonl", _json_lines(text)
        detected = _detect(kind, value)
        if fmt != "auto" and detected != fmt:
            raise _Bad(f"asked for {fmt}, but the content is {detected}")
        if detected == "fastchat-review":
            return _read_fastchat(value)
        if detected == "two-order-json":
            return _read_two_order(value)
        return _read_alpaca(value)
    except _Bad as err:
        raise ValueError(f"{path}: {_one_line(str(err))} ({ACCEPTED})") from None


# ----------------------------------------------------------------------------------------------- fastchat
def _fastchat_score(review: dict, where: str) -> tuple[tuple[float, float] | None, str]:
    """The review's ``(assistant 1, assistant 2)`` pair, or ``(None, reason)`` when it yields none."""
    score = review.get("score")
    marker = False
    if score is not None:
        pair = _score_pair(score, f"{where}, field 'score'")
        if pair != _FAILED:
            return pair, ""
        marker = True
    if "text" not in review or review["text"] is None:
        return None, ("score is FastChat's [-1, -1] marker and there is no text" if marker
                      else "neither a score nor a text")
    try:
        return _review(review["text"], f"{where}, field 'text'"), ""
    except ReplyParseError as err:
        return None, ("score is FastChat's [-1, -1] marker; " if marker else "no score; ") + f"text: {err}"


def _read_fastchat(lines: list[tuple[int, Any]]) -> JudgementFile:
    out = JudgementFile(format="fastchat-review", judgements=[], n_records=len(lines))
    items: dict[Any, dict[str, Any]] = {}  # question key -> first review's ids, its line, the two scores
    models_a: set[Any] = set()
    models_b: set[Any] = set()
    named = True
    for number, review in lines:
        where = f"line {number}"
        if not isinstance(review, dict):
            raise _Bad(f"{where}: expected a FastChat review object, got {_type_name(review)}")
        missing = [k for k in _FASTCHAT_KEYS if k not in review]
        if missing:
            raise _Bad(f"{where}: not a FastChat review (missing {', '.join(missing)})")
        if "score" not in review and "text" not in review:
            raise _Bad(f"{where}: a FastChat review needs 'score' or 'text'")
        qid, a1, a2 = (review[k] for k in _FASTCHAT_KEYS)
        for name, value in (("question_id", qid), ("answer1_id", a1), ("answer2_id", a2)):
            if isinstance(value, (dict, list)) or value is None:
                raise _Bad(f"{where}, field {name!r}: expected an id, got {_type_name(value)}")
        key = json.dumps(qid)
        pair, reason = _fastchat_score(review, where)
        item = items.get(key)
        if item is None:
            item = items[key] = {"qid": qid, "a": a1, "b": a2, "line": number, "ab": pair, "ba": None, "n": 1}
            if isinstance(review.get("model_1"), str) and isinstance(review.get("model_2"), str):
                models_a.add(review["model_1"])
                models_b.add(review["model_2"])
            else:
                named = False
        else:
            item["n"] += 1
            if item["n"] > 2:
                raise _Bad(f"{where}: question_id {qid!r} has more than two reviews")
            if (a1, a2) == (item["a"], item["b"]):
                raise _Bad(f"{where}: question_id {qid!r} is reviewed a second time in the same order as on "
                           f"line {item['line']}")
            if (a1, a2) != (item["b"], item["a"]):
                raise _Bad(f"{where}: question_id {qid!r} reviews answers ({a1!r}, {a2!r}), not the swapped pair "
                           f"of line {item['line']} ({item['a']!r}, {item['b']!r})")
            item["ba"] = pair
        if pair is None:
            out.unparsable(number, f"question_id {qid!r}: {reason}")
    for item in items.values():
        if item["ab"] is not None or item["ba"] is not None:
            out.judgements.append(Judgement(item["ab"], item["ba"], item=str(item["qid"])))
    if named and len(models_a) == 1 and len(models_b) == 1:
        out.model_a, out.model_b = models_a.pop(), models_b.pop()
    return out


# ---------------------------------------------------------------------------------------------- two-order
def _read_two_order(value: Any) -> JudgementFile:
    model_a = model_b = None
    if isinstance(value, dict):
        items = value.get("judgements")
        if not isinstance(items, list):
            raise _Bad(f"field 'judgements': expected a list of items, got {_type_name(items)}")
        for name in ("model_a", "model_b"):
            if value.get(name) is not None and not isinstance(value[name], str):
                raise _Bad(f"field {name!r}: expected a model name, got {_type_name(value[name])}")
        model_a, model_b = value.get("model_a"), value.get("model_b")
    else:
        items = value
    out = JudgementFile(format="two-order-json", judgements=[], model_a=model_a, model_b=model_b,
                        n_records=len(items))
    seen: dict[str, int] = {}
    for number, item in enumerate(items, start=1):
        where = f"item {number}"
        if not isinstance(item, dict):
            raise _Bad(f"{where}: expected a JSON object, got {_type_name(item)}")
        if not any(k in item for k in _TWO_ORDER_KEYS):
            raise _Bad(f"{where}: none of {', '.join(_TWO_ORDER_KEYS)}")
        if "id" in item:
            if isinstance(item["id"], (dict, list)) or item["id"] is None:
                raise _Bad(f"{where}, field 'id': expected an id, got {_type_name(item['id'])}")
            key = json.dumps(item["id"])
            if key in seen:
                raise _Bad(f"{where}: id {item['id']!r} repeats item {seen[key]}")
            seen[key] = number
            label = str(item["id"])
        else:
            label = f"#{number}"
        pairs: dict[str, tuple[float, float] | None] = {}
        for order in ("ab", "ba"):
            score, review = item.get(f"score_{order}"), item.get(f"review_{order}")
            pairs[order] = None
            if score is not None:
                pair = _score_pair(score, f"{where}, field 'score_{order}'")
                if pair != _FAILED:
                    pairs[order] = pair
                    continue
            if review is None:
                if score is not None:
                    out.unparsable(number, f"id {label}: score_{order} is the [-1, -1] marker and there is no "
                                           f"review_{order}")
                continue
            try:
                pairs[order] = _review(review, f"{where}, field 'review_{order}'")
            except ReplyParseError as err:
                out.unparsable(number, f"id {label}: review_{order}: {err}")
        if pairs["ab"] is not None or pairs["ba"] is not None:
            out.judgements.append(Judgement(pairs["ab"], pairs["ba"], item=label))
    return out


# ---------------------------------------------------------------------------------------------- alpacaeval
def _preference(value: Any) -> tuple[float, float] | None:
    """``(output_1, output_2)`` scores with the preferred side higher; None when the preference is unusable."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        return None
    p = float(value)
    if p == 0 or p == 1.5:
        return (1.0, 1.0)
    if not 1 <= p <= 2:
        return None
    return (2.0, 1.0) if p < 1.5 else (1.0, 2.0)


def _read_alpaca(items: list) -> JudgementFile:
    out = JudgementFile(format="alpaca-eval-annotations", judgements=[], n_records=len(items))
    generators: dict[str, set[Any]] = {"generator_1": set(), "generator_2": set()}
    for number, record in enumerate(items, start=1):
        where = f"item {number}"
        if not isinstance(record, dict):
            raise _Bad(f"{where}: expected a JSON object, got {_type_name(record)}")
        if "preference" not in record:
            raise _Bad(f"{where}: an AlpacaEval annotation needs a 'preference' field")
        for name, seen in generators.items():
            value = record.get(name)
            seen.add(value if isinstance(value, str) else None)
        pair = _preference(record["preference"])
        if pair is None:
            out.unparsable(number, f"preference {_short(record['preference'])} is not 1, 2, 1.5, 0 or a number "
                                   f"in [1, 2]")
            continue
        # score_ba = (B, A) = (output_1, output_2): the record's own order (the judge's may have been swapped).
        out.judgements.append(Judgement(None, pair, item=f"#{number}"))
    g1, g2 = generators["generator_1"], generators["generator_2"]
    out.model_b = g1.pop() if len(g1) == 1 else None  # None when it varies (or is missing)
    out.model_a = g2.pop() if len(g2) == 1 else None
    return out


# ---------------------------------------------------------------------------------------------------- CLI
def winning_report(path: str | Path, fmt: str = "auto") -> dict[str, Any]:
    """``summarise()`` of a file's judgements plus format, file, model names and the record counts."""
    read = read_judgements(path, fmt)
    return {"file": str(path), "format": read.format, "model_a": read.model_a, "model_b": read.model_b,
            **summarise(read.judgements), "n_records": read.n_records, "n_unparsable": read.n_unparsable,
            "unparsable_examples": read.unparsable_examples}


_UNNAMED = {"fastchat-review": "A = answer 1 of each question's first review, B = its answer 2",
            "two-order-json": "A and B as in score_ab = (A, B)",
            "alpaca-eval-annotations": "A = output_2, B = output_1 (the baseline)"}


def _text_report(r: dict[str, Any]) -> str:
    def rate(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    rows = [("file", r["file"]), ("format", r["format"])]
    if r["model_a"] or r["model_b"]:
        rows.append(("models", f"A = {r['model_a'] or '?'} vs B = {r['model_b'] or '?'}"))
    else:
        rows.append(("models", _UNNAMED[r["format"]] + " (names not in the file)"))
    consistency = ("n/a (no item judged in both orders)" if r["position_consistency"] is None else
                   f"{r['position_consistency']:.4f} ({r['n_consistent']} of {r['n_two_orders']})")
    rows += [
        ("items", str(r["n_all"])),
        ("win / tie / lose", f"{r['n_win']} / {r['n_tie']} / {r['n_lose']}"),
        ("winning score (WS)", rate(r["winning_score"])),
        ("win rate", rate(r["win_rate"])),
        ("position consistency", consistency),
        ("two-order items", str(r["n_two_orders"])),
        ("one-order items", str(r["n_one_order"])),
        ("records", str(r["n_records"])),
        ("unparsable judgements", str(r["n_unparsable"])),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines += [f"  record {ex['record']}: {ex['reason']}" for ex in r["unparsable_examples"]]
    return "\n".join(lines)


def cmd_winning_score(args: argparse.Namespace) -> int:
    try:
        report = winning_report(args.file, args.format)
    except (ValueError, OSError) as err:
        print(f"instsel winning-score: {_one_line(str(err))}", file=sys.stderr)
        return 1
    if report["n_all"] == 0:
        print(f"instsel winning-score: {args.file}: no usable judgement (records: {report['n_records']}, "
              f"unparsable judgements: {report['n_unparsable']})", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else _text_report(report))
    return 0


def add_winning_score_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``winning-score FILE [--json] [--format ...]`` to an argparse subparsers object."""
    p = sub.add_parser("winning-score",
                       help="win / tie / lose, winning score, win rate and position consistency of a file of "
                            "pairwise judgements made elsewhere",
                       description="Read pairwise judgements of model A against a baseline B and print win / tie / "
                                   "lose, WS = 1 + (win - lose) / all, the win rate and the judge's position "
                                   "consistency. " + ACCEPTED[0].upper() + ACCEPTED[1:] + ".")
    p.add_argument("file", type=Path, help="the judgement file")
    p.add_argument("--format", choices=("auto", *FORMATS), default="auto",
                   help="the file's format (default: detected from the content)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(fn=cmd_winning_score)
    return p
