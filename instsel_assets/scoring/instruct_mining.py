"""InstructMining (Cao et al. 2023, "Instruction Mining: When Data Mining Meets Large Language Model Finetuning").

The rule. Fine-tune the model on several instruction sets ``D_1..D_n``, measure each one's evaluation loss
``L_k``, describe each set by the means of natural-language indicators over its rows ``I_i(D_k)``, and fit by
least squares the linear rule

    L  ~  b0 + sum_i b_i * z_i(D),        z_i = (I_i - mu_i) / sigma_i

where ``mu_i`` and ``sigma_i`` are the mean and standard deviation of indicator ``i`` over the n subsets (the
indicators are standardised so their coefficients are comparable; the coefficients in the indicators' own units,
``b_i / sigma_i``, are reported beside them). The fitted rule is then applied to every single row, as if the row
were a one-row set: ``instruct_mining_score`` is the predicted evaluation loss, LOWER IS BETTER, and a selector
keeps the rows of lowest predicted loss (or those below a threshold).

The indicators (docs/METHODS.md, Family 1) are whichever of these the tables hold, or a configured list: tokens of
the instruction and of the response (the paper's ``Len``), type-token ratio and MTLD (lexical diversity), the KNN-6
mean distance of the instruction embedding (``Knn_6``), the response perplexity under the reference model
(``Ppl``) and the reward score (``Rew``). The paper also uses UniEval naturalness, coherence and
understandability, which need the UniEval models and are not computed here.

Differences from the paper, on purpose:

- (not a difference) the target is, as in the paper, the logarithm of the loss (``target="log_loss"``:
  ``log L ~ L0 + F(I)``; its first version reports ``log L ~ 1.0694 - 0.1498 Rew + 8.257e-5 Len - 0.9350 Knn_6``)
  and the predicted loss is ``exp`` of the fitted value; ``target="loss"`` fits the loss itself;
- the paper chooses its indicators by their p-values (backward elimination) over 129 fine-tuned LLaMA-2-7B
  models; here every available indicator stays in the rule, and the p-values of an ordinary least-squares fit are
  reported so that a person can drop indicators through the configured list;
- with fewer subsets than the intercept plus the indicators need (``n <= p + 1``), or a rank-deficient design, the
  least-squares problem has no unique solution; ``regularization="auto"`` then fits ridge regression
  (``min ||y - b0 - Z b||^2 + alpha ||b||^2``, intercept not penalised, on the standardised indicators) and says
  so (``method="ridge"`` and the reason). An indicator constant over the subsets, or missing for a subset, cannot
  be fitted and is left out, with its reason;
- the paper then searches the subset size with BlendSearch; here the size is the selection budget, the same for
  every method.

Fit quality: in-sample R^2 and adjusted R^2, the residual of every subset, and the leave-one-subset-out R^2 from
the hat matrix (``e_i / (1 - h_ii)``; the standardisation itself uses every subset).

Registered scorer: ``instruct_mining`` (column ``instruct_mining_score``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from instsel_assets.registry import register_scorer

DEFAULT_INDICATORS: tuple[str, ...] = (
    "instruction_tokens", "output_tokens", "ttr", "mtld", "knn6_mean_distance", "response_ppl", "reward_score")
TARGETS = ("loss", "log_loss")
REGULARIZATIONS = ("auto", "ols", "ridge")
SCORE_COLUMN = "instruct_mining_score"
INTERCEPT = "(intercept)"


@dataclass
class InstructMiningRule:
    """A fitted InstructMining rule: ``target ~ intercept + sum_i coefficients[i] * (x_i - center[i]) / scale[i]``.

    ``target`` is the loss (``"loss"``) or its logarithm (``"log_loss"``); :meth:`predict_loss` returns the loss in
    both cases. The fit-quality fields are NaN for a rule rebuilt from its coefficient table.
    """

    indicators: tuple[str, ...]
    center: np.ndarray
    scale: np.ndarray
    intercept: float
    coefficients: np.ndarray
    target: str = "log_loss"
    method: str = "ols"
    ridge_alpha: float = 0.0
    method_reason: str = ""
    least_squares_determined: bool = True  # n_subsets > n_indicators + 1 and a design of full rank
    n_subsets: int = 0
    r2: float = math.nan
    adjusted_r2: float = math.nan
    loo_r2: float = math.nan
    subset_ids: tuple[str, ...] = ()
    observed: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fitted: np.ndarray = field(default_factory=lambda: np.zeros(0))
    std_errors: np.ndarray | None = None  # OLS only: intercept first, then the indicators
    p_values: np.ndarray | None = None
    dropped: dict[str, str] = field(default_factory=dict)  # indicator -> why it is not in the rule

    @property
    def residuals(self) -> np.ndarray:
        """Observed minus fitted target of every subset (in the target's units)."""
        return self.observed - self.fitted

    @property
    def raw_coefficients(self) -> np.ndarray:
        """The coefficients in the indicators' own units (per unit of the raw indicator)."""
        return self.coefficients / self.scale

    @property
    def raw_intercept(self) -> float:
        """The intercept of the rule written on the raw indicators."""
        return float(self.intercept - np.sum(self.coefficients * self.center / self.scale))

    def predict_target(self, rows: pd.DataFrame) -> np.ndarray:
        """The fitted target (loss or log loss) of every row of ``rows``; NaN where an indicator is missing.
        ``ValueError`` naming the indicators ``rows`` lacks."""
        missing = [c for c in self.indicators if c not in rows.columns]
        if missing:
            raise ValueError(f"InstructMining rule: the rows lack indicator column(s) {missing} the rule was fitted "
                             f"on (columns: {list(rows.columns)})")
        x = rows[list(self.indicators)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
        z = (x - self.center) / self.scale
        with np.errstate(invalid="ignore"):
            return self.intercept + z @ self.coefficients

    def predict_loss(self, rows: pd.DataFrame) -> np.ndarray:
        """The predicted evaluation loss of every row (``exp`` of the fitted value for a log-loss rule)."""
        value = self.predict_target(rows)
        if self.target == "log_loss":
            with np.errstate(over="ignore"):
                return np.exp(value)
        return value

    def coefficient_table(self) -> pd.DataFrame:
        """One row per term (the intercept first): the standardised and raw coefficients, the standardisation, the
        OLS standard error and p-value (NaN for ridge), and the rule's settings repeated on every row, so that
        :meth:`from_table` rebuilds the rule from this table alone."""
        n = len(self.indicators)
        se = self.std_errors if self.std_errors is not None else np.full(n + 1, np.nan)
        pv = self.p_values if self.p_values is not None else np.full(n + 1, np.nan)
        return pd.DataFrame({
            "term": [INTERCEPT, *self.indicators],
            "coefficient": [float(self.intercept), *map(float, self.coefficients)],
            "raw_coefficient": [self.raw_intercept, *map(float, self.raw_coefficients)],
            "center": [math.nan, *map(float, self.center)],
            "scale": [math.nan, *map(float, self.scale)],
            "std_error": [float(v) for v in se],
            "p_value": [float(v) for v in pv],
            "target": self.target,
            "method": self.method,
            "ridge_alpha": float(self.ridge_alpha),
            "n_subsets": int(self.n_subsets),
            "r2": float(self.r2),
        })

    @classmethod
    def from_table(cls, table: pd.DataFrame) -> InstructMiningRule:
        """The rule of a :meth:`coefficient_table` (as stored by the ``instruct_mining_rule`` asset)."""
        needed = ("term", "coefficient", "center", "scale", "target", "method")
        missing = [c for c in needed if c not in table.columns]
        if missing:
            raise ValueError(f"not an InstructMining coefficient table: columns {missing} are missing")
        terms = table["term"].astype(str).tolist()
        if terms.count(INTERCEPT) != 1:
            raise ValueError(f"an InstructMining coefficient table has exactly one {INTERCEPT!r} row, got "
                             f"{terms.count(INTERCEPT)}")
        rest = table[table["term"] != INTERCEPT]
        target = str(table["target"].iloc[0])
        if target not in TARGETS:
            raise ValueError(f"InstructMining coefficient table: target must be one of {TARGETS}, got {target!r}")
        return cls(
            indicators=tuple(rest["term"].astype(str)),
            center=rest["center"].to_numpy(dtype="float64"),
            scale=rest["scale"].to_numpy(dtype="float64"),
            intercept=float(table.loc[table["term"] == INTERCEPT, "coefficient"].iloc[0]),
            coefficients=rest["coefficient"].to_numpy(dtype="float64"),
            target=target, method=str(table["method"].iloc[0]),
            ridge_alpha=float(table["ridge_alpha"].iloc[0]) if "ridge_alpha" in table.columns else 0.0,
            n_subsets=int(table["n_subsets"].iloc[0]) if "n_subsets" in table.columns else 0,
            r2=float(table["r2"].iloc[0]) if "r2" in table.columns else math.nan,
        )

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description: the rule, its fit quality, the residuals and the indicators left out."""
        def num(v):
            return None if not math.isfinite(float(v)) else float(v)

        return {
            "target": self.target, "method": self.method, "ridge_alpha": self.ridge_alpha,
            "method_reason": self.method_reason, "least_squares_determined": self.least_squares_determined,
            "n_subsets": self.n_subsets,
            "indicators": list(self.indicators),
            "coefficients": {k: float(v) for k, v in zip(self.indicators, self.coefficients)},
            "raw_coefficients": {k: float(v) for k, v in zip(self.indicators, self.raw_coefficients)},
            "intercept": float(self.intercept), "raw_intercept": self.raw_intercept,
            "r2": num(self.r2), "adjusted_r2": num(self.adjusted_r2), "loo_r2": num(self.loo_r2),
            "residuals": {s: float(r) for s, r in zip(self.subset_ids, self.residuals)},
            "dropped_indicators": dict(self.dropped),
        }

    def formula(self, digits: int = 4) -> str:
        """The rule as text on the standardised indicators, e.g. ``loss ~ 1.2 - 0.05 z(reward_score) + ...``."""
        lhs = "log(loss)" if self.target == "log_loss" else "loss"
        parts = [f"{self.intercept:.{digits}g}"]
        for name, b in zip(self.indicators, self.coefficients):
            parts.append(f"{'-' if b < 0 else '+'} {abs(b):.{digits}g} z({name})")
        return f"{lhs} ~ " + " ".join(parts)


def _resolve_indicators(features: pd.DataFrame, indicators: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """(indicators to fit, {left out: why}). ``indicators=None``: those of ``DEFAULT_INDICATORS`` that are columns;
    an explicit list must name columns only (``ValueError`` otherwise: a misspelt indicator is not skipped)."""
    dropped: dict[str, str] = {}
    if indicators is None:
        wanted = list(DEFAULT_INDICATORS)
        for name in wanted:
            if name not in features.columns:
                dropped[name] = "not in the tables"
        wanted = [c for c in wanted if c in features.columns]
    else:
        wanted = [str(c) for c in indicators]
        if not wanted:
            raise ValueError("InstructMining: the indicator list is empty")
        if len(set(wanted)) != len(wanted):
            raise ValueError(f"InstructMining: indicators repeat in {wanted}")
        absent = [c for c in wanted if c not in features.columns]
        if absent:
            raise ValueError(f"InstructMining: indicator(s) {absent} are not in the subset table "
                             f"(available: {sorted(map(str, features.columns))})")
    kept = []
    for name in wanted:
        values = pd.to_numeric(features[name], errors="coerce").to_numpy(dtype="float64")
        if not np.isfinite(values).all():
            dropped[name] = f"missing for {int((~np.isfinite(values)).sum())} subset(s)"
            continue
        spread = float(values.std())
        if spread <= 1e-12 * (1.0 + float(np.abs(values).mean())):
            dropped[name] = "constant across the subsets"
            continue
        kept.append(name)
    if not kept:
        raise ValueError(f"InstructMining: no indicator can be fitted ({dropped or 'none given'})")
    return kept, dropped


def fit_instruct_mining_rule(features: pd.DataFrame, losses: Sequence[float], indicators: Sequence[str] | None = None,
                             *, target: str = "log_loss", regularization: str = "auto", ridge_alpha: float = 1.0,
                             subset_ids: Sequence[str] | None = None) -> InstructMiningRule:
    """Fit the InstructMining rule on subset-level indicator means.

    ``features``: one row per subset, one column per indicator (the subset mean); ``losses``: each subset's
    evaluation loss, same order. ``indicators``: the columns to fit (default: the available ones of
    ``DEFAULT_INDICATORS``). ``target``: ``"loss"`` or ``"log_loss"`` (the paper's). ``regularization``: ``"auto"``
    (ordinary least squares when ``n_subsets > n_indicators + 1`` and the design has full rank, else ridge with
    ``ridge_alpha``), ``"ols"`` (``ValueError`` when it has no unique solution) or ``"ridge"``.
    ``ValueError`` for a loss that is not finite (or not positive for ``log_loss``), losses that do not vary,
    fewer than 2 subsets, or no indicator that can be fitted.
    """
    if target not in TARGETS:
        raise ValueError(f"InstructMining: target must be one of {TARGETS}, got {target!r}")
    if regularization not in REGULARIZATIONS:
        raise ValueError(f"InstructMining: regularization must be one of {REGULARIZATIONS}, got {regularization!r}")
    if isinstance(ridge_alpha, bool) or not isinstance(ridge_alpha, (int, float)) or not math.isfinite(ridge_alpha) \
            or ridge_alpha <= 0:
        raise ValueError(f"InstructMining: ridge_alpha must be a positive number, got {ridge_alpha!r}")
    loss = np.asarray(losses, dtype="float64")
    n = len(loss)
    if len(features) != n:
        raise ValueError(f"InstructMining: {len(features)} subset feature rows but {n} losses")
    if n < 2:
        raise ValueError(f"InstructMining: at least 2 subsets are needed to fit a rule, got {n}")
    if not np.isfinite(loss).all():
        raise ValueError(f"InstructMining: every subset needs a finite evaluation loss; not finite at positions "
                         f"{np.flatnonzero(~np.isfinite(loss)).tolist()}")
    if target == "log_loss" and (loss <= 0).any():
        raise ValueError("InstructMining: target 'log_loss' needs positive losses")
    y = np.log(loss) if target == "log_loss" else loss
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot <= 1e-24 * max(1.0, float((y ** 2).sum())):
        raise ValueError("InstructMining: the evaluation losses of the subsets do not vary; there is nothing to fit")
    ids = tuple(str(s) for s in subset_ids) if subset_ids is not None else tuple(f"s{k:02d}" for k in range(n))
    if len(ids) != n:
        raise ValueError(f"InstructMining: {len(ids)} subset ids for {n} subsets")

    kept, dropped = _resolve_indicators(features, indicators)
    x = features[kept].apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
    center = x.mean(axis=0)
    scale = x.std(axis=0)
    z = (x - center) / scale
    p = len(kept)
    full_rank = np.linalg.matrix_rank(np.column_stack([np.ones(n), z])) == p + 1
    if regularization == "ols" and not (n > p + 1 and full_rank):
        raise ValueError(f"InstructMining: ordinary least squares needs more subsets than indicators + 1 and a design "
                         f"of full rank; got {n} subsets for {p} indicators (rank "
                         f"{'full' if full_rank else 'deficient'}): add subsets, remove indicators or use "
                         f"regularization='ridge' / 'auto'")
    use_ridge = regularization == "ridge" or not (n > p + 1 and full_rank)
    if regularization == "ridge":
        reason = "ridge requested"
    elif use_ridge:
        reason = (f"{n} subsets for {p} indicators + intercept: least squares has no unique solution"
                  if n <= p + 1 else "the standardised indicators are collinear over the subsets")
    else:
        reason = f"{n} subsets for {p} indicators + intercept"
    alpha = float(ridge_alpha) if use_ridge else 0.0

    design = np.column_stack([np.ones(n), z])
    penalty = np.diag([0.0] + [alpha] * p)
    gram = design.T @ design + penalty
    if use_ridge:
        beta = np.linalg.solve(gram, design.T @ y)
    else:
        beta = np.linalg.lstsq(design, y, rcond=None)[0]
    fitted = design @ beta
    resid = y - fitted
    ss_res = float((resid ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot
    dof = n - p - 1
    adjusted = 1.0 - (1.0 - r2) * (n - 1) / dof if dof > 0 else math.nan
    gram_inv = np.linalg.pinv(gram)
    leverage = np.einsum("ij,jk,ik->i", design, gram_inv, design)
    with np.errstate(divide="ignore", invalid="ignore"):
        loo = resid / (1.0 - leverage)
    loo_r2 = 1.0 - float((loo ** 2).sum()) / ss_tot if np.isfinite(loo).all() and (leverage < 1 - 1e-9).all() \
        else math.nan
    std_errors = p_values = None
    if not use_ridge and dof > 0:
        from scipy import stats

        sigma2 = ss_res / dof
        std_errors = np.sqrt(np.clip(np.diag(gram_inv) * sigma2, 0.0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            t_values = beta / std_errors
        p_values = np.where(np.isfinite(t_values), 2.0 * stats.t.sf(np.abs(t_values), dof), math.nan)
    return InstructMiningRule(
        indicators=tuple(kept), center=center, scale=scale, intercept=float(beta[0]), coefficients=beta[1:].copy(),
        target=target, method="ridge" if use_ridge else "ols", ridge_alpha=alpha, method_reason=reason,
        least_squares_determined=bool(n > p + 1 and full_rank), n_subsets=n, r2=r2, adjusted_r2=adjusted,
        loo_r2=loo_r2, subset_ids=ids, observed=y, fitted=fitted, std_errors=std_errors, p_values=p_values,
        dropped=dropped)


def fit_from_experiments(experiments: pd.DataFrame, indicators: Sequence[str] | None = None, *,
                         loss_column: str = "eval_loss", **kwargs) -> InstructMiningRule:
    """:func:`fit_instruct_mining_rule` on a subset-experiments table (``subset_id``, ``eval_loss`` and the
    ``mean_<indicator>`` columns of ``training.subset_experiments``)."""
    from instsel_assets.training.subset_experiments import MEAN_PREFIX

    missing = [c for c in ("subset_id", loss_column) if c not in experiments.columns]
    if missing:
        raise ValueError(f"InstructMining: the experiments table lacks column(s) {missing}")
    features = pd.DataFrame({c[len(MEAN_PREFIX):]: experiments[c] for c in experiments.columns
                             if str(c).startswith(MEAN_PREFIX)})
    return fit_instruct_mining_rule(features.reset_index(drop=True), experiments[loss_column].to_numpy(dtype="float64"),
                                    indicators, subset_ids=experiments["subset_id"].astype(str).tolist(), **kwargs)


@register_scorer(
    "instruct_mining",
    family="metric-set",
    paper="Cao et al. 2023, 'Instruction Mining: When Data Mining Meets Large Language Model Finetuning'",
    summary="The linear rule loss ~ b0 + sum_i b_i z(indicator_i), fitted by least squares (ridge when the "
            "subsets are too few) on random subsets' fine-tuned evaluation losses, applied to every row: the "
            "predicted loss, lower is better.",
    writes=(SCORE_COLUMN,),
)
def instruct_mining_scores(rows: pd.DataFrame, rule: InstructMiningRule | pd.DataFrame | Mapping) -> pd.DataFrame:
    """``id`` and ``instruct_mining_score`` (the predicted evaluation loss) of every row of ``rows``, same order.

    ``rows`` holds ``id`` and the rule's indicator columns; ``rule`` is an :class:`InstructMiningRule` or its
    coefficient table. Rows missing an indicator get NaN, counted in ``out.attrs["n_unscorable"]``.
    """
    if not isinstance(rule, InstructMiningRule):
        rule = InstructMiningRule.from_table(pd.DataFrame(rule))
    if "id" not in rows.columns:
        raise ValueError("instruct_mining: the rows need an 'id' column")
    score = rule.predict_loss(rows)
    out = pd.DataFrame({"id": rows["id"].astype(str).to_numpy(), SCORE_COLUMN: score})
    out.attrs["n_unscorable"] = int((~np.isfinite(score)).sum())
    out.attrs["indicators"] = list(rule.indicators)
    out.attrs["target"] = rule.target
    out.attrs["method"] = rule.method
    return out
