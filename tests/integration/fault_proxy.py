"""A fault-injecting HTTP proxy on 127.0.0.1 in front of an OpenAI-compatible server, for the judge fault tests.

``FaultProxy(upstream)`` forwards ``POST /v1/chat/completions`` to ``upstream`` (an OpenAI base URL: the
scripted server of ``tests/unit/scripted_openai_server.py``, or a real one) or injects a fault, following a
per-request script: ``script(marker, fault, ...)`` gives the next requests whose last message contains ``marker``
those faults, one per request (attempt), in order; then they pass through. Faults, and what the proxy bills
(``billed_tokens``, the tokens a provider would charge for that attempt):

- ``"delay"``: the request IS forwarded and answered (billed at the upstream's usage), then the proxy holds
  the answer back ``hold_seconds`` (longer than the client's timeout) and closes the connection: a client
  timeout on a paid answer;
- ``"reset"``: the connection is reset (TCP RST, ``SO_LINGER`` 0) right after the request was read, with no
  reply; not forwarded, nothing billed;
- ``"429:<seconds>"`` (with ``Retry-After: <seconds>``), ``"429"`` (without), ``"500"``, ``"503"``: an error
  response with a JSON error body; not forwarded, nothing billed;
- ``"notjson"``: a 200 response announced as ``application/json`` whose body is not JSON; ``"html"``: a 200 HTML
  page; ``"nochoices"``: a 200 chat completion with ``choices: []``; ``"refusal"``: a 200 chat completion whose
  content is a refusal (``REFUSAL``); ``"refusal_field"``: a 200 chat completion with ``content: null`` and the
  refusal in ``message.refusal`` (OpenAI's structured refusals); ``"empty"``: a 200 chat completion with
  ``content: ""``. These are produced by the proxy (not forwarded) and billed as a provider would: a chat
  completion at the usage it reports; a body that is not JSON at the worst case (the prompt's usage plus
  ``max_tokens`` of completion), since the provider may have run the model behind it.

Counters: ``received`` (requests reaching the proxy), ``attempts`` (by request body, ``body_key``: a list of
``Attempt`` with arrival and reply times, the fault, the HTTP status and the tokens billed, in order),
``forwarded``, ``billed_tokens`` / ``billed_prompt`` / ``billed_completion`` (totals), ``faults`` (served, by name). ``waits(key)`` gives the seconds between the end of each
attempt's reply and the arrival of the next attempt of the same body (how long the client waited).
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: loopback_http
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # the scripted server beside the unit tests

from loopback_http import LoopbackHTTPServer, body_key, send_reply  # noqa: E402
from scripted_openai_server import usage_for  # noqa: E402

CHAT_PATH = "/v1/chat/completions"
REFUSAL = "I'm sorry, but I can't help with that request."
SIMPLE_FAULTS = ("delay", "reset", "429", "500", "503", "notjson", "html", "nochoices", "refusal", "refusal_field",
                 "empty")
BILLED_BY_PROXY = ("notjson", "html", "nochoices", "refusal", "refusal_field", "empty")


def check_fault(fault: str) -> None:
    if fault in SIMPLE_FAULTS:
        return
    head, _, seconds = fault.partition(":")
    if head == "429" and seconds:
        float(seconds)
        return
    raise ValueError(f"unknown fault {fault!r}; known: {SIMPLE_FAULTS} and '429:<seconds>'")


@dataclass
class Attempt:
    arrived: float  # time.monotonic() when the request was read
    fault: str | None
    status: int | None = None  # HTTP status sent; None: no reply (delay, reset)
    replied: float | None = None  # time.monotonic() when the reply was sent or the connection dropped
    billed_prompt: int = 0  # tokens a provider would bill for this attempt
    billed_completion: int = 0

    @property
    def billed(self) -> int:
        return self.billed_prompt + self.billed_completion


class FaultProxy(LoopbackHTTPServer):
    """See the module docstring. Use as a context manager, or ``start()`` / ``stop()``."""

    thread_name = "fault-proxy"

    def __init__(self, upstream: str, *, hold_seconds: float = 2.0) -> None:
        super().__init__()
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.upstream_prefix = parts.path.rstrip("/")
        self.hold_seconds = hold_seconds
        self.lock = threading.Lock()
        self.by_marker: dict[str, deque[str]] = {}
        self.received = 0
        self.attempts: dict[str, list[Attempt]] = {}
        self.forwarded: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.billed_tokens = 0
        self.billed_prompt = 0
        self.billed_completion = 0

    # ------------------------------------------------------------------------------------------ script
    def script(self, marker: str, *faults: str) -> None:
        for fault in faults:
            check_fault(fault)
        with self.lock:
            self.by_marker.setdefault(marker, deque()).extend(faults)

    def _next_fault(self, content: str) -> str | None:
        with self.lock:
            for marker, faults in self.by_marker.items():
                if marker in content and faults:
                    return faults.popleft()
        return None

    def attempts_for(self, marker: str) -> list[Attempt]:
        """The attempts of the one request body whose last message contains ``marker``."""
        with self.lock:
            found = [a for k, a in self.attempts.items() if marker in json.loads(k)["messages"][-1]["content"]]
        assert len(found) == 1, f"{len(found)} request bodies contain {marker!r}"
        return found[0]

    @staticmethod
    def waits(attempts: list[Attempt]) -> list[float]:
        # a "delay" attempt is held past the client's timeout: the client's wait started when it gave up
        return [b.arrived - a.replied for a, b in zip(attempts, attempts[1:])
                if a.replied is not None and a.fault != "delay"]

    # ------------------------------------------------------------------------------------------ handling
    def on_post(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        arrived = time.monotonic()
        if urlsplit(handler.path).path.rstrip("/") != CHAT_PATH:
            send_reply(handler, 404, b'{"error": {"message": "not found"}}')
            return
        body = json.loads(raw)
        key = body_key(body)
        messages = body.get("messages") or []
        fault = self._next_fault(str(messages[-1].get("content", "")) if messages else "")
        attempt = Attempt(arrived, fault)
        with self.lock:
            self.received += 1
            self.attempts.setdefault(key, []).append(attempt)
            if fault is not None:
                self.faults[fault] += 1
        try:
            self._serve(handler, raw, body, key, fault, attempt)
        finally:
            attempt.replied = time.monotonic()
            with self.lock:
                self.billed_tokens += attempt.billed
                self.billed_prompt += attempt.billed_prompt
                self.billed_completion += attempt.billed_completion

    def _serve(self, handler: BaseHTTPRequestHandler, raw: bytes, body: dict, key: str, fault: str | None,
               attempt: Attempt) -> None:
        messages = body.get("messages") or []
        max_tokens = int(body.get("max_tokens") or 16)
        if fault == "reset":
            sock = handler.connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.rfile.close()
            sock.close()  # RST, no reply
            handler.close_connection = True
            return
        if fault is not None and fault.split(":")[0] in ("429", "500", "503"):
            status = int(fault.split(":")[0])
            headers = {"Retry-After": fault.split(":")[1]} if ":" in fault else {}
            message = {429: "Rate limit reached (injected)", 500: "injected internal error",
                       503: "injected: the engine is overloaded"}[status]
            attempt.status = status
            send_reply(handler, status, json.dumps({"error": {"message": message, "type": "injected"}}).encode(),
                       headers=headers)
            return
        if fault in BILLED_BY_PROXY:
            attempt.billed_prompt = usage_for(messages, "", max_tokens)["prompt_tokens"]
            attempt.billed_completion = max_tokens
            attempt.status = 200
            if fault == "notjson":
                send_reply(handler, 200, b"upstream hiccup: {\"choices\": [ <- cut here, not JSON")
            elif fault == "html":
                send_reply(handler, 200, b"<html><body>502 Bad Gateway (served as 200)</body></html>", "text/html")
            else:
                message: dict[str, Any] = {"role": "assistant", "content": REFUSAL}
                if fault == "refusal_field":
                    message = {"role": "assistant", "content": None, "refusal": REFUSAL}
                elif fault == "empty":
                    message["content"] = ""
                usage = usage_for(messages, REFUSAL if fault in ("refusal", "refusal_field") else "", max_tokens)
                attempt.billed_prompt, attempt.billed_completion = usage["prompt_tokens"], usage["completion_tokens"]
                choices = [] if fault == "nochoices" else [{"index": 0, "message": message, "finish_reason": "stop"}]
                completion = {"id": "chatcmpl-proxy", "object": "chat.completion", "created": int(time.time()),
                              "model": body.get("model"), "choices": choices, "usage": usage}
                send_reply(handler, 200, json.dumps(completion).encode())
            return
        # forwarded to the upstream: the model is asked (paid)
        with self.lock:
            self.forwarded[key] += 1
        status, content_type, data = self._forward(raw, handler.headers.get("Authorization", ""))
        if status == 200:
            try:
                usage = json.loads(data)["usage"]
                attempt.billed_prompt = int(usage["prompt_tokens"])
                attempt.billed_completion = int(usage["completion_tokens"])
            except (ValueError, KeyError, TypeError):
                pass
        if fault == "delay":  # paid, then held back past the client's timeout, then dropped
            self._stopping.wait(self.hold_seconds)
            handler.close_connection = True
            return
        attempt.status = status
        send_reply(handler, status, data, content_type)

    def _forward(self, raw: bytes, authorization: str) -> tuple[int, str, bytes]:
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            headers = {"Content-Type": "application/json"}
            if authorization:
                headers["Authorization"] = authorization
            connection.request("POST", self.upstream_prefix + "/chat/completions", body=raw, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type", "application/json"), response.read()
        finally:
            connection.close()
