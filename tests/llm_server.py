"""A local OpenAI-compatible chat server that answers from a script, for testing model calls without a provider.

Each request to POST /v1/chat/completions takes the next item of the script:
- a str: the answer's content;
- {"content": "..."}: the same (content None answers with a null content);
- {"delay": seconds, "content": "..."}: the same, answered slowly;
- {"status": 429 | 500 | ...}: an OpenAI-style error with that HTTP status (429 comes with Retry-After: 0).
The script may also be a callable taking the request body and returning such an item.
When a list script runs out the server answers 500 "script exhausted", so a test fails loudly instead of hanging.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Item = str | dict[str, Any]
Script = list[Item] | Callable[[dict[str, Any]], Item]


class ScriptedServer:
    """An OpenAI-compatible HTTP server on 127.0.0.1 answering each chat request with the next scripted item."""

    def __init__(self, script: Script):
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._next = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        # A short poll interval so that close() returns quickly.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The API base to give a client, e.g. http://127.0.0.1:PORT/v1."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def take(self, body: dict[str, Any]) -> Item:
        """Record a request and return the script's item for it."""
        with self._lock:
            self.requests.append(body)
            if callable(self.script):
                return self.script(body)
            if self._next >= len(self.script):
                return {"status": 500, "message": "script exhausted"}
            item = self.script[self._next]
            self._next += 1
            return item


def _handler_for(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the OpenAI client expects

        def log_message(self, *args: object) -> None:  # quiet: test output stays readable
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                model = {"id": "test-model", "object": "model", "owned_by": "test"}
                self._send(200, {"object": "list", "data": [model]})
            else:
                self._send(404, _error("not found", "not_found_error"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, _error("not found", "not_found_error"))
                return
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self._send(400, _error("request body is not JSON", "invalid_request_error"))
                return
            if body.get("stream"):
                self._send(400, _error("streaming is not supported by this test server", "invalid_request_error"))
                return
            item = server.take(body)
            if isinstance(item, str):
                item = {"content": item}
            if "status" in item:
                status = int(item["status"])
                headers = {"Retry-After": "0"} if status == 429 else {}
                message = item.get("message", f"scripted error {status}")
                self._send(status, _error(message, _error_type(status)), headers)
                return
            time.sleep(float(item.get("delay", 0)))
            self._send(200, _completion(body, item.get("content", "")))

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (e.g. its timeout); nothing to answer

    return Handler


def _completion(body: dict[str, Any], content: str | None) -> dict[str, Any]:
    # Tokens counted roughly as words: enough for cost and usage bookkeeping in tests.
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion_tokens = len((content or "").split())  # None content is allowed: some models answer so
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "test-model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _error_type(status: int) -> str:
    return {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}.get(
        status, "server_error"
    )
