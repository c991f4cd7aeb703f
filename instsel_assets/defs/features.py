"""metric_features: per-row indicators (tokens, lexical diversity, language), MiniLM embeddings
of the instruction and the KNN-6 mean distance in embedding space. duplicate_indicators: exact and near
duplicates (MinHash + LSH) of every pool row."""

import time

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from instsel_assets.defs._common import code_version_of, suite_check
from instsel_assets.defs.resources import EmbeddingModelResource, LanguageModelResource

CODE_VERSION = code_version_of(
    "instsel_assets.features.indicators", "instsel_assets.features.text_stats",
    "instsel_assets.features.embeddings", "instsel_assets.features.knn")


@dg.asset(
    group_name="features",
    code_version=CODE_VERSION,
    kinds={"duckdb", "pandas", "torch"},
    description="Indicators of docs/METHODS.md family 1 per pool row: tokens of instruction / input / response "
                "(the scorer's tokenizer), type-token ratio and MTLD of the response (CJK-aware), language, "
                "the MiniLM embedding of the instruction and its KNN-6 mean cosine distance.",
    check_specs=[
        dg.AssetCheckSpec("covers_pool", asset="metric_features", blocking=True,
                          description="One row per pool row, same ids."),
        dg.AssetCheckSpec("embeddings_finite", asset="metric_features",
                          description="Every embedding has the model's dimension, unit norm, no NaN."),
        dg.AssetCheckSpec("great_expectations_suite", asset="metric_features",
                          description="Great Expectations suite 'metric_features'."),
    ],
)
def metric_features(context: dg.AssetExecutionContext, instruction_pool: pd.DataFrame,
                    language_model: LanguageModelResource, embedding_model: EmbeddingModelResource):
    from instsel_assets.features.embeddings import minilm_embedding
    from instsel_assets.features.indicators import compute_text_indicators
    from instsel_assets.features.knn import knn_distance

    _, tokenizer = language_model.load()
    context.log.info(f"indicators for {len(instruction_pool)} rows")
    features = compute_text_indicators(instruction_pool, tokenizer)
    context.log.info(f"embedding {len(instruction_pool)} instructions with {embedding_model.model}")
    embedded = minilm_embedding(instruction_pool, model=embedding_model.load(), batch_size=embedding_model.batch_size)
    features = features.merge(embedded, on="id", how="left").merge(knn_distance(embedded), on="id", how="left")
    embeddings = np.stack(features["embedding"].to_list()) if len(features) else np.zeros((0, 1), np.float32)

    yield dg.Output(features, metadata={
        "dagster/row_count": len(features),
        "embedding_model": embedding_model.model,
        "embedding_dim": int(embeddings.shape[1]) if embeddings.ndim == 2 else 0,
        "languages": dg.MetadataValue.json(features["language"].value_counts().to_dict()),
        "mean_mtld": float(features["mtld"].mean()) if len(features) else 0.0,
        "mean_knn6_distance": float(features["knn6_mean_distance"].mean()) if len(features) else 0.0,
    })
    same_ids = len(features) == len(instruction_pool) and set(features["id"]) == set(instruction_pool["id"])
    yield dg.AssetCheckResult(check_name="covers_pool", passed=bool(same_ids),
                              metadata={"feature_rows": len(features), "pool_rows": len(instruction_pool)})
    norms = np.linalg.norm(embeddings, axis=1) if len(embeddings) else np.array([1.0])
    finite = bool(np.isfinite(embeddings).all()) and bool(np.allclose(norms, 1.0, atol=1e-3))
    yield dg.AssetCheckResult(check_name="embeddings_finite", passed=finite,
                              metadata={"min_norm": float(norms.min()), "max_norm": float(norms.max())})
    yield suite_check(features, "metric_features")


# ------------------------------------------------------------------------------------------- duplicates
DUPLICATES_CODE_VERSION = code_version_of("instsel_assets.features.duplicates", "instsel_assets.features.text_stats")


class DuplicatesConfig(dg.Config):
    threshold: float = Field(
        default=0.8,
        description="Estimated Jaccard similarity of the shingle sets (word 3-grams; character 4-grams for CJK "
                    "text) at or above which two rows are near duplicates, in (0, 1]. 1 links only identical "
                    "MinHash signatures (no LSH index).")
    num_perm: int = Field(
        default=128,
        description="MinHash permutations per row (>= 2): more estimate the Jaccard similarity more precisely "
                    "and cost proportionally more time and memory.")
    seed: int = Field(default=1, description="Seed of the MinHash permutations.")


def duplicate_groups_consistency(table: pd.DataFrame) -> dict[str, int]:
    """Counts of rows that break the duplicates table's invariants (all zero when it is consistent): every exact
    group and near cluster is named by its smallest id, ranks run 0, 1, ... in id order inside each, the near
    cluster sizes are the clusters' row counts, and each exact group lies inside one near cluster."""
    ids = table["id"].astype(str)
    out: dict[str, int] = {}
    for group, rank, label in (("exact_dup_group", "exact_dup_rank", "exact"),
                               ("near_dup_cluster", "near_dup_rank", "near")):
        g = table[group].astype(str)
        out[f"{label}_not_named_by_smallest_id"] = int((g != ids.groupby(g).transform("min")).sum())
        ordered = pd.DataFrame({"g": g, "id": ids, "rank": table[rank]}).sort_values(["g", "id"], kind="mergesort")
        out[f"{label}_ranks_not_in_id_order"] = int(
            (ordered["rank"].to_numpy() != ordered.groupby("g").cumcount().to_numpy()).sum())
    sizes = table.groupby(table["near_dup_cluster"].astype(str))["id"].transform("size")
    out["near_cluster_size_wrong"] = int((table["near_dup_cluster_size"].to_numpy() != sizes.to_numpy()).sum())
    split = table.groupby(table["exact_dup_group"].astype(str))["near_dup_cluster"].nunique()
    out["exact_groups_split_across_clusters"] = int((split > 1).sum())
    return out


def _largest_clusters_md(table: pd.DataFrame, pool: pd.DataFrame, top: int = 10) -> str:
    from instsel_assets.features.duplicates import row_turns

    multi = table[table["near_dup_cluster_size"] > 1]
    if multi.empty:
        return "(no near-duplicate cluster)"
    firsts = multi[multi["near_dup_rank"] == 0].sort_values(["near_dup_cluster_size", "id"], ascending=[False, True])
    by_id = pool.set_index(pool["id"].astype(str))
    rows = []
    for _, r in firsts.head(top).iterrows():
        members = multi[multi["near_dup_cluster"] == r["near_dup_cluster"]]
        turns = row_turns(by_id.loc[str(r["id"])].to_dict() | {"id": r["id"]})
        text = " ".join(turns[0][1].split())[:80] if turns else ""
        rows.append({"cluster (smallest id)": r["near_dup_cluster"], "rows": int(r["near_dup_cluster_size"]),
                     "exact groups": int(members["exact_dup_group"].nunique()), "first turn": text})
    return pd.DataFrame(rows).to_markdown(index=False)


@dg.asset(
    group_name="features",
    code_version=DUPLICATES_CODE_VERSION,
    kinds={"duckdb", "pandas"},
    description="Exact and near duplicates of every pool row (docs/METHODS.md family 1 indicators). Exact: equal "
                "SHA-256 of the NFKC-casefolded, whitespace-collapsed turns with their roles. Near: MinHash + LSH "
                "on word 3-grams (character 4-grams for CJK text), pairs of estimated Jaccard >= threshold, "
                "connected components. Groups and clusters are named by their smallest id (rank 0), so a "
                "selector keeps one row per group with exact_dup_rank == 0 or near_dup_rank == 0.",
    check_specs=[
        dg.AssetCheckSpec("covers_pool", asset="duplicate_indicators", blocking=True,
                          description="One row per pool row, same ids."),
        dg.AssetCheckSpec("groups_consistent", asset="duplicate_indicators",
                          description="Every exact group and near cluster is named by its smallest id (rank 0), "
                                      "ranks run 0, 1, ... in id order, near_dup_cluster_size is the cluster's row "
                                      "count, and each exact group lies inside one near cluster."),
        dg.AssetCheckSpec("great_expectations_suite", asset="duplicate_indicators",
                          description="Great Expectations suite 'duplicate_indicators'."),
    ],
)
def duplicate_indicators(context: dg.AssetExecutionContext, config: DuplicatesConfig, instruction_pool: pd.DataFrame):
    from instsel_assets.registry import get_scorer

    params = {"threshold": config.threshold, "num_perm": config.num_perm, "seed": config.seed}
    context.log.info(f"duplicates of {len(instruction_pool)} rows: {params}")
    t0 = time.monotonic()
    table = get_scorer("duplicates").fn(instruction_pool, **params)
    seconds = time.monotonic() - t0
    a = table.attrs
    in_clusters = int((table["near_dup_cluster_size"] > 1).sum())
    context.log.info(f"duplicates: {a['n_exact_groups']} exact groups ({a['n_exact_duplicates']} extra rows), "
                     f"{a['n_near_clusters']} near clusters holding {in_clusters} rows, {seconds:.1f}s")
    yield dg.Output(table, metadata={
        "dagster/row_count": len(table),
        "scorer": "duplicates",
        "scorer_settings": dg.MetadataValue.json({k: a[k] for k in (
            "threshold", "num_perm", "seed", "word_ngram", "char_ngram", "minhash_scheme", "lsh_weights")}),
        "threshold": float(a["threshold"]), "num_perm": int(a["num_perm"]), "seed": int(a["seed"]),
        "exact_duplicate_groups": int(a["n_exact_groups"]),
        "exact_duplicate_rows": int(a["n_exact_duplicates"]),
        "near_duplicate_clusters": int(a["n_near_clusters"]),
        "rows_in_near_clusters": in_clusters,
        "near_duplicate_rows": int(a["n_near_duplicates"]),
        "lsh_bands": int(a["lsh_bands"]), "lsh_rows": int(a["lsh_rows"]),
        "candidate_pairs": int(a["n_candidate_pairs"]), "linked_pairs": int(a["n_linked_pairs"]),
        "groups_without_shingles": int(a["n_no_shingles"]),
        "seconds": round(seconds, 2),
        "largest_near_clusters": dg.MetadataValue.md(_largest_clusters_md(table, instruction_pool)),
    })
    same_ids = len(table) == len(instruction_pool) and set(table["id"]) == set(instruction_pool["id"].astype(str))
    yield dg.AssetCheckResult(check_name="covers_pool", passed=bool(same_ids),
                              metadata={"rows": len(table), "pool_rows": len(instruction_pool)})
    problems = duplicate_groups_consistency(table)
    yield dg.AssetCheckResult(check_name="groups_consistent", passed=not any(problems.values()), metadata=problems)
    yield suite_check(table, "duplicate_indicators")
