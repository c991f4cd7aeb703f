"""A real OpenAI-compatible server on loopback, and a fault-injecting proxy in front of it, for the judge tests.

``LlamaServer``: ``python -m llama_cpp.server`` (llama-cpp-python[server], pinned in requirements.lock) serving
the packaged SmolLM2-135M-Instruct GGUF (``loading.packaged_gguf_path``) on a free 127.0.0.1 port with a fixed
seed, ``n_ctx`` 2048 (the AlpaGasus prompt is ~300 tokens) and 2 threads, with ``OMP_WAIT_POLICY=PASSIVE``
(unless set): llama.cpp's OpenMP threads otherwise spin at every barrier, and on a 2-core machine with any
other busy process one answer took 20-40 s instead of ~2.5 s (measured with the same prompt and 24 answer
tokens; 1 thread took ~2.3 s). ``start()`` waits until
``/v1/models`` answers (``RuntimeError`` with the tail of the server's stderr when it exits or does not answer
within ``start_timeout`` seconds), then sends one warm-up chat request (a judge-sized prompt, 16 answer tokens)
and keeps its latency in ``answer_seconds``, from which the tests size their client timeouts. ``stop()`` ends the process it started
(SIGTERM, then SIGKILL). The server answers one request at a time; it accepts any ``model`` name.

``FaultProxy``: a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 that forwards ``POST /v1/chat/completions`` to
the server, or injects a fault, following a per-request script: ``script(marker, fault, ...)`` gives the next
requests whose last message contains ``marker`` those faults, one per request, in order (then they pass
through). Faults, and whether the upstream model is asked (= the answer is produced, i.e. paid):

- ``"429"`` (with ``Retry-After: 1``), ``"500"``, ``"garbage"`` (a 200 HTML page): answered by the proxy; the
  model is NOT asked (nothing paid);
- ``"timeout"``: the model IS asked and answers (paid), then the proxy holds the answer back for
  ``hold_seconds`` (longer than the client's timeout) and closes the connection without a response: the
  "paid but lost" case of a client-side timeout; the client retries;
- ``"truncated"``: the model IS asked and answers (paid), and the client gets only the first half of the
  JSON body (with a matching ``Content-Length``): paid but lost, the client sees invalid JSON;
- ``"cut"``: the model IS asked and answers (paid); the proxy announces the whole body but sends half of it
  and closes the connection: paid but lost, the client sees a connection error.

Counters, all by request body (the canonical JSON of what the client sent, ``body_key``): ``forwarded`` (sent
upstream), ``paid`` (upstream answered with a chat completion), ``delivered`` (a complete upstream answer
handed to the client), ``faults`` (faults served), ``usage_paid`` / ``usage_delivered`` (the server's token
usage, prompt + completion), ``texts_delivered`` (the answer texts the client got), ``auth_headers``.
Paid but lost = ``paid - delivered``: only the ``timeout``, ``truncated`` and ``cut`` faults make it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loopback_http import LoopbackHTTPServer, body_key, send_reply

MODEL = "smollm2-135m-instruct"  # the alias the server reports; it answers any model name
CHAT_PATH = "/v1/chat/completions"
FAULTS = ("429", "500", "garbage", "timeout", "truncated", "cut")
PAID_FAULTS = ("timeout", "truncated", "cut")  # the model answered, the client never got the answer
RETRY_AFTER_SECONDS = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post_json(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


# -------------------------------------------------------------------------------------------------- server
class LlamaServer:
    """``python -m llama_cpp.server`` with the packaged SmolLM2 GGUF on 127.0.0.1 (module docstring)."""

    def __init__(self, *, n_ctx: int = 2048, n_threads: int = 2, seed: int = 0, start_timeout: float = 60.0,
                 log_dir: str | os.PathLike[str] | None = None) -> None:
        self.omp_wait_policy = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.seed = seed
        self.start_timeout = start_timeout
        self.log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="llama-server-"))
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.answer_seconds: float | None = None
        self.start_seconds: float | None = None

    @property
    def url(self) -> str:
        """The OpenAI base URL (``http://127.0.0.1:<port>/v1``)."""
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / "llama-server.stderr.log"

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no stderr)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty stderr)"

    def command(self, gguf: Path) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL,
                "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
                "--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads),
                "--seed", str(self.seed), "--verbose", "False"]

    def start(self) -> LlamaServer:
        try:
            import llama_cpp  # noqa: F401  (only to fail early with a clear message)
        except ImportError as exc:
            raise RuntimeError("llama-cpp-python[server] is not installed; `make install` installs it from "
                               "requirements.lock") from exc
        from instsel_assets.models.loading import packaged_gguf_path

        gguf = packaged_gguf_path()
        self.port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.log_dir / "llama-server.stdout.log", "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(self.command(gguf), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                            start_new_session=True,
                                            env={**os.environ, "OMP_WAIT_POLICY": self.omp_wait_policy})
        try:
            self._wait_until_ready(t0 + self.start_timeout)
            self.start_seconds = time.monotonic() - t0
            self.answer_seconds = self._warm_up()
        except BaseException:
            self.stop()  # never leave a server behind (an interrupt included)
            raise
        return self

    def _wait_until_ready(self, deadline: float) -> None:
        assert self.process is not None
        last_error = "no answer yet"
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the llama.cpp server exited with code {self.process.returncode} before "
                                   f"answering {self.url}/models; its stderr ends with:\n{self.stderr_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as response:
                    models = json.loads(response.read())
                if any(m.get("id") == MODEL for m in models.get("data", [])):
                    return
                last_error = f"/v1/models answered {models!r}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise RuntimeError(f"the llama.cpp server did not answer {self.url}/models within "
                                   f"{self.start_timeout:g} s ({last_error}); its stderr ends with:\n"
                                   f"{self.stderr_tail()}")
            time.sleep(0.2)

    def _warm_up(self) -> float:
        """Seconds for one answer of 16 tokens to a judge-sized prompt (~250 tokens)."""
        text = "Rate this text from 0 to 5. " + "The quick brown fox jumps over the lazy dog. " * 25
        t0 = time.monotonic()
        reply = _post_json(f"{self.url}/chat/completions",
                           {"model": MODEL, "messages": [{"role": "user", "content": text}],
                            "max_tokens": 16, "temperature": 0.0}, timeout=120)
        if not reply.get("choices"):
            raise RuntimeError(f"the llama.cpp server's warm-up answer has no choices: {reply!r}")
        return time.monotonic() - t0

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -------------------------------------------------------------------------------------------------- proxy
class FaultProxy(LoopbackHTTPServer):
    """Forwards chat completions to ``upstream`` (an OpenAI base URL) or injects scripted faults (module
    docstring). Use as a context manager, or ``start()`` / ``stop()``."""

    thread_name = "fault-proxy"

    def __init__(self, upstream: str, *, hold_seconds: float = 5.0, upstream_timeout: float = 300.0) -> None:
        super().__init__()
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.upstream_prefix = parts.path.rstrip("/")  # "/v1"
        self.hold_seconds = hold_seconds
        self.upstream_timeout = upstream_timeout
        self.lock = threading.Lock()
        self.by_marker: dict[str, deque[str]] = {}
        self.received = 0
        self.forwarded: Counter[str] = Counter()
        self.paid: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.faults_by_body: dict[str, list[str]] = {}
        self.usage_paid = 0
        self.usage_delivered = 0
        self.usage_lost = 0
        self.texts_delivered: dict[str, str] = {}
        self.auth_headers: list[str] = []

    # ------------------------------------------------------------------------------------------ script
    def script(self, marker: str, *faults: str) -> None:
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {FAULTS}")
        with self.lock:
            self.by_marker.setdefault(marker, deque()).extend(faults)

    def _next_fault(self, content: str) -> str | None:
        with self.lock:
            for marker, faults in self.by_marker.items():
                if marker in content and faults:
                    return faults.popleft()
        return None

    @property
    def paid_but_lost(self) -> Counter[str]:
        with self.lock:
            return Counter({k: self.paid[k] - self.delivered[k] for k in self.paid if self.paid[k] > self.delivered[k]})

    # ------------------------------------------------------------------------------------------ life
    def on_post(self, handler: BaseHTTPRequestHandler) -> None:
        self._handle(handler)

    # ------------------------------------------------------------------------------------------ handling

    def _forward(self, raw: bytes, authorization: str) -> tuple[int, str, bytes]:
        import http.client

        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=self.upstream_timeout)
        try:
            headers = {"Content-Type": "application/json"}
            if authorization:
                headers["Authorization"] = authorization
            connection.request("POST", self.upstream_prefix + "/chat/completions", body=raw, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type", "application/json"), response.read()
        finally:
            connection.close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        if urlsplit(handler.path).path.rstrip("/") != CHAT_PATH:
            send_reply(handler, 404, b'{"error": {"message": "not found"}}')
            return
        body = json.loads(raw)
        key = body_key(body)
        messages = body.get("messages") or []
        fault = self._next_fault(str(messages[-1].get("content", "")) if messages else "")
        with self.lock:
            self.received += 1
            self.auth_headers.append(handler.headers.get("Authorization", ""))
            if fault is not None:
                self.faults[fault] += 1
                self.faults_by_body.setdefault(key, []).append(fault)
        # faults answered by the proxy itself: the model is not asked, nothing is paid
        if fault == "429":
            send_reply(handler, 429, b'{"error": {"message": "Rate limit reached (injected)", "type": "requests"}}',
                       headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
            return
        if fault == "500":
            send_reply(handler, 500, b'{"error": {"message": "injected internal error"}}')
            return
        if fault == "garbage":
            send_reply(handler, 200, b"<html><body>upstream said something odd</body></html>", "text/html")
            return
        # the model is asked
        with self.lock:
            self.forwarded[key] += 1
        status, content_type, data = self._forward(raw, handler.headers.get("Authorization", ""))
        usage = 0
        text = None
        if status == 200:
            try:
                completion = json.loads(data)
                text = completion["choices"][0]["message"]["content"]
                usage = int(completion["usage"]["total_tokens"])
            except (ValueError, KeyError, IndexError, TypeError):
                completion = None
            if completion is not None:
                with self.lock:
                    self.paid[key] += 1
                    self.usage_paid += usage
        if fault == "timeout":  # paid, then held back past the client's timeout, then dropped
            with self.lock:
                self.usage_lost += usage
            self._stopping.wait(self.hold_seconds)
            handler.close_connection = True
            return
        if fault == "truncated":  # paid, and the client gets half of the JSON
            with self.lock:
                self.usage_lost += usage
            send_reply(handler, 200, data[: len(data) // 2], content_type)
            return
        if fault == "cut":  # paid; the whole body announced, half of it sent, the connection closed
            with self.lock:
                self.usage_lost += usage
            handler.send_response(200)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        send_reply(handler, status, data, content_type)
        if text is not None:
            with self.lock:
                self.delivered[key] += 1
                self.usage_delivered += usage
                self.texts_delivered[key] = text
