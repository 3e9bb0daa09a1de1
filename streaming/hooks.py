"""The REST hooks client: POSTs JSON to `{backend}/{method}` and turns the answer into a decision.

Every call is its own coroutine with its own timeout, awaited by the session that needs it, so a slow
backend only delays the session waiting on it. Events go through a per-session ordered queue
(EventQueue) so a backend sees a session's events in the order they happened.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .apps import App
from .rest_config import HookKind, MethodConfig, kind_of

log = logging.getLogger(__name__)

CONTEXT_FIELDS = ("nodeId", "sessionId", "appKey")
SIGNATURE_HEADER = "X-Streaming-Signature"
MAX_ANSWER_BYTES = 1_048_576
RESTRICTED_ACCESS = "Restricted access"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value: `t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, now: float, tolerance: float = 300.0) -> bool:
    """What a backend runs to check that a hook came from this server (and is recent)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


@dataclass
class HookResult:
    allowed: bool
    data: dict[str, Any]  # what the server goes on with (after OVERWRITE)
    answer: Any = None  # the backend's parsed JSON answer, if any
    status: int | None = None  # HTTP status, None when the backend could not be asked
    reason: str | None = None  # why it was refused or failed
    called: bool = True  # False under restPolicy DISABLE or when the app does not enable the method


@dataclass
class HookStats:
    calls: int = 0
    refused: int = 0
    errors: int = 0
    events_dropped: int = 0
    by_method: dict[str, int] = field(default_factory=dict)


class HookClient:
    def __init__(self, timeout: float = 5.0, max_connections: int = 100):
        self.timeout = timeout
        self.max_connections = max_connections
        self.stats = HookStats()
        # Told of every hook sent: (method, seconds to the answer or failure, "ok" | "refused" | "error").
        self.on_call: list[Callable[[str, float, str], None]] = []
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.max_connections * 4,
                                         limit_per_host=self.max_connections)
        self._http = aiohttp.ClientSession(connector=connector, raise_for_status=False)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def call(self, app: App, method: str, body: Mapping[str, Any], config: MethodConfig) -> HookResult:
        """Ask the backend. For an event the result only tells how the delivery went."""
        started = time.perf_counter()
        result = await self._call(app, method, body, config)
        if result.called and self.on_call:
            outcome = "refused" if result.status not in (None, 200) else "error" if result.reason else "ok"
            for listener in self.on_call:
                listener(method, time.perf_counter() - started, outcome)
        return result

    async def _call(self, app: App, method: str, body: Mapping[str, Any], config: MethodConfig) -> HookResult:
        original = dict(body)
        if not app.calls(method) or config.policy == "DISABLE":
            return HookResult(allowed=True, data=original, called=False)
        if self._http is None or self._http.closed:
            # Straggling calls while the server shuts down: the backend cannot be asked any more.
            return self._unreachable(method, original, config, f"{method} not sent: the server is shutting down")
        payload = config.body_for_rest(original, protected=CONTEXT_FIELDS)
        raw = json.dumps(payload, separators=(",", ":"), default=str).encode()
        headers = {"Content-Type": "application/json"}
        if app.secret:
            headers[SIGNATURE_HEADER] = sign(app.secret, raw, int(time.time()))
        url = f"{app.url}/{method}"
        self.stats.calls += 1
        self.stats.by_method[method] = self.stats.by_method.get(method, 0) + 1
        try:
            async with self._http.post(url, data=raw, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                status = resp.status
                text = await _read_limited(resp)
        except TimeoutError:
            return self._unreachable(method, original, config, f"backend did not answer {method} "
                                     f"within {self.timeout:g} s")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return self._unreachable(method, original, config, f"backend unreachable for {method}: "
                                     f"{type(exc).__name__}: {exc}")
        answer = _parse_json(text)
        if status != 200:
            self.stats.refused += 1
            reason = _refusal_reason(answer, text)
            log.info("hook %s refused by %s: %s %s", method, app.app_key, status, reason)
            return HookResult(allowed=False, data=original, answer=answer, status=status, reason=reason)
        if text.strip() and answer is None:
            return self._unreachable(method, original, config, f"backend answered {method} with a body "
                                     "that is not JSON", status=status)
        data = config.merge_answer(original, answer, protected=CONTEXT_FIELDS)
        return HookResult(allowed=True, data=data, answer=answer, status=status)

    def _unreachable(self, method: str, original: dict[str, Any], config: MethodConfig, reason: str,
                     status: int | None = None) -> HookResult:
        self.stats.errors += 1
        if config.fails_on_error and kind_of(method) is not HookKind.EVENT:
            log.warning("%s (restOnError FAIL)", reason)
            return HookResult(allowed=False, data=original, status=status, reason=reason)
        log.warning("%s (restOnError LOG: going on)", reason)
        return HookResult(allowed=True, data=original, status=status, reason=reason)


async def _read_limited(resp: aiohttp.ClientResponse) -> str:
    chunks = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise ValueError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _parse_json(text: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None


def _refusal_reason(answer: Any, text: str) -> str:
    if isinstance(answer, Mapping):
        for key in ("info", "reason", "message"):
            value = answer.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()[:512]
    if answer is None and text.strip() and len(text) <= 512 and "<" not in text:
        return text.strip()
    return RESTRICTED_ACCESS


class EventQueue:
    """One session's events, delivered to the backend in order by one worker task.

    Bounded: when a backend is so slow that `limit` events wait, new ones are dropped and counted
    rather than growing memory without end.
    """

    def __init__(self, client: HookClient, app: App, limit: int = 1000):
        self._client = client
        self._app = app
        self._limit = limit
        self._queue: asyncio.Queue[tuple[str, dict[str, Any], MethodConfig] | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def push(self, method: str, body: dict[str, Any], config: MethodConfig) -> None:
        if not self._app.calls(method) or config.policy == "DISABLE":
            return
        if self._queue.qsize() >= self._limit:
            self._client.stats.events_dropped += 1
            log.warning("event %s for %s dropped: %d events waiting", method, self._app.app_key, self._limit)
            return
        self._queue.put_nowait((method, body, config))
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            method, body, config = item
            try:
                await self._client.call(self._app, method, body, config)
            except Exception:  # a bug in one event must not stop the others
                log.exception("event %s failed", method)

    async def close(self, timeout: float) -> None:
        """Deliver what is queued (up to `timeout` seconds), then stop."""
        if self._worker is None:
            return
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._worker), timeout)
        except TimeoutError:
            self._worker.cancel()
            log.warning("events of a closed session not delivered within %g s", timeout)
