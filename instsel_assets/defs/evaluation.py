"""evaluation_reports: held-out loss of the base model and every checkpoint on a test set."""

import dagster as dg
from pydantic import Field
import numpy as np
import pandas as pd

from instsel_assets import settings
from instsel_assets.defs._common import ProgressLogger, code_version_of
from instsel_assets.defs.k8s import gpu_op_tags
from instsel_assets.defs.resources import LanguageModelResource
from instsel_assets.evaluation.report import BASE, comparison_table, write_report

CODE_VERSION = code_version_of("instsel_assets.evaluation.heldout", "instsel_assets.evaluation.report",
                               "instsel_assets.scoring.loss_engine")


class EvaluationConfig(dg.Config):
    test_set: str = Field(
        default="eval/alpaca_eval_805/text_davinci_003_model_outputs.json",
        description='AlpacaEval-format JSON (instruction + output) relative to the data root; outputs are the references.')
    limit: int = Field(
        default=100,
        description='Prompts used, spread evenly over the file (deterministic); 0 = all.')
    max_length: int = Field(
        default=768,
        description='Tokens per prompt + reference.')


def pick_evenly(frame: pd.DataFrame, limit: int) -> pd.DataFrame:
    """``limit`` rows spread evenly over ``frame`` (AlpacaEval is ordered by origin dataset)."""
    if limit <= 0 or limit >= len(frame):
        return frame.reset_index(drop=True)
    idx = np.unique(np.linspace(0, len(frame) - 1, limit).round().astype(int))
    return frame.iloc[idx].reset_index(drop=True)


@dg.asset(
    group_name="evaluation",
    code_version=CODE_VERSION,
    kinds={"duckdb", "pandas", "torch"},
    op_tags=gpu_op_tags(),
    deps=["finetuned_checkpoints"],
    description="Held-out mean loss of reference answers for the base model and every checkpoint materialised "
                "so far (each selection partition's latest), and the "
                "comparison of every selection method against `random` and the base model; a Markdown "
                "report with a chart is written to disk and attached here.",
    check_specs=[
        dg.AssetCheckSpec("losses_finite", asset="evaluation_reports", blocking=True,
                          description="Every evaluated model has a finite held-out loss."),
        dg.AssetCheckSpec("every_checkpoint_evaluated", asset="evaluation_reports",
                          description="The base model and every checkpoint are in the report."),
    ],
)
def evaluation_reports(context: dg.AssetExecutionContext, config: EvaluationConfig,
                       language_model: LanguageModelResource):
    from instsel_assets.evaluation.heldout import heldout_loss, load_alpaca_eval, summarise_heldout
    from instsel_assets.models.loading import load_causal_lm
    from instsel_assets.training.checkpoint import load_checkpoint

    finetuned_checkpoints = materialised_checkpoints(context.instance)
    if not finetuned_checkpoints:
        context.log.warning("no finetuned_checkpoints partition has been materialised: only the base model is evaluated")

    path = settings.data_root() / config.test_set
    test = pick_evenly(load_alpaca_eval(path, None), config.limit)
    test_name = path.parent.name
    prompts, references = list(test["instruction"]), list(test["reference"])
    context.log.info(f"held-out loss on {len(test)} prompts of {test_name} for the base model and "
                     f"{len(finetuned_checkpoints)} checkpoints")

    def evaluate(model, tokenizer, label: str) -> dict:
        frame = heldout_loss(model, tokenizer, prompts, references, batch_size=language_model.batch_size,
                             max_length=config.max_length)
        summary = summarise_heldout(frame)
        context.log.info(f"{label}: mean loss {summary['mean_loss']:.4f} over {summary['n_examples']} prompts")
        return summary

    base_model, base_tok = language_model.load()
    rows = [{"model": language_model.model, "method": BASE, "subset_rows": 0, "subset_hash": "",
             "test_set": test_name, **_loss_fields(evaluate(base_model, base_tok, BASE))}]
    dtype = str(next(base_model.parameters()).dtype).replace("torch.", "")
    for method, manifest in sorted(finetuned_checkpoints.items()):
        model, tokenizer, _ = load_checkpoint(
            manifest["path"], base_loader=lambda mid: load_causal_lm(mid, dtype=dtype, device=language_model.device))
        rows.append({"model": manifest["path"], "method": method, "subset_rows": manifest["subset_rows"],
                     "subset_hash": manifest.get("subset_hash") or "", "test_set": test_name,
                     **_loss_fields(evaluate(model, tokenizer, method))})
        del model
    table = comparison_table(rows)
    out_dir = settings.storage_root() / "reports"
    md_path, png_path, markdown = write_report(table, out_dir, {
        "test_set": test_name, "n_examples": len(test), "base_model": language_model.model, "dtype": dtype,
        "max_length": config.max_length})
    context.log.info(f"evaluation report written to {md_path}")
    yield dg.Output(table, metadata={
        "dagster/row_count": len(table),
        "report": dg.MetadataValue.md(markdown),
        "report_path": dg.MetadataValue.path(str(md_path)),
        "plot_path": dg.MetadataValue.path(str(png_path)),
        "test_set": test_name, "n_examples": len(test),
        "methods_beating_random": dg.MetadataValue.json(
            sorted(table.loc[table["beats_random"] & (table["method"] != BASE), "method"].tolist())),
    })
    losses = table["mean_loss"].to_numpy(dtype=float)
    yield dg.AssetCheckResult(check_name="losses_finite", passed=bool(len(losses) and np.isfinite(losses).all()),
                              metadata={"losses": dg.MetadataValue.json(dict(zip(table["method"], map(float, losses))))})
    expected = {BASE, *finetuned_checkpoints}
    yield dg.AssetCheckResult(check_name="every_checkpoint_evaluated", passed=set(table["method"]) == expected,
                              metadata={"missing": dg.MetadataValue.json(sorted(expected - set(table["method"])))})


def materialised_checkpoints(instance: dg.DagsterInstance) -> dict[str, dict]:
    """``{method: manifest}`` of the latest materialisation of every finetuned_checkpoints partition that has
    one and whose directory still holds a checkpoint (partitions never trained are skipped, not errors)."""
    from instsel_assets.defs.lineage import latest_record, metadata_dict
    from instsel_assets.selection.plan import selection_keys
    from instsel_assets.training.checkpoint import read_manifest

    found = {}
    for method in selection_keys():
        meta = metadata_dict(latest_record(instance, "finetuned_checkpoints", method))
        path = meta.get("checkpoint_dir")
        if not path:
            continue
        manifest = read_manifest(path)
        found[method] = {"path": str(path), "subset_rows": manifest.get("subset_rows", 0),
                         "subset_hash": manifest.get("subset_hash") or meta.get("subset_hash") or ""}
    return found


def _loss_fields(summary: dict) -> dict:
    return {"n_examples": int(summary["n_examples"]), "n_answer_tokens": int(summary["n_tokens"]),
            "mean_loss": float(summary["mean_loss"])}
