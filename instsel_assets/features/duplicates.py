"""Exact and near duplicates of pool rows (docs/METHODS.md, Family 1 indicators).

A selection that keeps several copies of one example spends its budget twice on the same thing, and a
near copy (a reworded answer, a changed number) is almost as wasteful. This module marks both kinds so that
a selector can keep one row per group.

What is compared: the whole example, every turn of ``conversations`` in order with its role (for a
single-turn row that is the instruction, the input and the output, as the user turn is ``instruction`` plus
``"\\n\\n" + input``); rows without conversations use the flat ``instruction`` / ``input`` / ``output``.
Each turn's content is normalised first: Unicode NFKC (full-width letters and digits become ASCII,
compatibility forms fold), ``str.casefold`` (case-insensitive, also for ß / ς), and every run of
whitespace collapsed to one space with the ends stripped. Spacing and letter case therefore never make two
rows different; punctuation does for exact duplicates and does not for near duplicates (it is no shingle).

Exact duplicates: rows whose normalised turns (roles included) are equal, found by their SHA-256.
The representative of a group is the row with the smallest ``id``.

Near duplicates (MinHash + LSH, ``datasketch``):

- shingles are n-grams of units: each CJK ideograph or kana (Unicode scripts Han, Hiragana, Katakana) is a
  unit of its own, because Chinese and Japanese are written without spaces and a whitespace split would
  make a whole sentence one token; any other run of letters, digits and combining marks is one unit (a
  word; Korean, written with spaces, is split into words); punctuation, symbols and whitespace only
  separate units. A row whose units are mostly (at least half) CJK characters is shingled with character
  ``char_ngram``-grams (4 by default: a Chinese word is 1.5-2 characters, so 4 characters span about the
  3 words of an English shingle); any other row with word ``word_ngram``-grams (3). A row with fewer
  units than ``n`` has one shingle, all its units. A row with no unit at all (only punctuation or symbols)
  has no shingle and is never a near duplicate of anything but its exact duplicates.
- one MinHash per row, ``num_perm`` permutations (128) from ``seed`` (1), datasketch's ``affine32``
  scheme named explicitly so that an upgrade of the library's default cannot change the signatures; rows
  are hashed in bulk (``MinHash.generator``), one row per exact-duplicate group and one LSH entry per
  distinct signature, so a pool with many copies of one text costs no quadratic candidate list;
- ``MinHashLSH`` at ``threshold`` (0.8) proposes candidate pairs and a pair is linked when its estimated
  Jaccard similarity (the share of equal signature values) is ``>= threshold``. Every candidate is checked
  against its signature, so a false candidate costs only that check while a missed pair is a duplicate
  kept: the bands are chosen by datasketch with weights ``lsh_weights`` = (0.05 false positive, 0.95 false
  negative), which gives 16 bands of 8 rows for 128 permutations and misses a pair of true Jaccard 0.85
  with probability ~0.6% and one of 0.9 with ~0.01% (datasketch's even weights, 9 bands of 13, miss 31%
  and 7%). At ``threshold = 1`` only identical signatures are linked and no LSH index is built;
- a near-duplicate cluster is a connected component of the linked pairs together with the exact-duplicate
  groups (an exact duplicate has Jaccard 1). Components are transitive: A ~ B and B ~ C put A and C in one
  cluster even when A and C are less similar than the threshold.

Every result depends on the rows' contents and ids only, never on their order in the pool: group and
cluster ids are the ids of their representatives (the smallest id), and ranks count members in id order.

Cost: 52K rows of ~75 words took 15-20 s on a shared 2-core CPU, most of it datasketch hashing the
shingles (SHA-1 per shingle); memory is one ``uint32`` signature of ``num_perm`` values per row.

Registered scorer: ``duplicates`` (columns :data:`DUPLICATE_COLUMNS`).
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import regex

from instsel_assets.features.text_stats import flat_text, is_missing
from instsel_assets.registry import register_scorer

DUPLICATE_COLUMNS = ("exact_dup_group", "exact_dup_rank", "near_dup_cluster", "near_dup_rank",
                     "near_dup_cluster_size")

DEFAULT_THRESHOLD = 0.8
DEFAULT_NUM_PERM = 128
DEFAULT_SEED = 1
DEFAULT_WORD_NGRAM = 3
DEFAULT_CHAR_NGRAM = 4
MINHASH_SCHEME = "affine32"
DEFAULT_LSH_WEIGHTS = (0.05, 0.95)  # (false positive, false negative): candidates are verified, misses are not

# One CJK character (Han ideograph, 々/〇 included in Han; hiragana; katakana) is a unit; any other run of
# letters, digits and combining marks is a unit.
_CJK = r"[\p{Han}\p{Hiragana}\p{Katakana}]"
_UNIT_RE = regex.compile(rf"{_CJK}|[[\p{{L}}\p{{N}}\p{{M}}]--{_CJK}]+", flags=regex.V1)
_CJK_RE = regex.compile(rf"^{_CJK}$", flags=regex.V1)


# ------------------------------------------------------------------------------------------- text of a row
def normalize_text(text: str) -> str:
    """NFKC, casefold, whitespace runs collapsed to one space, ends stripped."""
    return " ".join(unicodedata.normalize("NFKC", str(text)).casefold().split())


def row_turns(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(role, content)`` of every turn of a pool row, in order.

    From ``conversations`` when the row has one; otherwise the user turn is ``instruction`` followed by
    ``"\\n\\n" + input`` when ``input`` is non-empty (how the pool builds it) and the assistant turn is
    ``output``.
    """
    conv = row.get("conversations")
    if not is_missing(conv):
        try:
            turns = [(str(t["role"]), "" if is_missing(t.get("content")) else str(t["content"]))
                     for t in list(conv)]
        except (TypeError, KeyError) as exc:
            raise ValueError(f"row {row.get('id')!r}, field 'conversations': turns must be mappings with "
                             f"'role' and 'content' ({type(exc).__name__}: {exc})") from exc
        if turns:
            return turns
    instruction, inp = flat_text(row, "instruction"), flat_text(row, "input")
    user = instruction + ("\n\n" + inp if inp else "")
    return [("user", user), ("assistant", flat_text(row, "output"))]


def exact_key(turns: Iterable[tuple[str, str]]) -> str:
    """SHA-256 (hex) of the normalised turns with their roles: equal keys are exact duplicates."""
    h = hashlib.sha256()
    for role, content in turns:
        # \x1e / \x1f cannot survive normalisation inside a content (they are whitespace to str.split)
        h.update(f"{role}\x1f{normalize_text(content)}\x1e".encode("utf-8"))
    return h.hexdigest()


def shingle_units(text: str) -> list[str]:
    """Units of the normalised ``text``: one per CJK character, one per other word (module docstring)."""
    return _UNIT_RE.findall(normalize_text(text))


def is_cjk_text(units: list[str]) -> bool:
    """True when at least half of the units are single CJK characters (the row is shingled by character)."""
    if not units:
        return False
    return 2 * sum(1 for u in units if _CJK_RE.match(u)) >= len(units)


def shingles(text: str, *, word_ngram: int = DEFAULT_WORD_NGRAM, char_ngram: int = DEFAULT_CHAR_NGRAM) -> set[str]:
    """The shingle set of ``text``: character ``char_ngram``-grams for CJK text, word ``word_ngram``-grams
    otherwise; one shingle holding every unit when there are fewer units than ``n``; empty without units.
    Units are joined by a space (no unit contains one)."""
    units = shingle_units(text)
    if not units:
        return set()
    n = char_ngram if is_cjk_text(units) else word_ngram
    if len(units) <= n:
        return {" ".join(units)}
    return {" ".join(units[i:i + n]) for i in range(len(units) - n + 1)}


# ------------------------------------------------------------------------------------------- grouping
class _UnionFind:
    """Union-find over ``0..n-1`` whose root is always the smallest member (the id-order representative)."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return int(root)

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if ra < rb:
            self.parent[rb] = ra
        else:
            self.parent[ra] = rb
        return True

    def roots(self) -> np.ndarray:
        return np.fromiter((self.find(i) for i in range(len(self.parent))), dtype=np.int64,
                           count=len(self.parent))


def _rank_within(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For members already in id order (index = id rank): 0-based rank of each inside its group, and the
    group's size."""
    n = len(groups)
    rank = np.zeros(n, dtype=np.int64)
    seen: dict[int, int] = {}
    for i, g in enumerate(groups.tolist()):
        rank[i] = seen.get(g, 0)
        seen[g] = rank[i] + 1
    size = np.fromiter((seen[g] for g in groups.tolist()), dtype=np.int64, count=n)
    return rank, size


def _check_params(threshold: float, num_perm: int, word_ngram: int, char_ngram: int) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
    for name, value, low in (("num_perm", num_perm, 2), ("word_ngram", word_ngram, 1), ("char_ngram", char_ngram, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def minhash_signatures(shingle_sets: Iterable[set[str]], *, num_perm: int = DEFAULT_NUM_PERM,
                       seed: int = DEFAULT_SEED, max_rows: int | None = None) -> np.ndarray:
    """MinHash signatures, one row per shingle set: ``uint32`` array ``(n, num_perm)``.

    Computed in bulk with ``datasketch.MinHash.generator`` (one set of permutations shared by every row);
    shingles are fed in sorted order so the result does not depend on set iteration order (MinHash is
    order-free anyway, this only keeps the hashing reproducible to the byte). ``shingle_sets`` may be a
    generator, consumed one set at a time (no set outlives its signature), when ``max_rows`` bounds how
    many it yields.
    """
    from datasketch import MinHash

    if max_rows is None:
        shingle_sets = list(shingle_sets)
        max_rows = len(shingle_sets)
    out = np.empty((max_rows, num_perm), dtype=np.uint32)
    data = ([s.encode("utf-8") for s in sorted(shingle_set)] for shingle_set in shingle_sets)
    n = 0
    for n, m in enumerate(MinHash.generator(data, num_perm=num_perm, seed=seed, scheme=MINHASH_SCHEME), start=1):
        if n > max_rows:
            raise ValueError(f"minhash_signatures: more than max_rows={max_rows} shingle sets")
        out[n - 1] = m.hashvalues
    return out[:n]


def near_duplicate_pairs(signatures: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD,
                         seed: int = DEFAULT_SEED, lsh_weights: tuple[float, float] = DEFAULT_LSH_WEIGHTS,
                         ) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """Pairs ``(i, j)``, ``i < j``, of rows of ``signatures`` proposed by ``MinHashLSH`` at ``threshold``
    (bands chosen with ``lsh_weights``: false-positive, false-negative weight) whose estimated Jaccard
    similarity (share of equal signature values) is ``>= threshold``. ``threshold`` must be below 1.

    Returns the pairs (sorted) and counts: ``lsh_bands``, ``lsh_rows`` (band width), ``n_candidate_pairs``.
    """
    from datasketch import LeanMinHash, MinHashLSH

    n, num_perm = signatures.shape
    lsh = MinHashLSH(threshold=float(threshold), num_perm=int(num_perm),
                     weights=(float(lsh_weights[0]), float(lsh_weights[1])))
    # one short-lived LeanMinHash per row and pass (not a list of n of them: ~1 KB each at 1M rows)
    with lsh.insertion_session() as session:
        for i in range(n):
            session.insert(i, LeanMinHash(seed=seed, hashvalues=signatures[i], scheme=MINHASH_SCHEME),
                           check_duplication=False)
    need = math.ceil(float(threshold) * num_perm - 1e-9)  # equal values needed for the estimate to reach it
    pairs: list[tuple[int, int]] = []
    n_candidates = 0
    for i in range(n):
        m = LeanMinHash(seed=seed, hashvalues=signatures[i], scheme=MINHASH_SCHEME)
        cand = np.fromiter((j for j in lsh.query(m) if j > i), dtype=np.int64)
        if cand.size == 0:
            continue
        n_candidates += int(cand.size)
        equal = (signatures[cand] == signatures[i]).sum(axis=1)
        pairs.extend((i, int(j)) for j in np.sort(cand[equal >= need]))
    return pairs, {"lsh_bands": int(lsh.b), "lsh_rows": int(lsh.r), "n_candidate_pairs": n_candidates}


# ------------------------------------------------------------------------------------------- scorer
@register_scorer(
    "duplicates",
    family="metric-set",
    paper="Indicators of docs/METHODS.md Family 1 (exact and near duplicates; MinHash, Broder 1997; LSH)",
    summary="Exact duplicates (SHA-256 of the NFKC-casefolded, whitespace-collapsed turns) and near-duplicate "
            "clusters (MinHash + LSH over character n-grams for CJK text and word n-grams otherwise, "
            "estimated Jaccard >= 0.8, connected components); representatives are the smallest ids.",
    writes=DUPLICATE_COLUMNS,
)
def duplicates(pool: pd.DataFrame, *, threshold: float = DEFAULT_THRESHOLD, num_perm: int = DEFAULT_NUM_PERM,
               seed: int = DEFAULT_SEED, word_ngram: int = DEFAULT_WORD_NGRAM,
               char_ngram: int = DEFAULT_CHAR_NGRAM,
               lsh_weights: tuple[float, float] = DEFAULT_LSH_WEIGHTS) -> pd.DataFrame:
    """Scorer: one row per pool row, in pool order: ``id`` and :data:`DUPLICATE_COLUMNS`.

    - ``exact_dup_group``: id of the group's representative (its smallest id; a row with no exact duplicate
      is its own group); ``exact_dup_rank``: 0 for the representative, then 1, 2, ... in id order;
    - ``near_dup_cluster`` / ``near_dup_rank`` / ``near_dup_cluster_size``: the same for the near-duplicate
      clusters (module docstring), which contain the exact-duplicate groups; size 1 means no near duplicate.

    ``pool`` needs ``id`` (unique) and ``conversations`` or the flat ``instruction`` / ``input`` /
    ``output``. ``out.attrs``: the settings (``lsh_weights`` included), ``lsh_bands`` / ``lsh_rows`` (0 when
    no index was built), ``n_exact_duplicates`` (rows of exact rank > 0), ``n_exact_groups`` (groups of 2+),
    ``n_near_duplicates`` (rows of near rank > 0), ``n_near_clusters`` (clusters of 2+),
    ``n_candidate_pairs``, ``n_linked_pairs`` and ``n_no_shingles`` (exact groups with no shingle).
    """
    _check_params(threshold, num_perm, word_ngram, char_ngram)
    if "id" not in pool.columns:
        raise ValueError(f"duplicates needs column 'id'; pool has {list(pool.columns)}")
    if "conversations" not in pool.columns and not {"instruction", "output"} <= set(pool.columns):
        raise ValueError("duplicates needs column 'conversations' or columns 'instruction' and 'output'; "
                         f"pool has {list(pool.columns)}")
    ids = pool["id"].astype(str).to_numpy()
    if len(set(ids.tolist())) != len(ids):
        dup = pd.Series(ids).value_counts()
        raise ValueError(f"duplicates needs unique ids; repeated: {dup[dup > 1].index[:5].tolist()}")
    n = len(ids)
    # Work in id order: index k is the row with the k-th smallest id, so "smallest index" = representative.
    order = np.argsort(ids, kind="stable")
    cols = list(pool.columns)
    records = list(pool.itertuples(index=False, name=None))
    turns = [row_turns(dict(zip(cols, records[p]))) for p in order.tolist()]

    # exact: key -> first index in id order
    first: dict[str, int] = {}
    exact_root = np.empty(n, dtype=np.int64)
    for k, t in enumerate(turns):
        exact_root[k] = first.setdefault(exact_key(t), k)
    exact_rank, _ = _rank_within(exact_root)

    # near: one signature per exact group, one LSH entry per distinct signature
    uf = _UnionFind(n)
    for k in range(n):
        uf.union(int(exact_root[k]), k)
    reps = np.flatnonzero(exact_root == np.arange(n))
    has_shingles = np.zeros(len(reps), dtype=bool)

    def rep_shingles() -> Iterable[set[str]]:
        # streamed into the hashing: the shingle sets of a large pool never sit in memory together
        for pos, k in enumerate(reps.tolist()):
            found = shingles(" ".join(c for _, c in turns[k]), word_ngram=word_ngram, char_ngram=char_ngram)
            if found:
                has_shingles[pos] = True
                yield found

    sigs = minhash_signatures(rep_shingles(), num_perm=num_perm, seed=seed, max_rows=len(reps))
    hashed = reps[has_shingles]
    by_signature: dict[bytes, int] = {}
    unique_pos: list[int] = []
    for pos, k in enumerate(hashed.tolist()):
        owner = by_signature.setdefault(sigs[pos].tobytes(), k)
        if owner == k:
            unique_pos.append(pos)
        else:
            uf.union(owner, k)  # identical signatures: estimated Jaccard 1
    stats = {"lsh_bands": 0, "lsh_rows": 0, "n_candidate_pairs": 0}
    n_linked = 0
    if len(unique_pos) > 1 and threshold < 1.0:
        pairs, stats = near_duplicate_pairs(sigs[unique_pos], threshold=threshold, seed=seed,
                                            lsh_weights=lsh_weights)
        unique_rows = hashed[unique_pos]
        for a, b in pairs:
            uf.union(int(unique_rows[a]), int(unique_rows[b]))
        n_linked = len(pairs)
    near_root = uf.roots()
    near_rank, near_size = _rank_within(near_root)

    # back to pool order
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    sorted_ids = ids[order]
    out = pd.DataFrame({
        "id": ids,
        "exact_dup_group": sorted_ids[exact_root][inverse].astype(object),
        "exact_dup_rank": exact_rank[inverse],
        "near_dup_cluster": sorted_ids[near_root][inverse].astype(object),
        "near_dup_rank": near_rank[inverse],
        "near_dup_cluster_size": near_size[inverse],
    })
    out.attrs.update({
        "threshold": float(threshold), "num_perm": int(num_perm), "seed": int(seed),
        "word_ngram": int(word_ngram), "char_ngram": int(char_ngram), "minhash_scheme": MINHASH_SCHEME,
        "lsh_weights": [float(w) for w in lsh_weights],
        **stats,
        "n_exact_duplicates": int((exact_rank > 0).sum()),
        "n_exact_groups": int((exact_rank == 1).sum()),
        "n_near_duplicates": int((near_rank > 0).sum()),
        "n_near_clusters": int((near_rank == 1).sum()),
        "n_linked_pairs": int(n_linked),
        "n_no_shingles": int((~has_shingles).sum()),
    })
    return out
