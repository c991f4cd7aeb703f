"""The selections the pipeline runs: one partition of ``selected_subsets`` (and of the checkpoints
trained on them) per selection and budget. This is the one place a user edits to add a selection or a budget.

Partitions are selection x budget, and every selection runs at every budget of ``BUDGETS``, so the methods are
compared at equal size:

- the first budget is the default one: its partition key is the selection's bare name (``ifd``) and its size is
  ``selected_subsets``' ``budget_fraction`` config (10% unless changed: the Cherry LLM setting);
- every other budget adds one partition per selection, keyed ``<name>@<label>``: ``ifd@5pct`` for a fraction
  of the pool (0.05), ``ifd@6000rows`` for a row count (6000, DEITA's budget), capped at the pool's size;
- an unbudgeted selection (``budgeted=False``: ``full``, the whole pool) has its bare partition only.

``baseline_keys(key)`` names the internal baselines a partition is compared with in the evaluation: ``random``
at the same budget and ``full``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_BUDGET_FRACTION = 0.10

Budget = float | int  # a fraction of the pool in (0, 1), or a number of rows >= 1


@dataclass(frozen=True)
class SelectionSpec:
    name: str  # partition key
    selector: str  # a registered selector (instsel methods)
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    budgeted: bool = True  # False: the selection ignores the budget (the full pool) and has one partition


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
    SelectionSpec("full", "full_pool", {},
                  "The whole pool (unbudgeted, one partition): the internal baseline of the evaluation, the same "
                  "base model fine-tuned on everything.", budgeted=False),
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
DEMO_SELECTIONS: tuple[str, ...] = ("ifd", "superfiltering", "perplexity", "random", "longest", "kcenter_greedy",
                                     "full")


# Every selection runs at each budget (module docstring): the first is the default (bare partition keys,
# sized by the budget_fraction config), the others add "<name>@<label>" partitions. 5% is Cherry LLM's
# smaller Alpaca budget.
BUDGETS: tuple[Budget, ...] = (DEFAULT_BUDGET_FRACTION, 0.05)


def check_budget_value(budget: Budget) -> Budget:
    """``budget`` if it is a fraction in (0, 1) or an integer row count >= 1; ``ValueError`` otherwise."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise ValueError(f"a budget is a fraction of the pool in (0, 1) or a row count >= 1, got {budget!r}")
    if isinstance(budget, int):
        if budget < 1:
            raise ValueError(f"a row-count budget must be >= 1, got {budget}")
        return budget
    if not 0.0 < budget < 1.0:
        raise ValueError(f"a fractional budget must be in (0, 1), got {budget} (write a row count as an int)")
    return budget


def budget_label(budget: Budget) -> str:
    """The partition-key suffix of a budget: ``5pct`` for 0.05, ``6000rows`` for 6000."""
    budget = check_budget_value(budget)
    if isinstance(budget, int):
        return f"{budget}rows"
    return f"{budget * 100:g}pct".replace(".", "_")


def budget_rows(n_rows: int, budget: Budget) -> int:
    """Rows a budget gives on a pool of ``n_rows``: ``max(1, round(n x fraction))`` (0 for an empty pool), or
    the row count capped at ``n_rows``."""
    from instsel_assets.selection.ifd_top_fraction import top_fraction_budget

    budget = check_budget_value(budget)
    if isinstance(budget, int):
        return min(budget, n_rows)
    return top_fraction_budget(n_rows, budget)


def selection_names() -> list[str]:
    """The declared selections (the default-budget partition keys)."""
    return [s.name for s in SELECTIONS]


def selection_keys() -> list[str]:
    """Every partition key of ``selected_subsets``: each selection at the default budget (its name), then at each
    other budget of ``BUDGETS`` (``<name>@<label>``)."""
    labels = [budget_label(b) for b in BUDGETS[1:]]
    if len(set(labels)) != len(labels):
        raise ValueError(f"BUDGETS {BUDGETS} give the same partition label twice: {labels}")
    return selection_names() + [f"{s.name}@{label}" for label in labels for s in SELECTIONS if s.budgeted]


def get_selection(name: str) -> SelectionSpec:
    for spec in SELECTIONS:
        if spec.name == name:
            return spec
    raise KeyError(f"no selection named {name!r}; declared: {selection_names()}")


def parse_selection_key(key: str) -> tuple[SelectionSpec, Budget | None]:
    """``(selection, budget)`` of a partition key; the budget is ``None`` for a bare name (the default budget,
    set by the ``budget_fraction`` config). ``KeyError`` naming the declared keys for an unknown one."""
    name, sep, label = key.partition("@")
    spec = get_selection(name)
    if not sep:
        return spec, None
    if not spec.budgeted:
        raise KeyError(f"selection {name!r} takes no budget: its only partition is {name!r}")
    for budget in BUDGETS[1:]:
        if budget_label(budget) == label:
            return spec, budget
    raise KeyError(f"no budget {label!r} for selection {name!r}; declared budgets: "
                   f"{', '.join(budget_label(b) for b in BUDGETS[1:]) or 'none besides the default'} "
                   f"(selection/plan.py BUDGETS)")


def baseline_keys(key: str) -> dict[str, str]:
    """The internal baselines of partition ``key`` (docs/METHODS.md, "Evaluation"): ``{"random": <random at the same
    budget>, "full": "full"}``, leaving out ``key`` itself (random is not compared with itself)."""
    spec, budget = parse_selection_key(key)
    random_key = "random" if budget is None else f"random@{budget_label(budget)}"
    return {kind: other for kind, other in (("random", random_key), ("full", "full")) if other != key}


def budget_of_key(key: str) -> str:
    """``"default"`` for a bare key, the budget label for ``<name>@<label>``, ``"pool"`` for an unbudgeted one."""
    spec, budget = parse_selection_key(key)
    if not spec.budgeted:
        return "pool"
    return "default" if budget is None else budget_label(budget)
