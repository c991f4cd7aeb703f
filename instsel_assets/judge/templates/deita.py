"""DEITA (Liu et al. 2023, "What Makes Good Data for Alignment? A Comprehensive Study of Automatic Data Selection
in Instruction Tuning"): a complexity score c and a quality score q on 1-6 for every turn; the evol score of a
row is ``sum over turns of c x q``.

Prompts: the complexity and quality prompts of DEITA's scorers, verbatim (hkust-nlp/deita,
``src/deita/selection/scorer/llama_scorer.py`` and ``mistral_scorer.py``, properties ``complexity_template``
and ``quality_template``). The reference scorer feeds the prompt to its fine-tuned scorer model and reads the
softmax over the logits of the tokens "1".."6" at the first generated position, returning the expected value
(``scorer/base.py``, ``infer_score``); ``rating=RatingSpec(1, 6)`` asks the in-process local backend for the same
expected value, and its reply ``"Score: 4.1234"`` is parsed like an API reply.

Deliberate difference: DEITA's scorers learned the 1-6 scale in training (the prompts do not state it), so a
general judge is told it in a system message (``SCALE_NOTE``: 1-6, higher is more complex / better, reply with
the score only). ``deita_template(scale_note=None)`` gives the reference prompts alone, for a DEITA scorer model.

Turns (as the reference's ``ScorePipeline._load_sharegpt``): every assistant turn is scored with the user turn
just before it as the instruction (the user turns since the previous assistant turn, joined by a blank line);
history is not included. The reference also scores a trailing user turn with an empty response; here only
answered turns are scored. ``build`` makes two requests per turn, in order ``complexity(t1), quality(t1),
complexity(t2), quality(t2), ...``; a row without an answered turn cannot be judged (``[]``).

Columns (``combine``): ``deita_complexity`` and ``deita_quality`` = the mean over the row's turns (the reference
keeps the per-turn lists), ``deita_evol_score`` = ``sum_t c_t * q_t`` (the reference's ``Combined_Filter``:
element-wise product of the per-turn score lists, summed). Selection: ``selection/deita_score_first.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from instsel_assets.judge.templates._common import messages, parse_rating, qa_pairs
from instsel_assets.judge.types import JudgeRequest, JudgeTemplate, RatingSpec
from instsel_assets.registry import register_scorer

COMPLEXITY_PROMPT = ("You are a helpful assistant. Please identify the complexity score of the following user query. "
                     "\n##Query: {instruction}  \n##Complexity: ")
QUALITY_PROMPT = ("You are a helpful assistant. Please identify the quality score of the Response corresponding to "
                  "the Question. \n #Question#:\n{instruction}\n#Response#:\n{output} \n##Quality: ")
SCALE_NOTE = ("Scores are integers from 1 to 6: for complexity, 1 is the simplest query and 6 the most complex; "
              "for quality, 1 is the worst response and 6 the best. Reply with the score only.")

SCALE = (1, 6)
RATING = RatingSpec(*SCALE)
MAX_TOKENS = 16
COLUMNS = ("deita_complexity", "deita_quality", "deita_evol_score")


def parse(text: str) -> float:
    """A complexity or quality score in [1, 6] (``_common.parse_rating``); ``ReplyParseError`` otherwise."""
    return parse_rating(text, *SCALE, labels=("score", "rating", "complexity", "quality"))


def combine(values: Sequence[float]) -> dict[str, Any]:
    """``(c1, q1, c2, q2, ...)`` -> mean complexity, mean quality and ``sum c_t * q_t``."""
    if len(values) == 0 or len(values) % 2:
        raise ValueError(f"deita: expected (complexity, quality) pairs of parsed scores, got {len(values)} values")
    complexity = [float(v) for v in values[0::2]]
    quality = [float(v) for v in values[1::2]]
    return {
        "deita_complexity": sum(complexity) / len(complexity),
        "deita_quality": sum(quality) / len(quality),
        "deita_evol_score": sum(c * q for c, q in zip(complexity, quality)),
    }


def deita_template(scale_note: str | None = SCALE_NOTE) -> JudgeTemplate:
    """The DEITA template; ``scale_note=None`` sends the reference prompts alone (no system message)."""

    def build(row: Mapping[str, Any]) -> list[JudgeRequest]:
        requests = []
        for instruction, output in qa_pairs(row):
            for prompt in (COMPLEXITY_PROMPT.format(instruction=instruction),
                           QUALITY_PROMPT.format(instruction=instruction, output=output)):
                requests.append(JudgeRequest(messages=messages(scale_note, prompt), max_tokens=MAX_TOKENS,
                                             temperature=0.0, rating=RATING))
        return requests

    return JudgeTemplate(
        name="deita",
        columns=COLUMNS,
        build=build,
        parse=parse,
        combine=combine,
        description="DEITA complexity and quality (1-6) per answered turn; evol score = sum of c x q.",
    )


TEMPLATE = deita_template()
build = TEMPLATE.build


@register_scorer(
    "deita",
    family="powerful-llm",
    paper="Liu et al. 2023, What Makes Good Data for Alignment? (DEITA)",
    summary="The judge scores complexity and quality (1-6, DEITA's scorer prompts; expected digit under the "
            "local backend) of every answered turn; evol score = sum over turns of complexity x quality.",
    writes=TEMPLATE.columns,
)
def template() -> JudgeTemplate:
    """The DEITA judge template (run by the judge engine)."""
    return TEMPLATE
