"""Judge scores (docs/METHODS.md family 3, the powerful-LLM methods): one asset per pool-scoring judge template,
all on the judge engine (``judge/engine.py``) through the ``judge`` resource (``JudgeResource``).

Each asset builds its template's requests for every pool row, records the engine's estimate of what the run will
send (requests, distinct, cached, to send, prompt tokens, worst-case completion tokens and cost) as an
``AssetObservation`` of the asset BEFORE anything is sent, then runs the requests through the resource's backend,
cache, retries and budget (``judge_pool``). The table has one row per pool row: the template's columns,
``judge_status`` ("ok", "unparsable", "failed", "budget", "not_judgeable"), ``judge_error`` and ``judge_raw``
(the raw reply texts, kept for every row: an unparsable reply is counted and kept, never scored or dropped).

Dry run: ``dry_run: true`` in an asset's config records the estimate (observation, log line) and stops the step
with a ``dg.Failure`` whose metadata is the estimate: nothing is sent, no table is written and nothing downstream
runs in that run. A failure rather than a skip, because Dagster cannot skip an asset that has checks, and a
skipped step would leave the previous table looking current.
"""

import importlib
import json
import time
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from instsel_assets.defs._common import ProgressLogger, code_version_of, suite_check
from instsel_assets.defs.k8s import gpu_op_tags
from instsel_assets.defs.resources import EmbeddingModelResource, JudgeResource
from instsel_assets.defs.scores import histogram_md
from instsel_assets.judge.engine import JUDGE_STATUSES, cap_reply_tokens, estimate, judge_pool

JUDGE_MODULES = ("instsel_assets.judge.engine", "instsel_assets.judge.backends", "instsel_assets.judge.cache",
                 "instsel_assets.judge.types", "instsel_assets.judge.templates._common", "instsel_assets.models.chat",
                 "instsel_assets.scoring.next_token")
MAX_EXAMPLES = 5
EXAMPLE_CHARS = 500


class JudgeConfig(dg.Config):
    dry_run: bool = Field(
        default=False,
        description="Only estimate: record the requests the run would send, how many are cached, their prompt "
                    "tokens and worst-case completion tokens and cost (metadata of an observation and of the step's "
                    "failure), then stop. Nothing is sent and no table is written.")
    max_unparsable_fraction: float = Field(
        default=0.5,
        description="The unparsable_replies check passes when at most this share of the rows that got replies "
                    "could not be parsed. 0.5 suits the packaged 135M local judge; an API judge should parse nearly "
                    "every reply (e.g. 0.05).")


class InstagConfig(JudgeConfig):
    """InsTag's pool-level tag normalisation (``judge/instag_normalize.py``), scaled to the bundled ~600-row pool;
    the paper's values are for a pool of several hundred thousand queries."""

    alpha: int = Field(
        default=2,
        description="Frequency filter: a tag carried by fewer rows is dropped (paper: 20). 2 drops the tags that "
                    "name a single row, which would otherwise make that row 'new' to every diversity pass.")
    semantic_merging: bool = Field(
        default=True,
        description="Merge tags whose embeddings (the `embedding_model` resource, packaged MiniLM) are at least "
                    "semantic_threshold similar.")
    semantic_threshold: float = Field(
        default=0.95, description="Cosine similarity at which two tags merge (paper: distance 0.05).")
    min_support: int = Field(
        default=5,
        description="Association merging: tag A merges into tag B only when at least this many rows carry both "
                    "(paper: 40), so that one row's co-occurring tags do not merge.")
    min_confidence: float = Field(
        default=0.99,
        description="Association merging: the share of A's rows that must also carry B (paper: 0.99).")


def _checks(asset: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec("covers_pool", asset=asset, blocking=True, description="One row per pool row."),
        dg.AssetCheckSpec("every_row_accounted", asset=asset,
                          description="The counts of ok, unparsable, failed, budget and not-judgeable rows sum to "
                                      "the pool and match the judge_status column."),
        dg.AssetCheckSpec("unparsable_replies", asset=asset,
                          description="At most max_unparsable_fraction of the rows that got replies are unparsable; "
                                      "the count and example raw replies with their row ids are in the metadata."),
        dg.AssetCheckSpec("great_expectations_suite", asset=asset,
                          description=f"Great Expectations suite '{asset}'."),
    ]


def judge_table_asset(name: str, template_module: str, description: str, extra_modules: tuple[str, ...] = ()):
    """The decorator of a judge-table asset: group ``judge_scores``, the code version of the template and the
    engine, GPU op tags (the local backend's model), and the four judge checks."""
    return dg.asset(name=name, group_name="judge_scores",
                    code_version=code_version_of(template_module, *JUDGE_MODULES, *extra_modules),
                    kinds={"duckdb", "pandas", "openai"}, op_tags=gpu_op_tags(), description=description,
                    check_specs=_checks(name))


def pool_requests(pool: pd.DataFrame, template, max_reply_tokens: int | None = None) -> list:
    """Every request the template builds for the pool, in row order, capped at ``max_reply_tokens`` (what
    ``judge_pool`` will send)."""
    requests = []
    for row in pool.to_dict("records"):
        try:
            requests.extend(cap_reply_tokens(template.build(row), max_reply_tokens))
        except Exception as exc:
            raise ValueError(f"template {template.name!r}: building the requests of row {row.get('id')!r} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    return requests


def _caps(budget) -> str:
    if budget is None or (budget.max_tokens is None and budget.max_cost is None):
        return "no budget"
    return f"budget: max_tokens={budget.max_tokens}, max_cost={budget.max_cost}"


def run_judge(context: dg.AssetExecutionContext, config: JudgeConfig, pool: pd.DataFrame, judge: JudgeResource,
              template):
    """Estimate, then judge the pool: a generator that yields the estimate's ``AssetObservation`` before anything
    is sent (the dry run stops right after it) and returns ``(table, metadata)``; call it with
    ``table, meta = yield from run_judge(...)``."""
    backend = judge.backend_instance()
    cache = None
    try:
        budget = judge.budget(backend.model)
        cache = judge.cache()
        requests = pool_requests(pool, template, judge.max_reply_tokens)
        est = estimate(requests, backend, cache=cache, prices=budget.prices if budget is not None else None)
        planned = est.summary()
        cost = "unknown (no price)" if est.max_cost is None else f"{est.max_cost:.6g}"
        context.log.info(f"{template.name}: {est.requests} requests ({est.unique} distinct) for {len(pool)} rows to "
                         f"{backend.backend_id}: {est.cached} cached, {est.to_send} to send, {est.prompt_tokens} "
                         f"prompt tokens + at most {est.max_completion_tokens} completion tokens, worst-case cost "
                         f"{cost}; {_caps(budget)}")
        yield dg.AssetObservation(asset_key=context.asset_key, metadata={
            "estimate": dg.MetadataValue.json(planned), "dry_run": config.dry_run,
            "requests_to_send": est.to_send, "worst_case_tokens": est.max_tokens, "worst_case_cost": est.max_cost,
            "judge_backend": backend.backend_id})
        if budget is not None and budget.max_tokens is not None and est.max_tokens > budget.max_tokens:
            context.log.warning(f"{template.name}: the worst case ({est.max_tokens} tokens) exceeds max_tokens_budget "
                                f"{budget.max_tokens}: the budget may stop the run before every row is judged")
        if config.dry_run:
            raise dg.Failure(
                description=f"dry run of {context.asset_key.to_user_string()}: {est.to_send} of {est.requests} "
                            f"requests would be sent to {backend.backend_id} ({est.cached} cached), at most "
                            f"{est.max_tokens} tokens, worst-case cost {cost}. Nothing was sent and no table was "
                            f"written; set dry_run: false to run.",
                metadata={"estimate": dg.MetadataValue.json(planned), "requests_to_send": est.to_send,
                          "worst_case_tokens": est.max_tokens, "worst_case_cost": est.max_cost},
                allow_retries=False)
        t0 = time.monotonic()
        table = judge_pool(pool, template, backend, cache=cache, concurrency=judge.concurrency,
                           max_attempts=judge.max_attempts, budget=budget, max_reply_tokens=judge.max_reply_tokens,
                           progress=ProgressLogger(context.log, f"{template.name} judge requests"), log=context.log)
        seconds = time.monotonic() - t0
    finally:
        if cache is not None:
            cache.close()
        if hasattr(backend, "close"):
            backend.close()
    run = table.attrs["judge_run"]
    meta: dict[str, Any] = {
        "dagster/row_count": len(table),
        "scorer": template.name,
        "scorer_settings": dg.MetadataValue.json(judge.settings_dict()),
        "judge_backend": backend.backend_id,
        "template": template.description,
        "estimate": dg.MetadataValue.json(planned),
        "judge_run": dg.MetadataValue.json(run),
        **{f"n_{s}": int(table.attrs[f"n_{s}"]) for s in JUDGE_STATUSES},
        "n_unparsable_replies": int(table.attrs["n_unparsable_replies"]),
        **{k: run[k] for k in ("cache_hits", "sent", "retries", "prompt_tokens", "completion_tokens", "cost",
                               "stopped_by_budget", "left_unsent")},
        "seconds": round(seconds, 1),
    }
    return table, meta


def _excerpt(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "..."


def judge_check_results(asset: str, table: pd.DataFrame, pool: pd.DataFrame, counts: dict[str, int],
                        config: JudgeConfig):
    """covers_pool, every_row_accounted, unparsable_replies, great_expectations_suite."""
    yield dg.AssetCheckResult(check_name="covers_pool", asset_key=asset,
                              passed=len(table) == len(pool) and set(table["id"]) == set(pool["id"]),
                              metadata={"rows": len(table), "pool_rows": len(pool)})
    in_table = table["judge_status"].value_counts().to_dict()
    unknown = sorted(str(s) for s in set(in_table) - set(JUDGE_STATUSES))
    consistent = all(counts[s] == int(in_table.get(s, 0)) for s in JUDGE_STATUSES)
    yield dg.AssetCheckResult(check_name="every_row_accounted", asset_key=asset,
                              passed=sum(counts.values()) == len(pool) and consistent and not unknown,
                              metadata={**{f"n_{s}": counts[s] for s in JUDGE_STATUSES},
                                        "sum": sum(counts.values()), "pool_rows": len(pool),
                                        "unknown_statuses": dg.MetadataValue.json(unknown)})
    bad = table[table["judge_status"] == "unparsable"]
    answered = counts["ok"] + counts["unparsable"]
    fraction = len(bad) / answered if answered else 0.0
    examples = [{"id": str(row.id), "error": _excerpt(str(row.judge_error)), "raw": _excerpt(str(row.judge_raw))}
                for row in bad.head(MAX_EXAMPLES).itertuples(index=False)]
    yield dg.AssetCheckResult(check_name="unparsable_replies", asset_key=asset,
                              passed=bool(fraction <= config.max_unparsable_fraction),
                              metadata={"n_unparsable": len(bad), "rows_with_replies": answered,
                                        "fraction": round(fraction, 4),
                                        "max_unparsable_fraction": config.max_unparsable_fraction,
                                        "examples": dg.MetadataValue.json(examples)})
    yield suite_check(table, asset, asset_key=asset)


def _counts(table: pd.DataFrame) -> dict[str, int]:
    return {s: int(table.attrs[f"n_{s}"]) for s in JUDGE_STATUSES}


def _numeric(table: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)


def _judge_scores(context: dg.AssetExecutionContext, config: JudgeConfig, pool: pd.DataFrame,
                  judge: JudgeResource, template, main_column: str, label: str):
    """The body of a judge asset whose main column is numeric: table, metadata with its histogram, checks."""
    table, meta = yield from run_judge(context, config, pool, judge, template)
    values = _numeric(table, main_column)
    scored = values[np.isfinite(values)]
    yield dg.Output(table, metadata={
        **meta,
        f"{main_column}_median": float(np.median(scored)) if len(scored) else None,
        f"{main_column}_histogram": dg.MetadataValue.md(histogram_md(values, label)),
    })
    yield from judge_check_results(context.asset_key.to_user_string(), table, pool, _counts(table), config)


# ------------------------------------------------------------------------------------------------- assets
def numeric_judge_asset(name: str, template_module: str, main_column: str, label: str, description: str):
    """A judge asset whose table's main column is numeric (its median and histogram go to the metadata): the
    template is ``TEMPLATE`` of ``template_module``, imported when the asset runs."""

    @judge_table_asset(name, template_module, description=description)
    def _judge_asset(context: dg.AssetExecutionContext, config: JudgeConfig, instruction_pool: pd.DataFrame,
                     judge: JudgeResource):
        template = importlib.import_module(template_module).TEMPLATE
        yield from _judge_scores(context, config, instruction_pool, judge, template, main_column, label)

    return _judge_asset


alpagasus_scores = numeric_judge_asset(
    "alpagasus_scores", "instsel_assets.judge.templates.alpagasus", "alpagasus_score", "rating",
    description="AlpaGasus: the judge rates the accuracy of each (instruction, input, response) on 0-5 with the "
                "reference prompt (alpagasus_score; the local backend reads the expected digit). Raw replies, "
                "status and parse errors are kept per row.")

deita_scores = numeric_judge_asset(
    "deita_scores", "instsel_assets.judge.templates.deita", "deita_evol_score", "evol score",
    description="DEITA: complexity and quality (1-6, DEITA's scorer prompts) of every answered turn; "
                "deita_evol_score = sum over turns of complexity x quality.")

lift_scores = numeric_judge_asset(
    "lift_scores", "instsel_assets.judge.templates.lift", "lift_score", "LIFT score",
    description="LIFT: accuracy, explainability, clarity, difficulty and length (1-10 each) of every (instruction, "
                "input, response); lift_score = their mean.")

tree_instruct_scores = numeric_judge_asset(
    "tree_instruct_scores", "instsel_assets.judge.templates.tree_instruct", "tree_nodes", "tree nodes",
    description="Tree-Instruct: the judge writes the semantic tree of each instruction in bracket notation; "
                "tree_nodes (its node count) is the instruction's complexity.")


@judge_table_asset(
    "wavecoder_scores", "instsel_assets.judge.templates.wavecoder",
    description="WaveCoder: the discriminator checks each code instruction against the requirements of its task "
                "type (generation, summarization, translation, repair); wavecoder_pass = all met. Non-code rows "
                "are not judgeable.",
)
def wavecoder_scores(context: dg.AssetExecutionContext, config: JudgeConfig, instruction_pool: pd.DataFrame,
                     judge: JudgeResource):
    from instsel_assets.judge.templates.wavecoder import TEMPLATE

    table, meta = yield from run_judge(context, config, instruction_pool, judge, TEMPLATE)
    ok = table["judge_status"] == "ok"
    passed = table.loc[ok, "wavecoder_pass"].astype(bool)
    verdicts = pd.DataFrame({"verdict": ["pass", "fail", "no verdict"],
                             "rows": [int(passed.sum()), int((~passed).sum()), int((~ok).sum())]})
    yield dg.Output(table, metadata={
        **meta,
        "rows_passed": int(passed.sum()),
        "wavecoder_pass_histogram": dg.MetadataValue.md(verdicts.to_markdown(index=False)),
        "subtopics": dg.MetadataValue.json(table.loc[ok, "wavecoder_subtopic"].value_counts().to_dict()),
    })
    yield from judge_check_results("wavecoder_scores", table, instruction_pool, _counts(table), config)


def normalise_instag(judged: pd.DataFrame, *, alpha: int, semantic_threshold: float, min_support: int,
                     min_confidence: float, embed=None) -> pd.DataFrame:
    """The judged InsTag table with the raw tags kept as ``instag_tags_raw`` / ``instag_n_tags_raw`` and
    ``instag_tags`` / ``instag_n_tags`` normalised over the whole pool (``normalize_tag_column``). Rows that are
    not "ok" keep null tags (never an empty list that looks judged)."""
    from instsel_assets.judge.instag_normalize import normalize_tag_column

    table = judged.rename(columns={"instag_tags": "instag_tags_raw", "instag_n_tags": "instag_n_tags_raw"})
    table.insert(1, "instag_tags", table["instag_tags_raw"])
    out = normalize_tag_column(table, "instag_tags", alpha=alpha, embed=embed, semantic_threshold=semantic_threshold,
                               min_support=min_support, min_confidence=min_confidence)
    ok = (out["judge_status"] == "ok").to_numpy()
    out["instag_tags"] = [tags if keep else None for tags, keep in zip(out["instag_tags"], ok)]
    out["instag_n_tags"] = np.where(ok, out["instag_n_tags"].to_numpy(dtype=float), np.nan)
    columns = ["id", "instag_tags", "instag_n_tags", "instag_tags_raw", "instag_n_tags_raw"]
    return out[columns + [c for c in out.columns if c not in columns]]


def _top_tags(tag_lists, n: int = 20) -> str:
    counts = pd.Series([t for tags in tag_lists if tags is not None for t in tags], dtype=object).value_counts()
    if counts.empty:
        return "(no tags)"
    return counts.head(n).rename_axis("tag").reset_index(name="rows").to_markdown(index=False)


@judge_table_asset(
    "instag_tags", "instsel_assets.judge.templates.instag",
    extra_modules=("instsel_assets.judge.instag_normalize", "instsel_assets.features.embeddings"),
    description="InsTag: open-set intention tags of every query (the paper's tagging prompt), raw "
                "(instag_tags_raw) and normalised over the pool (instag_tags: frequency filter, rules, MiniLM "
                "semantic merging, association merging); instag_n_tags is a row's complexity.",
)
def instag_tags(context: dg.AssetExecutionContext, config: InstagConfig, instruction_pool: pd.DataFrame,
                judge: JudgeResource, embedding_model: EmbeddingModelResource):
    from instsel_assets.judge.templates.instag import TEMPLATE

    judged, meta = yield from run_judge(context, config, instruction_pool, judge, TEMPLATE)
    counts = _counts(judged)

    def embed(tags: list[str]) -> np.ndarray:
        from instsel_assets.features.embeddings import embed_texts

        context.log.info(f"instag: embedding {len(tags)} tags with {embedding_model.model} for semantic merging")
        return embed_texts(embedding_model.load(), tags, batch_size=embedding_model.batch_size)

    table = normalise_instag(judged, alpha=config.alpha, semantic_threshold=config.semantic_threshold,
                             min_support=config.min_support, min_confidence=config.min_confidence,
                             embed=embed if config.semantic_merging else None)
    report = table.attrs.get("instag_normalization", {})
    context.log.info(f"instag: {report.get('n_raw')} distinct raw tags -> {report.get('n_after_association')} "
                     f"after normalisation {json.dumps(report)}")
    yield dg.Output(table, metadata={
        **meta,
        "normalisation": dg.MetadataValue.json(report),
        "embedding_model": embedding_model.model if config.semantic_merging else None,
        "distinct_tags_raw": int(report.get("n_raw", 0)),
        "distinct_tags": int(report.get("n_after_association", 0)),
        "top_tags": dg.MetadataValue.md(_top_tags(table["instag_tags"])),
        "instag_n_tags_histogram": dg.MetadataValue.md(histogram_md(_numeric(table, "instag_n_tags"), "tags")),
    })
    yield from judge_check_results("instag_tags", table, instruction_pool, counts, config)


# Every asset of this stage.
JUDGE_ASSETS = [alpagasus_scores, deita_scores, instag_tags, lift_scores, tree_instruct_scores, wavecoder_scores]
