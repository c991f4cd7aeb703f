"""LM scores (docs/METHODS.md family 2): one asset per trainable-LLM scorer, all on the shared loss engine; and
the reward score (MoDS, family 4) from the ``reward_model`` resource.

Each asset loads its model from a ``LanguageModelResource`` (``language_model``: the reference/target model;
``filter_model``: Superfiltering's small scorer model), opens the model's resumable loss cache and calls the
registered scorer. Metadata names the scorer, its settings, the model (fingerprint), the cache hits and
the scorer's own counts (rows it could not score, rows truncated).
"""

import time
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from instsel_assets import settings
from instsel_assets.defs._common import ProgressLogger, code_version_of, suite_check
from instsel_assets.defs.k8s import gpu_op_tags
from instsel_assets.defs.resources import LanguageModelResource, RewardModelResource, model_code_version

ENGINE_MODULES = ("instsel_assets.scoring.loss_engine", "instsel_assets.scoring.loss_cache",
                  "instsel_assets.models.chat")


def _code_version(*modules: str, model_resource: str = "language_model") -> str:
    # The configured model is part of the code version: changing INSTSEL_LANGUAGE_MODEL marks the scores stale.
    return model_code_version(code_version_of(*modules, *ENGINE_MODULES), model_resource)


def _score_checks(asset: str, main_column: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec("covers_pool", asset=asset, blocking=True, description="One score row per pool row."),
        dg.AssetCheckSpec("scored_rows_finite", asset=asset,
                          description=f"`{main_column}` is finite on every row the scorer could score, and the "
                                      f"rows it could not score are counted (never silently dropped)."),
        dg.AssetCheckSpec("great_expectations_suite", asset=asset,
                          description=f"Great Expectations suite '{asset}'."),
    ]


def score_table_asset(name: str, main_column: str, modules: tuple[str, ...], description: str,
                      model_resource: str = "language_model"):
    """The decorator of a score-table asset: stage group, code version of the scorer's modules and of the model of
    ``model_resource``, GPU op tags for the Kubernetes executor, and the three checks of ``score_checks`` on
    ``main_column``."""
    return dg.asset(name=name, group_name="scores", code_version=_code_version(*modules, model_resource=model_resource),
                    kinds={"duckdb", "pandas", "torch"}, op_tags=gpu_op_tags(), description=description,
                    check_specs=_score_checks(name, main_column))


def _attrs_metadata(scores: pd.DataFrame) -> dict[str, Any]:
    out = {}
    for key, value in scores.attrs.items():
        if isinstance(value, (bool, int, float, str)):
            out[f"scorer/{key}"] = value
        elif isinstance(value, (list, dict, tuple)):
            out[f"scorer/{key}"] = dg.MetadataValue.json(_jsonable(value))
    return out


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def histogram_md(values: np.ndarray, label: str, bins: int = 10) -> str:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return "(no values)"
    counts, edges = np.histogram(values, bins=bins)
    rows = [f"| {label} from | to | rows |", "|---:|---:|---:|"]
    rows += [f"| {lo:.3f} | {hi:.3f} | {n} |" for lo, hi, n in zip(edges[:-1], edges[1:], counts)]
    return "\n".join(rows)


def run_scorer(context: dg.AssetExecutionContext, scorer_name: str, pool: pd.DataFrame, model, tokenizer,
               lm: LanguageModelResource | RewardModelResource, *, what: str, params: dict[str, Any] | None = None,
               engine: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Call the registered scorer with the resource's engine settings and cache; return (scores, metadata).
    ``engine=False`` needs only the resource's ``model``, ``batch_size``, ``max_length`` and ``settings_dict()``."""
    from instsel_assets.models.loading import model_fingerprint
    from instsel_assets.registry import get_scorer

    scorer = get_scorer(scorer_name)
    kwargs: dict[str, Any] = lm.engine_kwargs(model, tokenizer, log=context.log) if engine else {
        "batch_size": lm.batch_size, "max_length": lm.max_length}
    cache = kwargs.get("cache")
    params = dict(params or {})
    kwargs.update(params)  # an asset's own setting (e.g. the length a model was trained at) wins over the resource's
    context.log.info(f"{scorer_name}: {len(pool)} rows with {lm.model} ({next(model.parameters()).dtype}, "
                     f"batch {kwargs['batch_size']}, max_length {kwargs['max_length']}, "
                     f"workers {getattr(lm, 'workers', 1)}) {params}")
    t0 = time.monotonic()
    scores = scorer.fn(pool, model, tokenizer, progress=ProgressLogger(context.log, what), **kwargs)
    seconds = time.monotonic() - t0
    meta: dict[str, Any] = {
        "dagster/row_count": len(scores),
        "scorer": scorer_name,
        "scorer_settings": dg.MetadataValue.json({**lm.settings_dict(), **_jsonable(params)}),
        "model": dg.MetadataValue.json(model_fingerprint(lm.model, str(next(model.parameters()).dtype), model=model)),
        "seconds": round(seconds, 1),
        "rows_per_second": round(len(pool) / seconds, 3) if seconds > 0 else None,
        **_attrs_metadata(scores),
    }
    if cache is not None:
        stats = cache.stats()
        meta["loss_cache"] = dg.MetadataValue.json(stats)
        context.log.info(f"{scorer_name}: loss cache {stats['hits']} hits, {stats['misses']} computed, "
                         f"{stats['shards_written']} shards written")
    return scores, meta


def score_checks(asset: str, scores: pd.DataFrame, pool: pd.DataFrame, main_column: str,
                 scorable: np.ndarray | None = None, extra_expectations: list | None = None):
    """covers_pool, scored_rows_finite, great_expectations_suite (the asset's suite plus ``extra_expectations``)."""
    yield dg.AssetCheckResult(check_name="covers_pool", asset_key=asset,
                              passed=len(scores) == len(pool) and set(scores["id"]) == set(pool["id"]),
                              metadata={"score_rows": len(scores), "pool_rows": len(pool)})
    values = pd.to_numeric(scores[main_column], errors="coerce").to_numpy(dtype=float)
    unscorable = int(scores.attrs.get("n_unscorable", 0))
    if scorable is None:
        scorable = np.ones(len(scores), dtype=bool)
        if unscorable:
            scorable = np.isfinite(values)  # the scorer's own count must match the NaNs (checked below)
    non_finite = int((~np.isfinite(values[scorable])).sum())
    nan_rows = int((~np.isfinite(values)).sum())
    yield dg.AssetCheckResult(check_name="scored_rows_finite", asset_key=asset,
                              passed=non_finite == 0 and nan_rows == unscorable,
                              metadata={"non_finite_on_scorable_rows": non_finite, "nan_rows": nan_rows,
                                        "rows_counted_unscorable": unscorable})
    yield suite_check(scores, asset, asset_key=asset, extra=extra_expectations)


# ------------------------------------------------------------------------------------------- Cherry LLM / IFD
class PreExperienceConfig(dg.Config):
    n_clusters: int = Field(
        default=100,
        description="k-means clusters on the instruction embeddings (Cherry LLM: 100). Lowered for small pools "
                    "so that n_clusters x per_cluster stays within max_fraction of the pool.")
    per_cluster: int = Field(default=10, description="Rows taken per cluster (Cherry LLM: 10).")
    max_fraction: float = Field(
        default=0.10,
        description="Upper bound of the pre-experience subset as a fraction of the pool (Cherry LLM's 1,000 of "
                    "52K is 2%); n_clusters is reduced to respect it (at least one cluster).")
    middle_band: bool = Field(
        default=True,
        description="Keep only rows whose instruction perplexity under the base model is between the 25th and "
                    "75th percentile of their cluster (the reference code's rule).")
    max_steps: int = Field(default=15, description="LoRA optimizer steps of the brief pre-experience fine-tune.")
    batch_size: int = Field(default=4, description="Examples per step.")
    learning_rate: float = Field(default=2e-4, description="AdamW learning rate of the LoRA parameters.")
    seed: int = Field(default=0, description="Seed of k-means and of the fine-tune.")


@dg.asset(
    group_name="scores",
    code_version=_code_version("instsel_assets.selection.cherry_pre_experience", "instsel_assets.training.sft",
                               "instsel_assets.training.checkpoint"),
    io_manager_key="artifact_io_manager",
    kinds={"torch"},
    op_tags=gpu_op_tags(),
    description="Cherry LLM's pre-experienced model: k-means on the instruction embeddings, a few middle-"
                "perplexity rows per cluster, and a brief LoRA fine-tune of the base model on them. IFD is "
                "computed with this model.",
    check_specs=[
        dg.AssetCheckSpec("adapter_saved", asset="ifd_pre_experienced_model", blocking=True,
                          description="The LoRA adapter and its manifest exist on disk."),
        dg.AssetCheckSpec("training_loss_finite", asset="ifd_pre_experienced_model",
                          description="Every logged training loss is finite."),
    ],
)
def ifd_pre_experienced_model(context: dg.AssetExecutionContext, config: PreExperienceConfig,
                              instruction_pool: pd.DataFrame, metric_features: pd.DataFrame,
                              language_model: LanguageModelResource):
    from instsel_assets.selection.cherry_pre_experience import instruction_loss_scores, select_cherry_pre_experience
    from instsel_assets.training.sft import SFTConfig, finetune_lora

    n = len(instruction_pool)
    n_clusters = max(1, min(config.n_clusters, int(config.max_fraction * n) // config.per_cluster))
    if n_clusters != config.n_clusters:
        context.log.info(f"pre-experience: {n_clusters} clusters instead of {config.n_clusters} "
                         f"({config.per_cluster} rows each, at most {config.max_fraction:.0%} of {n} rows)")
    candidates = instruction_pool[["id", "conversations", "instruction", "input"]].merge(
        metric_features[["id", "embedding"]], on="id", how="left")
    loss_column = None
    if config.middle_band:
        model, tokenizer = language_model.load()
        losses = instruction_loss_scores(candidates, model, tokenizer,
                                         **language_model.engine_kwargs(model, tokenizer, log=context.log),
                                         progress=ProgressLogger(context.log, "instruction perplexity"))
        candidates = candidates.merge(losses[["id", "instruction_loss"]], on="id", how="left")
        loss_column = "instruction_loss"
    ids = select_cherry_pre_experience(candidates, n_clusters * config.per_cluster, seed=config.seed,
                                       n_clusters=n_clusters, per_cluster=config.per_cluster, loss_column=loss_column)
    rows = candidates.set_index("id").loc[ids]
    out_dir = settings.storage_root() / "checkpoints" / "ifd_pre_experienced"
    sft_config = SFTConfig(max_steps=config.max_steps, batch_size=config.batch_size,
                           learning_rate=config.learning_rate, seed=config.seed)
    context.log.info(f"pre-experience: fine-tuning {language_model.model} on {len(ids)} rows "
                     f"from {n_clusters} clusters, {config.max_steps} steps")
    fresh, tokenizer = language_model.load_fresh()
    result = finetune_lora(fresh, tokenizer, list(rows["conversations"]), out_dir, sft_config,
                           base_model_id=language_model.model,
                           progress=lambda info: context.log.info(
                               f"pre-experience step {info['step']}/{config.max_steps} loss {info['loss']:.4f}"),
                           manifest={"purpose": "Cherry LLM pre-experienced model", "subset_ids": list(ids)})
    manifest = {"path": str(out_dir), "base_model": language_model.model, "n_clusters": n_clusters,
                "per_cluster": config.per_cluster, "subset_ids": list(ids), "sft_config": sft_config.to_dict(),
                "first_loss": result.first_loss, "last_loss": result.last_loss}
    yield dg.Output(manifest, metadata={
        "checkpoint_dir": dg.MetadataValue.path(str(out_dir)), "base_model": language_model.model,
        "subset_rows": len(ids), "n_clusters": n_clusters, "per_cluster": config.per_cluster,
        "middle_band": config.middle_band,
        "subset_sources": dg.MetadataValue.json(
            instruction_pool.set_index("id").loc[ids, "source"].value_counts().to_dict()),
        "first_loss": float(result.first_loss), "last_loss": float(result.last_loss),
        "sft_config": dg.MetadataValue.json(sft_config.to_dict()),
    })
    saved = (out_dir / "adapter_config.json").is_file() and (out_dir / "instsel_checkpoint.json").is_file()
    yield dg.AssetCheckResult(check_name="adapter_saved", passed=saved, metadata={"path": str(out_dir)})
    losses = np.asarray(result.losses, dtype=float)
    yield dg.AssetCheckResult(check_name="training_loss_finite",
                              passed=bool(len(losses) and np.isfinite(losses).all()))


@score_table_asset(
    "ifd_scores", "ifd",
    ("instsel_assets.scoring.ifd",),
    description="IFD (Cherry LLM): s(A|Q) / s(A) under the pre-experienced model, the mean answer-token loss "
                "with the instruction as prefix over the loss without it (loss ratio; the perplexity ratio "
                "beside it). Batched through the shared loss engine, with the model's chat template.",
)
def ifd_scores(context: dg.AssetExecutionContext, instruction_pool: pd.DataFrame,
               ifd_pre_experienced_model: dict, language_model: LanguageModelResource):
    model, tokenizer = language_model.load_adapted(ifd_pre_experienced_model["path"])
    scores, meta = run_scorer(context, "ifd", instruction_pool, model, tokenizer, language_model,
                              what="IFD loss passes")
    ifd = scores["ifd"].to_numpy(dtype=float)
    yield dg.Output(scores, metadata={
        **meta,
        "pre_experienced_model": dg.MetadataValue.path(ifd_pre_experienced_model["path"]),
        "ifd_median": float(np.nanmedian(ifd)) if np.isfinite(ifd).any() else float("nan"),
        "rows_ifd_at_least_1": int((ifd >= 1).sum()),
        "ifd_histogram": dg.MetadataValue.md(histogram_md(ifd, "IFD")),
    })
    yield from score_checks("ifd_scores", scores, instruction_pool, "ifd")


@score_table_asset(
    "superfiltering_scores", "superfiltering_ifd",
    ("instsel_assets.scoring.superfiltering", "instsel_assets.scoring.ifd"),
    description="Superfiltering: IFD as a perplexity ratio under a small scorer model (the `filter_model` "
                "resource; GPT-2 124M in the paper, the packaged SmolLM2-135M here), with no pre-experience "
                "step: weak-to-strong filtering.",
    model_resource="filter_model",
)
def superfiltering_scores(context: dg.AssetExecutionContext, instruction_pool: pd.DataFrame,
                          filter_model: LanguageModelResource):
    model, tokenizer = filter_model.load()
    scores, meta = run_scorer(context, "superfiltering", instruction_pool, model, tokenizer, filter_model,
                              what="Superfiltering loss passes")
    ifd = scores["superfiltering_ifd"].to_numpy(dtype=float)
    yield dg.Output(scores, metadata={**meta, "rows_ifd_at_least_1": int((ifd >= 1).sum()),
                                      "ifd_histogram": dg.MetadataValue.md(histogram_md(ifd, "IFD (ppl ratio)"))})
    yield from score_checks("superfiltering_scores", scores, instruction_pool, "superfiltering_ifd")


@score_table_asset(
    "perplexity_scores", "response_ppl",
    ("instsel_assets.scoring.perplexity", "instsel_assets.scoring.ifd"),
    description="Response perplexity under the reference LM (the InstructMining indicator): exp of the mean "
                "answer-token loss given the instruction. Shares IFD's conditioned pass through the loss cache "
                "when the models are the same.",
)
def perplexity_scores(context: dg.AssetExecutionContext, instruction_pool: pd.DataFrame,
                      language_model: LanguageModelResource):
    model, tokenizer = language_model.load()
    scores, meta = run_scorer(context, "response_perplexity", instruction_pool, model, tokenizer, language_model,
                              what="perplexity loss passes")
    ppl = scores["response_ppl"].to_numpy(dtype=float)
    yield dg.Output(scores, metadata={**meta, "ppl_median": float(np.nanmedian(ppl)) if np.isfinite(ppl).any()
                                      else float("nan"),
                                      "ppl_histogram": dg.MetadataValue.md(histogram_md(np.log(ppl), "log ppl"))})
    yield from score_checks("perplexity_scores", scores, instruction_pool, "response_ppl")


class PromptUncertaintyConfig(dg.Config):
    k: int = Field(default=10, description="Perturbed instructions per row (Active-IT's reference setting: 10).")
    drop_rate: float = Field(default=0.2, description="Probability of dropping each instruction word (0.2).")
    seed: int = Field(default=0, description="Seed of the word dropping (combined with each row id).")
    task_column: str = Field(default="category",
                             description="Pool column naming the task, for the task-level mean; rows with an "
                                         "empty value are their own task.")


@score_table_asset(
    "prompt_uncertainty_scores", "prompt_uncertainty",
    ("instsel_assets.scoring.prompt_uncertainty", "instsel_assets.scoring.ifd"),
    description="Prompt uncertainty (Active Instruction Tuning): mean absolute change of the answer's per-token "
                "likelihood over k instructions perturbed by random word dropping; also averaged per task.",
)
def prompt_uncertainty_scores(context: dg.AssetExecutionContext, config: PromptUncertaintyConfig,
                              instruction_pool: pd.DataFrame, language_model: LanguageModelResource):
    from instsel_assets.scoring.prompt_uncertainty import task_uncertainty

    model, tokenizer = language_model.load()
    scores, meta = run_scorer(context, "prompt_uncertainty", instruction_pool, model, tokenizer, language_model,
                              what="prompt-uncertainty loss passes",
                              params={"k": config.k, "drop_rate": config.drop_rate, "seed": config.seed,
                                      "task_column": config.task_column})
    tasks = task_uncertainty(scores, instruction_pool, task_column=config.task_column)
    yield dg.Output(scores, metadata={
        **meta,
        "uncertainty_histogram": dg.MetadataValue.md(
            histogram_md(scores["prompt_uncertainty"].to_numpy(dtype=float), "uncertainty")),
        "tasks": dg.MetadataValue.md(tasks.head(20).to_markdown(index=False) if len(tasks) else "(no tasks)"),
    })
    yield from score_checks("prompt_uncertainty_scores", scores, instruction_pool, "prompt_uncertainty")


class NuggetsConfig(dg.Config):
    n_anchors: int = Field(
        default=4,
        description="Anchor tasks each candidate is tried on as a one-shot demonstration. The paper uses 100 "
                    "(about 100 s for 600 rows on one H100-class GPU); the default keeps the bundled 599-row "
                    "sample at ~2,400 passes (10-20 min on 2 CPU cores). The golden score's resolution is "
                    "1 / n_anchors.")
    anchor_source: str = Field(
        default="pool",
        description="'pool': a seeded sample of the pool itself (the paper); 'alpaca_eval': a seeded sample of "
                    "the bundled AlpacaEval prompts with text-davinci-003's answers. AlpacaEval is also the "
                    "held-out evaluation set, so anchoring on it tunes the selection to the evaluation.")
    max_demo_tokens: int = Field(
        default=256, description="Tokens of each demonstration kept (answer cut first); bounds the cost.")
    seed: int = Field(default=0, description="Seed of the anchor draw.")


def _alpaca_eval_anchors() -> pd.DataFrame:
    from instsel_assets.evaluation.heldout import load_alpaca_eval

    rows = load_alpaca_eval()
    return pd.DataFrame({"id": "alpaca_eval/" + rows["id"],
                         "conversations": [[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                                           for q, a in zip(rows["instruction"], rows["reference"])]})


@score_table_asset(
    "nuggets_scores", "golden_score",
    ("instsel_assets.scoring.nuggets",),
    description="Nuggets golden score: the share of anchor tasks whose answer loss drops when the row is given "
                "as a one-shot demonstration, against zero-shot. Every (candidate, anchor) pass in one batched "
                "engine call.",
)
def nuggets_scores(context: dg.AssetExecutionContext, config: NuggetsConfig, instruction_pool: pd.DataFrame,
                   language_model: LanguageModelResource):
    if config.anchor_source not in ("pool", "alpaca_eval"):
        raise ValueError(f"nuggets_scores: anchor_source must be 'pool' or 'alpaca_eval', got {config.anchor_source!r}")
    params: dict[str, Any] = {"n_anchors": config.n_anchors, "seed": config.seed,
                              "max_demo_tokens": config.max_demo_tokens}
    if config.anchor_source == "alpaca_eval":
        params["anchors"] = _alpaca_eval_anchors()
    model, tokenizer = language_model.load()
    scores, meta = run_scorer(context, "nuggets", instruction_pool, model, tokenizer, language_model,
                              what="Nuggets one-shot passes", params=params)
    meta["scorer_settings"] = dg.MetadataValue.json({**language_model.settings_dict(), "n_anchors": config.n_anchors,
                                                     "anchor_source": config.anchor_source, "seed": config.seed,
                                                     "max_demo_tokens": config.max_demo_tokens})
    golden = scores["golden_score"].to_numpy(dtype=float)
    yield dg.Output(scores, metadata={**meta, "golden_histogram": dg.MetadataValue.md(
        histogram_md(golden, "golden score", bins=min(10, config.n_anchors + 1)))})
    yield from score_checks("nuggets_scores", scores, instruction_pool, "golden_score")


class SelfCurationConfig(dg.Config):
    iterations: int = Field(
        default=1,
        description="Rating rounds. 1 rates with the base model; 2 (the paper) then fine-tunes a LoRA adapter on "
                    "the rows rated >= threshold and re-rates every row with it.")
    threshold: float = Field(default=4.5, description="Expected rating kept between rounds (the paper's A5: >= 4.5).")
    max_steps: int = Field(default=15, description="LoRA steps of each between-round fine-tune.")
    low_digit_mass: float = Field(
        default=0.5, description="Rows whose probability on the digits 1-5 is below this are counted and logged.")
    dtype: str = Field(
        default="float32",
        description="Compute dtype of the ratings: 'float32' (default) or 'resource' (the language_model "
                    "resource's dtype, bf16 where native). The expected ratings cluster tightly; bf16 moved them "
                    "by up to 0.1 (Spearman 0.985-0.989 against fp32 on 100 Alpaca rows), while fp32 with the "
                    "shared prompt prefix costs only 1.35x bf16 (benchmarks/RESULTS.md).")


@score_table_asset(
    "self_curation_scores", "self_curation_score",
    ("instsel_assets.scoring.self_curation", "instsel_assets.scoring.next_token",
     "instsel_assets.training.sft"),
    description="Self-curation (Instruction Backtranslation): the model rates each (instruction, answer) pair "
                "1-5 with the paper's prompt; the score is the expected rating from the digit-token "
                "probabilities after 'Score: '.",
)
def self_curation_scores(context: dg.AssetExecutionContext, config: SelfCurationConfig,
                         instruction_pool: pd.DataFrame, language_model: LanguageModelResource):
    from instsel_assets.models.loading import model_fingerprint
    from instsel_assets.scoring.self_curation import iterate_self_curation
    from instsel_assets.training.sft import SFTConfig

    if config.iterations < 1:
        raise ValueError(f"self_curation_scores: iterations must be >= 1, got {config.iterations}")
    if config.dtype not in ("float32", "resource"):
        raise ValueError(f"self_curation_scores: dtype must be 'float32' or 'resource', got {config.dtype!r}")
    if config.iterations == 1:
        model, tokenizer = language_model.load_fresh() if config.dtype == "float32" else language_model.load()
        scores, meta = run_scorer(context, "self_curation", instruction_pool, model, tokenizer, language_model,
                                  what="self-curation ratings", engine=False,
                                  params={"low_digit_mass": config.low_digit_mass})
        meta["rating_dtype"] = str(next(model.parameters()).dtype).replace("torch.", "")
    else:
        t0 = time.monotonic()
        fresh, tokenizer = language_model.load_fresh()
        first = [fresh]
        scores = iterate_self_curation(
            instruction_pool, lambda: first.pop() if first else language_model.load_fresh()[0], tokenizer,
            iterations=config.iterations, threshold=config.threshold,
            train_config=SFTConfig(max_steps=config.max_steps), base_model_id=language_model.model,
            out_dir=settings.storage_root() / "checkpoints" / "self_curation", batch_size=language_model.batch_size,
            max_length=language_model.max_length, low_digit_mass=config.low_digit_mass,
            progress=ProgressLogger(context.log, "self-curation ratings"),
            train_progress=lambda info: context.log.info(f"self-curation fine-tune step {info['step']} "
                                                         f"loss {info['loss']:.4f}"))
        meta = {"dagster/row_count": len(scores), "scorer": "self_curation",
                "scorer_settings": dg.MetadataValue.json({**language_model.settings_dict(),
                                                          "iterations": config.iterations,
                                                          "threshold": config.threshold}),
                "model": dg.MetadataValue.json(model_fingerprint(language_model.model, "float32")),
                "seconds": round(time.monotonic() - t0, 1), "rating_dtype": "float32", **_attrs_metadata(scores)}
        scores = scores.drop(columns=["self_curation_round_scores"], errors="ignore")
    values = scores["self_curation_score"].to_numpy(dtype=float)
    yield dg.Output(scores, metadata={
        **meta,
        "rows_at_least_threshold": int((values >= config.threshold).sum()),
        "score_histogram": dg.MetadataValue.md(histogram_md(values, "expected rating")),
    })
    yield from score_checks("self_curation_scores", scores, instruction_pool, "self_curation_score")


# --------------------------------------------------------------------------- scorers that train their own model
class DiverseEvolConfig(dg.Config):
    budget_fraction: float = Field(
        default=0.10,
        description="Rows to rank, as a fraction of the pool: at least the selection budget (same default).")
    initial_fraction: float = Field(
        default=0.04, description="Random starting subset, as a fraction of the pool (paper: 100 rows).")
    step_fraction: float = Field(
        default=0.03, description="Rows added per round, as a fraction of the pool (paper: 100 rows per round).")
    max_steps: int = Field(default=15, description="LoRA steps of each round's fine-tune (fresh base each round).")
    seed: int = Field(default=0, description="Seed of the random start and of each fine-tune.")


@dg.asset(
    group_name="scores",
    code_version=_code_version("instsel_assets.scoring.diverseevol", "instsel_assets.models.hidden_embeddings",
                               "instsel_assets.selection.kcenter_greedy", "instsel_assets.training.sft"),
    kinds={"duckdb", "pandas", "torch"},
    op_tags=gpu_op_tags(),
    description="DiverseEvol: grow the subset in rounds; each round fine-tunes a fresh base on the rows chosen "
                "so far, embeds every row with that model (mean last-layer hidden state) and adds the "
                "k-center-greedy farthest rows. diverseevol_rank is the order of addition (-1: never added).",
    check_specs=[
        dg.AssetCheckSpec("covers_pool", asset="diverseevol_ranks", blocking=True,
                          description="One row per pool row."),
        dg.AssetCheckSpec("ranks_are_a_prefix", asset="diverseevol_ranks", blocking=True,
                          description="The non-negative ranks are exactly 0..n_ranked-1 (no gaps, no repeats)."),
        dg.AssetCheckSpec("great_expectations_suite", asset="diverseevol_ranks",
                          description="Great Expectations suite 'diverseevol_ranks'."),
    ],
)
def diverseevol_ranks(context: dg.AssetExecutionContext, config: DiverseEvolConfig, instruction_pool: pd.DataFrame,
                      language_model: LanguageModelResource):
    from instsel_assets.scoring.diverseevol import diverseevol_ranks as compute
    from instsel_assets.selection.ifd_top_fraction import top_fraction_budget
    from instsel_assets.training.sft import SFTConfig

    n = len(instruction_pool)
    budget = top_fraction_budget(n, config.budget_fraction)
    initial = max(1, min(budget, round(n * config.initial_fraction)))
    step = max(1, round(n * config.step_fraction))
    sft_config = SFTConfig(max_steps=config.max_steps, seed=config.seed)
    context.log.info(f"DiverseEvol: {budget} of {n} rows, start {initial}, +{step} per round, "
                     f"{config.max_steps} LoRA steps per round")
    t0 = time.monotonic()
    first, tokenizer = language_model.load_fresh()
    spare = [first]
    ranks = compute(instruction_pool, lambda: spare.pop() if spare else language_model.load_fresh()[0], tokenizer,
                    budget=budget, initial_size=initial, step_size=step, sft_config=sft_config,
                    out_dir=settings.storage_root() / "checkpoints" / "diverseevol", seed=config.seed,
                    batch_size=language_model.batch_size, max_length=min(language_model.max_length, 512),
                    progress=ProgressLogger(context.log, "DiverseEvol embeddings"), log=context.log,
                    base_model_id=language_model.model)
    rounds = ranks.attrs.get("rounds", [])
    yield dg.Output(ranks, metadata={
        "dagster/row_count": len(ranks), "scorer": "diverseevol",
        "scorer_settings": dg.MetadataValue.json({**language_model.settings_dict(), "budget": budget,
                                                  "initial_size": initial, "step_size": step,
                                                  "sft_config": sft_config.to_dict()}),
        "rows_ranked": int((ranks["diverseevol_rank"] >= 0).sum()), "seconds": round(time.monotonic() - t0, 1),
        "rounds": dg.MetadataValue.md(pd.DataFrame(rounds).to_markdown(index=False) if rounds else "(none)"),
        **_attrs_metadata(ranks),
    })
    yield dg.AssetCheckResult(check_name="covers_pool", passed=len(ranks) == n and set(ranks["id"]) == set(
        instruction_pool["id"]), metadata={"rows": len(ranks), "pool_rows": n})
    ranked = np.sort(ranks.loc[ranks["diverseevol_rank"] >= 0, "diverseevol_rank"].to_numpy())
    yield dg.AssetCheckResult(check_name="ranks_are_a_prefix",
                              passed=bool(np.array_equal(ranked, np.arange(len(ranked)))),
                              metadata={"rows_ranked": len(ranked)})
    yield suite_check(ranks, "diverseevol_ranks", asset_key="diverseevol_ranks")


class TegitDiscriminatorConfig(dg.Config):
    labels: str = Field(
        default="llmbar_natural",
        description="Labelled good/bad tasks: 'llmbar_natural' (the bundled LLMBar Natural set: 100 instructions "
                    "each with a human-preferred output, label 1, and a rejected one, label 0), or a path to a "
                    "JSON list of {instruction, input, output, label} records from any judged or curated set.")
    max_steps: int = Field(default=60, description="Optimizer steps (LoRA on attention + linear head).")
    batch_size: int = Field(default=8, description="Examples per step.")
    validation_fraction: float = Field(
        default=0.2, description="Share of the label groups held out to report accuracy and ROC AUC.")
    seed: int = Field(default=0, description="Seed of the split, initialisation and data order.")


def _labelled_frame(spec: str) -> tuple[pd.DataFrame, str]:
    from pathlib import Path

    from instsel_assets.scoring.tegit_discriminator import labelled_pairs_from_llmbar

    if spec == "llmbar_natural":
        path = settings.data_root() / "labels" / "llmbar_natural" / "dataset.json"
        return labelled_pairs_from_llmbar(path), str(path)
    import json

    path = Path(spec)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"tegit_discriminator: cannot read labels file {path}: {exc}") from exc
    if not isinstance(records, list):
        raise ValueError(f"tegit_discriminator: {path} must hold a JSON list of records")
    rows = []
    for i, rec in enumerate(records):
        for field in ("instruction", "output", "label"):
            if not isinstance(rec, dict) or field not in rec:
                raise ValueError(f"tegit_discriminator: {path} record {i}: field {field!r} is missing")
        user = rec["instruction"] + (f"\n\n{rec['input']}" if rec.get("input") else "")
        rows.append({"conversations": [{"role": "user", "content": user},
                                       {"role": "assistant", "content": rec["output"]}],
                     "label": rec["label"], "group": rec.get("group", i)})
    return pd.DataFrame(rows), str(path)


@dg.asset(
    group_name="scores",
    code_version=_code_version("instsel_assets.scoring.tegit_discriminator", "instsel_assets.training.sft"),
    io_manager_key="artifact_io_manager",
    kinds={"torch"},
    op_tags=gpu_op_tags(),
    description="A TEGIT-style task discriminator: the base LM's decoder with LoRA adapters and a linear head, "
                "fine-tuned to tell good (instruction, response) tasks from bad ones on a labelled set. "
                "Validation accuracy and ROC AUC on held-out label groups are in the metadata.",
    check_specs=[
        dg.AssetCheckSpec("saved", asset="tegit_discriminator", blocking=True,
                          description="Adapter, head and manifest are on disk."),
        dg.AssetCheckSpec("better_than_majority", asset="tegit_discriminator",
                          description="Held-out accuracy is at least the majority-label accuracy "
                                      "(a discriminator worse than a constant is reported as a failed check)."),
    ],
)
def tegit_discriminator(context: dg.AssetExecutionContext, config: TegitDiscriminatorConfig,
                        language_model: LanguageModelResource):
    from instsel_assets.scoring.tegit_discriminator import DiscriminatorConfig, train_discriminator

    labelled, source = _labelled_frame(config.labels)
    out_dir = settings.storage_root() / "checkpoints" / "tegit_discriminator"
    disc_config = DiscriminatorConfig(max_steps=config.max_steps, batch_size=config.batch_size,
                                      validation_fraction=config.validation_fraction, seed=config.seed)
    context.log.info(f"TEGIT discriminator: {len(labelled)} labelled rows from {source}, {config.max_steps} steps")
    model, tokenizer = language_model.load_fresh()
    result = train_discriminator(model, tokenizer, labelled, out_dir=out_dir, config=disc_config,
                                 progress=lambda info: context.log.info(f"discriminator {info}"),
                                 base_model_id=language_model.model, label_source=source)
    metrics = _jsonable(result.metrics())
    manifest = {"path": str(out_dir), "base_model": language_model.model, "labels": source, **metrics}
    yield dg.Output(manifest, metadata={
        "checkpoint_dir": dg.MetadataValue.path(str(out_dir)), "labels": source, "base_model": language_model.model,
        "metrics": dg.MetadataValue.json(metrics),
        **{k: float(v) for k, v in metrics.items() if k.startswith("validation_") and isinstance(v, float)},
    })
    yield dg.AssetCheckResult(check_name="saved", passed=out_dir.is_dir() and any(out_dir.iterdir()),
                              metadata={"path": str(out_dir)})
    acc, majority = metrics.get("validation_accuracy"), metrics.get("validation_majority_accuracy")
    ok = acc is not None and majority is not None and acc == acc and acc >= majority
    yield dg.AssetCheckResult(check_name="better_than_majority", passed=bool(ok),
                              metadata={"validation_accuracy": acc, "majority_accuracy": majority})


@score_table_asset(
    "tegit_scores", "tegit_good_prob",
    ("instsel_assets.scoring.tegit_discriminator",),
    description="TEGIT discriminator scores: the probability that the trained task discriminator accepts each "
                "pool row's first (instruction, response) turn as a good task.",
)
def tegit_scores(context: dg.AssetExecutionContext, instruction_pool: pd.DataFrame, tegit_discriminator: dict,
                 language_model: LanguageModelResource):
    from instsel_assets.models.loading import load_causal_lm
    from instsel_assets.scoring.tegit_discriminator import load_discriminator

    disc, tokenizer = load_discriminator(tegit_discriminator["path"],
                                         lambda mid: load_causal_lm(mid, dtype="float32", device=language_model.device))
    # Score at the length the discriminator was trained at: a longer window would show it inputs it never saw.
    trained_length = int(disc.manifest.get("config", {}).get("max_length", language_model.max_length))
    scores, meta = run_scorer(context, "tegit_discriminator", instruction_pool, disc, tokenizer, language_model,
                              what="discriminator rows", engine=False, params={"max_length": trained_length})
    probs = scores["tegit_good_prob"].to_numpy(dtype=float)
    yield dg.Output(scores, metadata={**meta, "discriminator": dg.MetadataValue.path(tegit_discriminator["path"]),
                                      "rows_accepted": int((probs >= 0.5).sum()),
                                      "prob_histogram": dg.MetadataValue.md(histogram_md(probs, "P(good)"))})
    yield from score_checks("tegit_scores", scores, instruction_pool, "tegit_good_prob")


# --------------------------------------------------------------------------------------------- reward (MoDS)
@score_table_asset(
    "reward_scores", "reward_score",
    ("instsel_assets.scoring.reward", "instsel_assets.scoring.self_curation", "instsel_assets.scoring.next_token",
     "instsel_assets.models.loading"),
    description="Reward score of each pool row's (instruction, response) pair from the `reward_model` resource "
                "(MoDS's quality step; the reward-score indicator of family 1): the logit of any "
                "AutoModelForSequenceClassification. By default a STAND-IN, not a reward model: the packaged "
                "SmolLM2's expected 1-5 helpfulness rating, named as a stand-in in the reward_model column and "
                "the metadata.",
)
def reward_scores(context: dg.AssetExecutionContext, instruction_pool: pd.DataFrame,
                  reward_model: RewardModelResource):
    model, tokenizer = reward_model.load()
    params: dict[str, Any] = {"mode": reward_model.mode, "model_name": reward_model.model}
    if reward_model.label_index is not None:
        params["label_index"] = reward_model.label_index
    scores, meta = run_scorer(context, "reward_score", instruction_pool, model, tokenizer, reward_model,
                              what="reward pairs", engine=False, params=params)
    label = str(scores.attrs.get("reward_model", reward_model.model))
    stand_in = scores.attrs.get("mode") == "stand_in"
    values = scores["reward_score"].to_numpy(dtype=float)
    extra_meta: dict[str, Any] = {"reward_model": label, "stand_in": stand_in,
                                  "rows_scored": int(np.isfinite(values).sum())}
    extra_expectations = None
    if stand_in:
        note = (f"{label}: reward_score is the expected 1-5 helpfulness rating of the causal LM "
                f"{reward_model.model!r}, a weak quality signal. Set the reward_model resource's `model` to a "
                f"sequence-classification reward model for MoDS.")
        context.log.warning(note)
        extra_meta["stand_in_note"] = note
        extra_expectations = [
            ("ExpectColumnValuesToBeBetween", {"column": "reward_score", "min_value": 1.0, "max_value": 5.0}),
            ("ExpectColumnValuesToMatchRegex", {"column": "reward_model", "regex": "^stand-in: "}),
        ]
    yield dg.Output(scores, metadata={
        **meta, **extra_meta,
        "score_histogram": dg.MetadataValue.md(histogram_md(values, "expected rating" if stand_in else "reward")),
    })
    yield from score_checks("reward_scores", scores, instruction_pool, "reward_score",
                            extra_expectations=extra_expectations)


# Every asset of this stage, in lineage order (Cherry LLM's pre-experience first).
SCORE_ASSETS = [ifd_pre_experienced_model, ifd_scores, superfiltering_scores, perplexity_scores,
                prompt_uncertainty_scores, nuggets_scores, self_curation_scores, diverseevol_ranks,
                tegit_discriminator, tegit_scores, reward_scores]
# The scores `instsel demo` computes (those its selections read; ~10 min on 2 CPU cores for the sample).
DEMO_SCORE_ASSETS = ["ifd_pre_experienced_model", "ifd_scores", "superfiltering_scores", "perplexity_scores"]
