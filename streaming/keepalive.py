"""StreamKeepAliveEvent: every `hooks.keepalive_interval` seconds the backend hears of each publishing
and playing stream, with the stream's status fields and the context fields. Unlike other events its
answer counts: a refusal (403 or any status but 200) ends that stream, FAILED with "Terminated by
keep-alive". A backend that cannot be asked refuses nothing (events default to restOnError LOG).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from .hooks import HookClient
from .streams import MediaSession

log = logging.getLogger(__name__)

METHOD = "StreamKeepAliveEvent"
TERMINATED = "Terminated by keep-alive"
ACTIVE = ("PUBLISHING", "PLAYING")


def keepalive_body(ms: MediaSession) -> dict[str, Any]:
    return {**ms.status_object(), "mediaProvider": "WebRTC", **ms.session.context}


class KeepAliveStreams(Protocol):
    """The streams keep-alive asks about and ends (streaming/streams.py's StreamService)."""

    def media_sessions(self) -> list[MediaSession]: ...

    async def terminate(self, ms: MediaSession, info: str) -> None: ...


class StreamKeepAlive:
    """`streams`: the streams asked about; `hooks`: the backend that is asked."""

    def __init__(self, streams: KeepAliveStreams, hooks: HookClient, interval: float):
        self.streams = streams
        self.hooks = hooks
        self.interval = interval
        self.sent = 0
        self.terminated = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.round()
            except Exception:  # one bad round must not end keep-alive for good
                log.exception("stream keep-alive round failed")

    async def round(self) -> None:
        """Ask about every active stream at once; each call has the hook timeout of its own."""
        active = [ms for ms in self.streams.media_sessions() if ms.status in ACTIVE]
        await asyncio.gather(*(self._ask(ms) for ms in active))

    async def _ask(self, ms: MediaSession) -> None:
        session = ms.session
        result = await self.hooks.call(session.app, METHOD, keepalive_body(ms),
                                       session.rest_config.for_method(METHOD))
        if not result.called:
            return
        self.sent += 1
        if result.allowed or result.status is None or ms.ended:
            return
        self.terminated += 1
        log.info("stream %r %s ended: the backend answered %s %s to %s", ms.name,
                 "publisher" if ms.published else "viewer", result.status, result.reason, METHOD)
        await self.streams.terminate(ms, TERMINATED)
