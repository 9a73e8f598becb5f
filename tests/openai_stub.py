"""A loopback OpenAI-compatible chat server for tests, with replies scripted per test.

Usage (the ``openai_stub`` fixture lives in tests/conftest.py)::

    from tests.openai_stub import StubReply

    def test_x(openai_stub):
        openai_stub.script(StubReply.text('{"a": 1}'), StubReply.error(500), StubReply.text("ok"))
        llm = build_llm("openai", "stub-model", base_url=openai_stub.url)
        ...
        assert openai_stub.requests[0]["messages"][0]["content"] == ...

Scripted replies are served in order, one per ``POST /v1/chat/completions``; when the script is empty the
``responder`` (a function of the request body returning a :class:`StubReply`) answers, by default an echo of
the last user message. ``reject_formats`` lists ``response_format`` types the server answers with HTTP 400
(like a server without structured output). ``GET /v1/models`` lists one model. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable



@dataclass
class StubReply:
    """One scripted answer: a chat completion (``content`` or ``refusal``), an HTTP error, or a raw body."""

    content: str | None = ""
    refusal: str | None = None
    status: int = 200
    raw_body: bytes | None = None  # sent as it is (malformed replies)
    delay_s: float = 0.0  # sleep before answering (timeouts)
    headers: dict = field(default_factory=dict)

    @classmethod
    def text(cls, content: str, delay_s: float = 0.0) -> "StubReply":
        return cls(content=content, delay_s=delay_s)

    @classmethod
    def json(cls, obj, delay_s: float = 0.0) -> "StubReply":
        return cls(content=json.dumps(obj, ensure_ascii=False), delay_s=delay_s)

    @classmethod
    def refused(cls, refusal: str = "I can't help with that.") -> "StubReply":
        return cls(content=None, refusal=refusal)

    @classmethod
    def malformed(cls, body: bytes = b'{"id": "x", "object": "chat.completion", "choices": []}') -> "StubReply":
        return cls(raw_body=body)

    @classmethod
    def error(cls, status: int = 500, message: str = "internal error") -> "StubReply":
        # retry-after-ms keeps the client's backoff short in tests
        return cls(status=status, raw_body=json.dumps({"error": {"message": message, "type": "server_error"}}).encode(),
                   headers={"retry-after-ms": "10"})


def _echo(body: dict) -> StubReply:
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return StubReply.text(f"echo: {users[-1] if users else ''}")


class OpenAIStub:
    """The running server: ``url`` (ends in ``/v1``), ``requests`` (every chat request body, in order)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.replies: deque[StubReply] = deque()
        self.responder: Callable[[dict], StubReply] = _echo
        self.reject_formats: set[str] = set()
        self.model_ids = ["stub-model"]
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}/v1"

    def script(self, *replies: StubReply) -> "OpenAIStub":
        """Queue replies, served one per chat request in order."""
        self.replies.extend(replies)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_reply(self, body: dict) -> StubReply:
        with self._lock:
            self.requests.append(body)
            fmt = (body.get("response_format") or {}).get("type")
            if fmt in self.reject_formats:
                return StubReply(status=400, raw_body=json.dumps(
                    {"error": {"message": f"response_format {fmt} is not supported", "type": "invalid_request_error",
                               "param": "response_format"}}).encode())
            if self.replies:
                return self.replies.popleft()
        return self.responder(body)

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    data = [{"id": m, "object": "model", "owned_by": "stub"} for m in stub.model_ids]
                    self._send(200, json.dumps({"object": "list", "data": data}).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                reply = stub._next_reply(body)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.raw_body is not None:
                    self._send(reply.status, reply.raw_body, reply.headers)
                    return
                message = {"role": "assistant", "content": reply.content, "refusal": reply.refusal}
                payload = {
                    "id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "stub-model"),
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                self._send(reply.status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), reply.headers)

        return Handler


