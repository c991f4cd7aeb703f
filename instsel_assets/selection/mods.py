"""MoDS, Model-oriented Data Selection (Du, Zong & Zhang 2023): quality, coverage, necessity.

The method, in four steps (each an asset of ``defs/mods.py``; this module holds their rules, without Dagster):

1. **Quality** (``quality_set``): every (instruction, response) pair is scored by a reward model and the pairs
   with ``reward_score >= threshold`` form the high-quality set D_h. The paper scores with OpenAssistant's
   reward-model-deberta-v3-large-v2 and uses the threshold 0.0 on its logit (``PAPER_QUALITY_THRESHOLD``; the
   reference code keeps ``> 0.0``, the same rows up to exact ties). The project's default reward model is a
   stand-in whose score is an expected 1-5 rating, so an unset threshold resolves to
   ``STAND_IN_QUALITY_THRESHOLD`` (3.0, "helpful" on its scale) when the scores are labelled as the stand-in's,
   else to the paper's 0.0 (``resolve_quality_threshold``). A quantile (``quality_quantile``) may be given
   instead of a threshold, for a reward model whose scale is unknown.
2. **Coverage** (``pick_seeds``): greedy k-center on the instruction embeddings of D_h picks the seed
   instructions (``kcenter_greedy_indices``: the first center drawn by ``seed``, then farthest-first).
3. The language model is fine-tuned on the seeds (the "initial" model; ``defs/mods.py`` ``mods_seed_model``).
4. **Necessity** (``necessity_table``): the seed model answers every instruction of D_h; the reward model scores
   each (instruction, generated answer); an instruction whose answer scores below the necessity threshold is
   "necessary" (the model has not learnt that kind of task yet). Greedy k-center over the necessary rows that
   are not seeds picks the augmented set. The selection is the seeds followed by the augmented set.

Table of step 4, one row per D_h row: ``mods_role`` is ``seed``, ``augmented``, ``necessary`` (necessary but
beyond the augmented set's size), ``not_necessary`` (the seed model answered it well) or ``failed`` (no answer
could be generated or scored: prompt longer than the model's window); ``mods_order`` is the position in the
selection (seeds first, in k-center order, then the augmented rows in k-center order; -1 for every other row).

Deliberate differences from the paper and its code:

- Embeddings: the pool's MiniLM instruction embeddings (``metric_features``), not BERT-base [CLS] vectors.
- The seed model is a LoRA fine-tune of the configured language model for a few steps (the paper fine-tunes
  all weights of LLaMA-2 7B for three epochs); by default that model is SmolLM2-135M-Instruct, which is
  already instruction-tuned, so "necessary" means necessary for that model.
- Answers are greedy, batched and capped at ``max_new_tokens`` (the reference decodes with 4 beams, one
  instruction at a time, up to 1,024 new tokens); an answer cut by the cap is scored as it is and counted.
- The seeds are answered and scored like every D_h row (as in the reference code) but are never in the
  augmented set: the merged selection holds each row once (the reference concatenates the two files).
- The necessity threshold defaults to the quality threshold actually used (the reference code takes it as an
  argument with no default): an answer that would not pass the quality filter is a bad answer. A quantile of the
  answers' rewards may be given instead (``resolve_necessity_threshold``). The stand-in's ratings cluster: on 32
  rows of the bundled sample the pool's own answers rated 2.88-3.77 (97% at least 3.0) and the packaged model's
  greedy answers 2.91-3.56 (3% below 3.0), so with the stand-in the defaults keep nearly the whole pool in D_h
  and find few necessary instructions; a quantile (e.g. ``necessity_quantile`` 0.5) gives a usable split there.
- ``seeds_as_centers`` (off by default, as in the paper) lets the augmented k-center start from the seeds, so
  it covers what the seeds do not.

Registered selector: ``mods`` (reads ``id``, ``mods_role``, ``mods_order``): the seeds, then the augmented set,
in ``mods_order``, capped at the budget (``fills_budget=False``: fewer rows when MoDS picked fewer).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd

from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns

PAPER_QUALITY_THRESHOLD = 0.0
"""MoDS's quality threshold on the logit of reward-model-deberta-v3-large-v2 (the paper and its README)."""
STAND_IN_QUALITY_THRESHOLD = 3.0
"""The threshold used with the stand-in reward score (an expected 1-5 rating; 3 = "helpful")."""
STAND_IN_PREFIX = "stand-in: "
ROLES = ("seed", "augmented", "necessary", "not_necessary", "failed")
SELECTED_ROLES = ("seed", "augmented")


# ------------------------------------------------------------------------------------------------ helpers
def is_stand_in(reward_model_labels: Sequence[str] | pd.Series) -> bool:
    """True when every ``reward_model`` label of a ``reward_scores`` table names the stand-in rating."""
    labels = [str(v) for v in pd.Series(reward_model_labels).dropna().unique()]
    return bool(labels) and all(label.startswith(STAND_IN_PREFIX) for label in labels)


def size_from(n: int | None, fraction: float, pool_rows: int, what: str) -> int:
    """``n`` when given, else ``max(1, round(fraction * pool_rows))``; ``ValueError`` naming ``what``."""
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"MoDS: {what} must be a positive integer, got {n!r}")
        return int(n)
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"MoDS: the fraction for {what} must be in (0, 1], got {fraction!r}")
    return max(1, int(round(float(fraction) * pool_rows)))


def resolve_quality_threshold(scores: pd.DataFrame, threshold: float | None = None,
                              quantile: float | None = None) -> tuple[float, str]:
    """``(threshold, how)`` for step 1 on a ``reward_scores`` table (``reward_score``, ``reward_model``).

    - ``threshold`` given: it, ``how="config"``;
    - ``quantile`` given (in (0, 1)): that quantile of the finite scores, ``how="quantile q"``;
    - neither: ``STAND_IN_QUALITY_THRESHOLD`` when the scores are the stand-in's (``how="stand-in default"``),
      else ``PAPER_QUALITY_THRESHOLD`` (``how="paper default"``).
    Both given is an error.
    """
    if threshold is not None and quantile is not None:
        raise ValueError("MoDS: give quality_threshold or quality_quantile, not both")
    if threshold is not None:
        if not math.isfinite(float(threshold)):
            raise ValueError(f"MoDS: quality_threshold must be finite, got {threshold!r}")
        return float(threshold), "config"
    if quantile is not None:
        if isinstance(quantile, bool) or not isinstance(quantile, numbers.Real) or not 0.0 < float(quantile) < 1.0:
            raise ValueError(f"MoDS: quality_quantile must be in (0, 1), got {quantile!r}")
        values = pd.to_numeric(scores["reward_score"], errors="coerce").to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            raise ValueError("MoDS: no finite reward_score to take a quantile of")
        return float(np.quantile(values, float(quantile))), f"quantile {float(quantile):g}"
    if "reward_model" in scores.columns and is_stand_in(scores["reward_model"]):
        return STAND_IN_QUALITY_THRESHOLD, "stand-in default"
    return PAPER_QUALITY_THRESHOLD, "paper default"


def resolve_necessity_threshold(generated_reward: Sequence[float], quality_threshold: float,
                                threshold: float | None = None, quantile: float | None = None) -> tuple[float, str]:
    """``(threshold, how)`` for step 4: ``threshold`` when given (``how="config"``); else the ``quantile`` (in
    (0, 1)) of the finite rewards of the seed model's answers (``"quantile q"``: 0.5 makes the worse-answered half
    necessary); else the quality threshold D_h was built with (``"quality threshold"``). Both given is an error."""
    if threshold is not None and quantile is not None:
        raise ValueError("MoDS: give necessity_threshold or necessity_quantile, not both")
    if threshold is not None:
        if not math.isfinite(float(threshold)):
            raise ValueError(f"MoDS: necessity_threshold must be finite, got {threshold!r}")
        return float(threshold), "config"
    if quantile is not None:
        if isinstance(quantile, bool) or not isinstance(quantile, numbers.Real) or not 0.0 < float(quantile) < 1.0:
            raise ValueError(f"MoDS: necessity_quantile must be in (0, 1), got {quantile!r}")
        values = np.asarray(generated_reward, dtype=float)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            raise ValueError("MoDS: no answer of the seed model has a finite reward to take a quantile of")
        return float(np.quantile(values, float(quantile))), f"quantile {float(quantile):g}"
    return float(quality_threshold), "quality threshold"


# ------------------------------------------------------------------------------------------------ step 1
def quality_set(scores: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """D_h: the rows of ``scores`` with a finite ``reward_score >= threshold``, highest first (ties by id), with
    the columns ``id``, ``reward_score``, ``reward_model`` and ``quality_threshold``. ``ValueError`` when no row
    passes, naming the score range."""
    require_columns(scores, ("id", "reward_score"), "mods")
    values = pd.to_numeric(scores["reward_score"], errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(values) & (values >= threshold)
    if not keep.any():
        finite = values[np.isfinite(values)]
        span = f"{finite.min():.4g}..{finite.max():.4g}" if len(finite) else "no finite score"
        raise ValueError(f"MoDS: no row has reward_score >= {threshold:g} (scores: {span}, {len(values)} rows); "
                         f"lower quality_threshold or set quality_quantile")
    out = pd.DataFrame({"id": scores["id"].astype(str).to_numpy()[keep], "reward_score": values[keep]})
    out["reward_model"] = (scores["reward_model"].astype(str).to_numpy()[keep] if "reward_model" in scores.columns
                           else "unknown")
    out["quality_threshold"] = float(threshold)
    out = out.sort_values(["reward_score", "id"], ascending=[False, True], kind="stable").reset_index(drop=True)
    return out


# ------------------------------------------------------------------------------------------------ step 2
def embeddings_of(ids: Sequence[str], features: pd.DataFrame) -> np.ndarray:
    """The ``embedding`` rows of ``features`` for ``ids``, in that order; ``ValueError`` naming missing ids."""
    from instsel_assets.features.embeddings import embedding_matrix

    require_columns(features, ("id", "embedding"), "mods")
    unique = features.drop_duplicates("id")
    by_id = pd.Series(list(unique["embedding"]), index=unique["id"].astype(str).to_numpy(), dtype=object)
    missing = [i for i in ids if i not in by_id.index]
    if missing:
        raise ValueError(f"MoDS: {len(missing)} rows have no embedding in metric_features, e.g. {missing[:5]}")
    return embedding_matrix(by_id.loc[list(ids)].to_numpy())


def pick_seeds(quality: pd.DataFrame, features: pd.DataFrame, n_seeds: int, *, seed: int = 0) -> pd.DataFrame:
    """The seed instructions: greedy k-center on the D_h embeddings, ``min(n_seeds, |D_h|)`` rows, as a table
    ``id``, ``seed_order`` (pick order, 0-based), ``reward_score``."""
    from instsel_assets.selection.kcenter_greedy import kcenter_greedy_indices

    ids = quality["id"].astype(str).tolist()
    x = embeddings_of(ids, features)
    picks = kcenter_greedy_indices(x, int(n_seeds), seed=seed)
    rows = quality.iloc[picks]
    return pd.DataFrame({"id": rows["id"].astype(str).to_numpy(), "seed_order": np.arange(len(picks), dtype=np.int64),
                         "reward_score": rows["reward_score"].to_numpy(dtype=float)})


# ------------------------------------------------------------------------------------------------ step 4
def necessity_table(quality: pd.DataFrame, seeds: pd.DataFrame, generated_reward: Sequence[float],
                    features: pd.DataFrame, *, threshold: float, n_augmented: int, seed: int = 0,
                    seeds_as_centers: bool = False) -> pd.DataFrame:
    """Step 4's table, one row per row of ``quality`` (D_h) in its order: ``id``, ``mods_role``, ``mods_order``,
    ``necessary``, ``generated_reward``, ``quality_reward``.

    ``generated_reward[i]`` is the reward of the seed model's answer to row ``i`` (NaN: no answer or no score,
    role ``failed``). A row is necessary when ``generated_reward < threshold``. Greedy k-center over the necessary
    rows that are not seeds picks ``min(n_augmented, their number)`` augmented rows (from the seed embeddings as
    centers with ``seeds_as_centers``; else the first center is drawn by ``seed``).
    """
    from instsel_assets.selection.kcenter_greedy import kcenter_greedy_indices

    ids = quality["id"].astype(str).to_numpy()
    reward = np.asarray(generated_reward, dtype=float)
    if reward.shape != (len(ids),):
        raise ValueError(f"MoDS: {reward.shape[0] if reward.ndim else 0} generated rewards for {len(ids)} D_h rows")
    seed_ids = seeds.sort_values("seed_order")["id"].astype(str).tolist()
    unknown = sorted(set(seed_ids) - set(ids))
    if unknown:
        raise ValueError(f"MoDS: seeds not in the quality set: {unknown[:5]}")
    is_seed = np.isin(ids, seed_ids)
    failed = ~np.isfinite(reward)
    necessary = ~failed & (reward < threshold)
    candidates = np.flatnonzero(necessary & ~is_seed)
    picks: list[int] = []
    if len(candidates) and n_augmented > 0:
        x = embeddings_of(ids[candidates].tolist(), features)
        centers = embeddings_of(seed_ids, features) if seeds_as_centers and seed_ids else None
        picks = kcenter_greedy_indices(x, int(n_augmented), seed=seed, centers=centers)
    role = np.where(failed, "failed", np.where(necessary, "necessary", "not_necessary")).astype(object)
    role[is_seed] = "seed"
    order = np.full(len(ids), -1, dtype=np.int64)
    position = {i: k for k, i in enumerate(ids)}
    for k, sid in enumerate(seed_ids):
        order[position[sid]] = k
    for k, p in enumerate(picks):
        row = candidates[p]
        role[row] = "augmented"
        order[row] = len(seed_ids) + k
    return pd.DataFrame({"id": ids, "mods_role": role, "mods_order": order, "necessary": necessary,
                         "generated_reward": reward,
                         "quality_reward": pd.to_numeric(quality["reward_score"]).to_numpy(dtype=float)})


def role_counts(table: pd.DataFrame) -> dict[str, int]:
    """Rows per ``mods_role`` (every role named, zeros included)."""
    counts = table["mods_role"].value_counts()
    return {r: int(counts.get(r, 0)) for r in ROLES}


# ------------------------------------------------------------------------------------------------ selector
@register_selector(
    "mods",
    family="small-model",
    paper="Du, Zong & Zhang 2023, MoDS: Model-oriented Data Selection for Instruction Tuning",
    summary="MoDS's selection: the k-center seed instructions of the reward-filtered set D_h, then the k-center "
            "augmented set of the instructions the seed-trained model answers badly (mods_necessary_instructions).",
    reads=("id", "mods_role", "mods_order"),
    fills_budget=False,
)
def select_mods(candidates: pd.DataFrame, budget: int, *, seed: int = 0, **params) -> list[str]:
    """The rows whose ``mods_role`` is ``seed`` or ``augmented``, in ``mods_order`` (seeds first), at most
    ``budget`` of them; fewer when MoDS picked fewer.

    ``seed`` is unused (the randomness is in the assets). Rows of other roles, or outside D_h (role missing),
    are never selected. ``ValueError`` when no row is a seed (the MoDS assets were not materialised on this
    pool), when an order is missing or repeated among the selected rows, or when an augmented row comes before
    a seed.
    """
    require_columns(candidates, ("id", "mods_role", "mods_order"), "mods")
    budget = check_budget(budget)
    role = candidates["mods_role"].astype(object).where(candidates["mods_role"].notna(), None).to_numpy()
    chosen = np.isin(role, SELECTED_ROLES)
    if not (role[chosen] == "seed").any():
        raise ValueError(f"selector 'mods': no candidate has mods_role 'seed' (of {len(candidates)} rows); "
                         f"materialise mods_necessary_instructions on this pool first")
    ids = candidates["id"].astype(str).to_numpy()[chosen]
    order = pd.to_numeric(candidates["mods_order"], errors="coerce").to_numpy(dtype=float)[chosen]
    roles = role[chosen]
    bad = ~np.isfinite(order) | (order < 0)
    if bad.any():
        raise ValueError(f"selector 'mods': selected rows without a mods_order: {ids[bad][:5].tolist()}")
    duplicated = pd.Series(order).duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise ValueError(f"selector 'mods': mods_order is not unique; ids sharing an order: "
                         f"{ids[duplicated][:5].tolist()}")
    ranked = np.argsort(order, kind="stable")
    ranked_roles = roles[ranked]
    if (ranked_roles == "augmented").any() and (ranked_roles == "seed").any() and \
            np.flatnonzero(ranked_roles == "augmented").min() < np.flatnonzero(ranked_roles == "seed").max():
        raise ValueError("selector 'mods': an augmented row is ordered before a seed; mods_order must put every "
                         "seed first")
    return [str(i) for i in ids[ranked][:budget]]
