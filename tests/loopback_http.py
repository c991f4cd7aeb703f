"""A threaded HTTP server on 127.0.0.1 for the judge tests (the scripted upstream and the fault proxy)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def body_key(body: Any) -> str:
    """The canonical JSON of a request body (what the proxies count by)."""
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def send_reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str = "application/json",
               headers: dict[str, str] | None = None) -> None:
    """Write one HTTP reply; a client that already gave up (its timeout) gets nothing, without a traceback."""
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):
        handler.close_connection = True


class LoopbackHTTPServer:
    """Serves on a free loopback port; every POST goes to ``self.on_post(handler)``, other methods get 404.
    ``url`` is the OpenAI-style base URL (``.../v1``). Use as a context manager or ``start()``/``stop()``."""

    thread_name = "loopback-http"

    def __init__(self) -> None:
        self._httpd: ThreadingHTTPServer | None = None
        self._stopping = threading.Event()

    def on_post(self, handler: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        assert self._httpd is not None, f"{type(self).__name__} not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                owner.on_post(self)

            def do_GET(self) -> None:
                self.send_error(404)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name=self.thread_name, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
