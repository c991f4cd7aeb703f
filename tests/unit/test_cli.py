"""The instsel command: methods listing and clear errors."""

import json
import subprocess
import sys

import pytest

from instsel_assets.cli import main


def test_methods_json_lists_every_method_with_its_family(capsys):
    assert main(["methods", "--json"]) == 0
    methods = json.loads(capsys.readouterr().out)
    by_name = {(m["name"], m["kind"]): m for m in methods}
    for name in ("ifd", "random", "longest", "kcenter_greedy"):
        assert (name, "selector") in by_name
    assert by_name[("ifd", "scorer")]["family"] == "trainable-llm"
    assert by_name[("random", "selector")]["family"] == "baseline"
    assert all(m["family_title"] and m["paper"] for m in methods)


def test_methods_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "instsel_assets.cli", "methods"], capture_output=True, text=True,
                         check=True).stdout
    assert "kcenter_greedy" in out and "family" in out


def test_lineage_without_materialisation_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert main(["lineage", "ifd", "--json"]) == 1
    err = capsys.readouterr().err
    assert "no materialisation of finetuned_checkpoints[ifd]" in err and "Traceback" not in err
    assert main(["lineage", "nope"]) == 1
    assert "no selection partition 'nope'" in capsys.readouterr().err
    assert main(["lineage", "ifd@5pct"]) == 1  # a budget partition is a lineage target too
    assert "no materialisation of finetuned_checkpoints[ifd@5pct]" in capsys.readouterr().err


def test_demo_judge_options_go_together_and_never_take_a_key(capsys):
    from instsel_assets.cli import run_demo

    assert main(["demo", "--judge-model", "gpt-4o-mini"]) == 1
    assert capsys.readouterr().err.strip() == (
        "instsel demo: --judge-base-url and --judge-model go together (the OpenAI-compatible judge)")
    assert main(["demo", "--judge-base-url", "http://127.0.0.1:8080/v1"]) == 1
    with pytest.raises(ValueError, match="read from INSTSEL_JUDGE_API_KEY, never passed as config"):
        run_demo(1, 1, 0.1, judge={"backend": "openai", "model": "m", "api_key": "sk-typed-in"})
