"""The pairwise evaluation judge (docs/METHODS.md, "Evaluation"; the protocol of AlpaGasus, Cherry LLM and the other
survey papers): the judge rates two answers to the same question on 1-10, every pair is judged twice with the
order swapped, and the two judgements give a win, a loss or a tie; the winning score summarises a test set.

Prompt: the Vicuna / FastChat pairwise reviewer prompt, verbatim as AlpaGasus's evaluation script sends it to
GPT-4 (gpt4life/alpagasus ``evaluation/eval.py``, ``gen_prompt``; temperature 0, 256 reply tokens): the system
message ``SYSTEM_PROMPT`` and a user message with the question, the two answers framed as "Assistant 1" and
"Assistant 2", and the rating instruction, which asks for a first line holding the two 1-10 scores separated by
a space, then an explanation. MT-Bench's later pairwise prompt gives a verdict ([[A]]/[[B]]/[[C]])
instead of scores; the survey's winning score needs scores, so the Vicuna prompt is used.

Rows: this is not a pool scorer (a row is an evaluation item, not a training example). It is registered as
``pairwise_judge`` so that the method list shows it with the other judge templates; the evaluation code uses
``TEMPLATE``, :func:`verdict` and :func:`winning_score`.
A row is a mapping with ``question``, ``answer_a`` and ``answer_b`` (``id`` optional, for messages). ``build``
makes two requests: (A as Assistant 1, B as Assistant 2), then (B as Assistant 1, A as Assistant 2); a row with
an empty question or answer cannot be judged (``[]``).

Parser (``parse``): the pair of scores in presentation order, ``(assistant 1, assistant 2)``, each a finite
number in [1, 10]: ``8 7`` / ``8, 7`` / ``8.5 7`` on the first non-empty line (labels such as ``Assistant 1:``
and ``Scores:`` and markdown are ignored), ``Assistant 1: 8`` and ``Assistant 2: 7`` on the first two lines, or
``[[8, 7]]`` anywhere. ``ReplyParseError`` for an empty reply, a first line with one or three numbers, a
bracketed pair that disagrees with another one or with the first line, a score out of range, or no scores at
all (the reference's parser reads only ``first line split on spaces and commas`` and turns anything else into
``[-1, -1]``).

Columns (``combine``): ``score_a_ab``, ``score_b_ab`` (the scores of A and B when A is shown first),
``score_a_ba``, ``score_b_ba`` (when B is shown first) and ``verdict`` (for answer A: "win", "lose" or "tie").
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

from instsel_assets.judge.templates._common import NUMBER, check_range, clean_lines, messages, require_text, row_id
from instsel_assets.judge.types import JudgeRequest, JudgeTemplate, RatingSpec, ReplyParseError
from instsel_assets.registry import register_scorer

SYSTEM_PROMPT = "You are a helpful and precise assistant for checking the quality of the answer."
REVIEW_PROMPT = ("We would like to request your feedback on the performance of two AI assistants in response to the "
                 "user question displayed above.\nPlease rate the helpfulness, relevance, accuracy, level of details "
                 "of their responses. Each assistant receives an overall score on a scale of 1 to 10, where a higher "
                 "score indicates better overall performance.\nPlease first output a single line containing only two "
                 "values indicating the scores for Assistant 1 and 2, respectively. The two scores are separated by a "
                 "space. In the subsequent line, please provide a comprehensive explanation of your evaluation, "
                 "avoiding any potential bias and ensuring that the order in which the responses were presented does "
                 "not affect your judgment.")
USER_TEMPLATE = ("[Question]\n{question}\n\n[The Start of Assistant 1's Answer]\n{answer_1}\n\n"
                 "[The End of Assistant 1's Answer]\n\n[The Start of Assistant 2's Answer]\n{answer_2}\n\n"
                 "[The End of Assistant 2's Answer]\n\n[System]\n{prompt}\n\n")
SCALE = (1, 10)
MAX_TOKENS = 256  # the reference evaluation script's default
# The local backend reads the two scores from the next-token digit probabilities instead of generating: the
# expected score of assistant 1, then (after its most likely digit and a space) of assistant 2. One token per
# digit limits it to 1-9; an API judge replies on the prompt's 1-10 scale.
RATING = RatingSpec(1, 9, reply_prefix="", second_prefix=" ")
COLUMNS = ("score_a_ab", "score_b_ab", "score_a_ba", "score_b_ba", "verdict")
VERDICTS = ("win", "lose", "tie")


def _field(row: Mapping[str, Any], name: str) -> str:
    value = row.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if not isinstance(value, str):
        raise ValueError(f"row {row_id(row)!r}, field {name!r}: expected text, got {type(value).__name__}")
    return value


def build(row: Mapping[str, Any]) -> list[JudgeRequest]:
    """Two requests, (A, B) then (B, A); [] when the question or an answer is empty."""
    question, a, b = _field(row, "question"), _field(row, "answer_a"), _field(row, "answer_b")
    if not (question.strip() and a.strip() and b.strip()):
        return []
    out = []
    for first, second in ((a, b), (b, a)):
        user = USER_TEMPLATE.format(question=question, answer_1=first, answer_2=second, prompt=REVIEW_PROMPT)
        out.append(JudgeRequest(messages=messages(SYSTEM_PROMPT, user), max_tokens=MAX_TOKENS, temperature=0.0,
                                rating=RATING))
    return out


def parse(text: str) -> tuple[float, float]:
    """``(score of assistant 1, score of assistant 2)`` (module docstring); ``ReplyParseError`` otherwise."""
    body = require_text(text)
    bracketed = {(float(x), float(y)) for x, y in re.findall(rf"\[\[\s*({NUMBER})\s*[,;\s]\s*({NUMBER})\s*\]\]", body)}
    if len(bracketed) > 1:
        raise ReplyParseError(f"conflicting score pairs: {sorted(bracketed)}")
    lines = clean_lines(body)
    if not lines:
        raise ReplyParseError("empty reply")
    labelled = [re.fullmatch(rf"assistant\s*{k}\b(?:'s)?(?:\s*score)?\s*[:=]?\s*({NUMBER})(?:\s*/\s*10)?\.?", line,
                             re.I) for k, line in ((1, lines[0]), (2, lines[1] if len(lines) > 1 else ""))]
    if all(labelled) and not bracketed:
        return (check_range(float(labelled[0].group(1)), *SCALE, what="assistant 1 score"),
                check_range(float(labelled[1].group(1)), *SCALE, what="assistant 2 score"))
    first = re.sub(r"\bassistant\s*[12]\b\s*(?:'s)?\s*(?:score)?\s*[:=]?", " ", lines[0], flags=re.I)
    first = re.sub(r"^\s*(?:scores?|ratings?)\s*[:=]?", " ", first, flags=re.I)
    first = re.sub(r"\[\[|\]\]", " ", first)
    numbers_first = re.findall(rf"(?<![\w.]){NUMBER}(?![\w.])", first)
    pair: tuple[float, float] | None = None
    if len(numbers_first) == 2:
        pair = (float(numbers_first[0]), float(numbers_first[1]))
    elif numbers_first and not bracketed:
        raise ReplyParseError(f"expected two scores on the first line, found {len(numbers_first)}: {lines[0][:60]!r}")
    if bracketed:
        (only,) = bracketed
        if pair is not None and pair != only:
            raise ReplyParseError(f"the first line's scores {pair} disagree with [[{only[0]:g}, {only[1]:g}]]")
        pair = only
    if pair is None:
        raise ReplyParseError(f"no scores: the first line holds no two numbers ({lines[0][:60]!r})")
    return (check_range(pair[0], *SCALE, what="assistant 1 score"),
            check_range(pair[1], *SCALE, what="assistant 2 score"))


def _pair(value: Any, name: str) -> tuple[float, float]:
    try:
        x, y = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of scores, got {value!r}") from None
    out = []
    for v in (x, y):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise ValueError(f"{name} must hold two finite numbers, got {value!r}")
        out.append(float(v))
    return out[0], out[1]


def verdict(score_ab: Sequence[float], score_ba: Sequence[float]) -> str:
    """The outcome for answer A from the two judgements, each in presentation order: ``score_ab = (A, B)`` when
    A was shown first, ``score_ba = (B, A)`` when B was shown first.

    METHODS.md's rule: "win" when A is rated higher both times, or higher once and tied once; "lose" is the
    mirror; everything else (tied twice, or higher once and lower once) is "tie".
    """
    a1, b1 = _pair(score_ab, "score_ab")
    b2, a2 = _pair(score_ba, "score_ba")
    outcomes = sorted(((a1 > b1) - (a1 < b1), (a2 > b2) - (a2 < b2)))
    if outcomes in ([1, 1], [0, 1]):
        return "win"
    if outcomes in ([-1, -1], [-1, 0]):
        return "lose"
    return "tie"


def winning_score(n_win: int, n_lose: int, n_all: int) -> float:
    """``WS = 1 + (n_win - n_lose) / n_all``, in [0, 2]; above 1 means the model beats the baseline."""
    for name, v in (("n_win", n_win), ("n_lose", n_lose), ("n_all", n_all)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if n_all == 0:
        raise ValueError("n_all must be > 0 (no judged pairs)")
    if n_win + n_lose > n_all:
        raise ValueError(f"n_win + n_lose ({n_win} + {n_lose}) exceeds n_all ({n_all})")
    return 1.0 + (n_win - n_lose) / n_all


def combine(values: Sequence[tuple[float, float]]) -> dict[str, Any]:
    if len(values) != 2:
        raise ValueError(f"pairwise: expected the (A, B) and (B, A) judgements, got {len(values)} values")
    (a1, b1), (b2, a2) = values
    return {"score_a_ab": a1, "score_b_ab": b1, "score_a_ba": a2, "score_b_ba": b2,
            "verdict": verdict((a1, b1), (b2, a2))}


TEMPLATE = JudgeTemplate(
    name="pairwise",
    columns=COLUMNS,
    build=build,
    parse=parse,
    combine=combine,
    description="Pairwise evaluation judge (Vicuna/FastChat reviewer prompt), both orders; verdict for answer A.",
)


@register_scorer(
    "pairwise_judge",
    family="powerful-llm",
    paper="Vicuna/FastChat pairwise reviewer prompt, as AlpaGasus and Cherry LLM evaluate (survey section 4)",
    summary="Evaluation judge, not a pool scorer: rates two answers to one question 1-10, in both orders; a win is "
            "better both times or better once and tied once; winning score 1 + (win - lose) / all.",
    writes=COLUMNS,
)
def template() -> JudgeTemplate:
    """The pairwise evaluation judge template (rows: question, answer_a, answer_b)."""
    return TEMPLATE
