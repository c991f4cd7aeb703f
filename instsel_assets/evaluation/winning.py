"""Winning score, win rate and position consistency of a set of two-order pairwise judgements (docs/METHODS.md,
"Evaluation"; the rule itself is ``judge.templates.pairwise.verdict``).

An item is one question answered by model A and by a baseline B, judged twice: once with A shown first
(``score_ab = (A, B)``) and once with B shown first (``score_ba = (B, A)``). Its verdict for A is "win" (A rated
higher both times, or higher once and tied once), "lose" (the mirror) or "tie" (everything else). Over ``n_all``
items:

- ``winning_score`` = ``1 + (n_win - n_lose) / n_all`` (in [0, 2]; above 1 beats the baseline);
- ``win_rate`` = ``n_win / n_all`` (ties count as not won);
- ``position_consistency`` = the share of items whose two judgements prefer the same side (A both times, B both
  times, or a tie both times): a judge that always favours the first answer it reads scores 0 on pairs of
  answers of equal quality.

An item judged in one order only (some released review files hold one order) has a verdict from that order alone
(better = win, worse = lose, equal = tie) and no consistency: it is counted in ``n_one_order`` and left out of
the consistency rate's denominator.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from instsel_assets.judge.templates.pairwise import _pair, verdict, winning_score


def _sign(x: float, y: float) -> int:
    return (x > y) - (x < y)


@dataclass(frozen=True)
class Judgement:
    """One item's judgements, each in presentation order: ``score_ab = (A, B)``, ``score_ba = (B, A)``;
    either may be ``None`` (not judged in that order), not both."""

    score_ab: tuple[float, float] | None
    score_ba: tuple[float, float] | None
    item: str = ""

    def __post_init__(self) -> None:
        if self.score_ab is None and self.score_ba is None:
            raise ValueError(f"item {self.item!r}: neither order was judged")
        if self.score_ab is not None:
            object.__setattr__(self, "score_ab", _pair(self.score_ab, "score_ab"))
        if self.score_ba is not None:
            object.__setattr__(self, "score_ba", _pair(self.score_ba, "score_ba"))

    @property
    def both_orders(self) -> bool:
        return self.score_ab is not None and self.score_ba is not None

    def verdict(self) -> str:
        """"win", "lose" or "tie" for A (module docstring)."""
        if self.both_orders:
            return verdict(self.score_ab, self.score_ba)
        if self.score_ab is not None:
            a, b = self.score_ab
        else:
            b, a = self.score_ba
        return {1: "win", -1: "lose", 0: "tie"}[_sign(a, b)]

    def consistent(self) -> bool | None:
        """Whether both orders prefer the same side (None with one order)."""
        if not self.both_orders:
            return None
        a1, b1 = self.score_ab
        b2, a2 = self.score_ba
        return _sign(a1, b1) == _sign(a2, b2)


def summarise(judgements: Iterable[Judgement]) -> dict[str, Any]:
    """``n_all, n_win, n_tie, n_lose, winning_score, win_rate, n_two_orders, n_one_order, n_consistent,
    position_consistency`` (module docstring); WS, win rate and consistency are None when undefined."""
    items = list(judgements)
    verdicts = [j.verdict() for j in items]
    n_win, n_lose, n_tie = (verdicts.count(v) for v in ("win", "lose", "tie"))
    flags = [j.consistent() for j in items]
    two = [f for f in flags if f is not None]
    n_all = len(items)
    return {
        "n_all": n_all, "n_win": n_win, "n_tie": n_tie, "n_lose": n_lose,
        "winning_score": winning_score(n_win, n_lose, n_all) if n_all else None,
        "win_rate": n_win / n_all if n_all else None,
        "n_two_orders": len(two), "n_one_order": n_all - len(two), "n_consistent": sum(two),
        "position_consistency": sum(two) / len(two) if two else None,
    }


def summarise_columns(score_a_ab: Sequence[float], score_b_ab: Sequence[float], score_a_ba: Sequence[float],
                      score_b_ba: Sequence[float]) -> dict[str, Any]:
    """``summarise`` of judged rows given as the pairwise template's four columns (both orders present)."""
    return summarise(Judgement((a1, b1), (b2, a2))
                     for a1, b1, a2, b2 in zip(score_a_ab, score_b_ab, score_a_ba, score_b_ba))
