"""Jobs: the chain in three steps, because its assets are partitioned three ways.

1. ``prepare_pool_job`` (unpartitioned): raw datasets -> pool -> features (duplicates included) -> SQL models
   -> the demo's LM scores (IFD with its pre-experienced model, Superfiltering, perplexity).
   ``trainable_llm_scores_job`` computes every trainable-LLM score (family 2), the slow ones included, and the
   reward score (MoDS); ``judge_scores_job`` every judge score (family 3) through the ``judge`` resource.
2. ``select_and_train_job`` (one run per selection partition): subset -> checkpoint.
3. ``evaluate_job`` (unpartitioned): every checkpoint -> held-out loss, answers to the test prompts, pairwise
   judgements against the baselines, the judge's fidelity -> the method comparison report.
"""

from __future__ import annotations

import dagster as dg

from instsel_assets.defs.scores import DEMO_SCORE_ASSETS

prepare_pool_job = dg.define_asset_job(
    "prepare_pool_job",
    selection=dg.AssetSelection.groups("raw", "pool", "features", "sql_models")
    | dg.AssetSelection.assets(*DEMO_SCORE_ASSETS),
    description="Read every source, build the pool, compute features (duplicates included), SQL indicators and the "
                "demo's LM scores (IFD with its pre-experienced model, Superfiltering, perplexity).",
)
trainable_llm_scores_job = dg.define_asset_job(
    "trainable_llm_scores_job",
    selection=dg.AssetSelection.groups("scores"),
    description="Every trainable-LLM score (docs/METHODS.md family 2) on the current pool: IFD, Superfiltering, "
                "perplexity, prompt uncertainty, Nuggets, self-curation, DiverseEvol, the TEGIT discriminator; "
                "and the reward score (MoDS, family 4; a stand-in rating unless a reward model is configured).",
)
judge_scores_job = dg.define_asset_job(
    "judge_scores_job",
    selection=dg.AssetSelection.groups("judge_scores"),
    description="Every judge score (docs/METHODS.md family 3, the `judge` resource): AlpaGasus, DEITA, InsTag, LIFT, "
                "Tree-Instruct, WaveCoder. Set dry_run in an asset's config to see what a run would send first.",
)
select_and_train_job = dg.define_asset_job(
    "select_and_train_job",
    selection=dg.AssetSelection.groups("selection", "training"),
    description="Select one partition's subset and fine-tune the base model on it.",
)
evaluate_job = dg.define_asset_job(
    "evaluate_job",
    selection=dg.AssetSelection.groups("evaluation"),
    description="The unified evaluation of every checkpoint: held-out loss on the test sets with references, answers "
                "to the test prompts, pairwise judgements (both orders) against random at the same budget, full and "
                "the external models, the judge's fidelity on LLMBar, and the method comparison report.",
)

instruct_mining_job = dg.define_asset_job(
    "instruct_mining_job",
    selection=dg.AssetSelection.groups("instruct_mining"),
    description="Subset experiments (random subsets fine-tuned and evaluated), the InstructMining rule fitted on "
                "them, the InstructionGPT-4 selector trained on them, and the scores both give every pool row.",
)

mods_job = dg.define_asset_job(
    "mods_job",
    selection=dg.AssetSelection.groups("mods"),
    description="MoDS: the reward-filtered quality set, its k-center seeds, the model fine-tuned on them, and the "
                "instructions that model still answers badly (k-center over them).",
)

JOBS = [prepare_pool_job, trainable_llm_scores_job, judge_scores_job, instruct_mining_job, mods_job,
        select_and_train_job, evaluate_job]
