"""The packaged evaluation test sets: counts, ids, turns, references, external answers, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from instsel_assets import settings
from instsel_assets.evaluation import test_sets as ts

EXPECTED = {"vicuna_80": 80, "koala_180": 180, "wizardlm_218": 218, "self_instruct_252": 252, "lima_300": 300,
            "mt_bench": 80, "alpaca_eval_805": 805}
EXPECTED_REFERENCES = {"vicuna_80": 80, "koala_180": 0, "wizardlm_218": 0, "self_instruct_252": 252,
                       "lima_300": 0, "mt_bench": 30, "alpaca_eval_805": 805}
DATA = settings.PROJECT_ROOT / "data"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def loaded() -> dict[str, pd.DataFrame]:
    return {name: ts.load_test_set(name, DATA) for name in ts.TEST_SETS}


def _copy_set(name: str, tmp_path: Path) -> Path:
    """The files of one test set copied under ``tmp_path`` (a data root of its own)."""
    for rel in ts.TEST_SETS[name].files:
        dst = tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DATA / rel, dst)
    return tmp_path


def _rewrite_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[lineno - 1] = text + "\n"
    path.write_text("".join(lines), encoding="utf-8")


def test_registry_order_and_specs():
    assert list(ts.TEST_SETS) == list(EXPECTED)
    for name, spec in ts.TEST_SETS.items():
        assert spec.name == name and spec.n_items == EXPECTED[name]
        assert ts.external_models(name) == spec.external_models
        assert tuple(m for m, _ in spec.external_files) == spec.external_models
        for rel in spec.files:
            assert (DATA / rel).is_file(), rel
    with pytest.raises(Exception):
        ts.TEST_SETS["koala_180"].n_items = 1  # frozen


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_set_loads_with_count_ids_and_turns(loaded, name):
    df = loaded[name]
    assert list(df.columns) == ["test_set", "item_id", "category", "turns", "reference"]
    assert len(df) == EXPECTED[name] == ts.TEST_SETS[name].n_items
    assert (df["test_set"] == name).all()
    assert df["item_id"].map(lambda x: isinstance(x, str) and x != "").all()
    assert df["item_id"].is_unique
    assert df["category"].map(lambda x: isinstance(x, str)).all()
    n_turns = 2 if name == "mt_bench" else 1
    for turns in df["turns"]:
        assert isinstance(turns, list) and len(turns) == n_turns
        assert all(isinstance(t, str) and t.strip() for t in turns)
    refs = df["reference"].dropna()
    assert len(refs) == EXPECTED_REFERENCES[name]
    for turns, ref in zip(df["turns"], df["reference"]):
        if ref is not None:
            assert len(ref) == len(turns) and all(isinstance(r, str) for r in ref)


def test_default_data_root_is_the_project_data(loaded, monkeypatch):
    monkeypatch.delenv("INSTSEL_DATA_DIR", raising=False)
    assert ts.load_test_set("koala_180").equals(loaded["koala_180"])


def test_ids_and_categories_come_from_the_sources(loaded):
    assert loaded["vicuna_80"]["item_id"].tolist()[:3] == ["1", "2", "3"]
    assert loaded["koala_180"]["item_id"][0] == "koala_0"
    assert (loaded["koala_180"]["category"] == "").all() and (loaded["lima_300"]["category"] == "").all()
    wiz = loaded["wizardlm_218"]
    assert wiz["item_id"][0] == "1" and wiz["category"][0] == "Math"
    si = loaded["self_instruct_252"]
    assert si["item_id"][0] == "user_oriented_task_0" and si["category"][0] == "Grammarly"
    assert loaded["mt_bench"]["item_id"][0] == "81" and loaded["mt_bench"]["category"][0] == "writing"
    ae = loaded["alpaca_eval_805"]
    assert ae["item_id"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert ae["item_id"][0] == ts._text_id(ae["turns"][0][0])
    assert set(ae["category"]) == {"selfinstruct", "oasst", "koala", "helpful_base", "vicuna"}


def test_lima_turn_is_the_whole_prompt(loaded):
    records = _jsonl(DATA / "eval/lima_300/lima_test_set.jsonl")
    assert [t[0] for t in loaded["lima_300"]["turns"]] == [r["conversations"] for r in records]
    assert loaded["lima_300"]["turns"][1][0].startswith("I have an exercise in game of theory class")


def test_self_instruct_turns_and_references(loaded):
    si = loaded["self_instruct_252"]
    instructions = _jsonl(DATA / "eval/self_instruct_252/user_oriented_instructions.jsonl")
    predictions = _jsonl(DATA / "eval/self_instruct_252/text-davinci-003_predictions.jsonl")
    first = instructions[0]
    assert si["turns"][0] == [first["instruction"] + "\n\n" + first["instances"][0]["input"]]
    no_input = next(i for i, r in enumerate(instructions) if not r["instances"][0]["input"].strip())
    assert si["turns"][no_input] == [instructions[no_input]["instruction"]]
    assert si["reference"].map(lambda r: r is not None and len(r) == 1).all()
    assert si["reference"][0] == [predictions[0]["response"].strip()]
    # the join is by content, and the files happen to be in the same order
    assert [r[0] for r in si["reference"]] == [p["response"].strip() for p in predictions]
    # the same 252 prompts as AlpacaEval's selfinstruct subset
    ae = loaded["alpaca_eval_805"]
    ae_si = {t[0].strip() for t, c in zip(ae["turns"], ae["category"]) if c == "selfinstruct"}
    assert {t[0].strip() for t in si["turns"]} == ae_si


def test_mt_bench_references(loaded):
    mt = loaded["mt_bench"]
    assert mt["turns"].map(len).eq(2).all()
    refs = mt.dropna(subset=["reference"])
    assert len(refs) == 30
    assert refs["reference"].map(len).eq(2).all()
    assert sorted(refs["item_id"].astype(int)) == list(range(101, 131))
    answers = _jsonl(DATA / "eval/mt_bench/reference_answer/gpt-4.jsonl")
    gpt4 = {str(r["question_id"]): r["choices"][0]["turns"] for r in answers}
    assert all(ref == gpt4[i] for i, ref in zip(refs["item_id"], refs["reference"]))


def test_vicuna_references_and_legacy_questions_agree(loaded):
    v = loaded["vicuna_80"]
    assert v["reference"].map(lambda r: r is not None and len(r) == 1).all()
    answers = _jsonl(DATA / "eval/vicuna_80_legacy_answers/answer_gpt35.jsonl")
    gpt35 = {str(r["question_id"]): r["text"] for r in answers}
    assert [r[0] for r in v["reference"]] == [gpt35[i] for i in v["item_id"]]
    legacy = {str(r["question_id"]): r for r in _jsonl(DATA / "eval/vicuna_80_legacy_answers/question.jsonl")}
    assert set(legacy) == set(v["item_id"])
    for item_id, turns, category in zip(v["item_id"], v["turns"], v["category"]):
        assert turns[0] == legacy[item_id]["text"] and category == legacy[item_id]["category"]


def test_alpaca_eval_reference_is_text_davinci_003(loaded):
    ae = loaded["alpaca_eval_805"]
    records = json.loads((DATA / "eval/alpaca_eval_805/text_davinci_003_model_outputs.json").read_text())
    assert [r[0] for r in ae["reference"]] == [r["output"] for r in records]
    assert sum(r[0] == "" for r in ae["reference"]) == 2  # two empty outputs in the source, kept


@pytest.mark.parametrize("name", list(EXPECTED))
def test_external_answers_cover_every_item(loaded, name):
    ext = ts.load_external_answers(name, DATA)
    assert list(ext.columns) == ["test_set", "item_id", "model", "answer"]
    models = ts.external_models(name)
    if not models:
        assert ext.empty
        return
    assert tuple(dict.fromkeys(ext["model"])) == models
    ids = loaded[name]["item_id"].tolist()
    n_turns = 2 if name == "mt_bench" else 1
    for model in models:
        sub = ext[ext["model"] == model]
        assert sub["item_id"].tolist() == ids
        assert sub["answer"].map(lambda a: isinstance(a, list) and len(a) == n_turns
                                 and all(isinstance(x, str) for x in a)).all()
    assert (ext["test_set"] == name).all()


def test_external_models_lists():
    assert ts.external_models("vicuna_80") == ("alpaca-13b", "llama-13b", "vicuna-13b", "gpt35")
    assert ts.external_models("alpaca_eval_805") == ("alpaca-7b", "gpt4_1106_preview")
    assert ts.external_models("self_instruct_252") == ("davinci-self-instruct",)
    assert ts.external_models("koala_180") == ()


def test_external_answers_match_their_files(loaded):
    ext = ts.load_external_answers("vicuna_80", DATA)
    llama = ext[(ext["model"] == "llama-13b") & (ext["item_id"] == "74")]["answer"].iloc[0]
    assert llama == [""]  # empty in the source, kept
    gpt35 = ext[ext["model"] == "gpt35"]["answer"].tolist()
    assert gpt35 == loaded["vicuna_80"]["reference"].tolist()
    ae = ts.load_external_answers("alpaca_eval_805", DATA)
    gpt4 = json.loads((DATA / "eval/alpaca_eval_805/gpt4_1106_preview_model_outputs.json").read_text())
    by_instruction = {r["instruction"]: r["output"] for r in gpt4}
    sub = ae[ae["model"] == "gpt4_1106_preview"]
    turns = loaded["alpaca_eval_805"]["turns"]
    assert [a[0] for a in sub["answer"]] == [by_instruction[t[0]] for t in turns]


# ---------------------------------------------------------------------------------------------------
# errors


def test_unknown_name_lists_known_names():
    for call in (ts.load_test_set, ts.load_external_answers, ts.external_models):
        with pytest.raises(KeyError, match="vicuna_80.*alpaca_eval_805"):
            call("nope")


def test_missing_file_names_the_path(tmp_path):
    root = _copy_set("koala_180", tmp_path)
    path = root / "eval/koala_180/koala_test_set.jsonl"
    path.unlink()
    with pytest.raises(FileNotFoundError, match="koala_180/koala_test_set.jsonl"):
        ts.load_test_set("koala_180", root)


def test_missing_answer_file_names_the_path(tmp_path):
    root = _copy_set("vicuna_80", tmp_path)
    (root / "eval/vicuna_80_legacy_answers/answer_llama-13b.jsonl").unlink()
    assert len(ts.load_test_set("vicuna_80", root)) == 80
    with pytest.raises(FileNotFoundError, match="answer_llama-13b.jsonl"):
        ts.load_external_answers("vicuna_80", root)


def test_bad_json_line_names_file_and_line(tmp_path):
    root = _copy_set("koala_180", tmp_path)
    _rewrite_line(root / "eval/koala_180/koala_test_set.jsonl", 3, '{"id": "koala_2", "prompt": ')
    with pytest.raises(ValueError, match=r"koala_180/koala_test_set\.jsonl line 3: not valid JSON"):
        ts.load_test_set("koala_180", root)


def test_missing_field_names_file_line_and_field(tmp_path):
    root = _copy_set("koala_180", tmp_path)
    _rewrite_line(root / "eval/koala_180/koala_test_set.jsonl", 3, '{"id": "koala_2"}')
    with pytest.raises(ValueError, match=r"koala_180/koala_test_set\.jsonl line 3: field 'prompt' missing"):
        ts.load_test_set("koala_180", root)


def test_empty_prompt_is_an_error(tmp_path):
    root = _copy_set("wizardlm_218", tmp_path)
    _rewrite_line(root / "eval/wizardlm_218/WizardLM_testset.jsonl", 5,
                  '{"idx": 5, "Skill": "Math", "Difficulty": 1, "Instruction": "  \\n "}')
    with pytest.raises(ValueError, match=r"WizardLM_testset\.jsonl line 5: field 'Instruction' is empty"):
        ts.load_test_set("wizardlm_218", root)


def test_bad_turns_field_in_mt_bench(tmp_path):
    root = _copy_set("mt_bench", tmp_path)
    _rewrite_line(root / "eval/mt_bench/question.jsonl", 2,
                  '{"question_id": 82, "category": "writing", "turns": ["only one"]}')
    with pytest.raises(ValueError, match=r"mt_bench/question\.jsonl line 2: field 'turns' has 1 turns, expected 2"):
        ts.load_test_set("mt_bench", root)


def test_bad_record_in_json_list_names_the_record(tmp_path):
    root = _copy_set("alpaca_eval_805", tmp_path)
    path = root / "eval/alpaca_eval_805/text_davinci_003_model_outputs.json"
    records = json.loads(path.read_text())
    del records[6]["instruction"]
    path.write_text(json.dumps(records))
    with pytest.raises(ValueError, match=r"text_davinci_003_model_outputs\.json record 7: field 'instruction' missing"):
        ts.load_test_set("alpaca_eval_805", root)


def test_wrong_count_is_an_error(tmp_path):
    root = _copy_set("lima_300", tmp_path)
    path = root / "eval/lima_300/lima_test_set.jsonl"
    path.write_text("".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:-1]), encoding="utf-8")
    with pytest.raises(ValueError, match="299 items, expected 300"):
        ts.load_test_set("lima_300", root)


def test_duplicate_id_is_an_error(tmp_path):
    root = _copy_set("koala_180", tmp_path)
    _rewrite_line(root / "eval/koala_180/koala_test_set.jsonl", 2, '{"id": "koala_0", "prompt": "again"}')
    with pytest.raises(ValueError, match="duplicate item id 'koala_0'"):
        ts.load_test_set("koala_180", root)


def test_join_missing_an_item_is_an_error(tmp_path):
    root = _copy_set("vicuna_80", tmp_path)
    path = root / "eval/vicuna_80_legacy_answers/answer_alpaca-13b.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:10] + lines[11:]), encoding="utf-8")  # drops question 11
    with pytest.raises(ValueError, match=r"answer_alpaca-13b\.jsonl: no record for item '11'"):
        ts.load_external_answers("vicuna_80", root)


def test_self_instruct_join_missing_an_item_is_an_error(tmp_path):
    root = _copy_set("self_instruct_252", tmp_path)
    path = root / "eval/self_instruct_252/text-davinci-003_predictions.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[1:]), encoding="utf-8")
    message = r"text-davinci-003_predictions\.jsonl: no record for item 'user_oriented_task_0'"
    with pytest.raises(ValueError, match=message):
        ts.load_test_set("self_instruct_252", root)


def test_mt_bench_reference_for_unknown_question_is_an_error(tmp_path):
    root = _copy_set("mt_bench", tmp_path)
    path = root / "eval/mt_bench/reference_answer/gpt-4.jsonl"
    rec = _jsonl(path)[0]
    rec["question_id"] = 999
    _rewrite_line(path, 1, json.dumps(rec))
    with pytest.raises(ValueError, match=r"gpt-4\.jsonl line 1: question_id '999' is not an item of mt_bench"):
        ts.load_test_set("mt_bench", root)
