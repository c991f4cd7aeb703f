"""The whole chain on ~40 real rows with the packaged models: every asset and check, then lineage.

This is `instsel demo` at a small size: raw datasets -> pool -> features -> SQL models -> the demo's LM
scores (pre-experienced model + IFD, Superfiltering, perplexity) -> three selections -> three LoRA
checkpoints (2 steps each) and the full-pool one -> the evaluation (held-out loss on the four test sets with
references, one answer per test set from each checkpoint, pairwise judgements against random, full and the external
models, the judge's fidelity on two LLMBar pairs, the method comparison); then the lineage, and the loss cache
shared between Superfiltering and perplexity (same model, same conditioned pairs).

The evaluation's judge is the ``openai`` backend against the scripted OpenAI-compatible server on 127.0.0.1
(``instsel demo --judge-base-url``; it rates a pairwise review by the answers' lengths), with sentinel values in
every secret variable (``sentinel_search.py``). Its first request meets a 500 (retried) and its second a 401 whose
body echoes the bearer token, as a careless proxy might. After the chain and the lineage commands, everything is
searched for the sentinels: every file under the test's directory (DuckDB file, reports, plots, caches, checkpoints,
run / event-log / compute-log storage), every run's record and event log (messages, metadata, check results,
errors), the captured output and log records, and the lineage JSON: zero hits, while the server did receive the
judge's key (and only that key). The judge fidelity table still holds the local judge beside the OpenAI one.
"""

import json
import logging
import shutil
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))  # scripted_openai_server

from sentinel_search import SENTINELS, file_hits, leaks, run_texts, set_sentinels  # noqa: E402

from instsel_assets import settings  # noqa: E402

ROWS_PER_SOURCE = 14
# A subset of the demo's selections keeps this test short: IFD (pre-experienced model), Superfiltering
# (the filter model), and the two internal baselines of the evaluation (random, full); the others differ only in
# the selector, unit-tested.
SELECTIONS = ["ifd", "superfiltering", "random", "full"]


def small_data_root(tmp: Path) -> Path:
    """A data root holding the first rows of every bundled source (real data) and the test set."""
    src_root = settings.PROJECT_ROOT / "data"
    sources = yaml.safe_load((src_root / "sources.yaml").read_text())
    entries = sources["sources"] if isinstance(sources, dict) else sources
    out = tmp / "data"
    for entry in entries:
        src = src_root / entry["path"]
        dst = out / entry["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        text = src.read_text(encoding="utf-8")
        if src.suffix == ".jsonl" or text.lstrip().startswith("{"):
            dst.write_text("\n".join(text.splitlines()[:ROWS_PER_SOURCE]) + "\n", encoding="utf-8")
        else:
            dst.write_text(json.dumps(json.loads(text)[:ROWS_PER_SOURCE], ensure_ascii=False), encoding="utf-8")
    (out / "sources.yaml").write_text((src_root / "sources.yaml").read_text())
    shutil.copytree(src_root / "eval", out / "eval")
    shutil.copytree(src_root / "labels", out / "labels")
    return out


@pytest.mark.integration
def test_whole_chain_and_lineage(tmp_path, monkeypatch, capfd, caplog):
    from scripted_openai_server import ScriptedOpenAIServer

    capsys = capfd  # the lineage commands' output below, and every line the runs printed
    set_sentinels(monkeypatch)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("INSTSEL_STORAGE", raising=False)
    monkeypatch.delenv("INSTSEL_JUDGE_CACHE", raising=False)
    server = ScriptedOpenAIServer().start()
    server.queue("500", "401")
    monkeypatch.setenv("INSTSEL_DATA_DIR", str(small_data_root(tmp_path)))
    monkeypatch.setenv("INSTSEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    # Share the converted model weights with the demo so the GGUF is dequantised once per machine.
    monkeypatch.setenv("INSTSEL_MODEL_CACHE", str(settings.PROJECT_ROOT / ".instsel" / "models"))

    from instsel_assets.cli import main, run_demo

    try:
        with caplog.at_level(logging.DEBUG):
            summary = run_demo(max_steps=2, eval_limit=4, budget_fraction=0.1, log_level="WARNING",
                               selections=SELECTIONS, answer_limit=1, max_new_tokens=8, fidelity_limit=2,
                               judge={"backend": "openai", "model": "judge-model", "base_url": server.url,
                                      "max_attempts": 3})
    finally:
        server.stop()
    demo_output = capfd.readouterr()
    assert summary["checks_failed"] == []
    assert summary["checks_passed"] >= 30
    assert len(summary["runs"]) == 1 + len(SELECTIONS) + 1

    heldout = Path(summary["heldout_report"])
    text = heldout.read_text()
    for method in ("base", *SELECTIONS):
        assert f"| {method}" in text
    assert (heldout.parent / "evaluation_report.png").stat().st_size > 1000
    comparison = Path(summary["report"]).read_text()
    for section in ("## Judge fidelity", "## Every method x budget x test set", "## Lineage of each method",
                    "## External comparison", "## Plots"):
        assert section in comparison
    for png in ("method_comparison_scores.png", "method_comparison_ws.png", "method_comparison_loss_vs_size.png"):
        assert (heldout.parent / png).stat().st_size > 1000

    con = duckdb.connect(str(tmp_path / "home" / "instsel.duckdb"), read_only=True)
    read = sum(con.execute(f"select count(*) from raw_datasets.{name}").fetchone()[0]
               for name in ("alpaca", "dolly", "belle_zh"))
    kept = con.execute("select count(*) from public.instruction_pool").fetchone()[0]
    rejected = con.execute("select count(*) from public.pool_quarantine").fetchone()[0]
    assert read == 3 * ROWS_PER_SOURCE and kept + rejected == read
    subsets = dict(con.execute("select method, count(*) from public.selected_subsets group by 1").fetchall())
    budget = max(1, round(kept * 0.1))
    assert subsets == {**{m: budget for m in SELECTIONS}, "full": kept}
    # the evaluation: every checkpoint answered one prompt per test set; every method judged against its baselines
    answered = dict(con.execute("select method, count(*) from public.generated_answers group by 1").fetchall())
    assert answered == {m: 7 for m in SELECTIONS}
    judged = {(m, b) for m, b in con.execute(
        "select distinct method, baseline from public.pairwise_judgements where baseline_kind = 'internal'").fetchall()}
    assert {("ifd", "random"), ("ifd", "full"), ("random", "full"), ("full", "random")} <= judged
    external = {b for (b,) in con.execute(
        "select distinct baseline from public.pairwise_judgements where baseline_kind = 'external'").fetchall()}
    assert external == {"alpaca-13b", "llama-13b", "vicuna-13b", "gpt35", "alpaca-7b", "gpt4_1106_preview",
                        "davinci-self-instruct"}
    compared = con.execute("select count(*) from public.method_comparison where test_set = 'all'").fetchone()[0]
    assert compared == len(SELECTIONS)
    fidelity = dict(con.execute("select judge_backend, count(*) from public.judge_fidelity group by 1").fetchall())
    assert sorted(fidelity.values()) == [2, 2] and any(b.startswith("openai:") for b in fidelity)
    # the judge: only the configured key reached the server, and its 401 (echoing it) is a counted failure
    assert set(server.auth_headers) == {f"Bearer {SENTINELS['INSTSEL_JUDGE_API_KEY']}"}
    assert server.faults_served == {"500": 1, "401": 1} and server.answered_total >= 2 * len(judged)
    failed = con.execute("select judge_error from public.pairwise_judgements where judge_status = 'failed' union all "
                         "select judge_error from public.judge_fidelity where judge_status = 'failed'").fetchall()
    assert len(failed) == 1 and failed[0][0].startswith("http 401")
    judged_ok = con.execute("select count(*) from public.pairwise_judgements where judge_status = 'ok' "
                            "and judge_backend like 'openai:%'").fetchone()[0]
    assert judged_ok >= con.execute("select count(*) from public.pairwise_judgements").fetchone()[0] - 1
    tables = [con.execute(f"select * from public.{t}").df().to_json()
              for t in ("pairwise_judgements", "judge_fidelity", "method_comparison")]
    ifd_ids = {r[0] for r in con.execute(
        "select s.id from public.selected_subsets s join public.ifd_scores i using (id) "
        "where s.method = 'ifd' and i.ifd < 1").fetchall()}
    assert len(ifd_ids) == budget
    con.close()

    capsys.readouterr()  # drop the demo's progress lines
    assert main(["lineage", "ifd", "--json"]) == 0
    lineage = json.loads(capsys.readouterr().out)
    assert lineage["checkpoint"]["partition"] == "ifd"
    assert lineage["subset_hash"] and lineage["base_model"] == "packaged:smollm2-135m-instruct"
    assert lineage["scorer_settings"]["ifd"]["asset"] == "ifd_scores"
    checkpoint_dir = Path(lineage["checkpoint"]["metadata"]["checkpoint_dir"])
    assert (checkpoint_dir / "instsel_checkpoint.json").is_file()
    raw_versions = {node["asset"]: node["data_version"] for node in lineage["upstream_chain"]
                    if node["asset"].startswith("raw_datasets/")}
    assert len(raw_versions) == 3 and len(set(raw_versions.values())) == 3  # content, not code, versions
    upstream_assets = {node["asset"] for node in lineage["upstream_chain"]}
    assert {"selected_subsets", "instruction_pool", "ifd_scores", "ifd_pre_experienced_model", "metric_features",
            "raw_datasets/alpaca"} <= upstream_assets
    # Only the scores the ifd selector read are in its lineage, not every score asset it depends on.
    assert not upstream_assets & {"superfiltering_scores", "nuggets_scores", "tegit_scores"}
    assert lineage["evaluation_report"]["metadata"]["report_path"].endswith("evaluation_report.md")
    assert lineage["method_comparison"]["metadata"]["report_path"].endswith("method_comparison.md")
    assert lineage["evaluation_report"]["metadata"]["checkpoints_read"]["ifd"]["run_id"] == lineage["checkpoint"]["run_id"]

    # Retrain the ifd checkpoint alone (1 step): the newest checkpoint has no report yet, and the lineage of the
    # older one (--materialization 1, or its run id) still names its subset, scores and the reports that read it.
    import dagster as dg

    from instsel_assets.defs import build_definitions

    retrain = build_definitions().resolve_job_def("select_and_train_job").execute_in_process(
        run_config={"ops": {"finetuned_checkpoints": {"config": {"max_steps": 1}}}},
        instance=dg.DagsterInstance.get(), partition_key="ifd", asset_selection=[dg.AssetKey("finetuned_checkpoints")])
    assert retrain.success
    capsys.readouterr()
    assert main(["lineage", "ifd", "--json"]) == 0
    newest = json.loads(capsys.readouterr().out)
    assert newest["checkpoint"]["run_id"] == retrain.run_id and newest["materialization"] == 0
    assert newest["evaluation_report"] is None and newest["method_comparison"] is None
    assert [m["run_id"] for m in newest["materializations"]] == [retrain.run_id, lineage["checkpoint"]["run_id"]]
    assert main(["lineage", "ifd", "--materialization", "1", "--json"]) == 0
    older = json.loads(capsys.readouterr().out)
    assert older["checkpoint"]["run_id"] == lineage["checkpoint"]["run_id"]
    assert older["evaluation_report"]["run_id"] == lineage["evaluation_report"]["run_id"]
    assert older["method_comparison"]["run_id"] == lineage["method_comparison"]["run_id"]
    assert older["subset_hash"] == lineage["subset_hash"] and older["scorer_settings"] == lineage["scorer_settings"]
    assert main(["lineage", "ifd", "--run", lineage["checkpoint"]["run_id"][:8], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"]["storage_id"] == older["checkpoint"]["storage_id"]
    assert main(["lineage", "ifd"]) == 0
    text = capsys.readouterr().out
    assert "held-out loss: none evaluated this checkpoint yet" in text
    assert main(["lineage", "ifd", "--materialization", "5"]) == 1
    lineage_error = capsys.readouterr()
    assert "has 2 materialisation(s)" in lineage_error.err


    # Perplexity and Superfiltering use the same model and share the conditioned passes s(A|Q): whichever
    # ran second read them from the loss cache, so they were computed once.
    import dagster as dg

    from instsel_assets.defs.lineage import latest_record, metadata_dict

    instance = dg.DagsterInstance.get()
    ppl = metadata_dict(latest_record(instance, "perplexity_scores"))["loss_cache"]
    sf = metadata_dict(latest_record(instance, "superfiltering_scores"))["loss_cache"]
    n = ppl["hits"] + ppl["misses"]  # conditioned pairs of the scorable rows
    assert n >= kept - 2
    assert ppl["hits"] + sf["hits"] == n and ppl["misses"] + sf["misses"] == 2 * n

    # No secret anywhere: every run's record and event log, the tables, the lineage, the output, every file.
    runs = [*summary["runs"], retrain.run_id]
    texts = [*run_texts(instance, runs), *tables, demo_output.out, demo_output.err, caplog.text, text,
             lineage_error.out + lineage_error.err, *(json.dumps(x, default=str) for x in (lineage, newest, older))]
    assert "finished evaluate_job" in demo_output.out and "rows are failed" in demo_output.err  # output was captured
    assert any("requests to openai:" in t for t in texts)  # the judge's log lines are among the texts searched
    assert len(texts) > 1000
    assert leaks(texts) == {}
    found, n_files = file_hits(tmp_path)
    compute_logs = [p for p in (tmp_path / "dagster_home").rglob("*") if p.suffix in (".err", ".out")]
    assert compute_logs and (tmp_path / "home" / "instsel.duckdb").is_file() and n_files > 50
    assert found == {}
