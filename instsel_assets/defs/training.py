"""finetuned_checkpoints: LoRA supervised fine-tuning of the base model on each selected subset."""

from pathlib import Path

import dagster as dg
from pydantic import Field
import numpy as np
import pandas as pd

from instsel_assets import settings
from instsel_assets.defs._common import code_version_of, subset_hash
from instsel_assets.defs.k8s import gpu_op_tags
from instsel_assets.defs.lineage import latest_record, metadata_dict
from instsel_assets.defs.resources import LanguageModelResource
from instsel_assets.defs.selection import selection_partitions

CODE_VERSION = code_version_of("instsel_assets.training.sft", "instsel_assets.training.checkpoint",
                               "instsel_assets.models.chat")
CHECK_PROMPT = "Give three tips for staying healthy."


class TrainingConfig(dg.Config):
    max_steps: int = Field(
        default=15,
        description="Optimizer steps (the demo's small budget; raise it for real runs).")
    batch_size: int = Field(
        default=4,
        description='Examples per step.')
    learning_rate: float = Field(
        default=2e-4,
        description='AdamW learning rate of the LoRA parameters.')
    max_length: int = Field(
        default=512,
        description='Tokens per example; longer conversations are cut on the right.')
    lora_r: int = Field(
        default=8,
        description='LoRA rank (adapters on q_proj and v_proj).')
    seed: int = Field(
        default=0,
        description='Seed of the data order and adapter initialisation.')


def checkpoint_dir(method: str) -> Path:
    return settings.storage_root() / "checkpoints" / method


@dg.asset(
    group_name="training",
    partitions_def=selection_partitions,
    code_version=CODE_VERSION,
    io_manager_key="artifact_io_manager",
    kinds={"torch", "pytorch"},
    op_tags=gpu_op_tags(),
    description="A LoRA adapter of the base model fine-tuned on the partition's subset (loss on answer "
                "tokens only, chat template), saved as a directory. Its metadata names the subset hash, "
                "selection method and budget, the scorer settings and the base model.",
    check_specs=[
        dg.AssetCheckSpec("loads_and_generates", asset="finetuned_checkpoints", blocking=True,
                          description="The saved checkpoint loads and generates text."),
        dg.AssetCheckSpec("training_loss_finite", asset="finetuned_checkpoints",
                          description="Every logged training loss is finite."),
    ],
)
def finetuned_checkpoints(context: dg.AssetExecutionContext, config: TrainingConfig,
                          selected_subsets: pd.DataFrame, instruction_pool: pd.DataFrame,
                          language_model: LanguageModelResource):
    from instsel_assets.models.loading import load_causal_lm
    from instsel_assets.training.checkpoint import generate_text, load_checkpoint
    from instsel_assets.training.sft import SFTConfig, finetune_lora

    method = context.partition_key
    subset = selected_subsets.sort_values("selection_rank")
    rows = subset[["id"]].merge(instruction_pool[["id", "conversations"]], on="id", how="left")
    if rows["conversations"].isna().any():
        raise ValueError(f"{method}: {int(rows['conversations'].isna().sum())} selected ids are not in instruction_pool")
    selection_record = latest_record(context.instance, "selected_subsets", method)
    selection_meta = metadata_dict(selection_record)
    trained_hash = subset_hash(subset["id"].astype(str))
    if selection_meta.get("subset_hash") and selection_meta["subset_hash"] != trained_hash:
        # the scorer settings below come from that record: they must describe the subset actually loaded
        raise RuntimeError(f"{method}: the loaded subset (hash {trained_hash}) is not the one of the latest "
                           f"selected_subsets[{method}] materialisation (hash {selection_meta['subset_hash']}); "
                           "re-materialise selected_subsets first")
    sft_config = SFTConfig(max_steps=config.max_steps, batch_size=config.batch_size,
                           learning_rate=config.learning_rate, max_length=config.max_length,
                           lora_r=config.lora_r, lora_alpha=2 * config.lora_r, seed=config.seed)
    out_dir = checkpoint_dir(method)
    manifest_extra = {
        "selection_method": method,
        "budget": int(subset["budget"].iloc[0]) if len(subset) else 0,
        "subset_rows": len(subset),
        "subset_hash": selection_meta.get("subset_hash") or trained_hash,
        "selection_storage_id": selection_record.storage_id if selection_record is not None else None,
        "selector": selection_meta.get("selector"),
        "scorer_settings": selection_meta.get("scorer_settings"),
        "code_version": CODE_VERSION,
    }
    context.log.info(f"{method}: fine-tuning {language_model.model} on {len(rows)} examples, "
                     f"{config.max_steps} steps of {config.batch_size}")
    model, tokenizer = language_model.load_fresh()

    def progress(info: dict) -> None:
        context.log.info(f"{method}: step {info['step']}/{config.max_steps} loss {info['loss']:.4f} "
                         f"({info['seconds']:.0f}s)")

    result = finetune_lora(model, tokenizer, list(rows["conversations"]), out_dir, sft_config,
                           base_model_id=language_model.model, progress=progress,
                           manifest=manifest_extra)
    manifest = {
        "path": str(out_dir), "base_model": language_model.model, **manifest_extra,
        "sft_config": sft_config.to_dict(),
        "steps": result.steps, "first_loss": result.first_loss, "last_loss": result.last_loss,
        "n_examples": result.n_examples, "n_skipped": result.n_skipped,
        "trainable_params": result.trainable_params, "train_seconds": result.seconds,
    }
    yield dg.Output(manifest, metadata={
        "checkpoint_dir": dg.MetadataValue.path(str(out_dir)),
        "selection_method": method, "budget": manifest["budget"],
        "subset_hash": str(manifest["subset_hash"]), "selector": str(manifest["selector"]),
        "selection_storage_id": manifest["selection_storage_id"],
        "scorer_settings": dg.MetadataValue.json(manifest["scorer_settings"] or {}),
        "base_model": language_model.model,
        "sft_config": dg.MetadataValue.json(manifest["sft_config"]),
        "first_loss": float(result.first_loss), "last_loss": float(result.last_loss),
        "trainable_params": int(result.trainable_params), "train_seconds": float(result.seconds),
    })
    del model
    loaded, loaded_tok, _ = load_checkpoint(out_dir, base_loader=lambda mid: load_causal_lm(mid, dtype="float32"))
    sample = generate_text(loaded, loaded_tok, CHECK_PROMPT, max_new_tokens=16)
    yield dg.AssetCheckResult(check_name="loads_and_generates", passed=bool(sample.strip()),
                              metadata={"prompt": CHECK_PROMPT, "generated": sample[:500]})
    losses = np.asarray(result.losses, dtype=float)
    yield dg.AssetCheckResult(check_name="training_loss_finite", passed=bool(len(losses) and np.isfinite(losses).all()),
                              metadata={"losses": dg.MetadataValue.json([round(float(x), 4) for x in losses])})
