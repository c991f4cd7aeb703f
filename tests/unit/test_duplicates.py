"""Exact and near duplicates: normalisation, CJK-aware shingles, planted near duplicates found among ~2,000
synthetic rows while unrelated and half-similar rows stay apart, id-order representatives, and results that
do not depend on row order."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from instsel_assets.features.duplicates import (
    DUPLICATE_COLUMNS,
    duplicates,
    exact_key,
    is_cjk_text,
    normalize_text,
    row_turns,
    shingle_units,
    shingles,
)
from instsel_assets.registry import SCORERS

WORDS = ("apple river stone garden window silver market engine planet forest yellow number bridge candle "
         "travel winter summer ocean mountain letter doctor teacher music painting kitchen village castle "
         "dragon rocket bottle camera island desert violin pencil mirror ladder garden blanket thunder "
         "lantern harbor meadow puzzle saddle falcon marble velvet cactus glacier compass ember orchard").split()
# Common Chinese characters (no "龙", the character the planted edits insert).
HAN = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所"
    "民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日"
    "那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想"
    "已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指"
    "几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权"
    "收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集"
    "温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支"
    "般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属"
    "圆包火住调满县局照参红细引听该铁价严"
)


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def han_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(HAN) for _ in range(n)) + "。"


def row(row_id: str, instruction: str, output: str, inp: str = "") -> dict:
    user = instruction + ("\n\n" + inp if inp else "")
    return {"id": row_id, "instruction": instruction, "input": inp, "output": output,
            "conversations": [{"role": "user", "content": user}, {"role": "assistant", "content": output}]}


def replace_word(text: str, position: int, new: str) -> str:
    parts = text.split(" ")
    parts[position] = new
    return " ".join(parts)


def by_id(out: pd.DataFrame) -> dict[str, dict]:
    return out.set_index("id").to_dict("index")


# ---------------------------------------------------------------------------------- text normalisation
def test_normalize_nfkc_casefold_and_whitespace():
    assert normalize_text("  Ｈｅｌｌｏ\t\tWORLD\n１２３  ") == "hello world 123"
    assert normalize_text("Straße") == normalize_text("STRASSE")
    assert normalize_text("你好\u3000世界") == "你好 世界"  # ideographic space is whitespace after NFKC


def test_chinese_text_is_split_per_character_and_shingled_by_character():
    units = shingle_units("今天天气很好，我们去公园散步吧！")
    assert units == list("今天天气很好我们去公园散步吧")
    assert is_cjk_text(units)
    sh = shingles("今天天气很好，我们去公园散步吧！")
    assert "今 天 天 气" in sh and len(sh) == len(units) - 3  # character 4-grams, not one token
    mixed = shingle_units("请把这句话翻译成英文：The weather is nice today.")
    assert "weather" in mixed and "请" in mixed and is_cjk_text(mixed)
    english = shingle_units("Don't panic, it's only 3.14!")
    assert english == ["don", "t", "panic", "it", "s", "only", "3", "14"] and not is_cjk_text(english)
    assert shingles("one two three four", word_ngram=3) == {"one two three", "two three four"}
    assert shingles("just two", word_ngram=3) == {"just two"}
    assert shingles("?!…", word_ngram=3) == set()


def test_exact_key_ignores_case_width_and_spacing_not_roles_or_boundaries():
    a = exact_key([("user", "Name  the COLOURS."), ("assistant", "Red,\nblue.")])
    assert a == exact_key([("user", "name the colours."), ("assistant", " ｒｅｄ, blue. ")])
    assert a != exact_key([("user", "name the colours. red,"), ("assistant", "blue.")])
    assert a != exact_key([("assistant", "Name the COLOURS."), ("user", "Red,\nblue.")])
    assert a != exact_key([("user", "Name the colours!"), ("assistant", "Red,\nblue.")])  # punctuation counts


def test_row_turns_flat_fallback_matches_the_pool_conversation():
    r = row("x", "Summarise this.", "A summary.", inp="Some long text.")
    flat = {k: v for k, v in r.items() if k != "conversations"}
    assert row_turns(r) == row_turns(flat) == [("user", "Summarise this.\n\nSome long text."),
                                                ("assistant", "A summary.")]
    assert row_turns({**flat, "conversations": None}) == row_turns(flat)


# ---------------------------------------------------------------------------------- the scorer
@pytest.fixture(scope="module")
def planted():
    """~2,000 synthetic rows: unrelated rows, planted exact and near duplicates (English and Chinese), and
    half-similar pairs that must stay apart. Returns (pool, expected clusters as sets of ids)."""
    rng = random.Random(7)
    rows: list[dict] = []
    clusters: list[set[str]] = []
    half_pairs: list[tuple[str, str]] = []

    def new_id() -> str:
        return f"r{rng.getrandbits(40):010x}"

    for _ in range(1700):  # unrelated English rows, many sharing the same instruction template
        instruction = rng.choice(["Write a short paragraph.", "Explain the following idea.", sentence(rng, 8)])
        rows.append(row(new_id(), instruction, sentence(rng, rng.randint(40, 80))))
    for _ in range(150):  # unrelated Chinese rows
        rows.append(row(new_id(), han_text(rng, 12), han_text(rng, rng.randint(50, 90))))
    for k in range(40):  # near duplicates: one word changed in a long answer, plus case/spacing-only copies
        base_out = sentence(rng, 70)
        ins = sentence(rng, 10)
        a, b, c = new_id(), new_id(), new_id()
        rows.append(row(a, ins, base_out))
        rows.append(row(b, ins, replace_word(base_out, 35, "zeppelin")))
        rows.append(row(c, ins.upper(), "  " + base_out.replace(" ", "   ") + "\n"))
        clusters.append({a, b, c})
    for k in range(25):  # Chinese near duplicates: one character changed, one appended phrase
        ins, out = han_text(rng, 15), han_text(rng, 80)
        a, b = new_id(), new_id()
        rows.append(row(a, ins, out))
        rows.append(row(b, ins, out[:40] + "龙" + out[41:]))
        clusters.append({a, b})
    for k in range(20):  # half-similar pairs (true Jaccard ~0.3-0.5): must NOT be merged
        ins, out = sentence(rng, 10), sentence(rng, 70)
        words_ = out.split(" ")
        a, b = new_id(), new_id()
        rows.append(row(a, ins, out))
        rows.append(row(b, ins, " ".join(words_[:35] + sentence(rng, 35).split(" "))))
        half_pairs.append((a, b))
    rng.shuffle(rows)
    pool = pd.DataFrame(rows)
    assert pool["id"].is_unique and len(pool) >= 2000
    return pool, clusters, half_pairs


@pytest.fixture(scope="module")
def planted_out(planted):
    return duplicates(planted[0])


def true_jaccard(pool: pd.DataFrame, a: str, b: str) -> float:
    text = {r["id"]: " ".join(c for _, c in row_turns(r)) for r in pool[pool["id"].isin((a, b))].to_dict("records")}
    sa, sb = shingles(text[a]), shingles(text[b])
    return len(sa & sb) / len(sa | sb)


def test_planted_near_duplicates_are_found_and_nothing_else_is_merged(planted, planted_out):
    pool, clusters, half_pairs = planted
    out = planted_out
    assert list(out.columns) == ["id", *DUPLICATE_COLUMNS]
    assert out["id"].tolist() == pool["id"].tolist()  # pool order
    got = by_id(out)
    for members in clusters:
        ids = sorted(members)
        pair_j = [true_jaccard(pool, ids[0], other) for other in ids[1:]]
        assert min(pair_j) >= 0.85, "the planted pair should be a clear near duplicate"
        assert {got[i]["near_dup_cluster"] for i in ids} == {ids[0]}
        assert sorted(got[i]["near_dup_rank"] for i in ids) == list(range(len(ids)))
        assert got[ids[0]]["near_dup_rank"] == 0
        assert all(got[i]["near_dup_cluster_size"] == len(ids) for i in ids)
    planted_ids = set().union(*clusters)
    others = out[~out["id"].isin(planted_ids)]
    assert (others["near_dup_cluster_size"] == 1).all(), others[others["near_dup_cluster_size"] > 1]
    assert (others["near_dup_cluster"] == others["id"]).all() and (others["near_dup_rank"] == 0).all()
    for a, b in half_pairs:
        assert 0.2 < true_jaccard(pool, a, b) < 0.6
        assert got[a]["near_dup_cluster"] != got[b]["near_dup_cluster"]
    assert out.attrs["n_near_clusters"] == len(clusters)
    assert out.attrs["n_near_duplicates"] == sum(len(c) - 1 for c in clusters)
    assert out.attrs["num_perm"] == 128 and out.attrs["threshold"] == 0.8 and out.attrs["lsh_bands"] > 1


def test_exact_groups_are_case_and_spacing_copies_with_the_smallest_id_first(planted, planted_out):
    pool, clusters, _ = planted
    got = by_id(planted_out)
    english = [c for c in clusters if len(c) == 3]
    for members in english:
        groups: dict[str, list[str]] = {}
        for i in sorted(members):
            groups.setdefault(got[i]["exact_dup_group"], []).append(i)
        # the original and its case/spacing copy form one group; the edited row is its own group
        assert sorted(len(g) for g in groups.values()) == [1, 2]
        for rep, group in groups.items():
            assert rep == group[0] == min(group)
            assert [got[i]["exact_dup_rank"] for i in group] == list(range(len(group)))
    # every exact group lies inside one near cluster
    frame = pd.DataFrame.from_dict(got, orient="index")
    assert (frame.groupby("exact_dup_group")["near_dup_cluster"].nunique() == 1).all()
    assert int((frame["exact_dup_rank"] > 0).sum()) == len(english)


def test_result_does_not_depend_on_row_order_and_is_repeatable(planted, planted_out):
    pool, _, _ = planted
    a = planted_out.sort_values("id").reset_index(drop=True)
    shuffled = pool.sample(frac=1.0, random_state=3).reset_index(drop=True)
    b = duplicates(shuffled).sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    c = duplicates(pool).sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, c)


def test_chinese_near_duplicate_needs_character_shingles():
    base = ("请解释为什么天空是蓝色的。阳光穿过大气层时，空气分子对蓝光的散射比对红光更强，所以我们看到的天空是蓝色的，"
            "这种现象叫做瑞利散射。日出和日落时，阳光要穿过更厚的大气层，大部分蓝光在路上被散射掉了，所以天空看起来是红色或橙色的。")
    edited = base.replace("更强", "更多")
    other = "请解释为什么大海是蓝色的。海水会吸收红光，反射和散射蓝光，所以我们看到的大海通常是蓝色的，这和天空的颜色有一点关系。"
    pool = pd.DataFrame([row("a", "天空", base), row("b", "天空", edited), row("c", "天空", other)])
    got = by_id(duplicates(pool))
    assert got["a"]["near_dup_cluster"] == got["b"]["near_dup_cluster"] == "a"
    assert got["c"]["near_dup_cluster"] == "c" and got["c"]["near_dup_cluster_size"] == 1
    assert got["b"]["exact_dup_group"] == "b"  # near, not exact
    # a whitespace split would make each answer one token: the edit would leave no shared shingle at all
    assert len(base.split()) == 1 and len(shingles(base)) > 90
    assert true_jaccard(pool, "a", "b") > 0.9 and true_jaccard(pool, "a", "c") < 0.3


def test_rows_without_shingles_are_not_near_duplicates_of_each_other():
    pool = pd.DataFrame([row("a", "???", "!!!"), row("b", "…", "?!"), row("c", "？？？", "！！！")])
    out = duplicates(pool)
    got = by_id(out)
    assert got["a"]["exact_dup_group"] == got["c"]["exact_dup_group"] == "a"  # NFKC folds the full-width marks
    assert got["b"]["near_dup_cluster"] == "b" and got["b"]["near_dup_cluster_size"] == 1
    assert got["c"]["near_dup_cluster"] == "a" and got["a"]["near_dup_cluster_size"] == 2
    assert out.attrs["n_no_shingles"] == 2  # one per exact group


def test_multi_turn_rows_compare_every_turn():
    first = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}]
    a = {"id": "a", "instruction": "Hi", "input": "", "output": "Hello! How can I help?",
         "conversations": first + [{"role": "user", "content": "Tell me a joke."},
                                   {"role": "assistant", "content": "Why did the chicken cross the road?"}]}
    b = {**a, "id": "b", "conversations": first + [{"role": "user", "content": "What is 2 + 2?"},
                                                   {"role": "assistant", "content": "4."}]}
    got = by_id(duplicates(pd.DataFrame([a, b])))
    assert got["b"]["exact_dup_group"] == "b"


def test_empty_pool_errors_and_registration():
    empty = duplicates(pd.DataFrame({"id": [], "instruction": [], "input": [], "output": []}))
    assert list(empty.columns) == ["id", *DUPLICATE_COLUMNS] and len(empty) == 0
    single = duplicates(pd.DataFrame([row("only", "Say hi.", "Hi.")]))
    assert single.iloc[0].to_dict() == {"id": "only", "exact_dup_group": "only", "exact_dup_rank": 0,
                                        "near_dup_cluster": "only", "near_dup_rank": 0, "near_dup_cluster_size": 1}
    with pytest.raises(ValueError, match="unique ids"):
        duplicates(pd.DataFrame([row("x", "a", "b"), row("x", "c", "d")]))
    with pytest.raises(ValueError, match="'id'"):
        duplicates(pd.DataFrame({"instruction": ["a"], "output": ["b"]}))
    with pytest.raises(ValueError, match="threshold"):
        duplicates(pd.DataFrame([row("x", "a", "b")]), threshold=0.0)
    with pytest.raises(ValueError, match="num_perm"):
        duplicates(pd.DataFrame([row("x", "a", "b")]), num_perm=1)
    info = SCORERS["duplicates"]
    assert info.fn is duplicates and info.family == "metric-set" and info.columns == DUPLICATE_COLUMNS


def test_threshold_and_seed_are_settings(planted):
    pool, clusters, _ = planted
    strict = duplicates(pool, threshold=1.0)
    assert strict.attrs["lsh_bands"] == 0  # identical signatures only: no LSH index
    # at threshold 1 only rows with identical shingle sets join: the case/spacing copies
    assert strict.attrs["n_near_duplicates"] == strict.attrs["n_exact_duplicates"]
    other_seed = duplicates(pool, seed=5)
    assert other_seed.attrs["n_near_clusters"] == len(clusters)
    assert np.array_equal(other_seed["exact_dup_group"].to_numpy(), strict["exact_dup_group"].to_numpy())
