"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, shared by the judge tests.

It stands in for the upstream model at the HTTP boundary: the real ``openai`` client talks to it over a real
socket, so the backend's error mapping and the engine's retries, budget and caching are exercised against
real HTTP responses. (A later test will run the real llama.cpp server behind a proxy.)

Answers are deterministic: a last message containing ``rate:K`` is answered ``"Score: K"``; one containing
``unreadable`` is answered ``"I would rather not say."``; a pairwise review request (the Vicuna reviewer prompt of
``judge/templates/pairwise.py``) is answered ``"S1 S2"`` and a line of explanation, each score 1-10 from its
answer's length (``pairwise_scores``: longer scores higher, so the verdicts depend on the answers, and swapping
them swaps the scores); anything else ``"echo: <first 40 characters>"``.
Usage: ``prompt_tokens = ceil(content bytes / 4) + 3 per message``, ``completion_tokens = min(max_tokens,
ceil(answer bytes / 4))``.

Faults are scripted per request: ``script(marker, fault, ...)`` makes the next requests whose last message
contains ``marker`` get those faults, one each, in order (then normal answers); ``queue(fault, ...)`` gives
faults to the next requests of any content, in arrival order. Faults:

- ``"delay"``: wait ``delay_seconds`` (longer than the client timeout), then close without answering;
- ``"429"``, ``"429:<seconds>"`` (with ``Retry-After: <seconds>``), ``"429:date:<seconds>"`` (``Retry-After``
  as an HTTP-date that many seconds ahead);
- ``"500"``, ``"503"``, ``"401"`` (an error body that echoes the request's bearer token, as a careless proxy
  might), ``"400"``;
- ``"truncated"`` (a 200 JSON body cut in the middle), ``"garbage"`` (a 200 HTML page), ``"nochoices"`` (a 200
  chat completion with ``choices: []``), ``"nousage"`` (a normal answer without ``usage``).

``answer_seconds`` makes every normal answer take that long (so that requests overlap).

Counters: ``received`` (requests), ``answered`` (normal answers produced, i.e. paid, by canonical request
body; a fault is never an answer), ``max_in_flight``, ``auth_headers``.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler
from typing import Any

from loopback_http import LoopbackHTTPServer, send_reply

# The API key the judge tests hand to the client: a key-shaped string, so a leak of it is caught by the checks
# that the key never reaches an error, a log or metadata.
TEST_API_KEY = "sk-test-DO-NOT-LEAK-4f9a1c2e7b"


PAIRWISE = re.compile(r"\[The Start of Assistant 1's Answer\]\n(.*?)\n\n\[The End of Assistant 1's Answer\].*?"
                      r"\[The Start of Assistant 2's Answer\]\n(.*?)\n\n\[The End of Assistant 2's Answer\]", re.S)


def pairwise_scores(answer_1: str, answer_2: str) -> tuple[int, int]:
    """The two scores the server gives a pairwise review: 1 + words // 4, capped at 10."""
    return tuple(min(10, 1 + len(a.split()) // 4) for a in (answer_1, answer_2))


def answer_for(messages: list[dict[str, Any]]) -> str:
    content = str(messages[-1]["content"]) if messages else ""
    pair = PAIRWISE.search(content)
    if pair:
        s1, s2 = pairwise_scores(*pair.groups())
        n1, n2 = (len(answer.split()) for answer in pair.groups())
        return f"{s1} {s2}\nAssistant 1 wrote {n1} words, Assistant 2 {n2}."
    rated = re.search(r"rate:(\d)", content)
    if rated:
        return f"Score: {rated.group(1)}"
    if "unreadable" in content:
        return "I would rather not say."
    return f"echo: {content[:40]}"


def usage_for(messages: list[dict[str, Any]], answer: str, max_tokens: int) -> dict[str, int]:
    prompt = math.ceil(sum(len(str(m["content"]).encode()) for m in messages) / 4) + 3 * len(messages)
    completion = min(int(max_tokens), math.ceil(len(answer.encode()) / 4))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ScriptedOpenAIServer(LoopbackHTTPServer):
    """See the module docstring. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(self, delay_seconds: float = 1.0, answer_seconds: float = 0.0) -> None:
        super().__init__()
        self.delay_seconds = delay_seconds
        self.answer_seconds = answer_seconds
        self.lock = threading.Lock()
        self.by_marker: dict[str, deque[str]] = {}
        self.fault_queue: deque[str] = deque()
        self.received = 0
        self.answered: Counter[str] = Counter()
        self.faults_served: Counter[str] = Counter()
        self.auth_headers: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    # ------------------------------------------------------------------------------------------ script
    def script(self, marker: str, *faults: str) -> None:
        with self.lock:
            self.by_marker.setdefault(marker, deque()).extend(faults)

    def queue(self, *faults: str) -> None:
        with self.lock:
            self.fault_queue.extend(faults)

    def _next_fault(self, content: str) -> str | None:
        with self.lock:
            for marker, faults in self.by_marker.items():
                if marker in content and faults:
                    return faults.popleft()
            if self.fault_queue:
                return self.fault_queue.popleft()
        return None

    @property
    def answered_total(self) -> int:
        with self.lock:
            return sum(self.answered.values())

    # ------------------------------------------------------------------------------------------ life
    thread_name = "scripted-openai"

    def on_post(self, handler: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.received += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._handle(handler)
        finally:
            with self.lock:
                self.in_flight -= 1

    # ------------------------------------------------------------------------------------------ replies

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        body = json.loads(raw)
        with self.lock:
            self.auth_headers.append(handler.headers.get("Authorization", ""))
            self.bodies.append(body)
        messages = body.get("messages", [])
        fault = self._next_fault(str(messages[-1]["content"]) if messages else "")
        if fault is not None:
            with self.lock:
                self.faults_served[fault] += 1
            if fault == "delay":
                self._stopping.wait(self.delay_seconds)
                handler.close_connection = True
                return
            if fault.startswith("429"):
                headers = {}
                parts = fault.split(":")
                if len(parts) == 2:
                    headers["Retry-After"] = parts[1]
                elif len(parts) == 3 and parts[1] == "date":
                    headers["Retry-After"] = email.utils.formatdate(time.time() + float(parts[2]), usegmt=True)
                send_reply(handler, 429, b'{"error": {"message": "Rate limit reached", "type": "requests"}}',
                           headers=headers)
                return
            if fault in ("500", "503", "400"):
                send_reply(handler, int(fault), json.dumps({"error": {"message": f"scripted {fault}"}}).encode())
                return
            if fault == "401":
                token = handler.headers.get("Authorization", "").removeprefix("Bearer ")
                message = f"Incorrect API key provided: {token}. You can find your API key at the dashboard."
                send_reply(handler, 401, json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                                               "code": "invalid_api_key"}}).encode())
                return
            if fault == "garbage":
                send_reply(handler, 200, b"<html><body>502 Bad Gateway (but 200)</body></html>", "text/html")
                return
            if fault == "nochoices":
                send_reply(handler, 200, json.dumps({"id": "c", "object": "chat.completion", "created": 1,
                                                     "model": body.get("model"), "choices": []}).encode())
                return
            if fault not in ("truncated", "nousage"):
                raise ValueError(f"unknown scripted fault {fault!r}")
        if self.answer_seconds:
            self._stopping.wait(self.answer_seconds)
        answer = answer_for(messages)
        completion: dict[str, Any] = {
            "id": f"chatcmpl-{self.received}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": usage_for(messages, answer, body.get("max_tokens", 16)),
        }
        if fault == "nousage":
            del completion["usage"]
        data = json.dumps(completion).encode()
        if fault == "truncated":
            send_reply(handler, 200, data[: len(data) // 2])
            return
        with self.lock:  # produced = paid, whether or not the client still reads it
            self.answered[json.dumps(body, sort_keys=True)] += 1
        send_reply(handler, 200, data)
