"""LM scores: ifd_scores from the shared loss engine."""

import dagster as dg
import numpy as np
import pandas as pd

from instsel_assets.defs._common import ProgressLogger, code_version_of, suite_check
from instsel_assets.defs.k8s import gpu_op_tags
from instsel_assets.defs.resources import LanguageModelResource

CODE_VERSION = code_version_of("instsel_assets.scoring.ifd", "instsel_assets.scoring.loss_engine",
                               "instsel_assets.models.chat")


@dg.asset(
    group_name="scores",
    code_version=CODE_VERSION,
    kinds={"duckdb", "pandas", "torch"},
    op_tags=gpu_op_tags(),
    description="IFD (Cherry LLM): s(A|Q) / s(A), the mean answer-token loss with the instruction as "
                "prefix over the loss without it (loss ratio; the perplexity ratio of Superfiltering is "
                "kept beside it). Batched through the shared loss engine, with the model's chat template.",
    check_specs=[
        dg.AssetCheckSpec("covers_pool", asset="ifd_scores", blocking=True,
                          description="One score row per pool row."),
        dg.AssetCheckSpec("no_nan", asset="ifd_scores",
                          description="Every IFD and loss is finite."),
        dg.AssetCheckSpec("great_expectations_suite", asset="ifd_scores",
                          description="Great Expectations suite 'ifd_scores'."),
    ],
)
def ifd_scores(context: dg.AssetExecutionContext, instruction_pool: pd.DataFrame,
               language_model: LanguageModelResource):
    from instsel_assets.models.loading import model_fingerprint
    from instsel_assets.scoring.ifd import ifd_scores as compute_ifd

    model, tokenizer = language_model.load()
    context.log.info(f"IFD for {len(instruction_pool)} rows with {language_model.model} "
                     f"(batch {language_model.batch_size})")
    scores = compute_ifd(instruction_pool, model, tokenizer, batch_size=language_model.batch_size,
                         max_length=language_model.max_length,
                         progress=ProgressLogger(context.log, "IFD loss passes"))
    ifd = scores["ifd"].to_numpy(dtype=float)
    finite = np.isfinite(ifd)
    yield dg.Output(scores, metadata={
        "dagster/row_count": len(scores),
        "scorer": "ifd",
        "scorer_settings": dg.MetadataValue.json(language_model.settings_dict()),
        "model": dg.MetadataValue.json(model_fingerprint(language_model.model, str(next(model.parameters()).dtype))),
        "ifd_mean": float(np.nanmean(ifd)) if finite.any() else float("nan"),
        "ifd_median": float(np.nanmedian(ifd)) if finite.any() else float("nan"),
        "rows_ifd_at_least_1": int((ifd >= 1).sum()),
        "ifd_histogram": dg.MetadataValue.md(_histogram_md(ifd[finite])),
    })
    yield dg.AssetCheckResult(check_name="covers_pool",
                              passed=set(scores["id"]) == set(instruction_pool["id"]) and len(scores) == len(instruction_pool),
                              metadata={"score_rows": len(scores), "pool_rows": len(instruction_pool)})
    losses = scores[["loss_answer_given_instruction", "loss_answer", "ifd"]].to_numpy(dtype=float)
    yield dg.AssetCheckResult(check_name="no_nan", passed=bool(np.isfinite(losses).all()),
                              metadata={"non_finite": int((~np.isfinite(losses)).sum())})
    yield suite_check(scores, "ifd_scores")


def _histogram_md(values: np.ndarray, bins: int = 10) -> str:
    if len(values) == 0:
        return "(no values)"
    counts, edges = np.histogram(values, bins=bins)
    rows = ["| IFD from | to | rows |", "|---:|---:|---:|"]
    rows += [f"| {lo:.3f} | {hi:.3f} | {n} |" for lo, hi, n in zip(edges[:-1], edges[1:], counts)]
    return "\n".join(rows)
