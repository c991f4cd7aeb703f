"""Two-stage selection: a filter selector keeps a share of the pool, a second selector picks the budget among it.

Several methods of docs/METHODS.md are "quality first, then diversity": MoDS (Du et al. 2023) keeps the rows a
reward model rates above a threshold, then runs k-center-greedy over them; Superfiltering's diversity pass takes
the top 20% by IFD, then 2% by facility location. ``compose`` states such a rule from registered selectors
instead of a new module per pairing, e.g. "IFD top 20%, then k-center-greedy to the budget"::

    {"first": {"selector": "ifd", "params": {"max_ifd": 1.0}, "fraction": 0.2},
     "then": {"selector": "kcenter_greedy", "params": {}}}

- ``first``: ``selector`` (a registered name), ``params`` (its keyword parameters, default none) and exactly
  one of ``fraction`` (a share of the candidates in (0, 1], turned into rows as the budget is:
  ``max(1, round(fraction * n))``) or ``size`` (a number of rows). It is called with that many rows as its
  budget.
- ``then``: ``selector`` and ``params``; it is called on the first stage's rows, in the first stage's
  selection order, with the composition's ``budget``. Its ids, in its order, are the result.

Both stages get the composition's ``seed``. The first stage must be allowed at least as many rows as the budget
(otherwise the second stage would have nothing to choose from); it may still keep fewer (a threshold rule such
as ``ifd`` drops IFD >= 1), and then so does the composition (``fills_budget=False``). Every key is checked, and
an error names the key (``first.fraction``, ``then.params.precision``, ...): selectors take ``**params``, so a
misspelt key would otherwise be ignored. ``compose`` cannot be a stage of itself: a chain of more stages is
not a rule any method of the survey uses, and nesting would hide which stage read which columns.

Registered selector: ``compose`` (reads ``id`` and the columns its two stages read).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from instsel_assets.registry import MethodInfo, get_selector, register_selector, selector_parameters
from instsel_assets.selection.ifd_top_fraction import top_fraction_budget
from instsel_assets.selection.random_subset import check_budget, require_columns

NAME = "compose"
FIRST_KEYS = ("selector", "params", "fraction", "size")
THEN_KEYS = ("selector", "params")


@dataclass(frozen=True)
class Stage:
    """One validated stage of a composition."""

    key: str  # "first" or "then": the parameter it came from, for error messages
    selector: MethodInfo
    params: dict[str, Any]
    fraction: float | None = None
    size: int | None = None

    def columns_read(self) -> tuple[str, ...]:
        return self.selector.columns_read(self.params)


def _stage(key: str, spec, allowed: tuple[str, ...]) -> Stage:
    if spec is None:
        raise ValueError(f"selector {NAME!r}: parameter {key!r} is required: a mapping with keys {list(allowed)}")
    if not isinstance(spec, Mapping):
        raise ValueError(f"selector {NAME!r}: parameter {key!r} must be a mapping with keys {list(allowed)}, "
                         f"got {spec!r}")
    unknown = sorted(str(k) for k in spec if k not in allowed)
    if unknown:
        raise ValueError(f"selector {NAME!r}: {key} has unknown key(s) {[f'{key}.{k}' for k in unknown]}; "
                         f"allowed: {list(allowed)}")
    name = spec.get("selector")
    if not isinstance(name, str) or not name:
        raise ValueError(f"selector {NAME!r}: {key}.selector must name a registered selector, got {name!r}")
    if name == NAME:
        raise ValueError(f"selector {NAME!r}: {key}.selector cannot be {NAME!r} itself; a composition has two "
                         f"stages, each a registered selector other than {NAME!r}")
    try:
        selector = get_selector(name)
    except KeyError as exc:
        raise ValueError(f"selector {NAME!r}: {key}.selector {name!r} is not a registered selector ({exc.args[0]})") \
            from None
    params = spec.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ValueError(f"selector {NAME!r}: {key}.params must be a mapping of {name!r}'s parameters, "
                         f"got {params!r}")
    accepted = selector_parameters(selector.fn)
    bad = sorted(str(k) for k in params if k not in accepted)
    if bad:
        raise ValueError(f"selector {NAME!r}: {[f'{key}.params.{k}' for k in bad]} are not parameters of selector "
                         f"{name!r}; it accepts {accepted or 'none'} (the seed is the composition's)")
    fraction = size = None
    if "fraction" in allowed:
        has_fraction, has_size = "fraction" in spec, "size" in spec
        if has_fraction == has_size:
            raise ValueError(f"selector {NAME!r}: {key} needs exactly one of {key}.fraction (a share of the "
                             f"candidates in (0, 1]) or {key}.size (a number of rows)")
        if has_fraction:
            fraction = spec["fraction"]
            if isinstance(fraction, (bool, np.bool_)) or not isinstance(fraction, numbers.Real) \
                    or not 0.0 < float(fraction) <= 1.0:
                raise ValueError(f"selector {NAME!r}: {key}.fraction must be a number in (0, 1], got {fraction!r}")
            fraction = float(fraction)
        else:
            size = spec["size"]
            if isinstance(size, (bool, np.bool_)) or not isinstance(size, numbers.Integral) or size < 1:
                raise ValueError(f"selector {NAME!r}: {key}.size must be a positive integer, got {size!r}")
            size = int(size)
    return Stage(key, selector, dict(params), fraction, size)


def stages(first, then) -> tuple[Stage, Stage]:
    """The two stages of a composition, validated; ``ValueError`` naming the first bad key."""
    return _stage("first", first, FIRST_KEYS), _stage("then", then, THEN_KEYS)


def columns_from_params(params: Mapping[str, Any]) -> tuple[str, ...]:
    """Every column the two stages read with their parameters (``ValueError`` for parameters that do not
    describe a valid composition, so that the error comes before any score table is read)."""
    first, then = stages(params.get("first"), params.get("then"))
    return tuple(dict.fromkeys([*first.columns_read(), *then.columns_read()]))


@register_selector(
    NAME,
    family="small-model",
    paper="Two-stage quality-then-diversity selection, as MoDS (Du et al. 2023: reward threshold, then "
          "k-center-greedy) and Superfiltering's diversity pass (Li et al. 2024)",
    summary="A first selector keeps `first.fraction` of the pool (or `first.size` rows); a second picks the "
            "budget among them, e.g. IFD top 20% then kcenter_greedy.",
    reads=("id",),
    fills_budget=False,
    reads_from_params=columns_from_params,
)
def select_compose(candidates: pd.DataFrame, budget: int, *, seed: int = 0, first: Mapping[str, Any] | None = None,
                   then: Mapping[str, Any] | None = None, **params) -> list[str]:
    """The second stage's ids among the first stage's rows (module docstring), at most ``budget``.

    ``ValueError`` for an unknown parameter, a bad stage (naming the key), a first stage allowed fewer rows
    than the budget, duplicate candidate ids, or a first stage that returns ids not among the candidates.
    """
    if params:
        raise ValueError(f"selector {NAME!r}: unknown parameter(s) {sorted(params)}; it takes 'first' and 'then'")
    first_stage, then_stage = stages(first, then)
    require_columns(candidates, ("id",), NAME)
    budget = check_budget(budget)
    if budget == 0 or len(candidates) == 0:
        return []
    n = len(candidates)
    if first_stage.size is not None:
        first_budget, asked = first_stage.size, f"first.size = {first_stage.size}"
    else:
        first_budget = top_fraction_budget(n, first_stage.fraction)
        asked = f"first.fraction = {first_stage.fraction:g} of {n} rows"
    if first_budget < min(budget, n):
        raise ValueError(f"selector {NAME!r}: {asked} keeps at most {first_budget} rows, fewer than the budget "
                         f"{budget}: the second stage would have nothing to choose; raise first.fraction / "
                         f"first.size or lower the budget")
    ids = pd.Index(candidates["id"].astype(str).to_numpy())
    if not ids.is_unique:
        raise ValueError(f"selector {NAME!r}: candidate ids are not unique, e.g. "
                         f"{ids[ids.duplicated()].unique()[:3].tolist()}")
    kept = [str(i) for i in first_stage.selector.fn(candidates, first_budget, seed=seed, **first_stage.params)]
    rows = ids.get_indexer(kept)
    if (rows < 0).any():
        raise ValueError(f"selector {NAME!r}: first stage {first_stage.selector.name!r} returned ids that are not "
                         f"candidates: {[i for i, r in zip(kept, rows) if r < 0][:3]}")
    if len(kept) == 0:
        return []
    shortlist = candidates.iloc[rows].reset_index(drop=True)  # in the first stage's selection order
    picked = then_stage.selector.fn(shortlist, budget, seed=seed, **then_stage.params)
    return [str(i) for i in picked]
