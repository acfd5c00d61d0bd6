"""A local chat server that answers from a script, for testing model calls without a provider.

It speaks two APIs on one port: OpenAI's (POST /v1/chat/completions; api base `server.url`) and Anthropic's
Messages API (POST /v1/messages, Anthropic's request and response shapes and error bodies; api base
`server.anthropic_url` for litellm's anthropic/... route). Each chat request takes the next item of the script:
- a str: the answer's content;
- {"content": "..."}: the same (content None answers with a null content);
- {"delay": seconds, "content": "..."}: the same, answered slowly;
- {"status": 429 | 500 | 529 | ...}: an error of that HTTP status in the API's error shape (429 comes with
  Retry-After: {"retry_after": ...}, default 0; Anthropic's 529 is its overloaded_error);
- {"raw": "..."}: that text as the 200 response's body, e.g. malformed JSON.
The script may also be a callable taking the request body and returning such an item.
When a list script runs out the server answers 500 "script exhausted", so a test fails loudly instead of hanging.

`kind` says which response_format an OpenAI-API server takes, as the servers the project meets do:
- "openai" (default): any (OpenAI, vLLM, Ollama take {"type": "json_schema", ...});
- "llama-cpp": {"type": "json_object", "schema": ...} only; {"type": "json_schema"} is answered 500, as
  llama-cpp-python's server does;
- "plain": none; any response_format is answered 400.
A refused request is recorded in `requests` (and counted in `refused`) but takes no item of the script.
On the Anthropic API, a request with a forced tool (litellm's translation of a json_schema response_format)
is answered with a tool_use block whose input is the item's content read as JSON (text when it is not JSON).
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
KINDS = ("openai", "llama-cpp", "plain")


class ScriptedServer:
    """An OpenAI-compatible HTTP server on 127.0.0.1 answering each chat request with the next scripted item."""

    def __init__(self, script: Script, kind: str = "openai"):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        self.script = script
        self.kind = kind
        self.refused = 0
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

    @property
    def anthropic_url(self) -> str:
        """The api base to give litellm's anthropic/... route, which appends /v1/messages itself."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refuses(self, body: dict[str, Any]) -> Item | None:
        """The error item with which this kind of server refuses the request's response_format, or None."""
        form = (body.get("response_format") or {}).get("type")
        if form is None or self.kind == "openai":
            return None
        if self.kind == "plain":
            return {"status": 400, "message": "response_format is not supported by this server"}
        if form == "json_schema":  # what llama-cpp-python's server answers (its handler does not know the type)
            return {"status": 500, "message": "Internal Server Error"}
        return None

    def take(self, body: dict[str, Any]) -> Item:
        """Record a request and return the script's item for it."""
        with self._lock:
            self.requests.append(body)
            refusal = self.refuses(body)
            if refusal is not None:
                self.refused += 1
                return refusal
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
            path = self.path.rstrip("/")
            anthropic = path.endswith("/messages")  # litellm asks /v1/messages (/v1/v1/messages for a .../v1 base)
            if path != "/v1/chat/completions" and not anthropic:
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
            if anthropic and (not body.get("max_tokens") or not self.headers.get("anthropic-version")):
                self._send(400, _anthropic_error("max_tokens and the anthropic-version header are required",
                                                 "invalid_request_error"))
                return
            item = server.take(body)
            if isinstance(item, str):
                item = {"content": item}
            if "status" in item:
                status = int(item["status"])
                headers = {"Retry-After": str(item.get("retry_after", 0))} if status == 429 else {}
                message = item.get("message", f"scripted error {status}")
                if anthropic:
                    self._send(status, _anthropic_error(message, _anthropic_error_type(status)), headers)
                else:
                    self._send(status, _error(message, _error_type(status)), headers)
                return
            time.sleep(float(item.get("delay", 0)))
            if "raw" in item:
                self._send_bytes(200, str(item["raw"]).encode())
            elif anthropic:
                self._send(200, _message(body, item.get("content", "")))
            else:
                self._send(200, _completion(body, item.get("content", "")))

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            self._send_bytes(status, json.dumps(payload).encode(), headers)

        def _send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
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


def _message(body: dict[str, Any], content: str | None) -> dict[str, Any]:
    """An Anthropic Messages API response: a text block, or a tool_use block when a tool is forced."""
    text = content or ""
    system = body.get("system") or ""
    words = " ".join(b.get("text", "") for b in system) if isinstance(system, list) else str(system)
    for m in body.get("messages", []):
        parts = m.get("content")
        words += " " + (" ".join(p.get("text", "") for p in parts if isinstance(p, dict))
                        if isinstance(parts, list) else str(parts))
    block: dict[str, Any] = {"type": "text", "text": text}
    choice = body.get("tool_choice") or {}
    if choice.get("type") == "tool":
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            block = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:12]}", "name": choice["name"], "input": value}
    return {
        "id": f"msg_{uuid.uuid4().hex[:12]}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "test-model"),
        "content": [block],
        "stop_reason": "tool_use" if block["type"] == "tool_use" else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": len(words.split()), "output_tokens": len(text.split())},
    }


def _anthropic_error(message: str, kind: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _anthropic_error_type(status: int) -> str:
    return {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
