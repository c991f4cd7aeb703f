"""Tokenizer-aware word statistics: words, type-token ratio, MTLD, script-based language.

These are the lexical-diversity indicators of docs/METHODS.md, Family 1, written so that they work on
Chinese text (the survey's open challenge 3): a Chinese sentence has no spaces, so a whitespace
split would make it one "word". Here every CJK ideograph is its own token.

The module also holds the helpers that turn a pool row into its user text and its response text,
shared by every text indicator (``indicators.py``, ``embeddings.py``).

Registered scorer: ``lexical_diversity`` (columns ``ttr``, ``mtld``, ``language``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import regex

from instsel_assets.registry import register_scorer

# A CJK ideograph (Unicode script Han: the CJK Unified Ideographs blocks and extensions,
# compatibility ideographs, plus 々 and 〇) is one token. Any other run of letters, digits and
# combining marks is one token; an apostrophe inside such a run joins it ("don't" is one token).
# Everything else (spaces, punctuation, symbols, "_") separates tokens and is dropped.
_WORD_CHARS = r"[[\p{L}\p{N}\p{M}]--[\p{Han}]]"
_WORD_RE = regex.compile(
    rf"\p{{Han}}|{_WORD_CHARS}+(?:['’]{_WORD_CHARS}+)*",
    flags=regex.V1,
)


def words(text: str) -> list[str]:
    """Lowercased word tokens of ``text``.

    - every CJK ideograph is its own token (``"我爱你"`` -> ``["我", "爱", "你"]``);
    - other runs of Unicode letters / digits / combining marks are tokens, lowercased
      (``"Hello, World!"`` -> ``["hello", "world"]``; ``"3.14"`` -> ``["3", "14"]``);
    - an apostrophe between letters stays inside the word (``"don't"`` is one token);
    - punctuation, symbols, whitespace and ``_`` are dropped.

    Kana and Hangul are not split per character: a run of them is one token.
    """
    if not text:
        return []
    return _WORD_RE.findall(str(text).lower())


def type_token_ratio(tokens: Sequence[str]) -> float:
    """Distinct tokens / tokens. 0.0 for no tokens."""
    if len(tokens) == 0:
        return 0.0
    return len(set(tokens)) / len(tokens)


def _mtld_pass(tokens: Sequence[str], threshold: float) -> float:
    """One directional MTLD pass: the number of tokens per factor (McCarthy & Jarvis 2010).

    The running TTR is computed token by token; each time it falls to ``threshold`` or below a
    full factor is counted and the segment restarts. The remainder adds a partial factor
    ``(1 - TTR_remainder) / (1 - threshold)``. A pass with zero factors (only when every token is
    distinct) has no defined value; the token count is returned for it.
    """
    factors = 0.0
    seen: set[str] = set()
    count = 0
    ttr = 1.0
    for tok in tokens:
        count += 1
        seen.add(tok)
        ttr = len(seen) / count
        if ttr <= threshold:
            factors += 1.0
            seen = set()
            count = 0
            ttr = 1.0
    if count > 0:
        factors += (1.0 - ttr) / (1.0 - threshold)
    if factors <= 0.0:
        return float(len(tokens))
    return len(tokens) / factors


def mtld(tokens: Sequence[str], threshold: float = 0.72, min_tokens: int = 10) -> float:
    """Measure of Textual Lexical Diversity (McCarthy & Jarvis 2010), forward and backward averaged.

    Each pass counts "factors": stretches of text whose running type-token ratio stays above
    ``threshold`` (0.72 in the paper); the remainder counts as a partial factor
    ``(1 - TTR) / (1 - threshold)``; the pass value is ``len(tokens) / factors``. MTLD is the
    mean of the forward pass and the pass over the reversed tokens. Higher is more diverse.

    Edge cases (never NaN):
    - no tokens: 0.0;
    - fewer than ``min_tokens`` tokens (10 by default; MTLD is unstable on short texts, the paper
      recommends 100+): the token count itself, so short texts rank by length;
    - a pass with zero factors (every token distinct): that pass is the token count.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    tokens = list(tokens)
    n = len(tokens)
    if n == 0:
        return 0.0
    if n < min_tokens:
        return float(n)
    return (_mtld_pass(tokens, threshold) + _mtld_pass(tokens[::-1], threshold)) / 2.0


# Script of a letter -> ISO 639-1 code. Latin script is "en" for every Latin-script language for
# now (no statistical detector is bundled); Han is "zh" unless kana appear ("ja").
def _script(ch: str) -> str | None:
    cp = ord(ch)
    if (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF
            or 0x20000 <= cp <= 0x3134F or cp in (0x3005, 0x3007)):
        return "han"
    if 0x3040 <= cp <= 0x30FF or 0x31F0 <= cp <= 0x31FF or 0xFF66 <= cp <= 0xFF9D:
        return "kana"
    if 0xAC00 <= cp <= 0xD7AF or 0x1100 <= cp <= 0x11FF or 0x3130 <= cp <= 0x318F or 0xA960 <= cp <= 0xA97F:
        return "hangul"
    if 0x0400 <= cp <= 0x052F or 0x1C80 <= cp <= 0x1C8F or 0x2DE0 <= cp <= 0x2DFF or 0xA640 <= cp <= 0xA69F:
        return "cyrillic"
    if (0x0600 <= cp <= 0x06FF or 0x0750 <= cp <= 0x077F or 0x08A0 <= cp <= 0x08FF
            or 0xFB50 <= cp <= 0xFDFF or 0xFE70 <= cp <= 0xFEFF):
        return "arabic"
    if 0x0370 <= cp <= 0x03FF or 0x1F00 <= cp <= 0x1FFF:
        return "greek"
    if 0x0590 <= cp <= 0x05FF:
        return "hebrew"
    if 0x0900 <= cp <= 0x097F:
        return "devanagari"
    if 0x0E00 <= cp <= 0x0E7F:
        return "thai"
    if (cp < 0x0250 or 0x1E00 <= cp <= 0x1EFF or 0xFF21 <= cp <= 0xFF5A or 0x2C60 <= cp <= 0x2C7F
            or 0xA720 <= cp <= 0xA7FF):
        return "latin"
    return "other"


_SCRIPT_LANG = {
    "han": "zh",
    "hangul": "ko",
    "cyrillic": "ru",
    "arabic": "ar",
    "greek": "el",
    "hebrew": "he",
    "devanagari": "hi",
    "thai": "th",
    "latin": "en",
    "other": "und",
}


def detect_language(text: str) -> str:
    """ISO 639-1 code of the dominant script of ``text`` (a script detector, not a statistical one).

    The text is split with :func:`words`; each token that contains a letter votes for the script
    of its first letter (so one CJK ideograph weighs as much as one Latin word, and a Chinese
    instruction quoting ``Python`` stays Chinese). The script with most votes wins:

    - Han / kana: ``ja`` if any kana token is present, else ``zh``;
    - Hangul ``ko``, Cyrillic ``ru``, Arabic ``ar``, Greek ``el``, Hebrew ``he``,
      Devanagari ``hi``, Thai ``th``;
    - Latin: ``en`` -- every Latin-script language (French, German, Vietnamese...) is ``en`` for now;
    - no letters at all (empty, digits, punctuation) or another script: ``und``.

    Ties are broken in the order of the list above (CJK first).
    """
    votes: dict[str, int] = {}
    for tok in words(text):
        for ch in tok:
            if ch.isalpha():
                s = _script(ch)
                votes[s] = votes.get(s, 0) + 1
                break
    if not votes:
        return "und"
    cjk = votes.get("han", 0) + votes.get("kana", 0)
    order = ["cjk", "hangul", "cyrillic", "arabic", "greek", "hebrew", "devanagari", "thai", "latin", "other"]
    counts = {"cjk": cjk, **{k: votes.get(k, 0) for k in order[1:]}}
    best = max(order, key=lambda k: (counts[k], -order.index(k)))
    if best == "cjk":
        return "ja" if votes.get("kana", 0) > 0 else "zh"
    return _SCRIPT_LANG[best]


# ---------------------------------------------------------------- pool rows -> texts


def is_missing(value: Any) -> bool:
    """None or a float NaN (what pandas/DuckDB give for a missing scalar)."""
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return False


def turn_contents(conversations: Any, role: str | None = None) -> list[str] | None:
    """The contents of every turn with ``role`` (every turn when ``role`` is None), in order.

    ``conversations`` is any sequence of ``{"role", "content"}`` mappings (DuckDB returns a numpy
    array of dicts). ``None`` when there is no conversation at all (missing or empty), so callers
    can fall back to the flat columns; ``[]`` when the conversation has no turn with ``role``.
    """
    if is_missing(conversations):
        return None
    try:
        turns = list(conversations)
    except TypeError:
        return None
    if not turns:
        return None
    return [str(t["content"]) for t in turns if isinstance(t, Mapping) and (role is None or t.get("role") == role)
            and not is_missing(t.get("content"))]


def turns_text(conversations: Any, role: str, sep: str = "\n") -> str | None:
    """The contents of every turn with ``role``, joined by ``sep`` (see :func:`turn_contents`)."""
    parts = turn_contents(conversations, role)
    return None if parts is None else sep.join(parts)


def flat_text(row: Mapping[str, Any], col: str) -> str:
    """A flat text column of a row as a string (missing -> \"\")."""
    v = row.get(col)
    return "" if is_missing(v) else str(v)


def user_text(row: Mapping[str, Any]) -> str:
    """All user turns joined; without conversations, ``instruction`` and ``input`` joined."""
    t = turns_text(row.get("conversations"), "user")
    if t is not None:
        return t
    return "\n".join(p for p in (flat_text(row, "instruction"), flat_text(row, "input")) if p)


def response_text(row: Mapping[str, Any]) -> str:
    """All assistant turns joined; without conversations, ``output``."""
    t = turns_text(row.get("conversations"), "assistant")
    if t is not None:
        return t
    return flat_text(row, "output")


def _rows(pool: pd.DataFrame) -> Iterable[dict[str, Any]]:
    cols = list(pool.columns)
    for values in pool.itertuples(index=False, name=None):
        yield dict(zip(cols, values))


@register_scorer(
    "lexical_diversity",
    family="metric-set",
    paper="McCarthy & Jarvis 2010 (MTLD); indicators of InstructMining (Cao et al. 2023)",
    summary="Type-token ratio and MTLD of the response (CJK-aware words), script-based language of the user turns.",
    writes=("ttr", "mtld", "language"),
)
def lexical_diversity(pool: pd.DataFrame, *, threshold: float = 0.72) -> pd.DataFrame:
    """Scorer: one row per pool row with ``id, ttr, mtld, language``.

    TTR and MTLD are computed on the response (all assistant turns joined) with :func:`words`;
    the language on the user turns joined.
    """
    if "id" not in pool.columns:
        raise ValueError("lexical_diversity needs column 'id'")
    ttrs, mtlds, langs = [], [], []
    for row in _rows(pool):
        toks = words(response_text(row))
        ttrs.append(type_token_ratio(toks))
        mtlds.append(mtld(toks, threshold=threshold))
        langs.append(detect_language(user_text(row)))
    return pd.DataFrame(
        {
            "id": pool["id"].astype(str).to_numpy(),
            "ttr": pd.Series(ttrs, dtype="float64").to_numpy(),
            "mtld": pd.Series(mtlds, dtype="float64").to_numpy(),
            "language": pd.Series(langs, dtype="object").to_numpy(),
        }
    )
