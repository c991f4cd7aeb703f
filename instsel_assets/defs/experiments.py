"""The experiment-driven metric-set methods (docs/METHODS.md, Family 1): subset experiments, InstructMining and
InstructionGPT-4, group ``instruct_mining``.

``subset_experiments`` fine-tunes the language model with LoRA on seeded random subsets of the pool and measures
each one's held-out loss (the same SFT as ``finetuned_checkpoints``, the same held-out loss as
``evaluation_reports``); its table also holds the subset means of every row indicator. From it,
``instruct_mining_rule`` fits InstructMining's linear rule (loss ~ indicators) and ``instruct_mining_scores``
applies it to every pool row; ``instruction_gpt4_selector_model`` trains InstructionGPT-4's selector network and
``instruction_gpt4_scores`` scores every pool row with it.

The row indicators are the columns of ``metric_features`` (tokens, TTR, MTLD, KNN-6 distance), the pool's turn
count, and, when their tables have been materialised, ``response_ppl`` (``perplexity_scores``) and
``reward_score`` (``reward_scores``): a score table never materialised is left out and named in the metadata.
"""

import copy
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from instsel_assets import settings
from instsel_assets.defs._common import code_version_of, suite_check
from instsel_assets.defs.k8s import gpu_op_tags
from instsel_assets.defs.resources import LanguageModelResource
from instsel_assets.defs.scores import _score_checks, histogram_md, score_checks

GROUP = "instruct_mining"
EXPERIMENTS_CODE_VERSION = code_version_of(
    "instsel_assets.training.subset_experiments", "instsel_assets.training.sft", "instsel_assets.training.checkpoint",
    "instsel_assets.evaluation.heldout", "instsel_assets.scoring.loss_engine", "instsel_assets.models.chat")
RULE_CODE_VERSION = code_version_of("instsel_assets.scoring.instruct_mining",
                                    "instsel_assets.training.subset_experiments")
IGPT4_CODE_VERSION = code_version_of("instsel_assets.scoring.instruction_gpt4",
                                     "instsel_assets.training.subset_experiments")

# metric_features' numeric indicators, and the optional score tables (asset -> indicator columns read from it).
FEATURE_INDICATORS = ("instruction_tokens", "input_tokens", "output_tokens", "total_tokens", "ttr", "mtld",
                      "knn6_mean_distance")
OPTIONAL_SCORE_TABLES = {"perplexity_scores": ("response_ppl",), "reward_scores": ("reward_score",)}
DEFAULT_TEST_SET = "eval/alpaca_eval_805/text_davinci_003_model_outputs.json"


def experiments_dir() -> Path:
    return settings.storage_root() / "experiments" / "subset_experiments"


def row_indicator_table(instruction_pool: pd.DataFrame, metric_features: pd.DataFrame,
                        log=None) -> tuple[pd.DataFrame, dict[str, str]]:
    """One row per pool row (pool order): ``id``, ``embedding`` and every numeric indicator available, and
    ``{indicator: the asset it comes from}`` (a score table that was never materialised is named with
    ``"not materialised"``)."""
    from instsel_assets.defs.selection import read_score_table

    features = [c for c in FEATURE_INDICATORS if c in metric_features.columns]
    table = instruction_pool[["id"]].astype({"id": str}).merge(
        metric_features[["id", *features, *(["embedding"] if "embedding" in metric_features.columns else [])]]
        .astype({"id": str}), on="id", how="left")
    sources = {c: "metric_features" for c in features}
    if "n_turns" in instruction_pool.columns:
        table["n_turns"] = pd.to_numeric(instruction_pool["n_turns"], errors="coerce").to_numpy()
        sources["n_turns"] = "instruction_pool"
    for asset, columns in OPTIONAL_SCORE_TABLES.items():
        try:
            frame = read_score_table(asset, columns[0], GROUP)
        except LookupError:
            for column in columns:
                sources[column] = f"{asset} (not materialised)"
            if log is not None:
                log.info(f"{asset} has not been materialised: indicator(s) {list(columns)} left out")
            continue
        present = [c for c in columns if c in frame.columns]
        table = table.merge(frame[["id", *present]].astype({"id": str}), on="id", how="left")
        sources.update({c: asset for c in present})
    return table, sources


def _members(value) -> list[str]:
    """A ``member_ids`` cell as a list of ids (a list after DuckDB, a numpy array from pandas)."""
    return [str(v) for v in (value.tolist() if hasattr(value, "tolist") else list(value))]


def _md_table(frame: pd.DataFrame, digits: int = 4) -> str:
    return frame.to_markdown(index=False, floatfmt=f".{digits}g")


def _num(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


# ------------------------------------------------------------------------------------------- subset experiments
class SubsetExperimentsConfig(dg.Config):
    n_subsets: int = Field(
        default=12,
        description="Random subsets to fine-tune on (one LoRA fine-tune and one held-out evaluation each). The "
                    "rule InstructMining fits has one coefficient per indicator: with fewer subsets than "
                    "indicators + 2 it is fitted by ridge regression (and the least_squares_determined check "
                    "fails). 12 leaves 4 residual degrees of freedom for the 7 indicators of the bundled pool "
                    "(8 gave a ridge fit). The papers use tens to a hundred.")
    subset_size: int = Field(
        default=16,
        description="Rows per subset (drawn without replacement; subsets may overlap). Keep max_steps x batch_size "
                    ">= subset_size, so that every row of a subset is trained on (one epoch with the defaults).")
    seed: int = Field(default=0, description="Seed of the subset draws; the LoRA initialisation and data order use "
                                             "it too, the same for every subset.")
    max_steps: int = Field(
        default=4,
        description="Optimizer steps per fine-tune. With the defaults one subset takes about 18 s on 2 CPU cores "
                    "with SmolLM2-135M (fine-tune and held-out loss; 8 subsets took 145 s), so the 12 subsets about "
                    "4 minutes; raise steps, subset_size and n_subsets on a GPU.")
    batch_size: int = Field(default=4, description="Examples per step.")
    learning_rate: float = Field(
        default=1e-3,
        description="AdamW learning rate of the LoRA parameters (higher than finetuned_checkpoints' 2e-4 because "
                    "the default fine-tunes are only a few steps long).")
    max_length: int = Field(default=256, description="Tokens per training example; longer ones are cut on the right.")
    lora_r: int = Field(default=8, description="LoRA rank (adapters on q_proj and v_proj).")
    test_set: str = Field(
        default=DEFAULT_TEST_SET,
        description="AlpacaEval-format JSON (instruction + output) relative to the data root: the fixed held-out set "
                    "(its outputs are the references).")
    eval_limit: int = Field(default=16, description="Held-out prompts, spread evenly over the file; 0 = all.")
    eval_max_length: int = Field(default=384, description="Tokens per held-out prompt + reference.")
    evaluate_base: bool = Field(default=True, description="Also measure the base model's held-out loss (metadata).")


@dg.asset(
    group_name=GROUP,
    code_version=EXPERIMENTS_CODE_VERSION,
    kinds={"duckdb", "pandas", "torch"},
    op_tags=gpu_op_tags(),
    deps=list(OPTIONAL_SCORE_TABLES),
    description="Fine-tuning experiments for InstructMining and InstructionGPT-4: n_subsets seeded random subsets "
                "of the pool, a LoRA fine-tune of the language model on each (the SFT of finetuned_checkpoints) and "
                "its held-out loss on a fixed test set (the loss of evaluation_reports). One row per subset: id, "
                "member ids, eval_loss, steps, and the subset mean of every row indicator (mean_<indicator>). The "
                "defaults (12 subsets x 16 rows, one epoch of 4 steps x 4, 16 held-out prompts) take about 4 "
                "minutes on 2 CPU cores with SmolLM2-135M (8 subsets took 145 s).",
    check_specs=[
        dg.AssetCheckSpec("every_subset_loss_finite", asset="subset_experiments", blocking=True,
                          description="Every subset's held-out loss is finite."),
        dg.AssetCheckSpec("great_expectations_suite", asset="subset_experiments",
                          description="Great Expectations suite 'subset_experiments'."),
    ],
)
def subset_experiments(context: dg.AssetExecutionContext, config: SubsetExperimentsConfig,
                       instruction_pool: pd.DataFrame, metric_features: pd.DataFrame,
                       language_model: LanguageModelResource):
    from instsel_assets.defs.evaluation import pick_evenly
    from instsel_assets.evaluation.heldout import load_alpaca_eval
    from instsel_assets.training.sft import SFTConfig
    from instsel_assets.training.subset_experiments import (draw_subsets, heldout_eval_loss, non_finite_losses,
                                                            run_subset_experiment, subset_indicator_means)

    rows, sources = row_indicator_table(instruction_pool, metric_features, log=context.log)
    indicators = [c for c in rows.columns if c not in ("id", "embedding")]
    subsets = draw_subsets(instruction_pool["id"].astype(str).tolist(), config.n_subsets, config.subset_size,
                           seed=config.seed)
    conversations = dict(zip(instruction_pool["id"].astype(str), instruction_pool["conversations"]))
    path = settings.data_root() / config.test_set
    test = pick_evenly(load_alpaca_eval(path, None), config.eval_limit)
    prompts, references = list(test["instruction"]), list(test["reference"])
    sft_config = SFTConfig(max_steps=config.max_steps, batch_size=config.batch_size,
                           learning_rate=config.learning_rate, max_length=config.max_length, lora_r=config.lora_r,
                           lora_alpha=2 * config.lora_r, seed=config.seed, log_every=max(1, config.max_steps // 2))
    context.log.info(f"{config.n_subsets} subsets of {config.subset_size} rows from {len(instruction_pool)}; each "
                     f"fine-tuned {config.max_steps} steps of {config.batch_size} on {language_model.model}, then "
                     f"evaluated on {len(test)} prompts of {path.parent.name}")
    seen = config.max_steps * config.batch_size
    if seen < config.subset_size:
        context.log.warning(f"max_steps x batch_size = {seen} < subset_size {config.subset_size}: part of each subset "
                            f"is never trained on, while the subset means cover all of it")
    started = time.monotonic()
    base, tokenizer = language_model.load_fresh()
    base_loss = None
    if config.evaluate_base:
        base_loss = heldout_eval_loss(base, tokenizer, prompts, references, batch_size=language_model.batch_size,
                                      max_length=config.eval_max_length)["mean_loss"]
        context.log.info(f"base model: held-out loss {base_loss:.4f}")
    records = []
    for k, (sid, members) in enumerate(subsets.items(), start=1):
        context.log.info(f"subset {k}/{len(subsets)} ({sid}): fine-tuning on {len(members)} rows")

        def progress(info: dict, sid=sid) -> None:
            context.log.info(f"{sid}: step {info['step']}/{config.max_steps} loss {info['loss']:.4f} "
                             f"({info['seconds']:.0f}s)")

        result = run_subset_experiment(
            copy.deepcopy(base), tokenizer, [conversations[m] for m in members], experiments_dir() / sid, sft_config,
            base_model_id=language_model.model, prompts=prompts, references=references,
            eval_batch_size=language_model.batch_size, eval_max_length=config.eval_max_length, progress=progress,
            manifest={"purpose": "subset experiment", "subset_id": sid, "subset_ids": members})
        context.log.info(f"subset {k}/{len(subsets)} ({sid}): held-out loss {result.eval_loss:.4f} (training loss "
                         f"{result.first_train_loss:.4f} -> {result.last_train_loss:.4f}; "
                         f"{result.train_seconds + result.eval_seconds:.0f}s)")
        records.append({"subset_id": sid, "member_ids": list(members), "n_rows": len(members),
                        "eval_loss": result.eval_loss, "eval_examples": result.eval_examples, "steps": result.steps,
                        "first_train_loss": result.first_train_loss, "last_train_loss": result.last_train_loss,
                        "train_seconds": result.train_seconds, "checkpoint_dir": result.checkpoint_dir})
    del base
    table = pd.DataFrame(records).merge(subset_indicator_means(subsets, rows, indicators), on="subset_id", how="left")
    losses = table["eval_loss"].to_numpy(dtype=float)
    yield dg.Output(table, metadata={
        "dagster/row_count": len(table),
        "n_subsets": config.n_subsets, "subset_size": config.subset_size, "pool_rows": len(instruction_pool),
        "seed": config.seed, "base_model": language_model.model,
        "epochs_per_subset": round(seen / config.subset_size, 3),
        "sft_config": dg.MetadataValue.json(sft_config.to_dict()),
        "test_set": path.parent.name, "eval_examples": len(test),
        "base_eval_loss": _num(base_loss) if base_loss is not None else None,
        "eval_loss_mean": _num(np.nanmean(losses)) if len(losses) else None,
        "eval_loss_spread": _num(np.nanmax(losses) - np.nanmin(losses)) if len(losses) else None,
        "indicators": dg.MetadataValue.json(indicators),
        "indicator_sources": dg.MetadataValue.json(sources),
        "subsets": dg.MetadataValue.md(_md_table(table[["subset_id", "n_rows", "eval_loss", "first_train_loss",
                                                        "last_train_loss"]])),
        "seconds": round(time.monotonic() - started, 1),
    })
    bad = non_finite_losses(table)
    yield dg.AssetCheckResult(check_name="every_subset_loss_finite", passed=not bad,
                              metadata={"subsets_not_finite": dg.MetadataValue.json(bad),
                                        "losses": dg.MetadataValue.json(dict(zip(table["subset_id"],
                                                                                 map(_num, losses))))})
    yield suite_check(table, "subset_experiments")


# ---------------------------------------------------------------------------------------------- InstructMining
class InstructMiningConfig(dg.Config):
    indicators: list[str] | None = Field(
        default=None,
        description="Indicators of the rule (columns of the row indicator table: instruction_tokens, input_tokens, "
                    "output_tokens, total_tokens, ttr, mtld, knn6_mean_distance, n_turns, response_ppl, "
                    "reward_score). Default: whichever of instruction_tokens, output_tokens, ttr, mtld, "
                    "knn6_mean_distance, response_ppl and reward_score the experiments table holds. An explicit "
                    "indicator the table lacks is an error.")
    target: str = Field(
        default="log_loss",
        description="'log_loss' (fit the logarithm of the held-out loss, as the paper does; the score is exp of "
                    "the fitted value) or 'loss' (fit the loss itself).")
    regularization: str = Field(
        default="auto",
        description="'auto': least squares when there are more subsets than indicators + 1 (and the design has "
                    "full rank), ridge regression otherwise; 'ols' (an error when it is under-determined) or "
                    "'ridge'.")
    ridge_alpha: float = Field(
        default=1.0,
        description="Ridge penalty on the standardised coefficients (the intercept is not penalised); each "
                    "standardised indicator's squared norm over the subsets is n_subsets.")


@dg.asset(
    group_name=GROUP,
    code_version=RULE_CODE_VERSION,
    kinds={"duckdb", "pandas"},
    description="InstructMining's linear rule, loss ~ b0 + sum_i b_i z(indicator_i), fitted by least squares on the "
                "subset experiments (standardised subset-mean indicators -> held-out loss); ridge when the subsets "
                "are too few. One row per term: standardised and raw coefficients, standardisation, OLS standard "
                "error and p-value; R^2, leave-one-out R^2 and residuals in the metadata.",
    check_specs=[
        dg.AssetCheckSpec("coefficients_finite", asset="instruct_mining_rule", blocking=True,
                          description="The intercept and every coefficient are finite."),
        dg.AssetCheckSpec("least_squares_determined", asset="instruct_mining_rule",
                          description="There were more subsets than indicators + 1 (a unique least-squares fit); "
                                      "a warning when ridge regression had to stand in."),
        dg.AssetCheckSpec("great_expectations_suite", asset="instruct_mining_rule",
                          description="Great Expectations suite 'instruct_mining_rule'."),
    ],
)
def instruct_mining_rule(context: dg.AssetExecutionContext, config: InstructMiningConfig,
                         subset_experiments: pd.DataFrame):
    from instsel_assets.scoring.instruct_mining import fit_from_experiments

    rule = fit_from_experiments(subset_experiments, config.indicators, target=config.target,
                                regularization=config.regularization, ridge_alpha=config.ridge_alpha)
    table = rule.coefficient_table()
    summary = rule.summary()
    if rule.method == "ridge":
        context.log.warning(f"InstructMining: ridge regression (alpha {rule.ridge_alpha}): {rule.method_reason}")
    context.log.info(f"InstructMining rule: {rule.formula()} (R^2 {rule.r2:.3f}, {rule.n_subsets} subsets)")
    residuals = pd.DataFrame({"subset_id": list(rule.subset_ids), "observed": rule.observed, "fitted": rule.fitted,
                              "residual": rule.residuals})
    yield dg.Output(table, metadata={
        "dagster/row_count": len(table),
        "formula": rule.formula(), "target": rule.target, "method": rule.method,
        "method_reason": rule.method_reason, "ridge_alpha": float(rule.ridge_alpha),
        "n_subsets": rule.n_subsets, "n_indicators": len(rule.indicators),
        "r2": _num(rule.r2), "adjusted_r2": _num(rule.adjusted_r2), "loo_r2": _num(rule.loo_r2),
        "coefficients": dg.MetadataValue.md(_md_table(table[["term", "coefficient", "raw_coefficient", "center",
                                                             "scale", "std_error", "p_value"]])),
        "residuals": dg.MetadataValue.md(_md_table(residuals)),
        "dropped_indicators": dg.MetadataValue.json(rule.dropped),
        "rule": dg.MetadataValue.json(summary),
    })
    values = table["coefficient"].to_numpy(dtype=float)
    yield dg.AssetCheckResult(check_name="coefficients_finite", passed=bool(np.isfinite(values).all()),
                              metadata={"terms": dg.MetadataValue.json(
                                  dict(zip(table["term"], map(_num, values))))})
    yield dg.AssetCheckResult(
        check_name="least_squares_determined", passed=bool(rule.least_squares_determined),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"n_subsets": rule.n_subsets, "n_indicators": len(rule.indicators), "method": rule.method,
                  "method_reason": rule.method_reason,
                  "note": "" if rule.least_squares_determined else
                  f"raise n_subsets of subset_experiments above {len(rule.indicators) + 1} or list fewer indicators"})
    yield suite_check(table, "instruct_mining_rule")


@dg.asset(
    group_name=GROUP,
    code_version=RULE_CODE_VERSION,
    kinds={"duckdb", "pandas"},
    deps=list(OPTIONAL_SCORE_TABLES),
    description="InstructMining score of every pool row: the fitted rule applied to the row's own indicators, the "
                "predicted held-out loss (lower is better). Rows missing an indicator are NaN and counted.",
    check_specs=_score_checks("instruct_mining_scores", "instruct_mining_score"),
)
def instruct_mining_scores(context: dg.AssetExecutionContext, instruction_pool: pd.DataFrame,
                           metric_features: pd.DataFrame, instruct_mining_rule: pd.DataFrame):
    from instsel_assets.scoring.instruct_mining import InstructMiningRule
    from instsel_assets.scoring.instruct_mining import instruct_mining_scores as score

    rule = InstructMiningRule.from_table(instruct_mining_rule)
    rows, sources = row_indicator_table(instruction_pool, metric_features, log=context.log)
    scores = score(rows, rule)
    values = scores["instruct_mining_score"].to_numpy(dtype=float)
    yield dg.Output(scores, metadata={
        "dagster/row_count": len(scores), "scorer": "instruct_mining",
        "scorer_settings": dg.MetadataValue.json({"indicators": list(rule.indicators), "target": rule.target,
                                                  "method": rule.method, "ridge_alpha": rule.ridge_alpha}),
        "indicator_sources": dg.MetadataValue.json({c: sources.get(c) for c in rule.indicators}),
        "scorer/n_unscorable": int(scores.attrs["n_unscorable"]),
        "score_median": _num(np.nanmedian(values)) if np.isfinite(values).any() else None,
        "score_histogram": dg.MetadataValue.md(histogram_md(values, "predicted loss")),
    })
    yield from score_checks("instruct_mining_scores", scores, instruction_pool, "instruct_mining_score")


# -------------------------------------------------------------------------------------------- InstructionGPT-4
class InstructionGPT4Config(dg.Config):
    indicators: list[str] | None = Field(
        default=None,
        description="Row indicators fed to the selector (besides the embedding's principal components). Default: "
                    "whichever of instruction_tokens, output_tokens, ttr, mtld, knn6_mean_distance, response_ppl and "
                    "reward_score the tables hold; an explicit indicator they lack is an error.")
    n_components: int = Field(default=8, description="Principal components of the MiniLM instruction embedding "
                                                     "(the paper: 6 per modality); 0 = indicators only.")
    hidden: int = Field(default=32, description="Hidden units of the selector MLP.")
    epochs: int = Field(default=300, description="Full-batch Adam epochs over the subsets.")
    learning_rate: float = Field(default=1e-2, description="Adam learning rate (the reference code's 0.01).")
    weight_decay: float = Field(default=1e-3, description="Adam weight decay (the selector is under-determined "
                                                          "with few subsets).")
    seed: int = Field(default=0, description="Seed of the MLP initialisation.")


@dg.asset(
    group_name=GROUP,
    code_version=IGPT4_CODE_VERSION,
    io_manager_key="artifact_io_manager",
    kinds={"torch"},
    deps=list(OPTIONAL_SCORE_TABLES),
    description="InstructionGPT-4's trainable data selector, text form: an MLP over each row's indicators and "
                "PCA-reduced embedding, trained so that the mean score of a subset's rows matches the subset's "
                "quality (-eval_loss of subset_experiments, standardised). The training curve is in the metadata; "
                "the selector is saved as JSON.",
    check_specs=[
        dg.AssetCheckSpec("training_loss_finite", asset="instruction_gpt4_selector_model", blocking=True,
                          description="Every epoch's training loss is finite."),
        dg.AssetCheckSpec("beats_constant_prediction", asset="instruction_gpt4_selector_model",
                          description="The best training MSE is below 1, the MSE of predicting every subset's "
                                      "standardised quality as the mean (a warning otherwise)."),
    ],
)
def instruction_gpt4_selector_model(context: dg.AssetExecutionContext, config: InstructionGPT4Config,
                                    subset_experiments: pd.DataFrame, instruction_pool: pd.DataFrame,
                                    metric_features: pd.DataFrame):
    import json

    from instsel_assets.scoring.instruction_gpt4 import resolve_indicators, train_instruction_gpt4_selector

    rows, sources = row_indicator_table(instruction_pool, metric_features, log=context.log)
    used, absent = resolve_indicators(rows, config.indicators)
    subsets = {str(s): _members(m) for s, m in zip(subset_experiments["subset_id"], subset_experiments["member_ids"])}
    losses = dict(zip(subset_experiments["subset_id"].astype(str), subset_experiments["eval_loss"].astype(float)))
    context.log.info(f"InstructionGPT-4 selector: {len(subsets)} subsets, indicators {used}, "
                     f"{config.n_components} embedding components, {config.epochs} epochs")
    selector = train_instruction_gpt4_selector(
        rows, subsets, losses, indicators=used, n_components=config.n_components, hidden=config.hidden,
        epochs=config.epochs, learning_rate=config.learning_rate, weight_decay=config.weight_decay, seed=config.seed,
        progress=lambda epoch, loss: context.log.info(f"InstructionGPT-4 selector: epoch {epoch}/{config.epochs} "
                                                      f"MSE {loss:.4f}"))
    out_dir = settings.storage_root() / "selectors" / "instruction_gpt4"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "selector.json"
    body = selector.to_dict()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body), encoding="utf-8")
    tmp.replace(path)
    curve = np.asarray(selector.curve, dtype=float)
    step = max(1, len(curve) // 100)
    fit = pd.DataFrame({"subset_id": list(selector.subset_ids), "quality": selector.subset_labels,
                        "predicted": selector.subset_predictions})
    yield dg.Output({"path": str(path), **body}, metadata={
        "path": dg.MetadataValue.path(str(path)),
        "features": dg.MetadataValue.json(selector.featurizer.feature_names),
        "indicators_absent": dg.MetadataValue.json(absent),
        "indicator_sources": dg.MetadataValue.json({c: sources.get(c) for c in used}),
        "n_subsets": len(subsets), "best_epoch": selector.best_epoch + 1,
        "final_mse": _num(selector.final_loss), "subset_spearman": _num(selector.subset_spearman),
        "training_curve": dg.MetadataValue.json({int(i + 1): round(float(curve[i]), 6)
                                                 for i in range(0, len(curve), step)} | {len(curve): round(
                                                     float(curve[-1]), 6)}),
        "explained_variance_ratio": dg.MetadataValue.json(
            [] if selector.featurizer.explained_variance_ratio is None
            else [round(float(v), 4) for v in selector.featurizer.explained_variance_ratio]),
        "subset_fit": dg.MetadataValue.md(_md_table(fit)),
        "settings": dg.MetadataValue.json(selector.settings),
    })
    yield dg.AssetCheckResult(check_name="training_loss_finite", passed=bool(len(curve) and np.isfinite(curve).all()),
                              metadata={"epochs": len(curve)})
    yield dg.AssetCheckResult(check_name="beats_constant_prediction", passed=bool(selector.final_loss < 1.0),
                              severity=dg.AssetCheckSeverity.WARN,
                              metadata={"best_mse": _num(selector.final_loss), "constant_mse": 1.0})


@dg.asset(
    group_name=GROUP,
    code_version=IGPT4_CODE_VERSION,
    kinds={"duckdb", "pandas", "torch"},
    deps=list(OPTIONAL_SCORE_TABLES),
    description="InstructionGPT-4 score of every pool row: the trained selector's output on the row's features "
                "(standardised quality units, higher is better).",
    check_specs=_score_checks("instruction_gpt4_scores", "instruction_gpt4_score"),
)
def instruction_gpt4_scores(context: dg.AssetExecutionContext, instruction_pool: pd.DataFrame,
                            metric_features: pd.DataFrame, instruction_gpt4_selector_model: dict):
    from instsel_assets.scoring.instruction_gpt4 import instruction_gpt4_scores as score

    rows, _ = row_indicator_table(instruction_pool, metric_features, log=context.log)
    body = {k: v for k, v in instruction_gpt4_selector_model.items() if k != "path"}
    scores = score(rows, body)
    values = scores["instruction_gpt4_score"].to_numpy(dtype=float)
    yield dg.Output(scores, metadata={
        "dagster/row_count": len(scores), "scorer": "instruction_gpt4",
        "selector": dg.MetadataValue.path(str(instruction_gpt4_selector_model.get("path", ""))),
        "scorer_settings": dg.MetadataValue.json(body.get("settings", {})),
        "scorer/n_unscorable": int(scores.attrs["n_unscorable"]),
        "scorer/n_rows_imputed": int(scores.attrs["n_rows_imputed"]),
        "score_histogram": dg.MetadataValue.md(histogram_md(values, "selector score")),
    })
    yield from score_checks("instruction_gpt4_scores", scores, instruction_pool, "instruction_gpt4_score")


EXPERIMENT_ASSETS = [subset_experiments, instruct_mining_rule, instruct_mining_scores, instruction_gpt4_selector_model,
                     instruction_gpt4_scores]
