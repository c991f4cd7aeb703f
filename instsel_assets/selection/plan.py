"""The selections the pipeline runs: one partition of ``selected_subsets`` (and of the checkpoints
trained on them) per entry. This is the one place a user edits to add a selection.

Every selection gets the same budget, ``budget_fraction`` of the pool (10% by default: the
Cherry LLM setting), so the methods are compared at equal size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_BUDGET_FRACTION = 0.10


@dataclass(frozen=True)
class SelectionSpec:
    name: str  # partition key
    selector: str  # a registered selector (instsel methods)
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""


SELECTIONS: tuple[SelectionSpec, ...] = (
    SelectionSpec("ifd", "ifd", {}, "Cherry LLM: IFD under the pre-experienced model; drop IFD >= 1, keep the highest."),
    SelectionSpec("superfiltering", "superfiltering", {},
                  "Superfiltering: IFD (perplexity ratio) from the small filter model; drop >= 1, keep the highest."),
    SelectionSpec("perplexity", "perplexity", {},
                  "Lowest response perplexity under the reference LM (the InstructMining indicator alone)."),
    SelectionSpec("prompt_uncertainty", "prompt_uncertainty", {},
                  "Active Instruction Tuning: the rows whose answer likelihood moves most under perturbed prompts."),
    SelectionSpec("nuggets", "nuggets", {}, "Nuggets: the highest golden score (best one-shot demonstrations)."),
    SelectionSpec("self_curation", "self_curation", {},
                  "Instruction Backtranslation self-curation: expected self-rating >= 4.5, highest first."),
    SelectionSpec("diverseevol", "diverseevol", {},
                  "DiverseEvol: rows in the order the iterative k-center growth added them."),
    SelectionSpec("tegit", "tegit", {}, "TEGIT: rows the task discriminator accepts (P(good) >= 0.5), most confident first."),
    SelectionSpec("alpagasus", "alpagasus", {},
                  "AlpaGasus: the judge's accuracy rating (0-5) >= 4.5, highest first (judge: alpagasus_scores)."),
    SelectionSpec("deita", "deita", {},
                  "DEITA: by evol score (complexity x quality) descending, skipping rows too similar to those kept."),
    SelectionSpec("instag", "instag", {},
                  "InsTag: complexity-first diverse sampling on the normalised intention tags (most tags first, "
                  "each row bringing a new tag)."),
    SelectionSpec("lift", "lift", {},
                  "LIFT: the rows of highest embedding row variance, then the highest judge quality (lift_score)."),
    SelectionSpec("tree_instruct", "tree_instruct", {},
                  "Tree-Instruct: instructions whose semantic tree has >= 10 nodes, largest first."),
    SelectionSpec("wavecoder", "wavecoder", {},
                  "WaveCoder: code rows the discriminator passes on every requirement of their task type."),
    SelectionSpec("mods", "mods", {},
                  "MoDS: k-center seeds of the reward-filtered quality set, then k-center over the instructions the "
                  "seed-trained model still answers badly (mods_job first)."),
    SelectionSpec("instruct_mining", "instruct_mining", {},
                  "InstructMining: the lowest held-out loss predicted by the indicator rule fitted on the subset "
                  "experiments (instruct_mining_job first)."),
    SelectionSpec("instruction_gpt4", "instruction_gpt4", {},
                  "InstructionGPT-4 (text form): the highest score of the MLP selector trained on the subset "
                  "experiments (instruct_mining_job first)."),
    SelectionSpec("random", "random", {}, "Uniform random subset (seeded): the baseline every method must beat."),
    SelectionSpec("longest", "longest", {}, "Longest responses (characters): the length baseline."),
    SelectionSpec("kcenter_greedy", "kcenter_greedy", {},
                  "Farthest-first traversal on the MiniLM instruction embeddings (coreset)."),
    SelectionSpec("ifd_then_kcenter", "compose",
                  {"first": {"selector": "ifd", "params": {"max_ifd": 1.0}, "fraction": 0.2},
                   "then": {"selector": "kcenter_greedy", "params": {}}},
                  "Quality, then diversity: the top 20% of the pool by IFD (IFD >= 1 dropped), then farthest-first "
                  "k-center on their embeddings to the budget."),
    SelectionSpec("dataset_quantization", "dataset_quantization", {},
                  "DQ, Dataset Quantization: GraphCut splits the pool into 10 bins on the MiniLM embeddings, then a "
                  "uniform sample from every bin, in proportion to its size."),
    SelectionSpec("coreset", "coreset", {},
                  "Coreset (\"Maybe only 0.5% data is needed\"): k-means (10 clusters) on the MiniLM embeddings, the "
                  "budget split by cluster size, k-center-greedy inside each cluster."),
    SelectionSpec("reward_top", "top_k", {"column": "reward_score"},
                  "MoDS's quality step as a top-m: the highest reward score (reward_scores; the packaged SmolLM2's "
                  "stand-in rating unless a reward model is configured)."),
)

# The selections `instsel demo` trains and evaluates on the bundled sample: the scores they read take
# about 10 minutes on 2 CPU cores together. The others are materialised on demand (README, "Methods").
DEMO_SELECTIONS: tuple[str, ...] = ("ifd", "superfiltering", "perplexity", "random", "longest", "kcenter_greedy")


def selection_names() -> list[str]:
    return [s.name for s in SELECTIONS]


def get_selection(name: str) -> SelectionSpec:
    for spec in SELECTIONS:
        if spec.name == name:
            return spec
    raise KeyError(f"no selection named {name!r}; declared: {selection_names()}")
