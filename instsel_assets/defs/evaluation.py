"""The evaluation, the same for every selection method (docs/METHODS.md, "Evaluation"):

- ``evaluation_test_sets``: the seven test sets' prompts and references; ``external_answers``: the other models'
  answers shipped with them;
- ``evaluation_reports``: held-out loss of the reference answers for the base model and every checkpoint;
- ``generated_answers``: every checkpoint's answers to the test prompts (capped);
- ``pairwise_judgements``: each method's answers against ``random`` at the same budget, ``full``, and the external
  models, judged in both orders by the judge engine's pairwise template;
- ``judge_fidelity``: the judge's accuracy and position consistency on LLMBar Natural's human-labelled pairs;
- ``method_comparison``: the report (table, plots, lineage), attached to the asset's metadata.

The checkpoints evaluated are the latest materialisation of every finetuned_checkpoints partition that has one
(``materialised_checkpoints``); a new checkpoint is evaluated by re-materialising the evaluation group, and the
generation and judge caches make everything already answered free.
"""

import json
import time

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from instsel_assets import settings
from instsel_assets.defs._common import ProgressLogger, code_version_of, suite_check
from instsel_assets.defs.judge import JUDGE_MODULES, JudgeConfig, judge_check_results, run_judge
from instsel_assets.defs.k8s import gpu_op_tags
from instsel_assets.defs.resources import JudgeResource, LanguageModelResource
from instsel_assets.judge.engine import JUDGE_STATUSES
from instsel_assets.evaluation.report import BASE, comparison_table, write_report

CODE_VERSION = code_version_of("instsel_assets.evaluation.heldout", "instsel_assets.evaluation.report",
                               "instsel_assets.evaluation.test_sets", "instsel_assets.scoring.loss_engine")
ALL_TEST_SETS = ["vicuna_80", "koala_180", "wizardlm_218", "self_instruct_252", "lima_300", "mt_bench",
                 "alpaca_eval_805"]
REFERENCE_TEST_SETS = ["alpaca_eval_805", "self_instruct_252", "mt_bench", "vicuna_80"]


def pick_evenly(frame: pd.DataFrame, limit: int) -> pd.DataFrame:
    """``limit`` rows spread evenly over ``frame`` (deterministic; test sets are ordered by origin or category)."""
    if limit <= 0 or limit >= len(frame):
        return frame.reset_index(drop=True)
    idx = np.unique(np.linspace(0, len(frame) - 1, limit).round().astype(int))
    return frame.iloc[idx].reset_index(drop=True)


def _check_test_sets(names: list[str]) -> list[str]:
    unknown = sorted(set(names) - set(ALL_TEST_SETS))
    if unknown or not names:
        raise ValueError(f"unknown or no test sets {unknown or names}; known: {', '.join(ALL_TEST_SETS)}")
    return list(dict.fromkeys(names))


def _turns(value) -> list[str]:
    return json.loads(value) if isinstance(value, str) else list(value)


# ------------------------------------------------------------------------------------------------ test sets
@dg.asset(
    group_name="evaluation",
    code_version=code_version_of("instsel_assets.evaluation.test_sets"),
    kinds={"duckdb", "pandas"},
    description="The seven test sets of the survey's papers (Vicuna 80, Koala 180, WizardLM 218, Self-Instruct 252, "
                "LIMA 300, MT-Bench 80 two-turn, AlpacaEval 805), one row per item: user turns and, where the set "
                "has them, reference answers (AlpacaEval: text-davinci-003; Self-Instruct: text-davinci-003; "
                "MT-Bench: GPT-4 for 30 questions; Vicuna: the legacy gpt35 answers). Lists are JSON text.",
    check_specs=[
        dg.AssetCheckSpec("declared_counts", asset="evaluation_test_sets", blocking=True,
                          description="Every test set has exactly the item count of its source."),
        dg.AssetCheckSpec("great_expectations_suite", asset="evaluation_test_sets",
                          description="Great Expectations suite 'evaluation_test_sets'."),
    ],
)
def evaluation_test_sets(context: dg.AssetExecutionContext):
    from instsel_assets.evaluation.test_sets import TEST_SETS, load_test_set

    frames = []
    for name in ALL_TEST_SETS:
        frame = load_test_set(name)
        context.log.info(f"{name}: {len(frame)} items, {int(frame['reference'].notna().sum())} with references")
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table["n_turns"] = table["turns"].map(len)
    table["has_reference"] = table["reference"].notna()
    table["turns"] = table["turns"].map(lambda t: json.dumps(list(t), ensure_ascii=False))
    table["reference"] = table["reference"].map(
        lambda r: json.dumps(list(r), ensure_ascii=False) if r is not None else None)
    counts = table.groupby("test_set").size().to_dict()
    references = table.groupby("test_set")["has_reference"].sum().astype(int).to_dict()
    yield dg.Output(table, metadata={"dagster/row_count": len(table),
                                     "items": dg.MetadataValue.json(counts),
                                     "with_reference": dg.MetadataValue.json(references)})
    expected = {name: TEST_SETS[name].n_items for name in ALL_TEST_SETS}
    yield dg.AssetCheckResult(check_name="declared_counts", passed=counts == expected,
                              metadata={"counts": dg.MetadataValue.json(counts),
                                        "expected": dg.MetadataValue.json(expected)})
    yield suite_check(table, "evaluation_test_sets")


@dg.asset(
    group_name="evaluation",
    code_version=code_version_of("instsel_assets.evaluation.test_sets"),
    kinds={"duckdb", "pandas"},
    deps=["evaluation_test_sets"],
    description="Answers of other models shipped with the test sets, for the external comparison: alpaca-13b, "
                "llama-13b, vicuna-13b, gpt35 on Vicuna 80; alpaca-7b, gpt4_1106_preview on AlpacaEval; "
                "davinci-self-instruct on Self-Instruct. Answers are JSON lists of turns.",
    check_specs=[dg.AssetCheckSpec("covers_test_sets", asset="external_answers", blocking=True,
                                   description="Every external model answers every item of its test set."),
                 dg.AssetCheckSpec("great_expectations_suite", asset="external_answers",
                                   description="Great Expectations suite 'external_answers'.")],
)
def external_answers(context: dg.AssetExecutionContext):
    from instsel_assets.evaluation.test_sets import TEST_SETS, load_external_answers

    frames = [load_external_answers(name) for name in ALL_TEST_SETS]
    table = pd.concat(frames, ignore_index=True)
    table["answer"] = table["answer"].map(lambda a: json.dumps(list(a), ensure_ascii=False))
    counts = {f"{t}/{m}": int(n) for (t, m), n in table.groupby(["test_set", "model"]).size().items()}
    yield dg.Output(table, metadata={"dagster/row_count": len(table), "answers": dg.MetadataValue.json(counts)})
    expected = {f"{name}/{model}": TEST_SETS[name].n_items for name in ALL_TEST_SETS
                for model in TEST_SETS[name].external_models}
    yield dg.AssetCheckResult(check_name="covers_test_sets", passed=counts == expected,
                              metadata={"answers": dg.MetadataValue.json(counts)})
    yield suite_check(table, "external_answers")


def materialised_checkpoints(instance: dg.DagsterInstance) -> dict[str, dict]:
    """``{method: manifest}`` of the latest materialisation of every finetuned_checkpoints partition that has
    one and whose directory still holds a checkpoint (partitions never trained are skipped, not errors)."""
    from instsel_assets.defs.lineage import latest_record, metadata_dict
    from instsel_assets.selection.plan import selection_keys
    from instsel_assets.training.checkpoint import read_manifest

    from instsel_assets.defs.storage import fetch_artifact, storage_kind

    found = {}
    for method in selection_keys():
        record = latest_record(instance, "finetuned_checkpoints", method)
        meta = metadata_dict(record)
        path = meta.get("checkpoint_dir")
        if not path:
            continue
        if storage_kind() == "s3":  # trained on another machine: download the checkpoint from the bucket
            path = fetch_artifact("finetuned_checkpoints", method)["path"]
        manifest = read_manifest(path)
        found[method] = {"path": str(path), "subset_rows": manifest.get("subset_rows", 0),
                         "subset_hash": manifest.get("subset_hash") or meta.get("subset_hash") or "",
                         "base_model": manifest.get("base_model", ""),
                         # which materialisation was read: `instsel lineage` finds the reports of an older checkpoint
                         "run_id": record.run_id, "storage_id": record.storage_id}
    return found


def checkpoints_read(checkpoints: dict[str, dict]) -> dg.MetadataValue:
    return dg.MetadataValue.json({m: {"run_id": c["run_id"], "storage_id": c["storage_id"]}
                                  for m, c in sorted(checkpoints.items())})


def _load_checkpoint(language_model: LanguageModelResource, manifest: dict, dtype: str):
    from instsel_assets.models.loading import load_causal_lm
    from instsel_assets.training.checkpoint import load_checkpoint

    model, tokenizer, _ = load_checkpoint(
        manifest["path"], base_loader=lambda mid: load_causal_lm(mid, dtype=dtype, device=language_model.device))
    return model, tokenizer


# ------------------------------------------------------------------------------------------------ held-out loss
class EvaluationConfig(dg.Config):
    test_sets: list[str] = Field(
        default=REFERENCE_TEST_SETS,
        description="Test sets with reference answers to score: alpaca_eval_805 (text-davinci-003), "
                    "self_instruct_252 (text-davinci-003), mt_bench (GPT-4, 30 two-turn items), vicuna_80 (gpt35).")
    limit: int = Field(
        default=100,
        description='Items with a reference per test set, spread evenly over the file (deterministic); 0 = all.')
    max_length: int = Field(
        default=768,
        description='Tokens per conversation (prompt + reference; both turns for MT-Bench).')


@dg.asset(
    group_name="evaluation",
    code_version=CODE_VERSION,
    kinds={"duckdb", "pandas", "torch"},
    op_tags=gpu_op_tags(),
    ins={"evaluation_test_sets": dg.AssetIn()},
    deps=["finetuned_checkpoints"],
    description="Held-out mean loss of the reference answers of every test set that has them, for the base model "
                "and every checkpoint materialised so far (each selection partition's latest), compared against "
                "`random` at the same budget and the base model; a Markdown report with a chart is attached. The loss "
                "engine's cache (keyed by each model's weights) makes re-evaluating an unchanged checkpoint free.",
    check_specs=[
        dg.AssetCheckSpec("losses_finite", asset="evaluation_reports", blocking=True,
                          description="Every evaluated model has a finite held-out loss on every test set."),
        dg.AssetCheckSpec("every_checkpoint_evaluated", asset="evaluation_reports",
                          description="The base model and every checkpoint are in the report, on every test set."),
        dg.AssetCheckSpec("great_expectations_suite", asset="evaluation_reports",
                          description="Great Expectations suite 'evaluation_reports'."),
    ],
)
def evaluation_reports(context: dg.AssetExecutionContext, config: EvaluationConfig,
                       language_model: LanguageModelResource, evaluation_test_sets: pd.DataFrame):
    from instsel_assets.evaluation.heldout import heldout_loss_turns, summarise_heldout

    test_names = _check_test_sets(config.test_sets)
    checkpoints = materialised_checkpoints(context.instance)
    if not checkpoints:
        context.log.warning("no finetuned_checkpoints partition has been materialised: only the base model is "
                            "evaluated")
    tests = {}
    for name in test_names:
        frame = evaluation_test_sets[(evaluation_test_sets["test_set"] == name)
                                     & evaluation_test_sets["reference"].notna()]
        if frame.empty:
            raise ValueError(f"test set {name!r} has no reference answers: held-out loss needs them "
                             f"(sets with references: {', '.join(REFERENCE_TEST_SETS)})")
        tests[name] = pick_evenly(frame, config.limit)
    context.log.info(f"held-out loss on {', '.join(f'{n} ({len(t)})' for n, t in tests.items())} for the base model "
                     f"and {len(checkpoints)} checkpoints")

    def evaluate(model, tokenizer, label: str, fields: dict) -> list[dict]:
        # the loss engine's settings and cache (keyed by the weights): re-evaluating a checkpoint costs nothing
        engine = {**language_model.engine_kwargs(model, tokenizer), "max_length": config.max_length}
        out = []
        for name, test in tests.items():
            frame = heldout_loss_turns(model, tokenizer, [_turns(t) for t in test["turns"]],
                                       [_turns(r) for r in test["reference"]], **engine)
            summary = summarise_heldout(frame)
            context.log.info(f"{label} on {name}: mean loss {summary['mean_loss']:.4f} over "
                             f"{summary['n_examples']} items")
            out.append({**fields, "test_set": name, "n_examples": int(summary["n_examples"]),
                        "n_answer_tokens": int(summary["n_tokens"]), "mean_loss": float(summary["mean_loss"])})
        return out

    base_model, base_tok = language_model.load()
    dtype = str(next(base_model.parameters()).dtype).replace("torch.", "")
    rows = evaluate(base_model, base_tok, BASE, {"model": language_model.model, "method": BASE, "subset_rows": 0,
                                                 "subset_hash": ""})
    for method, manifest in sorted(checkpoints.items()):
        model, tokenizer = _load_checkpoint(language_model, manifest, dtype)
        rows += evaluate(model, tokenizer, method, {"model": manifest["path"], "method": method,
                                                    "subset_rows": manifest["subset_rows"],
                                                    "subset_hash": manifest.get("subset_hash") or ""})
        del model
    table = comparison_table(rows)
    out_dir = settings.storage_root() / "reports"
    md_path, png_path, markdown = write_report(table, out_dir, {
        "test_sets": ", ".join(f"{n} ({len(t)} items)" for n, t in tests.items()), "base_model": language_model.model,
        "dtype": dtype, "max_length": config.max_length})
    context.log.info(f"evaluation report written to {md_path}")
    yield dg.Output(table, metadata={
        "dagster/row_count": len(table),
        "report": dg.MetadataValue.md(markdown),
        "report_path": dg.MetadataValue.path(str(md_path)),
        "plot_path": dg.MetadataValue.path(str(png_path)),
        "test_sets": dg.MetadataValue.json({n: len(t) for n, t in tests.items()}),
        "checkpoints_read": checkpoints_read(checkpoints),
        "methods_beating_random": dg.MetadataValue.json(
            sorted(set(table.loc[table["beats_random"] & (table["method"] != BASE), "method"]))),
    })
    losses = table["mean_loss"].to_numpy(dtype=float)
    yield dg.AssetCheckResult(check_name="losses_finite", passed=bool(len(losses) and np.isfinite(losses).all()),
                              metadata={"non_finite": dg.MetadataValue.json(
                                  [f"{m}/{t}" for m, t, x in zip(table["method"], table["test_set"], losses)
                                   if not np.isfinite(x)])})
    expected = {(m, t) for m in {BASE, *checkpoints} for t in tests}
    got = set(zip(table["method"], table["test_set"]))
    yield dg.AssetCheckResult(check_name="every_checkpoint_evaluated", passed=got == expected,
                              metadata={"missing": dg.MetadataValue.json(
                                  sorted(f"{m}/{t}" for m, t in expected - got))})
    yield suite_check(table, "evaluation_reports")


# ------------------------------------------------------------------------------------------------ generation
class GenerationConfig(dg.Config):
    test_sets: list[str] = Field(default=ALL_TEST_SETS, description="Test sets whose prompts are answered.")
    limit: int = Field(
        default=10,
        description="Prompts per test set, spread evenly over it (deterministic); 0 = all. The CPU default keeps a "
                    "checkpoint's answers to a few minutes; raise it (or 0) on a GPU.")
    max_new_tokens: int = Field(default=128, description="New tokens per answer turn (greedy decoding).")
    batch_size: int = Field(default=8, description="Prompts generated together (left-padded, length-sorted).")
    max_prompt_tokens: int = Field(
        default=2048, description="A longer prompt is not cut: its item is counted as failed ('prompt too long').")


@dg.asset(
    group_name="evaluation",
    code_version=code_version_of("instsel_assets.evaluation.generation", *JUDGE_MODULES),
    kinds={"duckdb", "pandas", "torch"},
    op_tags=gpu_op_tags(),
    ins={"evaluation_test_sets": dg.AssetIn()},
    deps=["finetuned_checkpoints"],
    description="Every checkpoint's answers to the test prompts (the latest materialisation of each "
                "finetuned_checkpoints partition): greedy, the model's chat template, capped prompts per set and "
                "new tokens per turn (settings in the metadata); MT-Bench answered turn by turn. Cached by a hash "
                "of the exact request and the checkpoint's weights, so only new checkpoints or prompts generate.",
    check_specs=[
        dg.AssetCheckSpec("every_item_accounted", asset="generated_answers", blocking=True,
                          description="Every (checkpoint, item) has a row, ok or failed with its reason."),
        dg.AssetCheckSpec("answers_nonempty", asset="generated_answers",
                          description="At least 90% of the ok answers are non-empty text."),
        dg.AssetCheckSpec("great_expectations_suite", asset="generated_answers",
                          description="Great Expectations suite 'generated_answers'."),
    ],
)
def generated_answers(context: dg.AssetExecutionContext, config: GenerationConfig,
                      language_model: LanguageModelResource, evaluation_test_sets: pd.DataFrame):
    from instsel_assets.evaluation.generation import GenerationSettings, checkpoint_model_name, generate_answers
    from instsel_assets.judge.backends import LocalBackend
    from instsel_assets.judge.cache import JudgeCache

    test_names = _check_test_sets(config.test_sets)
    checkpoints = materialised_checkpoints(context.instance)
    if not checkpoints:
        raise dg.Failure("no finetuned_checkpoints partition has been materialised: nothing to generate answers "
                         "with (materialise select_and_train_job for some selections first)")
    chosen = pd.concat([pick_evenly(evaluation_test_sets[evaluation_test_sets["test_set"] == n], config.limit)
                        for n in test_names], ignore_index=True)
    items = [(f"{t}|{i}", _turns(turns)) for t, i, turns in zip(chosen["test_set"], chosen["item_id"], chosen["turns"])]
    gen = GenerationSettings(max_new_tokens=config.max_new_tokens)
    context.log.info(f"{len(checkpoints)} checkpoints x {len(items)} prompts ({config.limit or 'all'} per set of "
                     f"{', '.join(test_names)}), {config.max_new_tokens} new tokens per turn")
    cache = JudgeCache(settings.storage_root() / "cache" / "generation")
    base_model, _ = language_model.load()
    dtype = str(next(base_model.parameters()).dtype).replace("torch.", "")
    frames, runs, started = [], {}, time.monotonic()
    try:
        for method, manifest in sorted(checkpoints.items()):
            model, tokenizer = _load_checkpoint(language_model, manifest, dtype)
            name = checkpoint_model_name(manifest["path"], manifest.get("base_model") or language_model.model)
            backend = LocalBackend(model, tokenizer, f"{name}@{dtype}", max_length=config.max_prompt_tokens,
                                   batch_size=config.batch_size)
            table, turn_runs = generate_answers(items, backend, gen, cache=cache, log=context.log,
                                                progress=ProgressLogger(context.log, f"{method} answers"))
            runs[method] = {"model": backend.model, "cache_hits": sum(r["cache_hits"] for r in turn_runs),
                            "sent": sum(r["sent"] for r in turn_runs), "seconds": round(sum(r["seconds"] for r in
                                                                                             turn_runs), 1)}
            context.log.info(f"{method}: {int((table['status'] == 'ok').sum())}/{len(table)} answered "
                             f"({runs[method]['cache_hits']} from cache, {runs[method]['seconds']} s)")
            table["method"] = method
            table["model"] = backend.model
            table["subset_hash"] = manifest.get("subset_hash") or ""
            frames.append(table)
            del model
    finally:
        cache.close()
    out = pd.concat(frames, ignore_index=True)
    out[["test_set", "item_id"]] = out["key"].str.split("|", n=1, expand=True)
    out["answer"] = out["answer"].map(lambda a: json.dumps(list(a), ensure_ascii=False))
    out["finish_reasons"] = out["finish_reasons"].map(lambda a: json.dumps(list(a)))
    out = out[["method", "model", "subset_hash", "test_set", "item_id", "answer", "n_new_tokens", "finish_reasons",
               "status", "error"]]
    ok = out[out["status"] == "ok"]
    yield dg.Output(out, metadata={
        "dagster/row_count": len(out), "checkpoints_read": checkpoints_read(checkpoints),
        "generation_settings": dg.MetadataValue.json(
            {**gen.as_dict(), "limit_per_test_set": config.limit, "test_sets": test_names,
             "max_prompt_tokens": config.max_prompt_tokens}),
        "runs": dg.MetadataValue.json(runs), "n_ok": len(ok), "n_failed": len(out) - len(ok),
        "cut_by_max_new_tokens": int(ok["finish_reasons"].str.contains('"length"').sum()),
        "mean_new_tokens": float(ok["n_new_tokens"].mean()) if len(ok) else 0.0,
        "seconds": round(time.monotonic() - started, 1)})
    expected = len(checkpoints) * len(items)
    yield dg.AssetCheckResult(check_name="every_item_accounted", passed=len(out) == expected,
                              metadata={"rows": len(out), "expected": expected, "n_failed": len(out) - len(ok),
                                        "failures": dg.MetadataValue.json(
                                            out.loc[out["status"] != "ok", "error"].value_counts().head(5).to_dict())})
    empty = int((ok["answer"].map(lambda a: not "".join(json.loads(a)).strip())).sum())
    yield dg.AssetCheckResult(check_name="answers_nonempty", passed=not len(ok) or empty <= 0.1 * len(ok),
                              metadata={"empty": empty, "ok": len(ok)})
    yield suite_check(out, "generated_answers")


# ------------------------------------------------------------------------------------------------ judging
def _conversation_text(turns: list[str], prefix: str) -> str:
    """One text for the judge: a single turn as it is; two turns labelled (MT-Bench judged as one conversation)."""
    if len(turns) == 1:
        return turns[0]
    return "\n\n".join(f"[{prefix} turn {k + 1}]\n{t}" for k, t in enumerate(turns))


def judgement_pairs(answers: pd.DataFrame, external: pd.DataFrame, test_sets: pd.DataFrame,
                    with_external: bool = True) -> pd.DataFrame:
    """One row per (method, baseline, item) to judge: ``id, method, baseline, baseline_kind, test_set, item_id,
    question, answer_a`` (the method's), ``answer_b`` (the baseline's). Internal baselines are the other
    checkpoints named by ``selection.plan.baseline_keys``; external ones are the shipped answers of the set."""
    from instsel_assets.selection.plan import baseline_keys

    ok = answers[answers["status"] == "ok"]
    by_key = {(m, t, i): _turns(a) for m, t, i, a in zip(ok["method"], ok["test_set"], ok["item_id"], ok["answer"])}
    ext = {(m, t, i): _turns(a) for m, t, i, a in zip(external["model"], external["test_set"], external["item_id"],
                                                      external["answer"])}
    questions = {(t, i): _turns(q) for t, i, q in zip(test_sets["test_set"], test_sets["item_id"], test_sets["turns"])}
    rows = []
    for (method, test_set, item_id), mine in sorted(by_key.items()):
        question = questions[(test_set, item_id)]
        partners = [(key, "internal", by_key.get((key, test_set, item_id)))
                    for key in baseline_keys(method).values()]
        if with_external:
            partners += [(model, "external", ext[(model, t, i)]) for (model, t, i) in sorted(ext)
                         if t == test_set and i == item_id]
        for baseline, kind, theirs in partners:
            if theirs is None:
                continue  # the baseline checkpoint was not generated for this item
            rows.append({"id": f"{method}|{baseline}|{test_set}|{item_id}", "method": method, "baseline": baseline,
                         "baseline_kind": kind, "test_set": test_set, "item_id": item_id,
                         "question": _conversation_text(question, "User"),
                         "answer_a": _conversation_text(mine, "Answer"),
                         "answer_b": _conversation_text(theirs, "Answer")})
    return pd.DataFrame(rows, columns=["id", "method", "baseline", "baseline_kind", "test_set", "item_id",
                                       "question", "answer_a", "answer_b"])


def pair_check_results(asset: str, table: pd.DataFrame, expected: pd.DataFrame, config: JudgeConfig):
    """The judge tables' checks (``defs/judge.judge_check_results``) on a table of judged pairs: the status counts
    from its ``judge_status`` column, and ``covers_pool`` named ``covers_pairs`` (a row is a pair, not a pool row)."""
    counts = {s: int((table["judge_status"] == s).sum()) for s in JUDGE_STATUSES}
    for result in judge_check_results(asset, table, expected, counts, config):
        if result.check_name == "covers_pool":
            result = dg.AssetCheckResult(check_name="covers_pairs", asset_key=asset, passed=result.passed,
                                         metadata=result.metadata)
        yield result


class PairwiseConfig(JudgeConfig):
    external: bool = Field(default=True, description="Also judge against the external models' shipped answers.")


@dg.asset(
    group_name="evaluation",
    code_version=code_version_of("instsel_assets.judge.templates.pairwise", *JUDGE_MODULES),
    kinds={"duckdb", "pandas", "openai"},
    op_tags=gpu_op_tags(),
    ins={"generated_answers": dg.AssetIn(), "external_answers": dg.AssetIn(),
         "evaluation_test_sets": dg.AssetIn()},
    description="Each method's answers against random at the same budget, full, and the external models, judged "
                "by the judge resource with the pairwise template (Vicuna reviewer prompt) in both orders; verdict "
                "for the method: win (better twice, or better and tied), lose (the mirror), tie. Raw replies, "
                "status and parse errors kept per pair; the estimate is recorded before anything is sent.",
    check_specs=[
        dg.AssetCheckSpec("covers_pairs", asset="pairwise_judgements", blocking=True,
                          description="One row per (method, baseline, item) pair."),
        dg.AssetCheckSpec("every_row_accounted", asset="pairwise_judgements",
                          description="ok + unparsable + failed + budget + not judgeable = pairs."),
        dg.AssetCheckSpec("unparsable_replies", asset="pairwise_judgements",
                          description="At most max_unparsable_fraction of the judged pairs are unparsable."),
        dg.AssetCheckSpec("great_expectations_suite", asset="pairwise_judgements",
                          description="Great Expectations suite 'pairwise_judgements'."),
    ],
)
def pairwise_judgements(context: dg.AssetExecutionContext, config: PairwiseConfig, judge: JudgeResource,
                        generated_answers: pd.DataFrame, external_answers: pd.DataFrame,
                        evaluation_test_sets: pd.DataFrame):
    from instsel_assets.evaluation.winning import summarise_columns
    from instsel_assets.judge.templates.pairwise import TEMPLATE

    pairs = judgement_pairs(generated_answers, external_answers, evaluation_test_sets, config.external)
    context.log.info(f"{len(pairs)} pairs to judge: " + ", ".join(
        f"{k} {n}" for k, n in pairs["baseline_kind"].value_counts().items()))
    table, meta = yield from run_judge(context, config, pairs, judge, TEMPLATE)
    table = pairs.drop(columns=["question", "answer_a", "answer_b"]).merge(table, on="id", how="left")
    table["judge_backend"] = meta["judge_backend"]
    ok = table[table["judge_status"] == "ok"]
    overall = summarise_columns(*(ok[c].astype(float).tolist()
                                  for c in ("score_a_ab", "score_b_ab", "score_a_ba", "score_b_ba")))
    yield dg.Output(table, metadata={**meta, "pairs": dg.MetadataValue.json(
        {f"{kind}/{test_set}": int(n) for (kind, test_set), n in pairs.groupby(["baseline_kind", "test_set"]).size()
         .items()}),
        "position_consistency": overall["position_consistency"],
        "verdicts": dg.MetadataValue.json(ok["verdict"].value_counts().to_dict())})
    yield from pair_check_results("pairwise_judgements", table, pairs, config)


class FidelityConfig(JudgeConfig):
    limit: int = Field(default=0, description="LLMBar Natural pairs judged (the first ones); 0 = all 100.")


@dg.asset(
    group_name="evaluation",
    code_version=code_version_of("instsel_assets.evaluation.judge_fidelity", "instsel_assets.judge.templates.pairwise",
                                 *JUDGE_MODULES),
    kinds={"duckdb", "pandas", "openai"},
    op_tags=gpu_op_tags(),
    description="How far the pairwise judge can be trusted: its accuracy and position consistency on LLMBar "
                "Natural's human-labelled pairs (data/labels/llmbar_natural), judged exactly as evaluation pairs "
                "(both orders). Always the local judge; also the judge resource's OpenAI-compatible one when it is "
                "configured (backend 'openai'). One row per (judge, pair).",
    check_specs=[
        dg.AssetCheckSpec("covers_pairs", asset="judge_fidelity", blocking=True,
                          description="One row per pair per judge."),
        dg.AssetCheckSpec("every_row_accounted", asset="judge_fidelity",
                          description="ok + unparsable + failed + budget + not judgeable = pairs, per judge."),
        dg.AssetCheckSpec("unparsable_replies", asset="judge_fidelity",
                          description="At most max_unparsable_fraction of the judged pairs are unparsable."),
        dg.AssetCheckSpec("great_expectations_suite", asset="judge_fidelity",
                          description="Great Expectations suite 'judge_fidelity'."),
    ],
)
def judge_fidelity(context: dg.AssetExecutionContext, config: FidelityConfig, judge: JudgeResource):
    from instsel_assets.evaluation.judge_fidelity import fidelity_summary, load_llmbar_pairs
    from instsel_assets.judge.templates.pairwise import TEMPLATE

    path = settings.data_root() / "labels" / "llmbar_natural" / "dataset.json"
    pairs = load_llmbar_pairs(path, config.limit)
    judges = [judge] if judge.backend == "local" else [JudgeResource(), judge]
    tables, summaries, metas = [], [], {}
    for one in judges:
        table, meta = yield from run_judge(context, config, pairs.drop(columns=["label"]), one, TEMPLATE)
        table = table.merge(pairs[["id", "label"]], on="id", how="left")
        table["judge_backend"] = meta["judge_backend"]
        summary = {"judge_backend": meta["judge_backend"], **fidelity_summary(table)}
        context.log.info(f"judge {summary['judge_backend']} on {summary['n_judged']} LLMBar pairs: accuracy "
                         f"{summary['accuracy']}, position consistency {summary['position_consistency']}, "
                         f"ties {summary['tie_rate']}")
        tables.append(table)
        summaries.append(summary)
        metas[meta["judge_backend"]] = {k: meta[k] for k in ("cache_hits", "sent", "prompt_tokens", "seconds")}
    out = pd.concat(tables, ignore_index=True)
    out["id"] = out["judge_backend"] + "|" + out["id"]  # unique across judges
    yield dg.Output(out, metadata={"dagster/row_count": len(out), "source": str(path),
                                   "fidelity": dg.MetadataValue.json(summaries), "runs": dg.MetadataValue.json(metas),
                                   **{f"accuracy[{s['judge_backend']}]": s["accuracy"] for s in summaries},
                                   **{f"position_consistency[{s['judge_backend']}]": s["position_consistency"]
                                      for s in summaries}})
    expected = pd.DataFrame({"id": [f"{s['judge_backend']}|{i}" for s in summaries for i in pairs["id"]]})
    yield from pair_check_results("judge_fidelity", out, expected, config)


# ------------------------------------------------------------------------------------------------ report
@dg.asset(
    group_name="evaluation",
    code_version=code_version_of("instsel_assets.evaluation.comparison", "instsel_assets.evaluation.winning"),
    kinds={"duckdb", "pandas"},
    ins={"evaluation_reports": dg.AssetIn(), "pairwise_judgements": dg.AssetIn(), "judge_fidelity": dg.AssetIn()},
    deps=["selected_subsets"],
    description="The unified evaluation: one table of every selection method x budget x test set (held-out loss, "
                "WS vs random at the same budget, WS vs full, WS vs the external models, position consistency), "
                "the judge's fidelity on LLMBar beside it, plots (judge score distributions, WS bars, loss vs subset "
                "size), and each method's subset hash, scorer settings and selected_subsets run. Markdown + PNG on "
                "disk, the same Markdown here.",
    check_specs=[
        dg.AssetCheckSpec("every_method_compared", asset="method_comparison",
                          description="Every judged method has a WS against each of its internal baselines that "
                                      "was generated (random at its budget, full)."),
        dg.AssetCheckSpec("great_expectations_suite", asset="method_comparison",
                          description="Great Expectations suite 'method_comparison'."),
    ],
)
def method_comparison(context: dg.AssetExecutionContext, evaluation_reports: pd.DataFrame,
                      pairwise_judgements: pd.DataFrame, judge_fidelity: pd.DataFrame):
    from instsel_assets.defs.lineage import latest_record, metadata_dict
    from instsel_assets.evaluation.comparison import comparison_table, win_table, write_report
    from instsel_assets.evaluation.judge_fidelity import fidelity_summary
    from instsel_assets.selection.plan import baseline_keys

    wins = win_table(pairwise_judgements)
    methods = sorted((set(pairwise_judgements["method"]) | set(evaluation_reports["method"])) - {BASE})
    lineage, baselines = {}, {}
    for method in methods:
        record = latest_record(context.instance, "selected_subsets", method)
        meta = metadata_dict(record)
        lineage[method] = {"selection": meta.get("selection", method.partition("@")[0]),
                           "budget": meta.get("budget_label", ""), "subset_rows": meta.get("dagster/row_count", 0),
                           "subset_hash": meta.get("subset_hash", ""),
                           "scorer_settings": meta.get("scorer_settings", {}),
                           "selection_run_id": record.run_id if record is not None else ""}
        baselines[method] = baseline_keys(method)
    table = comparison_table(evaluation_reports, wins, lineage, baselines)
    fidelity = [{"judge_backend": backend, **fidelity_summary(group)}
                for backend, group in judge_fidelity.groupby("judge_backend", sort=True)]
    judges = sorted(set(pairwise_judgements.get("judge_backend", [])))
    out_dir = settings.storage_root() / "reports"
    md_path, pngs, markdown = write_report(
        table, wins, pairwise_judgements, evaluation_reports, fidelity, out_dir,
        {"judge": ", ".join(judges) or "none", "pairs judged": int((pairwise_judgements["judge_status"] == "ok").sum()),
         "pairs": len(pairwise_judgements)})
    context.log.info(f"method comparison written to {md_path}")
    pooled = table[table["test_set"] == "all"]
    yield dg.Output(table, metadata={
        "dagster/row_count": len(table),
        "report": dg.MetadataValue.md(markdown),
        "report_path": dg.MetadataValue.path(str(md_path)),
        "plot_paths": dg.MetadataValue.json([str(p) for p in pngs]),
        "judge_fidelity": dg.MetadataValue.json(fidelity),
        "ws_vs_random": dg.MetadataValue.json({m: w for m, w in zip(pooled["method"], pooled["ws_vs_random"])
                                               if w == w}),
        "ws_vs_full": dg.MetadataValue.json({m: w for m, w in zip(pooled["method"], pooled["ws_vs_full"]) if w == w}),
    })
    generated = set(pairwise_judgements["method"]) | set(pairwise_judgements["baseline"])
    missing = [f"{m} vs {b}" for m in set(pairwise_judgements["method"]) for b in baselines.get(m, {}).values()
               if b in generated and not ((wins["method"] == m) & (wins["baseline"] == b)).any()]
    yield dg.AssetCheckResult(check_name="every_method_compared", passed=not missing,
                              metadata={"missing": dg.MetadataValue.json(sorted(missing))})
    yield suite_check(table, "method_comparison")


EVALUATION_ASSETS = [evaluation_test_sets, external_answers, evaluation_reports, generated_answers,
                     pairwise_judgements, judge_fidelity, method_comparison]
