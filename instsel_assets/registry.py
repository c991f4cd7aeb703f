"""The method registry: every scorer and selector, with its family from docs/METHODS.md.

Scorers compute columns; selectors read columns and decide which rows to keep (data-juicer's
split of stats from decisions). Each method module registers itself on import with
``@register_scorer`` or ``@register_selector``; ``load_all()`` imports every method module.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

FAMILIES = {
    "metric-set": "Family 1: metric-set methods (indicators)",
    "trainable-llm": "Family 2: trainable-LLM methods",
    "powerful-llm": "Family 3: powerful-LLM methods (judge)",
    "small-model": "Family 4: small-model methods",
    "baseline": "Baselines every comparison needs",
}


@dataclass(frozen=True)
class MethodInfo:
    name: str
    kind: str  # "scorer" or "selector"
    family: str  # a key of FAMILIES
    paper: str
    summary: str
    columns: tuple[str, ...] = field(default=())  # scorer: columns written; selector: columns read
    fn: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    # Selectors only: False for a threshold rule that keeps fewer than `budget` rows when fewer qualify.
    fills_budget: bool = True
    # Selectors only: the further columns read that the selector's parameters name (see register_selector).
    reads_from_params: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = field(
        default=None, compare=False, repr=False)

    def columns_read(self, params: Mapping[str, Any] | None = None) -> tuple[str, ...]:
        """The columns this selector reads when called with ``params``: the static ``columns``, then those
        ``reads_from_params(params)`` names, each once, in that order. ``reads_from_params`` may raise
        ``ValueError`` for parameters it cannot interpret, before any table is loaded."""
        columns = list(self.columns)
        if self.reads_from_params is not None:
            for column in self.reads_from_params(dict(params or {})):
                if column not in columns:
                    columns.append(column)
        return tuple(columns)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "family": self.family,
            "family_title": FAMILIES[self.family],
            "paper": self.paper,
            "summary": self.summary,
            "columns": list(self.columns),
            **({"fills_budget": self.fills_budget, "columns_from_params": self.reads_from_params is not None}
               if self.kind == "selector" else {}),
        }


SCORERS: dict[str, MethodInfo] = {}
SELECTORS: dict[str, MethodInfo] = {}


def _register(table: dict[str, MethodInfo], kind: str, name: str, family: str, paper: str,
              summary: str, columns: tuple[str, ...], fills_budget: bool = True,
              reads_from_params: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None) -> Callable:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} for {kind} {name!r}; expected one of {sorted(FAMILIES)}")

    def decorate(fn: Callable) -> Callable:
        if name in table and table[name].fn is not fn:
            raise ValueError(f"{kind} {name!r} is registered twice")
        table[name] = MethodInfo(name, kind, family, paper, summary, tuple(columns), fn, fills_budget,
                                 reads_from_params)
        return fn

    return decorate


def register_scorer(name: str, *, family: str, paper: str, summary: str, writes: tuple[str, ...] = ()):
    """Register a scorer: a function that computes score columns for pool rows."""
    return _register(SCORERS, "scorer", name, family, paper, summary, writes)


def register_selector(name: str, *, family: str, paper: str, summary: str, reads: tuple[str, ...] = (),
                      fills_budget: bool = True,
                      reads_from_params: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None):
    """Register a selector: ``fn(candidates: DataFrame, budget: int, *, seed: int, **params) -> list[str]``
    returning the selected ids in selection order.

    ``fills_budget=False`` declares a threshold rule: it returns fewer than ``budget`` ids when fewer rows
    pass its threshold, and the selection's size check then accepts 1..budget rows instead of exactly budget.

    ``reads_from_params`` is for generic selectors whose parameters name the columns they read (``threshold``'s
    ``column``, or the stages of ``compose``): given the parameters of a call, it returns those columns, so that
    the tables holding them are loaded (``MethodInfo.columns_read``). ``reads`` then lists only the columns read
    whatever the parameters.
    """
    return _register(SELECTORS, "selector", name, family, paper, summary, reads, fills_budget, reads_from_params)


def selector_parameters(fn: Callable) -> list[str]:
    """The keyword parameters a selector function names, besides ``candidates``, ``budget`` and ``seed``: the
    keys its ``params`` may hold (selectors also take ``**params``, so any other key would be ignored)."""
    skip = {"candidates", "budget", "seed"}
    return [name for name, p in inspect.signature(fn).parameters.items()
            if name not in skip and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


_METHOD_PACKAGES = ("instsel_assets.features", "instsel_assets.scoring", "instsel_assets.selection",
                    "instsel_assets.judge.templates")


def load_all() -> None:
    """Import every method module so that its registration runs."""
    for pkg_name in _METHOD_PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{pkg_name}.{mod.name}")


def get_selector(name: str) -> MethodInfo:
    load_all()
    try:
        return SELECTORS[name]
    except KeyError:
        raise KeyError(f"no selector named {name!r}; registered: {sorted(SELECTORS)}") from None


def get_scorer(name: str) -> MethodInfo:
    load_all()
    try:
        return SCORERS[name]
    except KeyError:
        raise KeyError(f"no scorer named {name!r}; registered: {sorted(SCORERS)}") from None
