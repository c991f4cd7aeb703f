"""One checkpoint's chain materialised from the Dagster UI in a real browser: ``dagster dev -w workspace.yaml`` on
loopback, headless Chromium (``test_ui_browser.chromium_executable``: Debian's ``chromium``) through Playwright.

The chain of the ``ifd`` selection, on the small data root of ``test_chain.small_data_root`` (14 rows per bundled
source), in three runs launched with the UI's own controls; ``DAGSTER_HOME``, ``INSTSEL_HOME`` and the data root
live in ``tmp_path``, the converted models are shared with the project (``INSTSEL_MODEL_CACHE``), as in
test_ui_browser (whose fixtures and helpers this test imports).

In the browser:

1. The global asset graph (``/asset-groups``); the selection typed into its "Search and filter assets" box,
   ``+key:"ifd_scores" or +key:"length_indicators"``: the raw datasets, the pool, ``metric_features``,
   ``length_indicators``, ``ifd_pre_experienced_model`` and ``ifd_scores`` (what selecting ``ifd`` reads, without
   the other scores of ``prepare_pool_job``); its groups opened with their "unfold" icons.
2. Run 1, the pool chain: "Materialize all" > "Open launchpad"; the UI adds ``pool_quarantine`` (a multi-asset
   sibling of ``instruction_pool``: "Additional assets will be materialized", Confirm); the run config is typed into
   the Launchpad's config editor (``ifd_pre_experienced_model``: ``max_steps: 2``, ``batch_size: 2``; in-process
   execution: one process, the model loaded once), then "Materialize" opens the run's page.
3. Run 2, ``selected_subsets[ifd]``: its page's "Materialize…" button; the "Are you sure?" dialog lists the score
   assets never materialised (not ``ifd_scores``): Confirm; in the partition dialog partition ``ifd`` is picked
   from the partition box ("1 partition"), "Launch 1 run"; the "Launched run" toast's "View" link opens the run's
   page. The default config (budget 10%) needs no editor.
4. Run 3, ``finetuned_checkpoints[ifd]``: its page's "Materialize…" > "Open launchpad"; partition ``ifd`` picked in
   the Launchpad's partition box (the run's tag "partition: ifd" appears) and ``max_steps: 2``, ``batch_size: 2``,
   in-process execution typed into its config editor; "Materialize" opens the run's page.
5. The page of ``finetuned_checkpoints``, partition ``ifd`` (``?view=partitions&partition=ifd``): "Materialized",
   the run, and the metadata (selection method, selector, budget, the subset hash of run 2, the base model, the
   typed steps and batch size in ``sft_config``, the scorer settings, first / last loss as the run recorded them);
   the Checks tab (both checks succeeded); the Lineage tab (upstream ``selected_subsets`` and ``instruction_pool``,
   downstream the evaluation) and the upstream lineage at full depth (``ifd_scores``, ``ifd_pre_experienced_model``,
   ``metric_features``, ``length_indicators``, the raw datasets; nothing downstream); then the whole chain in the
   global asset graph, every group open.

By GraphQL only, where the browser adds nothing: waiting for each run to succeed (``runOrError`` polled), and reading
back what each run did: its run config (the typed YAML), its partition tag, its materialisations and their metadata
(pool accounting, the subset's budget, hash and the ``ifd_scores`` run it read, the checkpoint's metadata) and the
checkpoint's asset checks; the browser's pages are then checked against these values.

Screenshots (numbered) go to ``<tmp_path>/screenshots`` and are copied to ``.instsel/ui-screenshots/chain/`` of the
project (git-ignored; a folder of its own, so that test_ui_browser's copies and these do not remove each other) with
``timings.json``: the start-up time of ``dagster dev`` and each run's time, also printed.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from test_chain import ROWS_PER_SOURCE
from test_ui_browser import (ASSET_CHECKS, SCREENSHOT_COPY_DIR, Screens, browser_page, dagster_ui,  # noqa: F401
                             forget_graph_zoom, metadata, metadata_row, open_asset, wait_graph_settled)
from ui_server import DagsterDev, DagsterDevError

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.integration

COPY_DIR = SCREENSHOT_COPY_DIR / "chain"
MODEL_RUN_TIMEOUT = 900  # seconds for one run (measured on 2 shared cores: pool chain 80-180 s, fine-tune 30-130 s)
BASE_MODEL = "packaged:smollm2-135m-instruct"
METHOD = "ifd"
CHAIN_SELECTION = '+key:"ifd_scores" or +key:"length_indicators"'
RAW_KEYS = [("raw_datasets", "alpaca"), ("raw_datasets", "belle_zh"), ("raw_datasets", "dolly")]
POOL_RUN_KEYS = {*RAW_KEYS, ("instruction_pool",), ("pool_quarantine",), ("metric_features",),
                 ("length_indicators",), ("ifd_pre_experienced_model",), ("ifd_scores",)}
# Typed into the config editors. Keys left out keep their defaults; the resources keep theirs.
# Both fine-tunes (the pre-experienced model's and the checkpoint's) take 2 steps of 2 examples: on 2 shared cores
# a step of the default 4 examples takes 15-45 s. In-process execution: the run's steps in one process (no process
# started per step, the models loaded once).
POOL_RUN_CONFIG = ("ops:\n  ifd_pre_experienced_model:\n    config:\n      max_steps: 2\n      batch_size: 2\n"
                   "execution:\n  config:\n    in_process: {}\n")
FINETUNE_RUN_CONFIG = ("ops:\n  finetuned_checkpoints:\n    config:\n      max_steps: 2\n      batch_size: 2\n"
                       "execution:\n  config:\n    in_process: {}\n")

META = """__typename label
  ... on IntMetadataEntry { intValue }
  ... on FloatMetadataEntry { floatValue }
  ... on TextMetadataEntry { text }
  ... on JsonMetadataEntry { jsonString }
  ... on MarkdownMetadataEntry { mdStr }
  ... on PathMetadataEntry { path }"""

RUN_RECORD = """
query RunRecord($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      runId status startTime endTime runConfigYaml
      tags { key value }
      assetMaterializations { assetKey { path } partition metadataEntries { %s } }
    }
  }
}
""" % META


# ------------------------------------------------------------------------------------------------ helpers
def run_record(server: DagsterDev, run_id: str) -> dict:
    """The run's status, times, run config, tags and materialisations (``{key: {partition, metadata}}``)."""
    run = server.graphql(RUN_RECORD, {"runId": run_id})["runOrError"]
    assert run["__typename"] == "Run", run
    run["tag_map"] = {t["key"]: t["value"] for t in run["tags"]}
    run["materialized"] = {tuple(m["assetKey"]["path"]): {"partition": m["partition"],
                                                          "metadata": metadata_with_paths(m["metadataEntries"])}
                           for m in run["assetMaterializations"]}
    return run


def metadata_with_paths(entries: list[dict]) -> dict:
    out = metadata([e for e in entries if "path" not in e])
    out.update({e["label"]: e["path"] for e in entries if "path" in e})
    return out


def button(scope, label: str):
    """A button by its visible label: the accessible name also holds the icon's aria-label ("materialization
    Materialize all"), so the label is anchored at the end."""
    return scope.get_by_role("button", name=re.compile(rf"(^|\s){re.escape(label)}$"))


def open_dropdown_item(page, main_button, item: str) -> None:
    """The menu of the small arrow beside ``main_button`` (a split button), then its item ``item``."""
    arrow_name = "arrow_drop_down"
    split = (page.locator("div").filter(has=main_button)
             .filter(has=page.get_by_role("button", name=arrow_name, exact=True)).last)
    split.get_by_role("button", name=arrow_name, exact=True).click()
    page.get_by_role("menuitem", name=re.compile(rf"(^|\s){re.escape(item)}$")).click()  # after the icon's name


def type_run_config(page, launchpad, text: str) -> None:
    """Replace the config editor's text (CodeMirror) with ``text``: focus, select all, and input the text as one
    insertion (key by key, the editor's auto-indent would indent every new line again)."""
    editor = launchpad.locator(".CodeMirror").first
    sync_api.expect(editor).to_contain_text("config:")  # the default config, scaffolded
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(text)
    value = editor.evaluate("e => e.CodeMirror.getValue()")
    assert value == text, f"the config editor holds {value!r}, not the typed {text!r}"
    sync_api.expect(launchpad.get_by_text("No errors", exact=True)).to_be_visible()


def follow_launch_toast(page, base: str) -> str:
    """The "Launched run <8 hex> [View]" toast (shown ~4 s): follow its link to the run's page; return the run id."""
    toast = (page.get_by_role("region", name=re.compile(r"^Notifications")).get_by_role("listitem")
             .filter(has_text=re.compile(r"Launched run [0-9a-f]{8}")))
    sync_api.expect(toast).to_be_visible()
    view = toast.get_by_role("link", name="View", exact=True)
    href = view.get_attribute("href")
    assert href and re.fullmatch(r"/runs/[0-9a-f-]{36}", href), f"the toast's View link is {href!r}"
    try:
        view.click(timeout=3000)
    except sync_api.TimeoutError:  # the toast went away first: follow its link by hand
        page.goto(f"{base}{href}", wait_until="domcontentloaded")
    return wait_run_page(page)


def wait_run_page(page) -> str:
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    page.mouse.move(5, 5)  # off any toast: it stays while hovered, over the run page's events
    return re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)


def expand_graph_groups(page, timeout: float = 60.0) -> None:
    """Expand every collapsed asset group of the graph by its "unfold_more" icon. The graph keeps its zoom when a
    group opens and renders only the nodes in view, so the icons in view are clicked, then the page is reloaded
    without the stored zoom (it then fits the whole graph), until none is left; the expanded groups are kept in
    the browser's local storage."""
    deadline = time.monotonic() + timeout
    unfold = page.get_by_role("img", name="unfold_more", exact=True)
    while True:
        wait_graph_settled(page)
        if unfold.count() == 0:
            return
        while unfold.count() and time.monotonic() < deadline:
            try:
                unfold.first.click(timeout=2000)
            except sync_api.TimeoutError:  # moved out of view by the groups opened before it
                break
        assert time.monotonic() < deadline, f"{unfold.count()} asset groups still collapsed after {timeout:.0f} s"
        page.evaluate("() => ['defaultZoom', 'lineageGraphZoomLevel'].forEach(k => localStorage.removeItem(k))")
        page.reload(wait_until="domcontentloaded")
        sync_api.expect(page.get_by_text("Global asset lineage")).to_be_visible()


def number_in(text: str) -> float:
    match = re.search(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", text.replace(",", ""))
    assert match, f"no number in {text!r}"
    return float(match.group(0))


# ------------------------------------------------------------------------------------------------ the test
def test_checkpoint_chain_from_the_ui(tmp_path, dagster_ui, browser_page):
    with dagster_ui.show_log_on_failure():
        try:
            check_chain(tmp_path, dagster_ui, browser_page)
        except BaseException:
            failure = tmp_path / "screenshots" / "failure.png"
            with contextlib.suppress(Exception):
                failure.parent.mkdir(parents=True, exist_ok=True)
                browser_page.screenshot(path=str(failure), full_page=True)
                print(f"\n[ui-chain] the page at the failure: {browser_page.url} (screenshot {failure})",
                      file=sys.stderr)
            raise


def check_chain(tmp_path: Path, server: DagsterDev, page) -> None:
    from instsel_assets.selection.ifd_top_fraction import top_fraction_budget
    from instsel_assets.selection.plan import DEFAULT_BUDGET_FRACTION

    base = server.url
    copy_to = COPY_DIR if COPY_DIR.parent.parent.is_dir() else None  # .instsel exists
    screens = Screens(tmp_path / "screenshots", copy_to)
    expect = sync_api.expect
    started = time.monotonic()
    timings = {"startup_seconds": round(server.startup_seconds, 2), "runs": {}}

    def step(message: str) -> None:
        print(f"[ui-chain] {time.monotonic() - started:6.1f}s  {message}", flush=True)

    def wait_for(name: str, run_id: str, launched: float) -> dict:
        step(f"{name}: run {run_id} launched from the UI; waiting for it (GraphQL)")
        server.wait_for_run(run_id, timeout=MODEL_RUN_TIMEOUT)
        run = run_record(server, run_id)
        assert run["status"] == "SUCCESS", f"{name}: run {run_id} is {run['status']}"
        timings["runs"][name] = {"run_id": run_id, "run_seconds": round(run["endTime"] - run["startTime"], 1),
                                 "launch_to_success_seconds": round(time.monotonic() - launched, 1)}
        step(f"{name}: run {run_id} SUCCESS in {run['endTime'] - run['startTime']:.1f} s "
             f"({time.monotonic() - launched:.1f} s from the click, the queue included)")
        expect(page.get_by_text("Success", exact=True).first).to_be_visible()
        return run

    with contextlib.suppress(DagsterDevError):
        server.graphql("mutation { setNuxSeen }")  # the "Join the community" dialog's server-side flag

    # --- 1. the asset graph, narrowed to the chain by the selection typed into its search box -------------------
    step("asset graph")
    page.goto(f"{base}/asset-groups", wait_until="domcontentloaded")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    for group in ("raw", "pool", "features", "scores", "selection", "training"):
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    wait_graph_settled(page)
    screens.shoot(page, "asset_graph", full_page=False)

    step(f"asset graph: selection {CHAIN_SELECTION}")
    search = page.get_by_label("Search and filter assets")
    search.focus()  # a CodeMirror's hidden textarea: the editor's lines are over it
    page.keyboard.type(CHAIN_SELECTION)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/asset-groups~.*ifd_scores.*length_indicators"))
    materialize_all = button(page, "Materialize all")  # "Materialize all…" while partitioned assets are in view
    expect(materialize_all).to_be_visible()
    sidebar_groups = page.get_by_role("button", name=re.compile(r"^asset_group "))
    expect(sidebar_groups).to_have_count(5)
    for group in ("raw", "pool", "features", "scores", "sql_models"):
        expect(page.get_by_role("button", name=f"asset_group {group} {group}", exact=True)).to_be_visible()
    expand_graph_groups(page)
    for key in (*RAW_KEYS, ("instruction_pool",), ("metric_features",), ("length_indicators",), ("ifd_scores",)):
        expect(page.get_by_text(key[-1], exact=True).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"^ifd_pre_exp.*model$")).first).to_be_visible()  # the label is shortened
    expect(page.get_by_text("superfiltering_scores", exact=True)).to_have_count(0)
    screens.shoot(page, "asset_graph_ifd_chain", full_page=False)

    # --- 2. run 1: the pool chain from the Launchpad, with the typed run config --------------------------------------
    step("pool chain: Materialize all > Open launchpad")
    open_dropdown_item(page, materialize_all, "Open launchpad")
    extra = page.get_by_role("dialog").filter(has_text="Additional assets will be materialized")
    expect(extra).to_be_visible()
    expect(extra.get_by_text("pool_quarantine", exact=True)).to_be_visible()
    extra.get_by_role("button", name="Confirm").click()
    launchpad = page.get_by_role("dialog").filter(has_text="Launchpad (configure assets)")
    expect(launchpad).to_be_visible()
    for op in ("raw_datasets__alpaca", "instruction_pool_assets", "metric_features", "length_indicators",
               "ifd_pre_experienced_model", "ifd_scores"):
        expect(launchpad.get_by_role("button", name=op, exact=True)).to_be_visible()
    type_run_config(page, launchpad, POOL_RUN_CONFIG)
    screens.shoot(page, "launchpad_pool_chain", full_page=False)
    launched = time.monotonic()
    button(launchpad, "Materialize").click()
    pool_run_id = wait_run_page(page)
    pool_run = wait_for("pool chain", pool_run_id, launched)
    expect(page.get_by_text("ifd_scores").first).to_be_visible()
    screens.shoot(page, "run_pool_chain", full_page=False)

    assert yaml.safe_load(pool_run["runConfigYaml"]) == yaml.safe_load(POOL_RUN_CONFIG), \
        f"run config: {pool_run['runConfigYaml']!r}"
    assert pool_run["tag_map"].get("dagster/from_ui") == "true", pool_run["tag_map"]
    assert set(pool_run["materialized"]) == POOL_RUN_KEYS, sorted(pool_run["materialized"])
    pool_meta = pool_run["materialized"][("instruction_pool",)]["metadata"]
    read, kept = pool_meta["read"], pool_meta["kept"]
    assert read == len(RAW_KEYS) * ROWS_PER_SOURCE == kept + pool_meta["duplicates"] + pool_meta["quarantined"], \
        f"pool accounting: {pool_meta}"
    ifd_meta = pool_run["materialized"][("ifd_scores",)]["metadata"]
    assert ifd_meta["dagster/row_count"] == kept, f"ifd_scores has {ifd_meta['dagster/row_count']} rows, pool {kept}"
    pre_meta = pool_run["materialized"][("ifd_pre_experienced_model",)]["metadata"]
    assert (pre_meta["sft_config"]["max_steps"], pre_meta["sft_config"]["batch_size"]) == (2, 2), \
        f"the typed config did not reach the run: {pre_meta['sft_config']}"

    # --- 3. run 2: selected_subsets[ifd] from the partition dialog -----------------------------------------------
    step("selected_subsets: Materialize… > partition dialog")
    open_asset(page, base, "selected_subsets")
    button(page, "Materialize…").click()
    unsure = page.get_by_role("dialog").filter(has_text="Are you sure?")
    expect(unsure).to_be_visible()
    expect(unsure.get_by_text("superfiltering_scores", exact=True)).to_be_visible()  # never materialised here
    expect(unsure.get_by_text("ifd_scores", exact=True)).to_have_count(0)  # run 1 materialised it
    unsure.get_by_role("button", name="Confirm").click()
    partitions = page.get_by_role("dialog").filter(has_text="Launch runs to materialize selected_subsets").first
    expect(partitions).to_be_visible()
    expect(partitions.get_by_text("0 partitions", exact=True)).to_be_visible()
    partitions.get_by_text("Select a partition or create one").click()
    page.keyboard.type(METHOD)
    page.get_by_role("menuitem", name=re.compile(rf"^{METHOD}\s+{METHOD}$")).click()
    page.keyboard.press("Escape")  # closes the suggestions, not the dialog
    expect(page.get_by_role("menuitem")).to_have_count(0)
    expect(partitions).to_be_visible()
    expect(partitions.get_by_text("1 partition", exact=True)).to_be_visible()
    launch = partitions.get_by_role("button", name="Launch 1 run", exact=True)
    expect(launch).to_be_enabled()
    screens.shoot(page, "partition_dialog_selected_subsets", full_page=False)
    launched = time.monotonic()
    launch.click()
    subset_run_id = follow_launch_toast(page, base)
    subset_run = wait_for("selected_subsets[ifd]", subset_run_id, launched)
    expect(page.get_by_text("selected_subsets").first).to_be_visible()
    expect(page.get_by_text(f"partition: {METHOD}", exact=True)).to_be_visible()
    screens.shoot(page, "run_selected_subsets_ifd", full_page=False)

    assert subset_run["tag_map"].get("dagster/partition") == METHOD, subset_run["tag_map"]
    assert set(subset_run["materialized"]) == {("selected_subsets",)}, sorted(subset_run["materialized"])
    subset = subset_run["materialized"][("selected_subsets",)]
    assert subset["partition"] == METHOD, subset
    subset_meta = subset["metadata"]
    budget = top_fraction_budget(kept, DEFAULT_BUDGET_FRACTION)
    assert subset_meta["budget"] == subset_meta["dagster/row_count"] == budget, f"budget {budget}: {subset_meta}"
    assert subset_meta["method"] == METHOD and subset_meta["selector"] == "ifd", subset_meta
    assert subset_meta["score_assets_read"]["ifd_scores"]["run_id"] == pool_run_id, subset_meta["score_assets_read"]
    subset_hash = subset_meta["subset_hash"]
    assert re.fullmatch(r"[0-9a-f]{8,}", subset_hash), subset_hash

    # --- 4. run 3: finetuned_checkpoints[ifd] from the Launchpad, partition and config typed -----------------------
    step("finetuned_checkpoints: Materialize… > Open launchpad")
    open_asset(page, base, "finetuned_checkpoints")
    materialize = button(page, "Materialize…")
    expect(materialize).to_be_visible()
    open_dropdown_item(page, materialize, "Open launchpad")
    launchpad = page.get_by_role("dialog").filter(has_text="Launchpad (configure assets)")
    expect(launchpad).to_be_visible()
    partition_box = launchpad.get_by_placeholder("Partition")
    partition_box.click()
    page.keyboard.type(METHOD)
    page.get_by_role("menuitem", name=METHOD, exact=True).click()
    expect(partition_box).to_have_value(METHOD)
    expect(launchpad.get_by_text(f"partition: {METHOD}", exact=True)).to_be_visible()  # the run's tag
    type_run_config(page, launchpad, FINETUNE_RUN_CONFIG)
    screens.shoot(page, "launchpad_finetuned_checkpoints_ifd", full_page=False)
    editor_value = launchpad.locator(".CodeMirror").first.evaluate("e => e.CodeMirror.getValue()")
    assert editor_value == FINETUNE_RUN_CONFIG, f"the partition reset the typed config: {editor_value!r}"
    launched = time.monotonic()
    button(launchpad, "Materialize").click()
    finetune_run_id = wait_run_page(page)
    finetune_run = wait_for("finetuned_checkpoints[ifd]", finetune_run_id, launched)
    expect(page.get_by_text("finetuned_checkpoints").first).to_be_visible()
    expect(page.get_by_text(f"partition: {METHOD}", exact=True)).to_be_visible()
    screens.shoot(page, "run_finetuned_checkpoints_ifd", full_page=False)

    assert yaml.safe_load(finetune_run["runConfigYaml"]) == yaml.safe_load(FINETUNE_RUN_CONFIG), \
        f"run config: {finetune_run['runConfigYaml']!r}"
    assert finetune_run["tag_map"].get("dagster/partition") == METHOD, finetune_run["tag_map"]
    assert set(finetune_run["materialized"]) == {("finetuned_checkpoints",)}, sorted(finetune_run["materialized"])
    checkpoint = finetune_run["materialized"][("finetuned_checkpoints",)]
    assert checkpoint["partition"] == METHOD, checkpoint
    ck = checkpoint["metadata"]
    assert ck["selection_method"] == METHOD and ck["selector"] == "ifd", ck
    assert ck["subset_hash"] == subset_hash, f"checkpoint trained on {ck['subset_hash']}, run 2 selected {subset_hash}"
    assert ck["budget"] == budget and ck["base_model"] == BASE_MODEL, ck
    assert (ck["sft_config"]["max_steps"], ck["sft_config"]["batch_size"]) == (2, 2), \
        f"the typed config did not reach the run: {ck['sft_config']}"
    assert all(math.isfinite(ck[k]) for k in ("first_loss", "last_loss")), ck
    assert ck["scorer_settings"]["ifd"]["asset"] == "ifd_scores", ck["scorer_settings"]
    result = server.graphql(ASSET_CHECKS, {"key": {"path": ["finetuned_checkpoints"]}})["assetNodeOrError"]
    checks = {c["name"]: c["executionForLatestMaterialization"] for c in result["assetChecksOrError"]["checks"]}
    assert set(checks) == {"loads_and_generates", "training_loss_finite"}, sorted(checks)
    for name, execution in checks.items():
        assert execution and execution["runId"] == finetune_run_id, f"{name}: {execution}"
        assert execution["status"] == "SUCCEEDED" and execution["evaluation"]["success"], f"{name}: {execution}"

    # --- 5. the checkpoint's page, partition ifd: its metadata, checks and lineage ---------------------------------
    step("finetuned_checkpoints[ifd]: metadata")
    page.goto(f"{base}/assets/finetuned_checkpoints?view=partitions&partition={METHOD}", wait_until="domcontentloaded")
    expect(page.get_by_role("tab", name="Partitions")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_text("Materialized", exact=True).first).to_be_visible()
    expect(page.get_by_role("link", name=finetune_run_id[:8], exact=True)).to_be_visible()
    for key, value in (("selection_method", METHOD), ("selector", "ifd"), ("budget", str(budget)),
                       ("subset_hash", subset_hash), ("base_model", BASE_MODEL)):
        expect(metadata_row(page, key).locator("td").nth(1)).to_have_text(re.compile(rf"^\s*{re.escape(value)}\s*$"))
    for key in ("max_steps", "batch_size"):
        expect(metadata_row(page, "sft_config")).to_contain_text(re.compile(rf'"{key}":\s*2\b'))
    expect(metadata_row(page, "scorer_settings")).to_contain_text('"asset": "ifd_scores"')
    expect(metadata_row(page, "checkpoint_dir")).to_contain_text(f"checkpoints/{METHOD}")
    for key in ("first_loss", "last_loss"):
        shown = number_in(metadata_row(page, key).locator("td").nth(1).inner_text())
        assert abs(shown - ck[key]) < 1e-6, f"{key}: the page shows {shown}, the run recorded {ck[key]}"
    screens.shoot(page, "finetuned_checkpoints_ifd_metadata")

    step("finetuned_checkpoints: checks")
    page.get_by_role("tab", name="Checks").click()
    for name in checks:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text("Succeeded", exact=True)).to_have_count(len(checks))
    screens.shoot(page, "finetuned_checkpoints_checks", full_page=False)

    step("finetuned_checkpoints: lineage")
    forget_graph_zoom(page)
    page.get_by_role("tab", name="Lineage").click()
    page.wait_for_url(re.compile(r"view=lineage"))
    for name in ("selected_subsets", "instruction_pool", "finetuned_checkpoints", "evaluation_reports",
                 "generated_answers"):
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    wait_graph_settled(page)
    screens.shoot(page, "finetuned_checkpoints_lineage", full_page=False)

    # Upstream at full depth: every score asset selected_subsets may read, and the chain of this one.
    forget_graph_zoom(page)
    page.goto(f"{base}/assets/finetuned_checkpoints?view=lineage&lineageScope=upstream&lineageDepth=4",
              wait_until="domcontentloaded")
    expect(button(page, "Upstream")).to_be_visible()
    for name in ("selected_subsets", "instruction_pool", "ifd_scores", "metric_features", "length_indicators",
                 *(key[-1] for key in RAW_KEYS)):
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"^ifd_pre_exp.*model$")).first).to_be_visible()  # the label is shortened
    expect(page.get_by_text("evaluation_reports", exact=True)).to_have_count(0)  # downstream, not shown
    wait_graph_settled(page)
    screens.shoot(page, "finetuned_checkpoints_lineage_upstream", full_page=False)

    # The whole chain in the global asset graph, every group expanded: all of it materialised now.
    step("asset graph: the checkpoint's chain")
    chain = f'{CHAIN_SELECTION} or key:"selected_subsets" or key:"finetuned_checkpoints"'
    forget_graph_zoom(page)
    page.goto(f"{base}/asset-groups~{urllib.parse.quote(chain, safe='')}/", wait_until="domcontentloaded")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    expand_graph_groups(page)
    for group in ("raw", "pool", "features", "scores", "sql_models", "selection", "training"):
        expect(page.get_by_role("button", name=f"asset_group {group} {group}", exact=True)).to_be_visible()
    for name in ("instruction_pool", "metric_features", "length_indicators", "ifd_scores", "selected_subsets",
                 *(key[-1] for key in RAW_KEYS)):
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"^finet.*checkpoints$")).first).to_be_visible()  # the label is shortened
    screens.shoot(page, "asset_graph_checkpoint_chain", full_page=False)

    # --- timings and screenshots ----------------------------------------------------------------------------------
    timings["test_seconds_after_startup"] = round(time.monotonic() - started, 1)
    (tmp_path / "ui" / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(f"[ui-chain] dagster dev start-up {timings['startup_seconds']:.1f} s; runs: " + "; ".join(
        f"{name} {t['run_seconds']:.1f} s" for name, t in timings["runs"].items()), flush=True)
    step(f"{len(screens.taken)} screenshots in {screens.directory}" + (f" and {copy_to}" if copy_to else ""))
    if copy_to is not None:
        shutil.copy2(tmp_path / "ui" / "timings.json", copy_to / "timings.json")
    for path in screens.taken:
        print(f"[ui-chain]   {path.name}", flush=True)
