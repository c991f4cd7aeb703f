"""The evaluation test sets, read from the packaged copies under ``data/eval/`` (see ``data/README.md``
for origins and licences), in one shape: one row per item with its user turns and, where the set has
one, the reference assistant turns; plus the answers of the external models shipped with a set.

The test sets (``TEST_SETS``, in this order) are the ones the instruction-data-selection papers
evaluate on: AlpaGasus judges its models pairwise on Vicuna, Koala, WizardLM and Self-Instruct;
Cherry LLM (IFD) and Superfiltering add the LIMA test set; DEITA and later work report MT-Bench and
AlpacaEval. A *reference* is one fixed answer per item that every evaluated model can be compared
with (a pairwise judge's baseline, or the target of a held-out loss); *external models* are models
that are not trained here but whose answers ship with the data, so a model trained on a selection
can be placed against known points without generating anything.

``vicuna_80``
    The 80 single-turn Vicuna questions (``vicuna_80/question.jsonl``, FastChat's ``vicuna_bench``),
    nine categories (generic, knowledge, roleplay, common-sense, fermi, counterfactual, coding, math,
    writing); ``item_id`` is ``question_id``, ``category`` its category. Reference: the answers of
    gpt35 (gpt-3.5-turbo) from FastChat's original evaluation
    (``vicuna_80_legacy_answers/answer_gpt35.jsonl``), joined by ``question_id``: the Vicuna
    evaluation was built around comparing chatbots with ChatGPT, and these are the strongest of the
    four answer sets it published. External models: alpaca-13b, llama-13b,
    vicuna-13b and gpt35, the four answer files of that evaluation (joined by ``question_id``). The
    legacy answers come with their own ``question.jsonl`` (``{question_id, text, category}``); its 80
    texts and categories are identical to ``vicuna_80/question.jsonl``, so the answers belong to these
    exact prompts. llama-13b's answer to question 74 is an empty string in the source; it is kept.
``koala_180``
    The 180 Koala test prompts (``{id, prompt}``; ``item_id`` is ``id``, e.g. ``koala_0``), user
    queries posted online, gathered by the Koala authors. No category, no reference, no external
    answers: none were published with them, so they serve pairwise comparisons between the models
    trained here.
``wizardlm_218``
    The 218 WizardLM test instructions (``{idx, Skill, Difficulty, Instruction}``; ``item_id`` is
    ``idx``, ``category`` the ``Skill``, 29 skills, spelled as in the source, e.g. ``Writting``).
    No reference and no external answers are shipped.
``self_instruct_252``
    The 252 user-oriented instructions of Self-Instruct (``user_oriented_instructions.jsonl``;
    ``item_id`` is ``id``, ``category`` the ``motivation_app``). Each has exactly one instance; the
    user turn is the instruction, then a blank line and the instance input when that input is
    non-empty (44 inputs are empty). This is also how AlpacaEval words these 252 prompts (its
    ``selfinstruct`` subset). Reference: text-davinci-003's predictions
    (``text-davinci-003_predictions.jsonl``), the strongest model in the Self-Instruct paper's human
    evaluation and the same model AlpacaEval uses as reference. The instance ``output`` written by the
    Self-Instruct authors (repeated as ``target`` in the predictions) is not used: as in the other
    sets, the reference is a model's answer, the baseline a pairwise judge compares against. External
    model: davinci-self-instruct (GPT-3 davinci tuned on Self-Instruct data,
    ``davinci-self-instruct_predictions.jsonl``). The prediction files are in the same order as the
    instructions, but they are joined by content, the pair (instruction, input) with surrounding
    whitespace removed: 18 predictions carry a trailing newline or space on the instruction that the
    instruction file does not have. The join covers all 252 items and the key is unique in every file.
    The responses are completions of a prompt ending in ``Output:`` and begin with a space or a
    newline; that surrounding whitespace is stripped.
``lima_300``
    The 300 LIMA test prompts as shipped by Cherry LLM: each line is ``{"conversations": str}``, the
    user prompt itself (not a list of turns as in the LIMA training data; a list is accepted too and its
    first element taken). There is no id, so ``item_id`` is the first 16 hex digits of the SHA-256 of
    the prompt (as for AlpacaEval); no category, no reference, no external answers.
``mt_bench``
    The 80 two-turn MT-Bench questions (``mt_bench/question.jsonl``; ``item_id`` is ``question_id``,
    81-160, ``category`` one of eight categories, ten questions each). Reference: GPT-4's answers in
    ``reference_answer/gpt-4.jsonl``, two turns each, for the 30 math, reasoning and coding questions
    (101-130) that FastChat's judge grades against a reference; the other 50 items have ``None``. (The
    question file also has a ``reference`` field on 39 questions: short human-written hints that
    overlap only partly with those 30; they are not used.) No external answers are shipped.
``alpaca_eval_805``
    AlpacaEval's 805 instructions (``item_id``: first 16 hex digits of the SHA-256 of the
    instruction, as in ``evaluation.heldout``; ``category`` its ``dataset``: selfinstruct, oasst,
    koala, helpful_base, vicuna). Reference: text-davinci-003's outputs
    (``text_davinci_003_model_outputs.json``), the reference AlpacaEval itself uses; two of them are
    empty strings in the source and are kept. External models: alpaca-7b (the plain Alpaca
    recipe a selection should improve on) and gpt4_1106_preview (AlpacaEval 2.0's baseline), joined by
    exact instruction text. AlpacaEval contains the 252 Self-Instruct prompts, the 80 Vicuna questions
    and 144 of the 180 Koala prompts (same text up to surrounding whitespace), so its scores are not
    independent of those sets.

Answers and references are kept as written, except the Self-Instruct responses (stripped, above).
Prompts must be non-empty. Problems raise: a missing file ``FileNotFoundError`` naming its path; a
malformed record ``ValueError`` naming the file, the 1-based line (JSON Lines) or record (JSON list)
and the field; a wrong item count (``TestSetSpec.n_items``), a duplicate id or a join that misses an
item ``ValueError``; an unknown test-set name ``KeyError`` listing the known ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd

from instsel_assets import settings

COLUMNS = ["test_set", "item_id", "category", "turns", "reference"]
ANSWER_COLUMNS = ["test_set", "item_id", "model", "answer"]


@dataclass(frozen=True)
class TestSetSpec:
    """One test set: its size, what its reference is and which external answers ship with it.

    File paths are relative to the data root, in the forward-slash form of ``data/README.md``.
    """

    __test__ = False  # not a pytest test class

    name: str
    n_items: int
    description: str
    reference_model: str | None
    external_models: tuple[str, ...]
    prompt_file: str
    reference_file: str | None = None
    external_files: tuple[tuple[str, str], ...] = ()  # (model, file), in the order of external_models
    n_turns: int = 1

    @property
    def files(self) -> tuple[str, ...]:
        """Every file the set reads (prompts, reference, external answers), without repeats."""
        out = [self.prompt_file]
        if self.reference_file:
            out.append(self.reference_file)
        out.extend(f for _, f in self.external_files)
        return tuple(dict.fromkeys(out))


_VICUNA_LEGACY = "eval/vicuna_80_legacy_answers"
_SELF_INSTRUCT = "eval/self_instruct_252"
_ALPACA_EVAL = "eval/alpaca_eval_805"

_SPECS = (
    TestSetSpec(
        name="vicuna_80", n_items=80,
        description="80 single-turn Vicuna questions in 9 categories (FastChat vicuna_bench)",
        reference_model="gpt35", external_models=("alpaca-13b", "llama-13b", "vicuna-13b", "gpt35"),
        prompt_file="eval/vicuna_80/question.jsonl",
        reference_file=f"{_VICUNA_LEGACY}/answer_gpt35.jsonl",
        external_files=tuple((m, f"{_VICUNA_LEGACY}/answer_{m}.jsonl")
                             for m in ("alpaca-13b", "llama-13b", "vicuna-13b", "gpt35")),
    ),
    TestSetSpec(
        name="koala_180", n_items=180, description="180 real user prompts of the Koala test set",
        reference_model=None, external_models=(), prompt_file="eval/koala_180/koala_test_set.jsonl",
    ),
    TestSetSpec(
        name="wizardlm_218", n_items=218,
        description="218 WizardLM test instructions labelled with a skill (29) and a difficulty",
        reference_model=None, external_models=(), prompt_file="eval/wizardlm_218/WizardLM_testset.jsonl",
    ),
    TestSetSpec(
        name="self_instruct_252", n_items=252,
        description="252 user-oriented Self-Instruct instructions (one instance each), motivated by 71 apps",
        reference_model="text-davinci-003", external_models=("davinci-self-instruct",),
        prompt_file=f"{_SELF_INSTRUCT}/user_oriented_instructions.jsonl",
        reference_file=f"{_SELF_INSTRUCT}/text-davinci-003_predictions.jsonl",
        external_files=(("davinci-self-instruct", f"{_SELF_INSTRUCT}/davinci-self-instruct_predictions.jsonl"),),
    ),
    TestSetSpec(
        name="lima_300", n_items=300, description="300 LIMA test prompts (as shipped by Cherry LLM)",
        reference_model=None, external_models=(), prompt_file="eval/lima_300/lima_test_set.jsonl",
    ),
    TestSetSpec(
        name="mt_bench", n_items=80,
        description="80 two-turn MT-Bench questions in 8 categories; GPT-4 references for 30 of them",
        reference_model="gpt-4", external_models=(), prompt_file="eval/mt_bench/question.jsonl",
        reference_file="eval/mt_bench/reference_answer/gpt-4.jsonl", n_turns=2,
    ),
    TestSetSpec(
        name="alpaca_eval_805", n_items=805,
        description="AlpacaEval's 805 instructions from 5 sources, text-davinci-003 outputs as reference",
        reference_model="text_davinci_003", external_models=("alpaca-7b", "gpt4_1106_preview"),
        prompt_file=f"{_ALPACA_EVAL}/text_davinci_003_model_outputs.json",
        reference_file=f"{_ALPACA_EVAL}/text_davinci_003_model_outputs.json",
        external_files=tuple((m, f"{_ALPACA_EVAL}/{m}_model_outputs.json")
                             for m in ("alpaca-7b", "gpt4_1106_preview")),
    ),
)

TEST_SETS: Mapping[str, TestSetSpec] = MappingProxyType({s.name: s for s in _SPECS})


# ---------------------------------------------------------------------------------------------------
# reading and validating records


def _text_id(text: str) -> str:
    """Same id as ``evaluation.heldout._text_id``: the first 16 hex digits of the text's SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _display(path: Path) -> str:
    try:
        return path.resolve().relative_to(settings.PROJECT_ROOT).as_posix()
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class _Rec:
    """One JSON object with where it came from, for error messages."""

    data: dict[str, Any]
    where: str  # "<file> line 3" or "<file> record 3"

    def error(self, field: str, problem: str) -> ValueError:
        return ValueError(f"{self.where}: field {field!r} {problem}")

    def get(self, field: str) -> Any:
        if field not in self.data:
            raise self.error(field, "missing")
        return self.data[field]

    def text(self, field: str, *, nonempty: bool = False) -> str:
        value = self.get(field)
        if not isinstance(value, str):
            raise self.error(field, f"must be a string, got {type(value).__name__}")
        if nonempty and not value.strip():
            raise self.error(field, "is empty")
        return value

    def ident(self, field: str) -> str:
        value = self.get(field)
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if not (is_int or (isinstance(value, str) and value.strip())):
            raise self.error(field, f"must be a non-empty string or an integer, got {value!r}")
        return str(value)

    def text_list(self, field: str, value: Any = None, *, nonempty: bool = False, n: int | None = None) -> list[str]:
        value = self.get(field) if value is None else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(field, "must be a list of strings")
        if n is not None and len(value) != n:
            raise self.error(field, f"has {len(value)} turns, expected {n}")
        if nonempty and (not value or any(not v.strip() for v in value)):
            raise self.error(field, "has an empty turn")
        return list(value)


def _resolve(root: Path, rel: str) -> Path:
    path = root / rel
    if not path.is_file():
        raise FileNotFoundError(f"test-set file not found: {path}")
    return path


def _read_jsonl(path: Path) -> list[_Rec]:
    shown = _display(path)
    out = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{shown} line {lineno}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(data, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
            out.append(_Rec(data, where))
    return out


def _read_json_list(path: Path) -> list[_Rec]:
    shown = _display(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{shown} line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, list):
        raise ValueError(f"{shown}: expected a JSON list of records, got {type(data).__name__}")
    out = []
    for i, item in enumerate(data, start=1):
        where = f"{shown} record {i}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(item).__name__}")
        out.append(_Rec(item, where))
    return out


def _index(recs: list[_Rec], key: Callable[[_Rec], Any], what: str) -> dict[Any, _Rec]:
    """Records by join key; a key seen twice is an error."""
    out: dict[Any, _Rec] = {}
    for rec in recs:
        k = key(rec)
        if k in out:
            raise ValueError(f"{rec.where}: duplicate {what} {k!r} (first at {out[k].where})")
        out[k] = rec
    return out


def _lookup(index: Mapping[Any, _Rec], key: Any, path: Path, item_id: str, what: str) -> _Rec:
    if key not in index:
        raise ValueError(f"{_display(path)}: no record for item {item_id!r} (join on {what} = {key!r})")
    return index[key]


# ---------------------------------------------------------------------------------------------------
# per-set readers: items are dicts {item_id, category, turns, key}; key is what answers join on


def _items_vicuna(spec: TestSetSpec, root: Path) -> list[dict]:
    items = []
    for rec in _read_jsonl(_resolve(root, spec.prompt_file)):
        qid = rec.ident("question_id")
        items.append({"item_id": qid, "category": rec.text("category"),
                      "turns": rec.text_list("turns", nonempty=True, n=spec.n_turns), "key": qid})
    return items


def _items_koala(spec: TestSetSpec, root: Path) -> list[dict]:
    return [{"item_id": rec.ident("id"), "category": "", "turns": [rec.text("prompt", nonempty=True)], "key": None}
            for rec in _read_jsonl(_resolve(root, spec.prompt_file))]


def _items_wizardlm(spec: TestSetSpec, root: Path) -> list[dict]:
    return [{"item_id": rec.ident("idx"), "category": rec.text("Skill"),
             "turns": [rec.text("Instruction", nonempty=True)], "key": None}
            for rec in _read_jsonl(_resolve(root, spec.prompt_file))]


def _self_instruct_key(instruction: str, inp: str) -> tuple[str, str]:
    return instruction.strip(), inp.strip()


def _items_self_instruct(spec: TestSetSpec, root: Path) -> list[dict]:
    items = []
    for rec in _read_jsonl(_resolve(root, spec.prompt_file)):
        instruction = rec.text("instruction", nonempty=True)
        instances = rec.get("instances")
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            raise rec.error("instances", "must be a non-empty list of objects")
        if "input" not in instances[0]:
            raise rec.error("instances[0].input", "missing")
        inp = instances[0]["input"]
        if not isinstance(inp, str):
            raise rec.error("instances[0].input", f"must be a string, got {type(inp).__name__}")
        turn = f"{instruction}\n\n{inp}" if inp.strip() else instruction
        items.append({"item_id": rec.ident("id"), "category": rec.text("motivation_app"), "turns": [turn],
                      "key": _self_instruct_key(instruction, inp)})
    return items


def _items_lima(spec: TestSetSpec, root: Path) -> list[dict]:
    items = []
    for rec in _read_jsonl(_resolve(root, spec.prompt_file)):
        conv = rec.get("conversations")
        if isinstance(conv, list):  # LIMA's own format: [user, assistant, ...]
            if not conv:
                raise rec.error("conversations", "is an empty list")
            prompt = rec.text_list("conversations", conv)[0]
        elif isinstance(conv, str):
            prompt = conv
        else:
            raise rec.error("conversations", f"must be a string or a list of strings, got {type(conv).__name__}")
        if not prompt.strip():
            raise rec.error("conversations", "is empty")
        items.append({"item_id": _text_id(prompt), "category": "", "turns": [prompt], "key": None})
    return items


def _items_mt_bench(spec: TestSetSpec, root: Path) -> list[dict]:
    return _items_vicuna(spec, root)


def _items_alpaca_eval(spec: TestSetSpec, root: Path) -> list[dict]:
    items = []
    for rec in _read_json_list(_resolve(root, spec.prompt_file)):
        instruction = rec.text("instruction", nonempty=True)
        items.append({"item_id": _text_id(instruction), "category": rec.text("dataset"), "turns": [instruction],
                      "key": instruction})
    return items


_ITEM_READERS: dict[str, Callable[[TestSetSpec, Path], list[dict]]] = {
    "vicuna_80": _items_vicuna, "koala_180": _items_koala, "wizardlm_218": _items_wizardlm,
    "self_instruct_252": _items_self_instruct, "lima_300": _items_lima, "mt_bench": _items_mt_bench,
    "alpaca_eval_805": _items_alpaca_eval,
}


def _mt_bench_turns(rec: _Rec) -> list[str]:
    choices = rec.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise rec.error("choices", "must be a non-empty list of objects")
    if "turns" not in choices[0]:
        raise rec.error("choices[0].turns", "missing")
    return rec.text_list("choices[0].turns", choices[0]["turns"], n=TEST_SETS["mt_bench"].n_turns)


@dataclass(frozen=True)
class _AnswerFormat:
    """How a set's answer files are read: the record reader, the join key (matching the items' ``key``),
    its name for messages, and the assistant turns of a record."""

    read: Callable[[Path], list[_Rec]]
    key: Callable[[_Rec], Any]
    key_name: str
    turns: Callable[[_Rec], list[str]]


def _by_question_id(rec: _Rec) -> str:
    return rec.ident("question_id")


_ANSWER_FORMATS: dict[str, _AnswerFormat] = {
    "vicuna_80": _AnswerFormat(_read_jsonl, _by_question_id, "question_id", lambda r: [r.text("text")]),
    "self_instruct_252": _AnswerFormat(
        _read_jsonl, lambda r: _self_instruct_key(r.text("instruction"), r.text("input")), "(instruction, input)",
        lambda r: [r.text("response").strip()]),
    "mt_bench": _AnswerFormat(_read_jsonl, _by_question_id, "question_id", _mt_bench_turns),
    "alpaca_eval_805": _AnswerFormat(_read_json_list, lambda r: r.text("instruction"), "instruction",
                                     lambda r: [r.text("output")]),
}


def _answers(spec: TestSetSpec, root: Path, rel: str, items: list[dict], *, required: bool) -> list[list[str] | None]:
    """One answer file joined to the items: a list of assistant turns per item. With ``required``
    every item must have a record; without, an item without one gets ``None``, but a record must
    still belong to an item."""
    fmt = _ANSWER_FORMATS[spec.name]
    path = _resolve(root, rel)
    index = _index(fmt.read(path), fmt.key, fmt.key_name)
    if required:
        return [fmt.turns(_lookup(index, it["key"], path, it["item_id"], fmt.key_name)) for it in items]
    keys = {it["key"] for it in items}
    for k, rec in index.items():
        if k not in keys:
            raise ValueError(f"{rec.where}: {fmt.key_name} {k!r} is not an item of {spec.name}")
    return [fmt.turns(index[it["key"]]) if it["key"] in index else None for it in items]


def _spec(name: str) -> TestSetSpec:
    if name not in TEST_SETS:
        raise KeyError(f"unknown test set {name!r}; known: {', '.join(TEST_SETS)}")
    return TEST_SETS[name]


def _load_items(spec: TestSetSpec, root: Path) -> list[dict]:
    items = _ITEM_READERS[spec.name](spec, root)
    shown = _display(root / spec.prompt_file)
    seen: set[str] = set()
    for it in items:
        if it["item_id"] in seen:
            raise ValueError(f"{shown}: duplicate item id {it['item_id']!r}")
        seen.add(it["item_id"])
    if len(items) != spec.n_items:
        raise ValueError(f"{shown}: {len(items)} items, expected {spec.n_items} for {spec.name}")
    return items


# ---------------------------------------------------------------------------------------------------
# public API


def external_models(name: str) -> tuple[str, ...]:
    """The models whose answers ship with test set ``name`` (see ``load_external_answers``)."""
    return _spec(name).external_models


def load_test_set(name: str, data_root: Path | None = None) -> pd.DataFrame:
    """Test set ``name`` as a DataFrame in file order, columns ``test_set``, ``item_id``, ``category``,
    ``turns`` (list of user turns) and ``reference`` (list of reference assistant turns, as many as
    ``turns``, or ``None``). ``data_root`` defaults to ``settings.data_root()``."""
    spec = _spec(name)
    root = Path(data_root) if data_root is not None else settings.data_root()
    items = _load_items(spec, root)
    if spec.reference_file is None:
        refs: list[list[str] | None] = [None] * len(items)
    else:
        refs = _answers(spec, root, spec.reference_file, items, required=spec.name != "mt_bench")
    rows = [{"test_set": spec.name, "item_id": it["item_id"], "category": it["category"], "turns": it["turns"],
             "reference": ref} for it, ref in zip(items, refs)]
    return pd.DataFrame(rows, columns=COLUMNS)


def load_external_answers(name: str, data_root: Path | None = None) -> pd.DataFrame:
    """The external models' answers to test set ``name``: columns ``test_set``, ``item_id``, ``model``,
    ``answer`` (list of assistant turns), one row per model and item (models in ``external_models``
    order, items in file order). Every item must have an answer from every model (else ``ValueError``);
    a set without external answers gives an empty frame."""
    spec = _spec(name)
    if not spec.external_files:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in ANSWER_COLUMNS})
    root = Path(data_root) if data_root is not None else settings.data_root()
    items = _load_items(spec, root)
    rows = []
    for model, rel in spec.external_files:
        answers = _answers(spec, root, rel, items, required=True)
        rows.extend({"test_set": spec.name, "item_id": it["item_id"], "model": model, "answer": ans}
                    for it, ans in zip(items, answers))
    return pd.DataFrame(rows, columns=ANSWER_COLUMNS)
