"""The ``instsel`` command.

- ``instsel methods [--json]``: every registered scorer and selector, with its docs/METHODS.md family.
- ``instsel lineage METHOD [--materialization N | --run RUN_ID] [--list] [--json]``: which runs, data versions,
  scores, scorer settings and subset produced a checkpoint of a selection method (the newest, or an older one),
  and which evaluation reports read that checkpoint (read from the Dagster instance at ``DAGSTER_HOME``).
- ``instsel demo``: materialise the whole default chain in-process on the bundled sample.
- ``instsel bench ifd [--rows N] [--model M] [--json]``: IFD throughput of the loss engine against a
  reference-style loop on this machine, to estimate what scoring a pool will cost before launching it.
- ``instsel bench kcenter [--n N] [--dim D] [--k K] [--seed S] [--data clustered|diffuse] [--variants V,...] [--json]``:
  seconds and peak memory of greedy k-center (O(n) running minimum, float32 / float16, with and
  without triangle pruning) against the ``n x n`` reference-style version where it fits, on seeded
  synthetic embeddings, and whether they pick the same centers or cover as well.
- ``instsel validate PATH [--format auto|alpaca|dolly|sharegpt|messages] [--json]``: read a data file, a folder
  or a sources file exactly as the pool assets would and report read / kept / duplicates / quarantined with the
  reason of every quarantined row; exits 1 with a one-line error when the input is unusable
  (``ingest/validate.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _ensure_dagster_home() -> Path:
    from instsel_assets import settings

    # Dagster requires an absolute DAGSTER_HOME; a relative one given by the user is resolved here.
    home = Path(os.environ.get("DAGSTER_HOME") or settings.storage_root() / "dagster_home").resolve()
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        # The default instance (SQLite under DAGSTER_HOME). Telemetry is off: instsel runs offline.
        config.write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    return home


def cmd_methods(args: argparse.Namespace) -> int:
    from instsel_assets import registry

    registry.load_all()
    methods = [m.as_dict() for m in sorted([*registry.SCORERS.values(), *registry.SELECTORS.values()],
                                           key=lambda m: (m.family, m.kind, m.name))]
    if args.json:
        print(json.dumps(methods, indent=2, ensure_ascii=False))
    else:
        from tabulate import tabulate

        print(tabulate([(m["name"], m["kind"], m["family"], ", ".join(m["columns"]), m["paper"]) for m in methods],
                       headers=["name", "kind", "family", "columns", "paper"]))
    return 0


def lineage_report(instance, method: str, *, materialization: int = 0, run_id: str | None = None) -> dict[str, Any]:
    """What produced a checkpoint of ``method``: the newest one (``materialization=0``), the one before it (1), ...,
    or the one materialised in run ``run_id``; and the evaluation reports that read that checkpoint."""
    import dagster as dg

    from instsel_assets.defs.lineage import (
        describe, downstream_reading, materialisation_records, record_by_storage_id, reports_of_checkpoint)
    from instsel_assets.selection.plan import selection_keys

    if method not in selection_keys():
        raise LookupError(f"no selection partition {method!r}; declared: {', '.join(selection_keys())}")
    records = materialisation_records(instance, "finetuned_checkpoints", method)
    if not records:
        raise LookupError(f"no materialisation of finetuned_checkpoints[{method}] in the instance at "
                          f"{os.environ.get('DAGSTER_HOME')}; run `instsel demo` first")
    if run_id is not None:
        matching = [i for i, r in enumerate(records) if r.run_id == run_id or r.run_id.startswith(run_id)]
        if len(matching) != 1:
            raise LookupError(f"{'no' if not matching else 'more than one'} materialisation of "
                              f"finetuned_checkpoints[{method}] in a run {run_id!r}; `instsel lineage {method} --list` "
                              f"lists them")
        materialization = matching[0]
    if not 0 <= materialization < len(records):
        raise LookupError(f"finetuned_checkpoints[{method}] has {len(records)} materialisation(s); "
                          f"--materialization must be 0 (newest) to {len(records) - 1}")
    checkpoint = records[materialization]
    # Walk the input pointers upstream from the checkpoint: every materialisation that fed it.
    chain: list[dict[str, Any]] = []
    seen: set[int] = set()
    frontier = [checkpoint]
    while frontier:
        record = frontier.pop(0)
        if record.storage_id in seen:
            continue
        seen.add(record.storage_id)
        node = describe(instance, record)
        if node["asset"] == "selected_subsets":
            # selected_subsets depends on every score asset but reads only those its selector needs
            # (recorded in its metadata): the lineage names the scores that produced the subset.
            from instsel_assets.defs.selection import SCORE_ASSETS

            read = node["metadata"].get("score_assets_read") or {}
            node["upstream"] = [u for u in node["upstream"] if u["asset"] not in SCORE_ASSETS or u["asset"] in read]
        chain.append(node)
        for up in node["upstream"]:
            if up["storage_id"] is not None:
                up_record = record_by_storage_id(instance, dg.AssetKey.from_user_string(up["asset"]), up["storage_id"])
                if up_record is not None:
                    frontier.append(up_record)
    # The reports that evaluated this very checkpoint (not merely the newest reports).
    report = reports_of_checkpoint(instance, "evaluation_reports", method, checkpoint)
    report_node = describe(instance, report) if report is not None else None
    comparison = downstream_reading(instance, "method_comparison", "evaluation_reports", report) if report else None
    comparison_node = describe(instance, comparison) if comparison is not None else None
    checkpoint_node = chain[0]
    return {
        "method": method,
        "materialization": materialization,
        "materializations": [{"index": i, "run_id": r.run_id, "storage_id": r.storage_id, "timestamp": r.timestamp,
                              "subset_hash": (r.asset_materialization.metadata.get("subset_hash") or
                                              dg.MetadataValue.text("")).value}
                             for i, r in enumerate(records)],
        "checkpoint": checkpoint_node,
        "subset_hash": checkpoint_node["metadata"].get("subset_hash"),
        "scorer_settings": checkpoint_node["metadata"].get("scorer_settings"),
        "base_model": checkpoint_node["metadata"].get("base_model"),
        "evaluation_report": report_node,
        "method_comparison": comparison_node,
        "upstream_chain": chain[1:],
        "runs": sorted({n["run_id"] for n in chain} | {n["run_id"] for n in (report_node, comparison_node) if n}),
    }


def cmd_lineage(args: argparse.Namespace) -> int:
    import dagster as dg

    _ensure_dagster_home()
    instance = dg.DagsterInstance.get()
    try:
        report = lineage_report(instance, args.method, materialization=args.materialization, run_id=args.run)
    except LookupError as err:
        print(f"instsel lineage: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
        return 0
    if args.list:
        from datetime import datetime, timezone

        print(f"finetuned_checkpoints[{args.method}]: {len(report['materializations'])} materialisation(s), newest "
              f"first")
        for m in report["materializations"]:
            when = datetime.fromtimestamp(m["timestamp"], tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            print(f"  {m['index']}: run {m['run_id']} at {when}, subset hash {m['subset_hash']}")
        return 0
    ck = report["checkpoint"]
    which = "newest" if report["materialization"] == 0 else f"materialisation {report['materialization']} " \
                                                             f"(0 = newest)"
    print(f"checkpoint {args.method} ({which}): run {ck['run_id']} data version {ck['data_version']}")
    print(f"  subset hash {report['subset_hash']}, base model {report['base_model']}")
    for node in report["upstream_chain"]:
        part = f"[{node['partition']}]" if node["partition"] else ""
        print(f"  <- {node['asset']}{part}: run {node['run_id']} data version {node['data_version']}")
    for key, label in (("evaluation_report", "held-out loss"), ("method_comparison", "method comparison")):
        if report[key]:
            print(f"{label}: run {report[key]['run_id']} {report[key]['metadata'].get('report_path')}")
        else:
            print(f"{label}: none evaluated this checkpoint yet")
    return 0


def run_demo(max_steps: int, eval_limit: int, budget_fraction: float, log_level: str = "INFO",
             selections: list[str] | None = None, answer_limit: int = 3, max_new_tokens: int = 48,
             fidelity_limit: int = 30, judge: dict[str, Any] | None = None) -> dict[str, Any]:
    """Materialise the default chain in-process (the pool, its features, the demo's scores, one subset and
    checkpoint per demo selection, the evaluation with its small CPU caps: ``eval_limit`` held-out items per test
    set, ``answer_limit`` prompts per test set answered with ``max_new_tokens`` tokens per turn and judged,
    ``fidelity_limit`` LLMBar pairs); return a summary.

    ``judge``: the ``judge`` resource's config for the evaluation run (e.g. ``{"backend": "openai", "model": ...,
    "base_url": ...}``). Run config replaces the definitions' judge config as a whole, so unset fields take the
    resource's defaults; the API key is never part of it: the resource reads ``INSTSEL_JUDGE_API_KEY`` when it
    builds the backend."""
    if judge and "api_key" in judge:
        raise ValueError("run_demo: the judge's API key is read from INSTSEL_JUDGE_API_KEY, never passed as config")
    import dagster as dg

    from instsel_assets.defs import build_definitions
    from instsel_assets.selection.plan import DEMO_SELECTIONS, parse_selection_key

    selections = list(selections or DEMO_SELECTIONS)
    for name in selections:
        parse_selection_key(name)  # a clear error for an unknown name, before anything runs

    _ensure_dagster_home()
    instance = dg.DagsterInstance.get()
    defs = build_definitions()
    loggers = {"console": {"config": {"log_level": log_level}}}
    started = time.monotonic()
    checks: list[tuple[str, bool]] = []
    runs: list[str] = []

    def run(job_name: str, run_config: dict, partition_key: str | None = None) -> None:
        label = job_name + (f"[{partition_key}]" if partition_key else "")
        print(f"[instsel demo] {time.monotonic() - started:6.0f}s  starting {label}", flush=True)
        job = defs.resolve_job_def(job_name)
        result = job.execute_in_process(run_config={**run_config, "loggers": loggers}, instance=instance,
                                        partition_key=partition_key, raise_on_error=True)
        runs.append(result.run_id)
        for evaluation in result.get_asset_check_evaluations():
            checks.append((f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
                           + (f"[{partition_key}]" if partition_key else ""), evaluation.passed))
        print(f"[instsel demo] {time.monotonic() - started:6.0f}s  finished {label} (run {result.run_id})", flush=True)

    run("prepare_pool_job", {"ops": {"ifd_pre_experienced_model": {"config": {"max_steps": max_steps}}}})
    for method in selections:
        run("select_and_train_job", {"ops": {
            "selected_subsets": {"config": {"budget_fraction": budget_fraction}},
            "finetuned_checkpoints": {"config": {"max_steps": max_steps}},
        }}, partition_key=method)
    run("evaluate_job", {"ops": {
        "evaluation_reports": {"config": {"limit": eval_limit}},
        "generated_answers": {"config": {"limit": answer_limit, "max_new_tokens": max_new_tokens}},
        "judge_fidelity": {"config": {"limit": fidelity_limit}},
    }, **({"resources": {"judge": {"config": dict(judge)}}} if judge else {})})

    from instsel_assets import settings

    return {
        "seconds": round(time.monotonic() - started, 1),
        "runs": runs,
        "checks_passed": sum(1 for _, ok in checks if ok),
        "checks_failed": [name for name, ok in checks if not ok],
        "report": str(settings.storage_root() / "reports" / "method_comparison.md"),
        "heldout_report": str(settings.storage_root() / "reports" / "evaluation_report.md"),
        "dagster_home": os.environ["DAGSTER_HOME"],
    }


def cmd_demo(args: argparse.Namespace) -> int:
    judge = None
    if args.judge_base_url or args.judge_model:
        if not (args.judge_base_url and args.judge_model):
            print("instsel demo: --judge-base-url and --judge-model go together (the OpenAI-compatible judge)",
                  file=sys.stderr)
            return 1
        judge = {"backend": "openai", "base_url": args.judge_base_url, "model": args.judge_model}
    try:
        selections = [s.strip() for s in args.selections.split(",") if s.strip()] if args.selections else None
        summary = run_demo(args.max_steps, args.eval_limit, args.budget_fraction, selections=selections,
                           answer_limit=args.answer_limit, max_new_tokens=args.max_new_tokens,
                           fidelity_limit=args.fidelity_limit, judge=judge)
    except KeyError as err:
        print(f"instsel demo: {err.args[0]}", file=sys.stderr)
        return 1
    print(f"[instsel demo] done in {summary['seconds']}s: {len(summary['runs'])} runs, "
          f"{summary['checks_passed']} checks passed, {len(summary['checks_failed'])} failed")
    for name in summary["checks_failed"]:
        print(f"[instsel demo] check failed: {name}")
    print(f"[instsel demo] method comparison: {summary['report']} (held-out loss: {summary['heldout_report']})")
    print(f"[instsel demo] browse it: DAGSTER_HOME={summary['dagster_home']} dagster dev -w workspace.yaml")
    return 0 if not summary["checks_failed"] else 2


def cmd_bench(args: argparse.Namespace) -> int:
    from instsel_assets.bench import markdown_table, run_ifd_bench

    try:
        result = run_ifd_bench(rows=args.rows, model_name=args.model, data=args.data, device=args.device,
                               batch_size=args.batch_size, max_length=args.max_length, workers=args.workers,
                               skip_reference=args.skip_reference,
                               log=(lambda msg: print(msg, file=sys.stderr, flush=True)))
    except (ValueError, FileNotFoundError) as err:
        print(f"instsel bench ifd: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(markdown_table(result))
    if "speedup" in result:
        per_row = 1.0 / result["engine_examples_per_s"]
        print(f"\nengine ({result['engine_dtype']}) {result['speedup']:.2f}x the reference-style loop; "
              f"~{per_row:.2f} s per row here: a 52,002-row Alpaca pool would take ~{52002 * per_row / 3600:.1f} h.")
    return 0


def cmd_bench_kcenter(args: argparse.Namespace) -> int:
    from instsel_assets.bench import kcenter_markdown_table, run_kcenter_bench

    try:
        result = run_kcenter_bench(n=args.n, dim=args.dim, k=args.k, seed=args.seed, data=args.data,
                                   reference=not args.skip_reference, prune=not args.no_prune,
                                   variants=None if args.variants is None else
                                   [v.strip() for v in args.variants.split(",") if v.strip()],
                                   log=(lambda msg: print(msg, file=sys.stderr, flush=True)))
    except ValueError as err:
        print(f"instsel bench kcenter: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(kcenter_markdown_table(result))
    print(f"\nbaseline: {result['baseline']}; reference: {result['reference']}; covering radius: "
          f"{result['covering_radius']}")
    print("all variants agree with the baseline (same centers, or covering radius within "
          f"{result['radius_tolerance']:g})" if result["all_agree"] else
          "NOT all variants agree with the baseline: see 'same centers' and 'Δ radius'")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from instsel_assets.ingest.validate import run

    return run(args.path, args.format, args.json)


def _workers(value: str) -> str | int:
    return value if value == "auto" else int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="instsel", description="Instruction-data selection on a Dagster asset graph.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("methods", help="list every registered scorer and selector")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(fn=cmd_methods)
    p = sub.add_parser("lineage", help="what produced a selection method's checkpoint and report")
    p.add_argument("method", help="a selection method (partition of selected_subsets), e.g. ifd")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--materialization", type=int, default=0, metavar="N",
                       help="which checkpoint of the method: 0 = newest (default), 1 = the one before, ...")
    which.add_argument("--run", default=None, metavar="RUN_ID",
                       help="the checkpoint materialised in this run (a unique prefix of the id is enough)")
    p.add_argument("--list", action="store_true", help="list the method's checkpoint materialisations and exit")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(fn=cmd_lineage)
    p = sub.add_parser("demo", help="materialise the whole default chain on the bundled sample")
    p.add_argument("--max-steps", type=int, default=15, help="fine-tuning steps per checkpoint (default 15)")
    p.add_argument("--eval-limit", type=int, default=30,
                   help="items with references per test set for held-out loss (default 30; 0 = all)")
    p.add_argument("--answer-limit", type=int, default=3,
                   help="prompts per test set answered by every checkpoint and judged (default 3; 0 = all)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="new tokens per answer turn (default 48)")
    p.add_argument("--fidelity-limit", type=int, default=30,
                   help="LLMBar Natural pairs the judge's fidelity is measured on (default 30; 0 = all 100)")
    p.add_argument("--budget-fraction", type=float, default=0.10, help="subset size as a pool fraction (default 0.10)")
    p.add_argument("--selections", default=None,
                   help="comma-separated selection partitions to train and evaluate (default: "
                        "ifd,superfiltering,perplexity,random,longest,kcenter_greedy,full; the scores the others read "
                        "are materialised by trainable_llm_scores_job)")
    p.add_argument("--judge-base-url", default=None, metavar="URL",
                   help="judge the evaluation with an OpenAI-compatible server at URL (e.g. a llama.cpp or vLLM "
                        "server, http://127.0.0.1:8080/v1) instead of the packaged local judge; the key, if the "
                        "server needs one, comes from INSTSEL_JUDGE_API_KEY; needs --judge-model")
    p.add_argument("--judge-model", default=None, metavar="NAME",
                   help="the model name sent to --judge-base-url")
    p.set_defaults(fn=cmd_demo)
    p = sub.add_parser("bench", help="measure scoring throughput on this machine")
    bench = p.add_subparsers(dest="benchmark", required=True)
    p = bench.add_parser("ifd", help="IFD: the loss engine against a one-example-per-pass fp32 reference loop")
    p.add_argument("--rows", type=int, default=100, help="Alpaca rows to score (default 100)")
    p.add_argument("--model", default=None,
                   help="Hugging Face id or local directory (default: the packaged SmolLM2-135M-Instruct)")
    p.add_argument("--data", type=Path, default=None,
                   help="an Alpaca-format JSON list (default: data/bench/alpaca_500.json, 500 Stanford Alpaca rows)")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    p.add_argument("--batch-size", type=int, default=8, help="engine batch size (default 8)")
    p.add_argument("--max-length", type=int, default=1024, help="tokens per sequence (default 1024)")
    p.add_argument("--workers", type=_workers, default="auto",
                   help="engine batches run at once: 'auto' (one per CPU thread on CPU, 1 on GPU) or a number")
    p.add_argument("--skip-reference", action="store_true", help="time only the engine")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(fn=cmd_bench)
    p = bench.add_parser("kcenter", help="greedy k-center: the O(n) version against an n x n reference-style one")
    p.add_argument("--n", type=int, default=20_000, help="rows (default 20000)")
    p.add_argument("--dim", type=int, default=384, help="embedding dimension (default 384, as all-MiniLM-L6-v2)")
    p.add_argument("--k", type=int, default=1000, help="centers to pick (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the embeddings and of the first center (default 0)")
    p.add_argument("--data", choices=("clustered", "diffuse"), default="clustered",
                   help="unit-normalised Gaussian blobs (default) or isotropic Gaussian rows")
    p.add_argument("--skip-reference", action="store_true",
                   help="never run the n x n reference (by default it runs when n <= 30000 and it fits in memory)")
    p.add_argument("--no-prune", action="store_true", help="leave out the triangle-pruning variants")
    p.add_argument("--variants", default=None,
                   help="comma-separated subset of reference,float32,float16,pruned-float32,pruned-float16 "
                        "(default: all; the first that runs is the baseline)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(fn=cmd_bench_kcenter)
    p = sub.add_parser("validate", help="read a data file, folder or sources file as the pool would and report it")
    p.add_argument("path", help="a .json/.jsonl file, a folder of them, or a sources .yaml file")
    p.add_argument("--format", default="auto", choices=("auto", "alpaca", "dolly", "sharegpt", "messages"),
                   help="the declared record format of a file or folder (default auto: detected per record)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(fn=cmd_validate)
    from instsel_assets.evaluation.judgement_files import add_winning_score_parser
    add_winning_score_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
