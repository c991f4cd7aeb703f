"""MoDS (Du, Zong & Zhang 2023, "MoDS: Model-oriented Data Selection for Instruction Tuning") as four assets of
group ``mods``, so each step shows in the UI with its counts and thresholds:

1. ``mods_quality_set`` (D_h): the pool rows whose ``reward_scores.reward_score`` reaches the quality threshold.
2. ``mods_seed_instructions``: greedy k-center on the D_h instruction embeddings (``metric_features``).
3. ``mods_seed_model``: a LoRA fine-tune of the ``language_model`` on the seeds (the paper's "initial" model).
4. ``mods_necessary_instructions``: the seed model answers every D_h instruction (greedy, batched); the
   ``reward_model`` scores each (instruction, answer); answers below the necessity threshold make their
   instruction "necessary"; greedy k-center over the necessary non-seed rows picks the augmented set. The
   table (one row per D_h row: ``mods_role``, ``mods_order``, ``generated_reward``, ...) is what the ``mods``
   selector reads: the seeds, then the augmented set.

The rules, the paper's settings and this project's deliberate differences are in ``selection/mods.py``.
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
from instsel_assets.defs.resources import LanguageModelResource, RewardModelResource
from instsel_assets.defs.scores import histogram_md

GROUP = "mods"
_RULES = "instsel_assets.selection.mods"
_KCENTER = "instsel_assets.selection.kcenter_greedy"
_STAND_IN_RANGE = [("ExpectColumnValuesToBeBetween", {"column": "reward_score", "min_value": 1.0, "max_value": 5.0})]


def _suite_spec(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec("great_expectations_suite", asset=asset,
                             description=f"Great Expectations suite '{asset}'.")


def _md_table(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False) if len(frame) else "(none)"


def _snippet(text: Any, width: int = 80) -> str:
    text = "" if text is None else " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


# ------------------------------------------------------------------------------------------------ step 1
class MoDSQualityConfig(dg.Config):
    quality_threshold: float | None = Field(
        default=None,
        description="Rows with reward_score >= this form D_h. Unset: the paper's 0.0 (the logit of OpenAssistant's "
                    "reward-model-deberta-v3-large-v2) for a reward model, 3.0 for the default stand-in, whose score "
                    "is an expected 1-5 rating. Choose it per reward model: the scales differ.")
    quality_quantile: float | None = Field(
        default=None,
        description="Instead of a threshold: the threshold is this quantile of the scores (0.5 keeps the upper "
                    "half), for a reward model whose scale is unknown. Not together with quality_threshold.")


@dg.asset(
    group_name=GROUP,
    code_version=code_version_of(_RULES),
    kinds={"duckdb", "pandas"},
    description="MoDS step 1, quality: D_h, the pool rows whose reward score (reward_scores, from the reward_model "
                "resource) is at least the quality threshold, highest first. The threshold used is in the "
                "quality_threshold column and the metadata.",
    check_specs=[
        dg.AssetCheckSpec("threshold_applied", asset="mods_quality_set", blocking=True,
                          description="D_h is exactly the scored rows with reward_score >= quality_threshold."),
        _suite_spec("mods_quality_set"),
    ],
)
def mods_quality_set(context: dg.AssetExecutionContext, config: MoDSQualityConfig, reward_scores: pd.DataFrame):
    from instsel_assets.selection.mods import is_stand_in, quality_set, resolve_quality_threshold

    threshold, how = resolve_quality_threshold(reward_scores, config.quality_threshold, config.quality_quantile)
    stand_in = "reward_model" in reward_scores.columns and is_stand_in(reward_scores["reward_model"])
    values = pd.to_numeric(reward_scores["reward_score"], errors="coerce").to_numpy(dtype=float)
    scored = int(np.isfinite(values).sum())
    context.log.info(f"MoDS quality: threshold {threshold:g} ({how}) on {scored} scored of {len(reward_scores)} rows"
                     + (" (stand-in reward scores, 1-5)" if stand_in else ""))
    dh = quality_set(reward_scores, threshold)
    context.log.info(f"MoDS quality: D_h holds {len(dh)} rows ({len(dh) / max(scored, 1):.0%} of the scored rows)")
    yield dg.Output(dh, metadata={
        "dagster/row_count": len(dh),
        "quality_threshold": float(threshold), "threshold_source": how,
        "paper_threshold": 0.0, "stand_in": bool(stand_in),
        "reward_model": str(dh["reward_model"].iloc[0]),
        "pool_rows": len(reward_scores), "scored_rows": scored, "unscored_rows": len(reward_scores) - scored,
        "dh_rows": len(dh), "dh_fraction_of_scored": round(len(dh) / max(scored, 1), 4),
        "score_histogram": dg.MetadataValue.md(histogram_md(values, "reward")),
    })
    expected = set(reward_scores["id"].astype(str).to_numpy()[np.isfinite(values) & (values >= threshold)])
    yield dg.AssetCheckResult(check_name="threshold_applied", passed=set(dh["id"]) == expected and len(dh) == len(
        expected), metadata={"dh_rows": len(dh), "rows_at_or_above_threshold": len(expected),
                             "quality_threshold": float(threshold)})
    yield suite_check(dh, "mods_quality_set", asset_key="mods_quality_set", extra=_STAND_IN_RANGE if stand_in else None)


# ------------------------------------------------------------------------------------------------ step 2
class MoDSSeedConfig(dg.Config):
    n_seeds: int | None = Field(
        default=None,
        description="Seed instructions to pick from D_h by k-center greedy. Unset: seed_fraction of the pool.")
    seed_fraction: float = Field(
        default=0.025,
        description="Seeds as a fraction of the pool when n_seeds is unset: a quarter of the default 10% budget "
                    "(the paper selects 4,000 pairs of a 214K pool in all, seeds and augmented set).")
    seed: int = Field(default=0, description="Draws the first k-center center (everything after is deterministic).")


@dg.asset(
    group_name=GROUP,
    code_version=code_version_of(_RULES, _KCENTER),
    kinds={"duckdb", "pandas"},
    description="MoDS step 2, coverage: the seed instructions, picked from D_h by greedy k-center (farthest-first) "
                "on the MiniLM instruction embeddings; seed_order is the pick order.",
    check_specs=[
        dg.AssetCheckSpec("seeds_in_quality_set", asset="mods_seed_instructions", blocking=True,
                          description="min(n_seeds, |D_h|) distinct seeds, all in D_h, ordered 0..n-1."),
        _suite_spec("mods_seed_instructions"),
    ],
)
def mods_seed_instructions(context: dg.AssetExecutionContext, config: MoDSSeedConfig, mods_quality_set: pd.DataFrame,
                           metric_features: pd.DataFrame):
    from instsel_assets.selection.mods import pick_seeds, size_from

    n_seeds = size_from(config.n_seeds, config.seed_fraction, len(metric_features), "n_seeds")
    wanted = min(n_seeds, len(mods_quality_set))
    if wanted < n_seeds:
        context.log.warning(f"MoDS seeds: D_h holds only {len(mods_quality_set)} rows, fewer than n_seeds={n_seeds}")
    context.log.info(f"MoDS seeds: k-center greedy picks {wanted} of {len(mods_quality_set)} D_h rows")
    t0 = time.monotonic()
    seeds = pick_seeds(mods_quality_set, metric_features, n_seeds, seed=config.seed)
    yield dg.Output(seeds, metadata={
        "dagster/row_count": len(seeds), "n_seeds": len(seeds), "n_seeds_asked": n_seeds,
        "seed_fraction": config.seed_fraction if config.n_seeds is None else None,
        "dh_rows": len(mods_quality_set), "pool_rows": len(metric_features), "seed": config.seed,
        "seconds": round(time.monotonic() - t0, 2),
        "seed_reward_mean": float(seeds["reward_score"].mean()) if len(seeds) else float("nan"),
    })
    ok = (len(seeds) == wanted and seeds["id"].is_unique and set(seeds["id"]) <= set(mods_quality_set["id"])
          and np.array_equal(np.sort(seeds["seed_order"].to_numpy()), np.arange(len(seeds))))
    yield dg.AssetCheckResult(check_name="seeds_in_quality_set", passed=bool(ok),
                              metadata={"seeds": len(seeds), "expected": wanted, "dh_rows": len(mods_quality_set)})
    yield suite_check(seeds, "mods_seed_instructions", asset_key="mods_seed_instructions")


# ------------------------------------------------------------------------------------------------ step 3
class MoDSSeedModelConfig(dg.Config):
    max_steps: int = Field(default=15, description="LoRA optimizer steps (a small CPU default; the paper trains "
                                                    "all weights of LLaMA-2 7B for 3 epochs at lr 2e-5).")
    batch_size: int = Field(default=4, description="Examples per step.")
    learning_rate: float = Field(default=2e-4, description="AdamW learning rate of the LoRA parameters.")
    max_length: int = Field(default=512, description="Tokens per example; longer ones are cut on the right.")
    lora_r: int = Field(default=8, description="LoRA rank (adapters on q_proj and v_proj; alpha = 2 r).")
    seed: int = Field(default=0, description="Seed of the data order and adapter initialisation.")


@dg.asset(
    group_name=GROUP,
    code_version=code_version_of("instsel_assets.training.sft", "instsel_assets.training.checkpoint",
                                 "instsel_assets.models.chat"),
    io_manager_key="artifact_io_manager",
    kinds={"torch"},
    op_tags=gpu_op_tags(),
    description="MoDS step 3: the initial instruction-following model, a LoRA adapter of the language_model "
                "fine-tuned on the seed instructions (answer-token loss, chat template), saved as a directory.",
    check_specs=[
        dg.AssetCheckSpec("adapter_saved", asset="mods_seed_model", blocking=True,
                          description="The LoRA adapter and its manifest exist on disk."),
        dg.AssetCheckSpec("training_loss_finite", asset="mods_seed_model",
                          description="Every logged training loss is finite."),
    ],
)
def mods_seed_model(context: dg.AssetExecutionContext, config: MoDSSeedModelConfig,
                    mods_seed_instructions: pd.DataFrame, instruction_pool: pd.DataFrame,
                    language_model: LanguageModelResource):
    from instsel_assets.training.sft import SFTConfig, finetune_lora

    seeds = mods_seed_instructions.sort_values("seed_order")
    if seeds.empty:
        raise ValueError("mods_seed_model: mods_seed_instructions is empty; materialise it with at least one seed")
    rows = seeds[["id"]].merge(instruction_pool[["id", "conversations"]], on="id", how="left")
    if rows["conversations"].isna().any():
        raise ValueError(f"mods_seed_model: {int(rows['conversations'].isna().sum())} seed ids are not in "
                         f"instruction_pool (re-materialise the MoDS assets on the current pool)")
    sft_config = SFTConfig(max_steps=config.max_steps, batch_size=config.batch_size,
                           learning_rate=config.learning_rate, max_length=config.max_length,
                           lora_r=config.lora_r, lora_alpha=2 * config.lora_r, seed=config.seed)
    out_dir = settings.storage_root() / "checkpoints" / "mods_seed_model"
    context.log.info(f"MoDS seed model: fine-tuning {language_model.model} on {len(rows)} seeds, "
                     f"{config.max_steps} steps of {config.batch_size}")
    model, tokenizer = language_model.load_fresh()
    seed_ids = rows["id"].astype(str).tolist()
    result = finetune_lora(model, tokenizer, list(rows["conversations"]), out_dir, sft_config,
                           base_model_id=language_model.model,
                           progress=lambda info: context.log.info(
                               f"MoDS seed model: step {info['step']}/{config.max_steps} loss {info['loss']:.4f}"),
                           manifest={"purpose": "MoDS seed (initial) model", "subset_ids": seed_ids})
    del model
    manifest = {"path": str(out_dir), "base_model": language_model.model, "n_seeds": len(seed_ids),
                "subset_ids": seed_ids, "sft_config": sft_config.to_dict(), "steps": result.steps,
                "first_loss": result.first_loss, "last_loss": result.last_loss}
    yield dg.Output(manifest, metadata={
        "checkpoint_dir": dg.MetadataValue.path(str(out_dir)), "base_model": language_model.model,
        "n_seeds": len(seed_ids), "n_skipped": int(result.n_skipped),
        "first_loss": float(result.first_loss), "last_loss": float(result.last_loss),
        "train_seconds": float(result.seconds), "sft_config": dg.MetadataValue.json(sft_config.to_dict()),
    })
    saved = (out_dir / "adapter_config.json").is_file() and (out_dir / "instsel_checkpoint.json").is_file()
    yield dg.AssetCheckResult(check_name="adapter_saved", passed=bool(saved), metadata={"path": str(out_dir)})
    losses = np.asarray(result.losses, dtype=float)
    yield dg.AssetCheckResult(check_name="training_loss_finite", passed=bool(len(losses) and np.isfinite(losses).all()),
                              metadata={"losses": dg.MetadataValue.json([round(float(x), 4) for x in losses])})


# ------------------------------------------------------------------------------------------------ step 4
class MoDSNecessityConfig(dg.Config):
    necessity_threshold: float | None = Field(
        default=None,
        description="An instruction is necessary when the reward of the seed model's answer is below this. Unset: "
                    "the quality threshold D_h was built with (an answer that would not pass the quality filter).")
    necessity_quantile: float | None = Field(
        default=None,
        description="Instead of a threshold: this quantile of the answers' rewards (0.5: the worse-answered half is "
                    "necessary). Useful with the stand-in, whose ratings cluster around 3.3 so that few answers fall "
                    "below 3.0. Not together with necessity_threshold.")
    n_augmented: int | None = Field(
        default=None,
        description="Augmented rows to pick from the necessary ones by k-center greedy. Unset: augmented_fraction "
                    "of the pool.")
    augmented_fraction: float = Field(
        default=0.075,
        description="Augmented rows as a fraction of the pool when n_augmented is unset: with the seeds' 2.5%, the "
                    "default 10% budget.")
    seeds_as_centers: bool = Field(
        default=False,
        description="Start the augmented k-center from the seeds (cover what they do not); off, as in the paper: "
                    "a k-center run of its own over the necessary instructions.")
    max_new_tokens: int = Field(
        default=128,
        description="Longest answer the seed model generates (greedy); a longer one is cut and scored as it is "
                    "(counted as cut_by_length). A CPU default: the reference code allows 1,024 with 4 beams; raise "
                    "it on a GPU.")
    batch_size: int = Field(default=32, description="Instructions per generation batch (on a CPU 32 generates more "
                                                     "answers per second than smaller batches; raise it on a GPU).")
    max_length: int = Field(
        default=2048,
        description="Longest prompt in tokens; a longer instruction is not answered (role 'failed').")
    seed: int = Field(default=0, description="Draws the first augmented center (unless seeds_as_centers).")


@dg.asset(
    group_name=GROUP,
    code_version=code_version_of(_RULES, _KCENTER, "instsel_assets.models.generate", "instsel_assets.judge.backends",
                                 "instsel_assets.scoring.reward"),
    kinds={"duckdb", "pandas", "torch"},
    op_tags=gpu_op_tags(),
    description="MoDS step 4, necessity: the seed model answers every D_h instruction (greedy, batched), the "
                "reward_model scores each answer, answers below the necessity threshold make their instruction "
                "necessary, and k-center greedy over the necessary non-seed rows picks the augmented set. One row "
                "per D_h row: mods_role (seed / augmented / necessary / not_necessary / failed), mods_order (the "
                "selection order: seeds, then augmented; -1 otherwise), generated_reward and the answer.",
    check_specs=[
        dg.AssetCheckSpec("covers_quality_set", asset="mods_necessary_instructions", blocking=True,
                          description="One row per D_h row."),
        dg.AssetCheckSpec("roles_consistent", asset="mods_necessary_instructions", blocking=True,
                          description="Seeds are step 2's; necessary = generated_reward below the threshold; the "
                                      "augmented rows are min(n_augmented, necessary non-seed rows) of those; "
                                      "mods_order is 0..n-1 over seeds then augmented rows."),
        dg.AssetCheckSpec("same_reward_model", asset="mods_necessary_instructions",
                          description="The answers were scored by the reward model that built D_h (the thresholds "
                                      "are on its scale)."),
        _suite_spec("mods_necessary_instructions"),
    ],
)
def mods_necessary_instructions(context: dg.AssetExecutionContext, config: MoDSNecessityConfig,
                                mods_quality_set: pd.DataFrame, mods_seed_instructions: pd.DataFrame,
                                mods_seed_model: dict, instruction_pool: pd.DataFrame, metric_features: pd.DataFrame,
                                language_model: LanguageModelResource, reward_model: RewardModelResource):
    from instsel_assets.models.generate import greedy_answers
    from instsel_assets.scoring.reward import reward_pair
    from instsel_assets.scoring.reward import reward_scores as score_pairs
    from instsel_assets.selection.mods import necessity_table, resolve_necessity_threshold, role_counts, size_from

    dh = mods_quality_set.reset_index(drop=True)
    quality_threshold = float(dh["quality_threshold"].iloc[0]) if len(dh) else float("nan")
    if config.necessity_threshold is not None and config.necessity_quantile is not None:
        raise ValueError("mods_necessary_instructions: give necessity_threshold or necessity_quantile, not both")
    n_augmented = size_from(config.n_augmented, config.augmented_fraction, len(metric_features), "n_augmented")

    # The instruction of each D_h row, as the reward scorer reads it (the user turns before the first answer).
    unique_pool = instruction_pool.drop_duplicates("id")
    pool = unique_pool.set_index(unique_pool["id"].astype(str).rename(None))
    missing = [i for i in dh["id"] if i not in pool.index]
    if missing:
        raise ValueError(f"mods_necessary_instructions: {len(missing)} D_h ids are not in instruction_pool, e.g. "
                         f"{missing[:5]} (re-materialise the MoDS assets on the current pool)")
    pairs = [reward_pair(pool.loc[i].to_dict()) for i in dh["id"]]
    instructions = [p[0] if p is not None else None for p in pairs]
    answerable = [k for k, text in enumerate(instructions) if text]

    context.log.info(f"MoDS necessity: the seed model answers {len(answerable)} D_h instructions "
                     f"(max_new_tokens {config.max_new_tokens}, batch {config.batch_size})")
    t0 = time.monotonic()
    model, tokenizer = language_model.load_adapted(mods_seed_model["path"])
    replies = greedy_answers(model, tokenizer, [instructions[k] for k in answerable],
                             max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
                             max_length=config.max_length, model_name=f"mods_seed_model:{mods_seed_model['path']}",
                             progress=ProgressLogger(context.log, "MoDS answers"))
    del model
    generate_seconds = time.monotonic() - t0
    answers: list[str | None] = [None] * len(dh)
    finish: list[str | None] = [None] * len(dh)
    errors: list[str | None] = [None] * len(dh)
    for k, reply in zip(answerable, replies):
        answers[k], finish[k], errors[k] = reply.text, reply.finish_reason, reply.error

    scored = [k for k in range(len(dh)) if answers[k] is not None]
    frame = pd.DataFrame({"id": [str(dh["id"].iloc[k]) for k in scored],
                          "conversations": [[{"role": "user", "content": instructions[k]},
                                             {"role": "assistant", "content": answers[k]}] for k in scored]})
    context.log.info(f"MoDS necessity: scoring {len(frame)} answers with {reward_model.model}")
    t1 = time.monotonic()
    rm, rm_tokenizer = reward_model.load()
    params: dict[str, Any] = {"mode": reward_model.mode, "model_name": reward_model.model}
    if reward_model.label_index is not None:
        params["label_index"] = reward_model.label_index
    rewards = score_pairs(frame, rm, rm_tokenizer, batch_size=reward_model.batch_size,
                          max_length=reward_model.max_length,
                          progress=ProgressLogger(context.log, "MoDS answer rewards"), **params)
    generated_reward = np.full(len(dh), np.nan)
    generated_reward[np.asarray(scored, dtype=int)] = rewards["reward_score"].to_numpy(dtype=float)
    score_seconds = time.monotonic() - t1
    threshold, threshold_source = resolve_necessity_threshold(generated_reward, quality_threshold,
                                                              config.necessity_threshold, config.necessity_quantile)

    table = necessity_table(dh, mods_seed_instructions, generated_reward, metric_features, threshold=threshold,
                            n_augmented=n_augmented, seed=config.seed, seeds_as_centers=config.seeds_as_centers)
    table["generated_answer"] = answers
    table["generation_finish"] = [f if f is not None else ("no_instruction" if instructions[k] is None else
                                                           "error: " + str(errors[k])) for k, f in enumerate(finish)]
    counts = role_counts(table)
    n_seeds = int(len(mods_seed_instructions))
    candidates = int((table["necessary"] & (table["mods_role"] != "seed")).sum())
    context.log.info(f"MoDS necessity: {int(table['necessary'].sum())} of {len(table)} D_h instructions are necessary "
                     f"(answer reward < {threshold:g}); {counts['augmented']} augmented + {n_seeds} seeds selected")
    label = str(rewards.attrs.get("reward_model", reward_model.model))
    dh_label = str(dh["reward_model"].iloc[0]) if len(dh) else ""
    necessary_examples = table[table["mods_role"] == "augmented"].head(5)
    yield dg.Output(table, metadata={
        "dagster/row_count": len(table),
        "dh_rows": len(table), "seeds": n_seeds, "answered": len(scored),
        "failed": counts["failed"], "cut_by_length": int(sum(f == "length" for f in finish)),
        "necessary": int(table["necessary"].sum()), "necessary_non_seed": candidates,
        "augmented": counts["augmented"], "n_augmented_asked": n_augmented,
        "selected": counts["seed"] + counts["augmented"],
        "role_counts": dg.MetadataValue.json(counts),
        "necessity_threshold": float(threshold), "quality_threshold": quality_threshold,
        "threshold_source": threshold_source,
        "reward_model": label, "max_new_tokens": config.max_new_tokens, "seeds_as_centers": config.seeds_as_centers,
        "seed_model": dg.MetadataValue.path(str(mods_seed_model["path"])),
        "generate_seconds": round(generate_seconds, 1), "score_seconds": round(score_seconds, 1),
        "generated_reward_histogram": dg.MetadataValue.md(histogram_md(generated_reward, "answer reward")),
        "augmented_examples": dg.MetadataValue.md(_md_table(pd.DataFrame({
            "instruction": [_snippet(instructions[k]) for k in necessary_examples.index],
            "seed model's answer": [_snippet(answers[k]) for k in necessary_examples.index],
            "answer reward": necessary_examples["generated_reward"].round(3).to_numpy(),
        }))),
    })

    yield dg.AssetCheckResult(check_name="covers_quality_set", asset_key="mods_necessary_instructions",
                              passed=len(table) == len(dh) and set(table["id"]) == set(dh["id"]),
                              metadata={"rows": len(table), "dh_rows": len(dh)})
    seeds_ok = set(table.loc[table["mods_role"] == "seed", "id"]) == set(mods_seed_instructions["id"].astype(str))
    below = np.isfinite(table["generated_reward"].to_numpy()) & (table["generated_reward"].to_numpy() < threshold)
    necessary_ok = bool(np.array_equal(below, table["necessary"].to_numpy(dtype=bool)))
    augmented = table[table["mods_role"] == "augmented"]
    augmented_ok = bool(augmented["necessary"].all()) and counts["augmented"] == min(n_augmented, candidates)
    order = table.loc[table["mods_order"] >= 0].sort_values("mods_order")
    order_ok = (np.array_equal(order["mods_order"].to_numpy(), np.arange(len(order)))
                and list(order["mods_role"]) == ["seed"] * counts["seed"] + ["augmented"] * counts["augmented"])
    yield dg.AssetCheckResult(check_name="roles_consistent", asset_key="mods_necessary_instructions",
                              passed=bool(seeds_ok and necessary_ok and augmented_ok and order_ok),
                              metadata={"seeds_match": bool(seeds_ok), "necessary_matches_threshold": necessary_ok,
                                        "augmented_size_ok": augmented_ok, "order_ok": bool(order_ok),
                                        "augmented": counts["augmented"], "expected_augmented": min(n_augmented,
                                                                                                     candidates)})
    yield dg.AssetCheckResult(check_name="same_reward_model", asset_key="mods_necessary_instructions",
                              passed=label == dh_label, metadata={"answers_scored_by": label, "dh_scored_by": dh_label})
    extra = None
    if label.startswith("stand-in: "):
        extra = [("ExpectColumnValuesToBeBetween", {"column": "generated_reward", "min_value": 1.0, "max_value": 5.0})]
    yield suite_check(table, "mods_necessary_instructions", asset_key="mods_necessary_instructions", extra=extra)


# Every asset of this stage, in lineage order.
MODS_ASSETS = [mods_quality_set, mods_seed_instructions, mods_seed_model, mods_necessary_instructions]
