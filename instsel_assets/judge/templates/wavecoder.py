"""WaveCoder (Yu et al. 2023, "WaveCoder: Widespread And Versatile Enhanced Instruction Tuning with Refined Data
Generation"): an LLM discriminator checks every code instruction against the criteria of its task type
(subtopic: code generation, code summarization, code translation, code repair) and only the data that meets all
of them is kept.

Prompt: the reference discriminator prompt (microsoft/WaveCoder, ``src/data/llm_gen_dis/prompt/discriminator.txt``)
with the sample laid out as its generator writes it (``task_name / instruction / information / solution``) and
followed by ``Analysis:``, as ``main.py``'s ``discriminator`` does. The reference file holds the code-generation
criteria; those are reproduced verbatim (``G1``-``G5``). The criteria of the other three task types (``S``, ``T``,
``R``) are written here in the same style from the paper's description of its per-task rules. Deliberate
differences: every requirement carries an id (``G1``...) so that the reply can be read unambiguously (the
reference numbers restart at 1 in each step and its parser only collects the answers in order); the reference
adds few-shot bad examples from its own generation run, which do not exist here, so there are none.

Subtopic of a row: an explicit column ``wavecoder_task`` (``generation``, ``summarization``, ``translation``,
``repair``, with or without a ``code`` prefix), or ``task_type`` / ``subtopic`` holding a value such as ``code
generation``, wins. Otherwise :func:`detect_subtopic` decides from the text: a row is code when a code fence or
code-like lines appear in it, or the instruction names a programming language together with a programming word
(code, function, program, script, ...); code given in the instruction or input plus "fix/bug/debug/error"
makes it repair, "translate/convert/port" with a language named makes it translation, "summarize/explain/
describe/what does" makes it summarization; any other code row is generation. Non-code rows cannot be judged:
``build`` returns ``[]``.

Parser: for each requirement of the row's task type, the line that starts with its id must carry the answer, as
``<answer: yes, reason>`` (the reference's format) or right after the id (``G1: yes``). The optional ``Overall
answer: yes|no`` line must agree with the per-requirement answers. ``ReplyParseError`` for: a missing or
repeated-and-conflicting requirement, ids of several task types, an unknown id, no answers at all, or an overall
answer that contradicts them. ``validate`` then checks the answers against the row: ids of another task type than
the row's (a repair row answered with ``G1``...) make the row unparsable.

Columns: ``wavecoder_pass`` (bool: every requirement met), ``wavecoder_failed_criteria`` (list of the ids not
met, see ``CRITERIA``) and ``wavecoder_subtopic``. Selection: ``selection/wavecoder_pass.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from instsel_assets.judge.templates._common import clean_lines, messages, require_text, single_turn, text_field
from instsel_assets.judge.types import JudgeRequest, JudgeTemplate, ReplyParseError
from instsel_assets.registry import register_scorer

SUBTOPICS = ("generation", "summarization", "translation", "repair")

# (id, step, requirement) per subtopic; the generation rows are the reference discriminator.txt's, verbatim.
CRITERIA: dict[str, tuple[tuple[str, str, str], ...]] = {
    "generation": (
        ("G1", "Instruction", "Instruction: the programming language should be specified in the instruction."),
        ("G2", "Solution", "Solution: Solution is related to instruction and information. Solution is the specific "
                           "resolution to instruction and information."),
        ("G3", "Solution", "Solution: In the solution, it should only contain the code and comments within the code. "
                           "There should be no explanations provided outside the code."),
        ("G4", "Solution", "Solution: The code that do contain algorithmic logic in solution should not often buried "
                           "inside complex or poorly documented functions, making them difficult to follow or learn "
                           "from."),
        ("G5", "Solution", "Solution: The code should import the required necessary libraries."),
    ),
    "summarization": (
        ("S1", "Instruction", "Instruction: the instruction should ask for a summary or an explanation of the given "
                              "code."),
        ("S2", "Information", "Information: the information should contain the code to be summarized."),
        ("S3", "Solution", "Solution: the solution should be a natural-language summary that correctly describes "
                           "the purpose and the behaviour of the code."),
        ("S4", "Solution", "Solution: the summary should be concise and should not copy the code or restate it "
                           "line by line."),
    ),
    "translation": (
        ("T1", "Instruction", "Instruction: the source and the target programming languages should be specified "
                              "in the instruction."),
        ("T2", "Information", "Information: the information should contain the code to be translated."),
        ("T3", "Solution", "Solution: In the solution, it should only contain the code in the target language and "
                           "comments within the code. There should be no explanations provided outside the code."),
        ("T4", "Solution", "Solution: the translated code should keep the functionality of the original code."),
        ("T5", "Solution", "Solution: The code should import the required necessary libraries."),
    ),
    "repair": (
        ("R1", "Instruction", "Instruction: the instruction should ask to find and fix the problem in the given "
                              "code, and the programming language should be specified."),
        ("R2", "Information", "Information: the information should contain the code that has the problem."),
        ("R3", "Solution", "Solution: the solution should contain the corrected code, and the correction should fix "
                           "the problem."),
        ("R4", "Solution", "Solution: the correction should not change the behaviour of the code beyond the "
                           "problem it fixes."),
        ("R5", "Solution", "Solution: The code should import the required necessary libraries."),
    ),
}
_ALL_IDS = {cid: sub for sub, rows in CRITERIA.items() for cid, _, _ in rows}

HEADER = ("Please analyze and judge whether the data meets the specifications according to the following rules:\n"
          "Let's go through each requirement step by step. If the requirement is met, enter \"yes\" after the "
          "requirement; otherwise, enter \"no\".\n")
FOOTER = ("- Overall answer: <If the data meets all the requirements, the overall evaluation is \"yes\"; otherwise, "
          "it is \"no\".>\n"
          "- reasons: <The reason mentioned in the analysis process of the above requirements.>\n\n"
          "Copy every requirement line with its id (such as {first}) and replace <answer (yes/no), reason> with "
          "<answer: yes, reason> or <answer: no, reason>.\n")
SAMPLE = "task_name: code {subtopic}\ninstruction: {instruction}\ninformation: {information}\nsolution: {solution}\n"
MAX_TOKENS = 500  # the reference discriminator's max_token
COLUMNS = ("wavecoder_pass", "wavecoder_failed_criteria", "wavecoder_subtopic")

_LANGS = (r"python|java|javascript|typescript|c\+\+|c#|golang|rust|ruby|php|sql|bash|shell script|html|css|"
          r"kotlin|swift|scala|haskell|perl|matlab|lua|dart|julia|powershell|objective-c|fortran|cobol|verilog")
_LANG_RE = re.compile(rf"(?<![\w+#])(?:{_LANGS})(?![\w+#])", re.I)
_CODE_WORD_RE = re.compile(r"\b(?:code|coding|function|program|programming|script|snippet|algorithm|implement|"
                           r"compile|debug|class|method|regex|regular expression)\b", re.I)
_CODE_LINE_RE = re.compile(r"(?m)^\s*(?:def \w+\(|class \w+|import \w+|from [\w.]+ import|#include\b|public |"
                           r"private |function \w*\(|const \w+ =|let \w+ =|var \w+ =|return\b|for \(|if \(|"
                           r"while \(|select .+ from|console\.log\(|print\(|fn \w+\(|package \w+|using \w+;)", re.I)


@dataclass(frozen=True)
class Verdict:
    """A parsed discriminator reply."""

    subtopic: str
    answers: tuple[tuple[str, bool], ...]  # (criterion id, met), in CRITERIA order
    overall: bool | None

    @property
    def passed(self) -> bool:
        return all(met for _, met in self.answers)


# ----------------------------------------------------------------------------------------------- subtopics
def _has_code(text: str) -> bool:
    return "```" in text or bool(_CODE_LINE_RE.search(text))


def detect_subtopic(instruction: str, information: str, solution: str) -> str | None:
    """The task type of a sample from its text, or None when it is not a code sample (module docstring)."""
    given = f"{instruction}\n{information}"
    code_given = _has_code(given)
    is_code = (code_given or _has_code(solution)
               or bool(_LANG_RE.search(instruction) and _CODE_WORD_RE.search(instruction)))
    if not is_code:
        return None
    if code_given and re.search(r"\b(?:fix|fixe?s|bugs?|debug|repair|errors?|broken|not working|does(?:n't| not) "
                                r"work)\b", instruction, re.I):
        return "repair"
    if re.search(r"\b(?:translate|convert|port|rewrite)\b", instruction, re.I) and _LANG_RE.search(instruction):
        return "translation"
    if code_given and re.search(r"\b(?:summari[sz]e|summary|explain|describe|what does)\b", instruction, re.I):
        return "summarization"
    return "generation"


def _explicit_subtopic(row: Mapping[str, Any]) -> str | None:
    for column in ("wavecoder_task", "task_type", "subtopic"):
        value = text_field(row, column).strip().lower().replace("_", " ").replace("-", " ")
        if not value:
            continue
        if column != "wavecoder_task" and "code" not in value:
            continue
        for sub in SUBTOPICS:
            stem = {"generation": "generat", "summarization": "summar", "translation": "translat",
                    "repair": "repair"}[sub]
            if stem in value:
                return sub
    return None


def subtopic_of(row: Mapping[str, Any]) -> str | None:
    """The row's task type: an explicit column, else :func:`detect_subtopic`; None for a non-code row."""
    explicit = _explicit_subtopic(row)
    if explicit is not None:
        return explicit
    triplet = single_turn(row)
    if triplet is None:
        return None
    return detect_subtopic(*triplet)


# ---------------------------------------------------------------------------------------------- template
def prompt_text(subtopic: str, instruction: str, information: str, solution: str) -> str:
    """The discriminator message for one sample."""
    lines = [HEADER]
    step = None
    k = 0
    for cid, section, requirement in CRITERIA[subtopic]:
        if section != step:
            k += 1
            step = section
            lines.append(f"- step {k}: check the {section}:\n")
        lines.append(f"{cid}. {requirement} <answer (yes/no), reason>\n")
    lines.append(FOOTER.format(first=CRITERIA[subtopic][0][0]))
    sample = SAMPLE.format(subtopic=subtopic, instruction=instruction,
                           information=information if information.strip() else "<noinput>", solution=solution)
    return "\n" + "".join(lines) + "\n\n" + sample + "\n\nAnalysis:\n"


def build(row: Mapping[str, Any]) -> list[JudgeRequest]:
    """One discriminator request for a code row; [] for a non-code row or a row without an answer."""
    subtopic = subtopic_of(row)
    triplet = single_turn(row)
    if subtopic is None or triplet is None:
        return []
    return [JudgeRequest(messages=messages(None, prompt_text(subtopic, *triplet)), max_tokens=MAX_TOKENS,
                         temperature=0.0)]


def parse(text: str) -> Verdict:
    """The per-requirement answers of a discriminator reply (module docstring); ``ReplyParseError`` otherwise."""
    lines = clean_lines(require_text(text))
    answers: dict[str, bool] = {}
    overall: bool | None = None
    for line in lines:
        m = re.search(r"overall\s+answer\s*:?\s*<?\s*(?:answer\s*:\s*)?(yes|no)\b", line, re.I)
        if m:
            value = m.group(1).lower() == "yes"
            if overall is not None and overall != value:
                raise ReplyParseError("conflicting overall answers")
            overall = value
            continue
        m = re.match(r"^(?:\d+[.)]\s*)?([A-Za-z]\d+)\b\s*[.):\-]?\s*(.*)$", line)
        if m is None:
            continue
        cid, rest = m.group(1).upper(), m.group(2)
        a = re.search(r"<\s*answer\s*:?\s*(yes|no)\b", rest, re.I) or re.match(r"(yes|no)\b", rest, re.I)
        if a is None:
            continue  # the requirement restated without an answer
        if cid not in _ALL_IDS:
            raise ReplyParseError(f"unknown requirement id {cid!r}")
        value = a.group(1).lower() == "yes"
        if cid in answers and answers[cid] != value:
            raise ReplyParseError(f"requirement {cid} answered both yes and no")
        answers[cid] = value
    if not answers:
        raise ReplyParseError("no per-requirement answers (expected lines such as 'G1. ... <answer: yes, ...>')")
    subtopics = sorted({_ALL_IDS[cid] for cid in answers})
    if len(subtopics) > 1:
        raise ReplyParseError(f"answers for the requirements of several task types: {', '.join(subtopics)}")
    subtopic = subtopics[0]
    expected = [cid for cid, _, _ in CRITERIA[subtopic]]
    missing = [cid for cid in expected if cid not in answers]
    if missing:
        raise ReplyParseError(f"no answer for requirement(s) {', '.join(missing)}")
    verdict = Verdict(subtopic, tuple((cid, answers[cid]) for cid in expected), overall)
    if overall is not None and overall != verdict.passed:
        raise ReplyParseError(f"the overall answer ({'yes' if overall else 'no'}) contradicts the requirement "
                              f"answers (failed: {', '.join(c for c, ok in verdict.answers if not ok) or 'none'})")
    return verdict


def validate(row: Mapping[str, Any], values: Sequence[Verdict]) -> None:
    """The reply must answer the requirements of the row's own task type: a repair row answered with the
    generation ids (``G1``...) was judged against the wrong criteria."""
    expected = subtopic_of(row)
    for verdict in values:
        if verdict.subtopic != expected:
            raise ReplyParseError(f"the reply answers the {verdict.subtopic} requirements but the row is a code "
                                  f"{expected} task")


def combine(values: Sequence[Verdict]) -> dict[str, Any]:
    if len(values) != 1:
        raise ValueError(f"wavecoder: expected one parsed verdict per row, got {len(values)}")
    verdict = values[0]
    return {"wavecoder_pass": verdict.passed,
            "wavecoder_failed_criteria": [cid for cid, ok in verdict.answers if not ok],
            "wavecoder_subtopic": verdict.subtopic}


TEMPLATE = JudgeTemplate(
    name="wavecoder",
    columns=COLUMNS,
    build=build,
    parse=parse,
    combine=combine,
    validate=validate,
    description="WaveCoder discriminator: per-task-type requirements (yes/no) for code instructions; pass = all met.",
)


@register_scorer(
    "wavecoder",
    family="powerful-llm",
    paper="Yu et al. 2023, WaveCoder: Widespread And Versatile Enhanced Instruction Tuning with Refined Data "
          "Generation",
    summary="The judge checks each code instruction against the requirements of its task type (generation, "
            "summarization, translation, repair; the reference discriminator prompt); non-code rows are not judged.",
    writes=TEMPLATE.columns,
)
def template() -> JudgeTemplate:
    """The WaveCoder judge template (run by the judge engine)."""
    return TEMPLATE
