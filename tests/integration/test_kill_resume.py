"""SIGKILL in the middle of LM scoring and of judge scoring, then a re-run: nothing finished is lost, nothing
paid is paid twice, and the final scores equal an uninterrupted run's, row by row, to the last bit.

Each run is a separate Python process (this file run as a script, ``child_main`` below), so the kill is a real
``SIGKILL``: no ``finally``, no flush, no atexit. The parent polls the cache on disk and kills the child as
soon as some of its results are there, while it is still working.

- LM scoring: the registered ``ifd`` scorer on a tiny Llama saved to disk (``conftest.save_tiny_causal_lm``) with
  the real ``LossCache`` in small shards, two worker threads. The parent kills the child once >= 2 shards are
  written; the re-run reads them back (``LossCache.stats()``: hits = pairs in the shards at the kill, misses =
  the rest) and the finished pairs that were not yet in a shard (the child reports each finished batch through
  ``progress``) number fewer than one shard. The resumed scores equal the uninterrupted run's exactly
  (``loss_engine.plan_batches``: a missing batch is computed with the same companions as in the uninterrupted
  run, so not even the padding differs).
- Judge scoring: ``judge_pool`` with the AlpaGasus template, ``OpenAIBackend`` and a ``JudgeCache``, against the
  scripted OpenAI-compatible server (``tests/unit/scripted_openai_server.py``) in this process, answering slowly
  so that the kill lands mid-run. The server counts every request it receives and every answer it produces
  (= pays) by request body: the re-run sends exactly the requests without a cached answer, at most
  ``concurrency`` of them (the ones in flight at the kill) are paid a second time, and the final table equals
  the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent
BENCH = REPO / "data" / "bench" / "alpaca_500.json"

# LM scoring: 96 rows = 192 (prefix, answer) pairs, batches of 4, a shard every 16 pairs (12 shards).
LM_ROWS, LM_BATCH, LM_SHARD, LM_WORKERS, LM_MAX_LENGTH = 96, 4, 16, 2, 192
LM_PAUSE = 0.03  # seconds the child waits after each batch (a slower model): leaves time to kill it mid-run
# Judge scoring: 40 rows, one request each, 2 in flight, each answer taking ANSWER_SECONDS at the server.
JUDGE_ROWS, JUDGE_CONCURRENCY, ANSWER_SECONDS = 40, 2, 0.12
CHILD_TIMEOUT = 120


# ============================================================================================ the child
def _child_lm(args: dict) -> None:
    """A Dagster run of ``superfiltering_scores`` (IFD under the filter model) on a stub pool of bench rows, in the
    instance at ``DAGSTER_HOME``; tables in the DuckDB file, losses in the real ``LossCache``."""
    import dagster as dg
    import torch

    torch.set_num_threads(2)
    from instsel_assets.bench import bench_pool
    from instsel_assets.defs.duckdb_io import InstselDuckDBIOManager
    from instsel_assets.defs.resources import LanguageModelResource
    from instsel_assets.defs.scores import superfiltering_scores
    from instsel_assets.scoring.loss_cache import LossCache

    added_path = Path(args["added"])
    count_lock, added = threading.Lock(), [0]
    add = LossCache.add

    def counting_add(self, keys, loss_sums, n_tokens) -> None:
        """The real ``add``; before each batch of computed pairs goes in, their running count is written to
        ``added`` (so the parent knows what the killed run had computed); then a pause (a slower model)."""
        with count_lock:
            added[0] += len(keys)
            fd = os.open(added_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                os.write(fd, str(added[0]).encode())
            finally:
                os.close(fd)
            add(self, keys, loss_sums, n_tokens)
        time.sleep(args["pause"])

    @dg.asset(name="instruction_pool")
    def instruction_pool():
        return bench_pool(BENCH, args["rows"])

    filter_model = LanguageModelResource(model=args["model_dir"], dtype="float32", device="cpu",
                                         batch_size=args["batch_size"], max_length=args["max_length"],
                                         workers=str(args["workers"]), loss_cache_shard_size=args["shard_size"])
    instance = dg.DagsterInstance.get() if args["persistent"] else dg.DagsterInstance.ephemeral()
    LossCache.add = counting_add
    try:
        result = dg.materialize([instruction_pool, superfiltering_scores], instance=instance,
                                resources={"filter_model": filter_model,
                                           "io_manager": InstselDuckDBIOManager(database=args["duckdb"])})
    finally:
        LossCache.add = add  # the reference run is in the test's own process
    (mat,) = result.asset_materializations_for_node("superfiltering_scores")
    _write_result(args["out"], {"scores": result.output_for_node("superfiltering_scores"),
                                "stats": mat.metadata["loss_cache"].value, "run_id": result.run_id})


def _child_judge(args: dict) -> None:
    from instsel_assets.judge.backends import OpenAIBackend
    from instsel_assets.judge.cache import JudgeCache
    from instsel_assets.judge.engine import judge_pool
    from instsel_assets.judge.templates.alpagasus import TEMPLATE

    backend = OpenAIBackend("judge-model", base_url=args["base_url"], api_key="sk-test-kill-resume-0000",
                            timeout=10.0)
    cache = JudgeCache(args["cache_dir"])
    table = judge_pool(judge_test_pool(args["rows"]), TEMPLATE, backend, cache=cache,
                       concurrency=args["concurrency"], max_attempts=2)
    _write_result(args["out"], {"table": table, "run": table.attrs["judge_run"], "cache": cache.stats()})


def _write_result(path: str, payload: dict) -> None:
    """The child's result, pickled (floats exactly), written atomically."""
    import pickle

    tmp = f"{path}.tmp"
    Path(tmp).write_bytes(pickle.dumps(payload))
    os.replace(tmp, path)


def judge_test_pool(rows: int):
    """The first ``rows`` bench rows, each response ending in ``rate:K`` (K = row % 6), which the scripted server
    answers with ``Score: K``."""
    from instsel_assets.bench import bench_pool

    pool = bench_pool(BENCH, rows)
    pool["conversations"] = [[turn if turn["role"] != "assistant" else
                              {"role": "assistant", "content": f"{turn['content']}\nrate:{i % 6}"} for turn in conv]
                             for i, conv in enumerate(pool["conversations"])]
    return pool


def child_main(argv: list[str]) -> None:
    sys.path.insert(0, str(TESTS))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    kind, args = argv[0], json.loads(argv[1])
    os.environ.update(args.get("env", {}))
    {"lm": _child_lm, "judge": _child_judge}[kind](args)


if __name__ == "__main__":
    child_main(sys.argv[1:])
    sys.exit(0)


# ============================================================================================ the parent
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(TESTS / "unit"))  # the scripted OpenAI-compatible server lives beside the unit tests

pytestmark = pytest.mark.integration


def _start(kind: str, args: dict, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"}
    env.pop("OPENAI_API_KEY", None)
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), kind, json.dumps(args)],
                                cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env)


def _run(kind: str, args: dict, log_path: Path) -> dict:
    """Run a child to its end; its JSON result."""
    process = _start(kind, args, log_path)
    try:
        code = process.wait(timeout=CHILD_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0, f"{kind} child failed ({code}):\n{log_path.read_text(errors='replace')[-4000:]}"
    import pickle

    return pickle.loads(Path(args["out"]).read_bytes())


def _in_process(child, args: dict) -> dict:
    """The uninterrupted reference run, in this process (the same code as a child's)."""
    import pickle

    child(args)
    return pickle.loads(Path(args["out"]).read_bytes())


def _kill_when(kind: str, args: dict, log_path: Path, ready, what: str) -> float:
    """Start a child, SIGKILL it as soon as ``ready()`` is true; the seconds it ran. Fails when the child ends
    (or times out) before that."""
    process = _start(kind, args, log_path)
    t0 = time.monotonic()
    try:
        while not ready():
            if process.poll() is not None:
                pytest.fail(f"the {kind} child ended ({process.returncode}) before {what}:\n"
                            f"{log_path.read_text(errors='replace')[-4000:]}")
            if time.monotonic() - t0 > CHILD_TIMEOUT:
                pytest.fail(f"the {kind} child did not reach {what} within {CHILD_TIMEOUT} s")
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not Path(args["out"]).exists(), f"the {kind} child finished before it was killed"
    return time.monotonic() - t0


# -------------------------------------------------------------------------------------------- LM scoring
def test_sigkill_of_a_dagster_run_during_lm_scoring_loses_at_most_one_shard_and_resumes_to_the_same_scores(
        tmp_path, tiny_tokenizer, monkeypatch):
    import copy

    import dagster as dg
    from conftest import save_tiny_causal_lm

    model_dir = save_tiny_causal_lm(tmp_path / "model", copy.deepcopy(tiny_tokenizer))
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()

    def args(name: str, cache: str, persistent: bool = True) -> dict:
        env = {"INSTSEL_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(dagster_home),
               "INSTSEL_LOSS_CACHE": str(tmp_path / cache)}
        return {"model_dir": model_dir, "cache_root": str(tmp_path / cache), "out": str(tmp_path / f"{name}.pkl"),
                "added": str(tmp_path / f"{name}.added"), "rows": LM_ROWS, "batch_size": LM_BATCH,
                "shard_size": LM_SHARD, "workers": LM_WORKERS, "max_length": LM_MAX_LENGTH, "pause": LM_PAUSE,
                "duckdb": str(tmp_path / f"{name}.duckdb"), "persistent": persistent, "env": env}

    log = tmp_path / "children.log"
    t0 = time.monotonic()
    reference_args = args("reference", "cache-reference", persistent=False)
    for name, value in reference_args["env"].items():
        monkeypatch.setenv(name, value)
    reference = _in_process(_child_lm, reference_args)  # saves a process start
    t_reference = time.monotonic() - t0
    distinct = reference["stats"]["misses"]  # distinct (context, answer) pairs, all computed
    assert reference["stats"]["hits"] == 0 and reference["stats"]["pairs"] == distinct >= LM_ROWS
    assert reference["stats"]["shards_written"] >= distinct // LM_SHARD

    killed = args("killed", "cache")
    cache_root = Path(killed["cache_root"])

    def shards() -> list[Path]:
        return sorted(cache_root.glob("*/shard-*.parquet"))

    ran = _kill_when("lm", killed, log, lambda: len(shards()) >= 2, "its second cache shard")
    at_kill = shards()
    keys_at_kill = _shard_keys(at_kill)
    in_shards = len(keys_at_kill)
    computed = int(Path(killed["added"]).read_text())  # pairs the killed run had computed (and began to cache)
    assert LM_SHARD <= in_shards < distinct, (in_shards, distinct)
    lost = computed - in_shards  # computed, but not yet in a shard at the kill: at most one shard
    assert 0 <= lost <= LM_SHARD, (computed, in_shards)

    t1 = time.monotonic()
    resumed = _run("lm", {**killed, "out": str(tmp_path / "resumed.pkl"), "added": str(tmp_path / "resumed.added")},
                   log)
    t_resumed = time.monotonic() - t1
    stats = resumed["stats"]
    assert stats["shards_read"] == len(at_kill)
    assert stats["hits"] == in_shards and stats["misses"] == distinct - in_shards == int(
        Path(tmp_path / "resumed.added").read_text())
    new_keys = _shard_keys(sorted(set(shards()) - set(at_kill)))
    assert not new_keys & keys_at_kill, "a pair held by a shard was computed again"
    assert len(new_keys | keys_at_kill) == distinct
    recomputed = stats["misses"] - (distinct - computed)  # computed by both runs
    assert recomputed == lost <= LM_SHARD

    got, want = resumed["scores"], reference["scores"]
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert got["superfiltering_ifd"].notna().sum() >= LM_ROWS - 2

    # What the instance knows: the killed run never reported its end (no daemon here to mark it failed), it
    # materialised nothing; the re-run is a separate, successful run that materialised the scores once.
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    instance = dg.DagsterInstance.get()
    runs = {run.run_id: run.status for run in instance.get_runs()}
    killed_ids = [run_id for run_id in runs if run_id != resumed["run_id"]]
    assert runs[resumed["run_id"]] == dg.DagsterRunStatus.SUCCESS and len(killed_ids) == 1
    assert runs[killed_ids[0]] == dg.DagsterRunStatus.STARTED
    killed_events = {e.dagster_event.event_type_value for e in instance.all_logs(killed_ids[0])
                     if e.dagster_event and e.step_key == "superfiltering_scores"}
    assert "STEP_START" in killed_events and not killed_events & {"ASSET_MATERIALIZATION", "STEP_SUCCESS"}
    assert instance.get_latest_materialization_event(dg.AssetKey("superfiltering_scores")).run_id == resumed["run_id"]
    print(f"\nLM kill/resume (Dagster run): {distinct} distinct pairs, shards of {LM_SHARD}; killed after {ran:.1f} s "
          f"with {computed} computed, {in_shards} in {len(at_kill)} shards; re-run computed {stats['misses']}, of "
          f"which {recomputed} recomputed; reference run {t_reference:.1f} s, re-run {t_resumed:.1f} s; scores equal")


def _shard_keys(paths) -> set[str]:
    import pyarrow.parquet as pq

    keys: list[str] = []
    for path in paths:
        keys += pq.read_table(path, columns=["key"]).column("key").to_pylist()
    assert len(keys) == len(set(keys)), "a pair was written to the cache twice"
    return set(keys)


# -------------------------------------------------------------------------------------------- judge scoring
def test_sigkill_during_judge_scoring_resends_only_unanswered_requests_and_gives_the_same_table(tmp_path,
                                                                                               monkeypatch):
    from scripted_openai_server import ScriptedOpenAIServer

    from instsel_assets.judge.cache import JudgeCache

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    log = tmp_path / "children.log"
    with ScriptedOpenAIServer(answer_seconds=ANSWER_SECONDS) as server:
        def args(name: str, cache: str) -> dict:
            return {"base_url": server.url, "cache_dir": str(tmp_path / cache), "out": str(tmp_path / f"{name}.pkl"),
                    "rows": JUDGE_ROWS, "concurrency": JUDGE_CONCURRENCY}

        reference = _in_process(_child_judge, args("reference", "cache-reference"))
        assert reference["run"]["sent"] == reference["run"]["succeeded"] == server.received == JUDGE_ROWS
        answered_reference = sum(server.answered.values())
        assert answered_reference == JUDGE_ROWS
        server.answered.clear()

        killed = args("killed", "cache")
        cache_dir = Path(killed["cache_dir"])

        def lines() -> int:
            return sum(p.read_bytes().count(b"\n") for p in cache_dir.glob("judge-*.jsonl"))

        before = server.received
        ran = _kill_when("judge", killed, log, lambda: lines() >= JUDGE_ROWS // 4, "a quarter of the answers cached")
        time.sleep(ANSWER_SECONDS * 2)  # let the server finish the answers that were in flight (paid, never read)
        received_killed = server.received - before
        answered_killed = dict(server.answered)
        held = len(JudgeCache(cache_dir))
        assert JUDGE_ROWS // 4 <= held < JUDGE_ROWS
        # every answer the child read is in the cache; what it sent and did not cache was in flight at the kill
        assert 0 <= received_killed - held <= JUDGE_CONCURRENCY

        server.answered.clear()
        before = server.received
        resumed = _run("judge", {**killed, "out": str(tmp_path / "resumed.pkl")}, log)
        sent_again = server.received - before
        run = resumed["run"]
        assert run["cache_hits"] == held and run["sent"] == sent_again == JUDGE_ROWS - held
        assert run["succeeded"] == sent_again and run["n_failed"] == 0 and run["retries"] == 0
        paid_twice = set(answered_killed) & set(server.answered)
        assert len(paid_twice) <= JUDGE_CONCURRENCY  # only the requests in flight at the kill were paid again
        assert max(server.answered.values()) == 1

        got, want = resumed["table"], reference["table"]
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        assert (got["judge_status"] == "ok").all()
        assert got["alpagasus_score"].tolist() == [float(i % 6) for i in range(JUDGE_ROWS)]
        print(f"\njudge kill/resume: {JUDGE_ROWS} requests; killed after {ran:.1f} s with {received_killed} sent, "
              f"{held} cached; re-run sent {sent_again} ({len(paid_twice)} paid twice: in flight at the kill); "
              f"table equal")
