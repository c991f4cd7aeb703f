"""metric_features: per-row indicators (tokens, lexical diversity, language), MiniLM embeddings
of the instruction and the KNN-6 mean distance in embedding space."""

import dagster as dg
import numpy as np
import pandas as pd

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
