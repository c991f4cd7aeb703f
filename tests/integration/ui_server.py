"""``dagster dev`` on loopback for the UI tests: start it, talk GraphQL to it, stop it.

``DagsterDev(log_path, env=...)`` runs ``python -m dagster dev -w workspace.yaml -h 127.0.0.1 -p PORT`` from the
project root in its own process group (``start_new_session=True``, SIGINT and SIGTERM at their defaults: see
``_default_signals``), with stdout and stderr in ``log_path`` (kept after the test). ``start()`` waits until
``/server_info`` answers and GraphQL reports the code location ``location`` (default ``instsel``) as loaded
(``workspaceOrError``: ``loadStatus`` ``LOADED`` and a ``RepositoryLocation``; ``repositoriesOrError``: a repository
in that location); it raises ``DagsterDevError`` with the tail of the log when the process exits, the location fails
to load (at once, with its Python error) or ``start_timeout`` passes. ``startup_seconds`` is the time from the spawn
to the loaded location, ``server_info_seconds`` the time to the first ``/server_info`` answer. ``stop()`` sends
SIGTERM to ``dagster dev``, then to whatever is left of its process group, then SIGKILL to the group once
``stop_timeout`` seconds have passed (``stop_seconds``: how long it took). As a context manager it stops the server
on the way out and, when the block raised, prints the log tail to stderr; ``show_log_on_failure()`` does the latter
for a block of its own (a test body, whose exceptions a fixture's ``with`` does not see).

Helpers for the tests: ``graphql(query, variables)`` (returns ``data``; ``DagsterDevError`` on GraphQL errors),
``launch_assets(asset_keys)`` (``launchRun`` of ``__ASSET_JOB`` with an asset selection; returns the run id),
``wait_for_run(run_id)`` (polls ``runOrError`` until the run ends; ``DagsterDevError`` with the run's error
events and the log tail unless it succeeded) and ``log_tail()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from instsel_assets import settings

REPOSITORY = "__repository__"  # the repository name of a code location that loads a Definitions object
ASSET_JOB = "__ASSET_JOB"
TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}

WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { name repositories { name } }
          ... on PythonError { message stack }
        }
      }
    }
    ... on PythonError { message }
  }
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } } }
    ... on PythonError { message }
  }
}
"""

LAUNCH_RUN = """
mutation LaunchAssets($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on RunConflict { message }
  }
}
"""

RUN_STATUS = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status startTime endTime }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

RUN_ERRORS = """
query RunErrors($runId: ID!) {
  logsForRun(runId: $runId, limit: 2000) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message stepKey level }
        ... on ExecutionStepFailureEvent { error { message stack } }
        ... on RunFailureEvent { error { message } }
      }
    }
  }
}
"""


def _default_signals() -> None:
    """In the child before exec: SIGINT and SIGTERM back to their defaults. A shell without job control starts
    background commands with SIGINT ignored, and the ignored disposition is inherited through exec; ``dagster dev``
    stops its webserver, daemon and code server with SIGINT, so a test run from such a shell (``nohup``, ``cmd &``)
    would leave them running after SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class DagsterDevError(RuntimeError):
    """``dagster dev`` did not start, did not answer, or a run it executed did not succeed."""


class LocationLoadError(DagsterDevError):
    """The code location failed to load (a Python error in the definitions)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_instance_config(dagster_home: Path) -> Path:
    """``DAGSTER_HOME`` created with the instance ``instsel`` writes (``cli._ensure_dagster_home``): SQLite
    storage under it, telemetry off."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    return config


class DagsterDev:
    def __init__(self, log_path: Path, *, env: dict[str, str] | None = None, workspace: str = "workspace.yaml",
                 cwd: Path | None = None, location: str = "instsel", host: str = "127.0.0.1",
                 port: int | None = None, start_timeout: float = 240.0, stop_timeout: float = 30.0) -> None:
        self.log_path = Path(log_path)
        self.env = dict(os.environ if env is None else env)
        self.workspace = workspace
        self.cwd = Path(cwd or settings.PROJECT_ROOT)
        self.location = location
        self.host = host
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.startup_seconds: float | None = None
        self.server_info_seconds: float | None = None
        self.server_info: dict[str, Any] | None = None
        self.stop_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._log = None

    # ------------------------------------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "dagster", "dev", "-w", self.workspace, "-h", self.host, "-p", str(self.port)]

    def start(self) -> "DagsterDev":
        assert self._proc is None, "already started"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        # No proxy for loopback: a proxy configured in the environment must not see the UI's requests.
        self.env.setdefault("NO_PROXY", "127.0.0.1,localhost")
        started = time.monotonic()
        self._proc = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=_default_signals)
        try:
            self._wait_until_loaded(started)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_loaded(self, started: float) -> None:
        deadline = started + self.start_timeout
        last_state = "no answer from /server_info yet"
        while True:
            if self._proc.poll() is not None:
                raise DagsterDevError(f"`dagster dev` exited with {self._proc.returncode} before the code location "
                                      f"{self.location!r} was loaded ({last_state}).\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise DagsterDevError(f"`dagster dev` did not load the code location {self.location!r} within "
                                      f"{self.start_timeout:.0f} s ({last_state}).\n{self.log_tail()}")
            if self.server_info is None:
                try:
                    with self._opener().open(f"{self.url}/server_info", timeout=5) as response:
                        self.server_info = json.loads(response.read())
                    self.server_info_seconds = time.monotonic() - started
                    last_state = "webserver up, code location not loaded yet"
                except (OSError, ValueError) as err:
                    last_state = f"/server_info: {err}"
            if self.server_info is not None:
                try:
                    state = self._location_state()
                except LocationLoadError:
                    raise
                except (OSError, ValueError, DagsterDevError) as err:
                    state = f"GraphQL: {err}"
                if state == "loaded":
                    self.startup_seconds = time.monotonic() - started
                    return
                last_state = state
            time.sleep(0.25)

    def _location_state(self) -> str:
        """``"loaded"``, or what is still missing; raises ``DagsterDevError`` when the location failed to load."""
        data = self.graphql(WORKSPACE_QUERY)
        workspace = data["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            return f"workspaceOrError: {workspace.get('message', workspace['__typename'])}"
        entries = {e["name"]: e for e in workspace["locationEntries"]}
        entry = entries.get(self.location)
        if entry is None:
            return f"no location {self.location!r} in the workspace (has {sorted(entries)})"
        loaded = entry["locationOrLoadError"]
        if loaded and loaded["__typename"] == "PythonError":
            raise LocationLoadError(f"the code location {self.location!r} failed to load: {loaded['message']}\n"
                                  f"{loaded.get('stack') and ''.join(loaded['stack'])[-3000:]}\n{self.log_tail()}")
        if entry["loadStatus"] != "LOADED" or not loaded or loaded["__typename"] != "RepositoryLocation":
            return f"location {self.location!r} is {entry['loadStatus']}"
        repositories = data["repositoriesOrError"]
        if repositories["__typename"] != "RepositoryConnection":
            return f"repositoriesOrError: {repositories.get('message', repositories['__typename'])}"
        if not any(r["location"]["name"] == self.location for r in repositories["nodes"]):
            return f"no repository of {self.location!r} listed yet"
        return "loaded"

    def stop(self) -> None:
        """SIGTERM to ``dagster dev`` (it shuts its webserver, daemon and code server down in order), then SIGTERM to
        whatever of its process group is left, then SIGKILL to the group after ``stop_timeout`` seconds in all."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stopping = time.monotonic()
            deadline = stopping + self.stop_timeout
            pgid = proc.pid  # start_new_session: the group id is the leader's pid
            # Signalling the whole group at once races with dagster dev's own shutdown: its code-server manager
            # can restart a code server that the group signal just stopped, which then outlives everything.
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(1.0, deadline - time.monotonic() - 5))
            if self._group_alive(pgid):
                self._signal_group(pgid, signal.SIGTERM)
                while self._group_alive(pgid) and time.monotonic() < deadline:
                    time.sleep(0.2)
            if self._group_alive(pgid):
                self._signal_group(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            self.stop_seconds = time.monotonic() - stopping
        if self._log is not None:
            self._log.close()
            self._log = None

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        """Whether a live (not zombie) process of the group is left."""
        proc_root = Path("/proc")
        if proc_root.is_dir():
            for stat in proc_root.glob("[0-9]*/stat"):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
                    return True
            return False
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    @contextlib.contextmanager
    def show_log_on_failure(self):
        """Print the log tail to stderr when the block raises (pytest shows it with the failure), then re-raise."""
        try:
            yield self
        except DagsterDevError:
            raise  # its message has the tail already
        except BaseException:
            print(f"\n----- dagster dev log ({self.log_path}) -----\n{self.log_tail()}", file=sys.stderr, flush=True)
            raise

    def __enter__(self) -> "DagsterDev":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()
        if exc_type is not None and not issubclass(exc_type, DagsterDevError):
            print(f"\n----- dagster dev log ({self.log_path}) -----\n{self.log_tail()}", file=sys.stderr)

    # ------------------------------------------------------------------------------------------- helpers
    def log_tail(self, chars: int = 6000) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            return f"(no log: {err})"
        return f"--- last {min(chars, len(text))} characters of {self.log_path} ---\n{text[-chars:]}"

    @staticmethod
    def _opener():
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def graphql(self, query: str, variables: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with self._opener().open(request, timeout=timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise DagsterDevError(f"GraphQL HTTP {err.code}: {err.read()[:2000]!r}") from err
        if payload.get("errors"):
            raise DagsterDevError(f"GraphQL errors: {json.dumps(payload['errors'])[:3000]}")
        return payload["data"]

    def launch_assets(self, asset_keys: Sequence[Sequence[str]], tags: dict[str, str] | None = None) -> str:
        """Launch ``__ASSET_JOB`` for ``asset_keys`` (each a key path) with their checks; return the run id."""
        params = {
            "selector": {"repositoryLocationName": self.location, "repositoryName": REPOSITORY,
                         "jobName": ASSET_JOB, "assetSelection": [{"path": list(k)} for k in asset_keys]},
            "mode": "default",
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
        }
        result = self.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise DagsterDevError(f"launchRun of {[list(k) for k in asset_keys]} returned {result['__typename']}: "
                                  f"{json.dumps(result)[:3000]}")
        return result["run"]["runId"]

    def run_status(self, run_id: str) -> dict[str, Any]:
        run = self.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]
        if run["__typename"] != "Run":
            raise DagsterDevError(f"runOrError({run_id}): {run['__typename']} {run.get('message', '')}")
        return run

    def wait_for_run(self, run_id: str, timeout: float = 300.0, poll: float = 0.5) -> dict[str, Any]:
        """Poll until the run ends; return its ``runOrError`` record when it succeeded, else raise with why."""
        deadline = time.monotonic() + timeout
        run = self.run_status(run_id)
        while run["status"] not in TERMINAL_RUN_STATUSES:
            if self._proc is not None and self._proc.poll() is not None:
                raise DagsterDevError(f"`dagster dev` exited with {self._proc.returncode} while run {run_id} was "
                                      f"{run['status']}.\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise DagsterDevError(f"run {run_id} still {run['status']} after {timeout:.0f} s.\n"
                                      f"{self.run_errors(run_id)}\n{self.log_tail()}")
            time.sleep(poll)
            run = self.run_status(run_id)
        if run["status"] != "SUCCESS":
            raise DagsterDevError(f"run {run_id} ended {run['status']}:\n{self.run_errors(run_id)}\n{self.log_tail()}")
        return run

    def run_errors(self, run_id: str) -> str:
        """The run's warning / error messages and step failures, as text (for failure messages)."""
        try:
            logs = self.graphql(RUN_ERRORS, {"runId": run_id})["logsForRun"]
        except (OSError, DagsterDevError) as err:
            return f"(could not read the run's events: {err})"
        lines = []
        for event in logs.get("events", []):
            error = event.get("error")
            if error:
                lines.append(f"{event['__typename']} {event.get('stepKey') or ''}: {error['message']}"
                             + ("".join(error.get("stack") or [])[-2000:]))
            elif event.get("level") in ("ERROR", "CRITICAL", "WARNING"):
                lines.append(f"{event['__typename']} {event.get('stepKey') or ''}: {event.get('message')}")
        return "run events:\n" + ("\n".join(lines[-30:]) or "(no error events)")
