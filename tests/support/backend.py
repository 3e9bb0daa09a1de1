"""A real HTTP backend for the REST hooks: an aiohttp server on loopback, in its own thread so both
async and plain (browser) tests can use it. It records every hook and answers as told."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass
class HookCall:
    method: str
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    at: float


@dataclass
class Rule:
    status: int = 200
    body: Any = None  # None: echo what came in
    delay: float = 0.0
    transform: Callable[[dict[str, Any]], Any] | None = None  # body -> answer, or (status, answer)


class Backend:
    def __init__(self) -> None:
        self.calls: list[HookCall] = []
        self.rules: dict[str, Rule] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-backend", daemon=True)
        self.url = ""

    # -- control ----------------------------------------------------------------------------------

    def on(self, method: str, status: int = 200, body: Any = None, delay: float = 0.0,
           transform: Callable[[dict[str, Any]], Any] | None = None) -> None:
        """How to answer `method` from now on (default: 200 echoing the body)."""
        with self._lock:
            self.rules[method] = Rule(status, body, delay, transform)

    def hooks(self, method: str) -> list[HookCall]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait_for(self, method: str, predicate: Callable[[HookCall], bool] = lambda c: True,
                 timeout: float = 10.0) -> HookCall:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for call in self.hooks(method):
                if predicate(call):
                    return call
            time.sleep(0.02)
        raise AssertionError(f"backend got no matching {method} within {timeout} s; "
                             f"got: {[c.method for c in self.calls]}")

    # -- server -----------------------------------------------------------------------------------

    def start(self) -> Backend:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("backend did not start")
        return self

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = {"_unparsable": raw.decode(errors="replace")}
        with self._lock:
            self.calls.append(HookCall(method, body, raw, dict(request.headers), time.monotonic()))
            rule = self.rules.get(method, Rule())
        if rule.delay:
            await asyncio.sleep(rule.delay)
        if rule.transform is not None:
            answer = rule.transform(body)
        else:
            answer = body if rule.body is None else rule.body
        status = rule.status
        if isinstance(answer, tuple):  # a transform that decides the status too: (status, body)
            status, answer = answer
        if isinstance(answer, str):
            return web.Response(status=status, text=answer)
        return web.json_response(answer, status=status)
