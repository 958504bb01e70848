"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for the miner tests.

It answers ``POST /v1/chat/completions`` (and ``/chat/completions``). Each request takes the next
behaviour from ``script``; when the script is empty it answers correctly: for a step-1 request
(a ``CLASSES: [...]`` line) it describes every class asked, for a step-2 request (a
``NUMBER OF ATTRIBUTES: K`` line) it names K attributes. Every request is recorded with the
classes it asked about, its headers and its body.
"""
from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ATTRIBUTES = ["body color", "overall shape", "silhouette", "relative size", "part layout",
              "dominant parts", "proportions", "spatial layout"]


@dataclass
class Behaviour:
    """What to do with one request.

    kind: ``ok`` (a correct answer), ``status`` (an HTTP error with ``status`` and ``headers``),
    ``content`` (HTTP 200 whose message content is ``content``, with ``finish_reason``),
    ``hang`` (wait until ``server.release`` is set, then answer correctly).
    """

    kind: str = "ok"
    status: int = 200
    headers: dict = field(default_factory=dict)
    content: str = ""
    finish_reason: str = "stop"


def ok() -> Behaviour:
    return Behaviour()


def status(code: int, **headers: str) -> Behaviour:
    return Behaviour("status", status=code, headers={k.replace("_", "-"): v for k, v in headers.items()})


def content(text: str, finish_reason: str = "stop") -> Behaviour:
    return Behaviour("content", content=text, finish_reason=finish_reason)


def hang() -> Behaviour:
    return Behaviour("hang")


@dataclass
class Request:
    path: str
    body: dict
    headers: dict  # names lower-cased
    step: int  # 1, 2, or 0 for neither
    classes: list[str]  # asked about in step 1
    k: int | None  # asked for in step 2


def _parse(body: dict) -> tuple[int, list[str], int | None]:
    text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []) if m.get("role") == "user")
    # The first user message is the question; later ones are repairs of it.
    first = next((m["content"] for m in body.get("messages", []) if m.get("role") == "user"), "")
    classes = re.search(r"^CLASSES: (.*)$", first, re.M)
    if classes:
        return 1, json.loads(classes.group(1)), None
    k = re.search(r"^NUMBER OF ATTRIBUTES: (\d+)$", text, re.M)
    return (2, [], int(k.group(1))) if k else (0, [], None)


def correct_answer(req: Request) -> str:
    """What a well-behaved model would answer to ``req``."""
    if req.step == 1:
        return json.dumps({"classes": {c: {"survives": f"the {c}'s overall shape and colour",
                                           "vanishes": "fine texture"} for c in req.classes}})
    k = req.k or 5
    return json.dumps({"attributes": [{"name": a, "reason": "a macro property"} for a in ATTRIBUTES[:k]]})


class FakeLLMServer:
    """Run with ``with FakeLLMServer() as server: ...``; ``server.base_url`` ends in ``/v1``."""

    def __init__(self, script: list[Behaviour] | None = None):
        self.script = list(script or [])
        self.requests: list[Request] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)  # a quick shutdown

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeLLMServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def asked_classes(self) -> list[str]:
        """Every class asked about in step 1, in request order (repeats kept)."""
        return [c for r in self.requests for c in r.classes]

    def _next(self, req: Request) -> Behaviour:
        with self.lock:
            self.requests.append(req)
            return self.script.pop(0) if self.script else ok()

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                step, classes, k = _parse(body)
                headers = {name.lower(): value for name, value in self.headers.items()}
                req = Request(self.path, body, headers, step, classes, k)
                behaviour = server._next(req)
                if behaviour.kind == "status":
                    return self._send(behaviour.status, {"error": {
                        "message": f"scripted {behaviour.status}", "type": "server_error"}},
                        behaviour.headers)
                if behaviour.kind == "hang":
                    server.release.wait(timeout=30)
                text = behaviour.content if behaviour.kind == "content" else correct_answer(req)
                self._send(200, {
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion",
                    "created": 0, "model": body.get("model", "?") + "-served",
                    "choices": [{"index": 0, "finish_reason": behaviour.finish_reason,
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

            def _send(self, code: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        return Handler
