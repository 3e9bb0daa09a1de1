"""Snapshots of published streams: the `snapshot` client message and `/rest-api/stream/snapshot`.

The client (the WebSDK's stream.snapshot(), often on a stream object made just for it, never played)
names a stream; the backend's snapshot hook decides; the client then gets `notifyStreamEvent` for its
mediaSessionId with type snapshotCompleted and `payload.snapshot`, the PNG in base64 (what the WebSDK's
stream-snapshot example shows as `data:image/png;base64,...`), or snapshotFailed with `payload.info`.
The picture itself comes from media/snapshot.py (one keyframe decoded on demand).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

from media.snapshot import BUSY, Picture, SnapshotError, Snapshotter
from media.stream import Stream

from . import protocol
from .hooks import HookClient
from .session import Session
from .streams import NOT_FOUND

log = logging.getLogger(__name__)

COMPLETED = "snapshotCompleted"
FAILED = "snapshotFailed"
MAX_PER_SESSION = 2  # snapshots of one session in progress at once


class SnapshotService:
    """`depacketize`: the depacketizer module (for the GOP cache's keyframe); `published(name)`: the stream
    published as `name`, if any; `hooks`: the backend's snapshot hook; `now`: the media clock."""

    def __init__(self, depacketize: ModuleType, published: Callable[[str], Stream | None], hooks: HookClient,
                 now: Callable[[], float]):
        self.snapshotter = Snapshotter(depacketize)
        self._published = published
        self._hooks = hooks
        self._now = now
        self._in_progress: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def handlers(self) -> dict[str, Any]:
        return {"snapshot": self.on_snapshot}

    async def take(self, name: str) -> Picture:
        """The current picture of the stream published as `name`; SnapshotError says why not."""
        stream = self._published(name)
        if stream is None:
            raise SnapshotError(NOT_FOUND)
        now = self._now()
        track = stream.track("video")
        source = stream.frames("video", now) if track is not None else None
        return await self.snapshotter.take(track, source, now)

    async def rest_snapshot(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """/rest-api/stream/snapshot {"name": ...}: the picture as base64 PNG, with its size."""
        name = body.get("name")
        if not isinstance(name, str) or not name:
            return 400, {"status": 400, "info": "Field 'name' (string) is required"}
        try:
            picture = await self.take(name)
        except SnapshotError as exc:
            status = 404 if str(exc) == NOT_FOUND else 503 if str(exc) == BUSY else 409
            return status, {"status": status, "info": str(exc)}
        return 200, {"name": name, "width": picture.width, "height": picture.height, "format": "png",
                     "snapshot": base64.b64encode(picture.png).decode()}

    async def on_snapshot(self, session: Session, obj: dict[str, Any]) -> None:
        msid = protocol.require_str(obj, "mediaSessionId", "snapshot", max_length=128)
        name = protocol.require_str(obj, "name", "snapshot", max_length=1024)
        assert msid is not None and name is not None
        if self._in_progress.get(session.id, 0) >= MAX_PER_SESSION:
            await self._answer(session, msid, name, None, "A snapshot of this session is already in progress")
            return
        # Waiting for a keyframe takes a while: the session's other messages go on meanwhile.
        self._in_progress[session.id] = self._in_progress.get(session.id, 0) + 1
        task = asyncio.get_running_loop().create_task(self._snapshot(session, msid, name, obj))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _snapshot(self, session: Session, msid: str, name: str, obj: dict[str, Any]) -> None:
        try:
            body = {"mediaSessionId": msid, "name": name, **session.context}
            result = await self._hooks.call(session.app, "snapshot", body,
                                                  session.rest_config.for_method("snapshot"))
            if not result.allowed:
                await self._answer(session, msid, name, None, result.reason or "Restricted access")
                return
            try:
                picture = await self.take(name)
            except SnapshotError as exc:
                await self._answer(session, msid, name, None, str(exc))
                return
            await self._answer(session, msid, name, picture, None)
        except Exception:
            log.exception("snapshot of %r failed", name[:128])
            await self._answer(session, msid, name, None, "Internal error while taking the snapshot")
        finally:
            left = self._in_progress.get(session.id, 1) - 1
            if left > 0:
                self._in_progress[session.id] = left
            else:
                self._in_progress.pop(session.id, None)

    async def _answer(self, session: Session, msid: str, name: str, picture: Picture | None,
                      info: str | None) -> None:
        obj: dict[str, Any] = {"mediaSessionId": msid, "name": name[:128]}
        if picture is not None:
            obj["type"] = COMPLETED
            obj["payload"] = {"snapshot": base64.b64encode(picture.png).decode(), "width": picture.width,
                              "height": picture.height}
        else:
            obj["type"] = FAILED
            obj["payload"] = {"info": info}
        await session.send(protocol.frame("notifyStreamEvent", obj))

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.snapshotter.close()

    def describe(self) -> dict[str, int]:
        return {"taken": self.snapshotter.taken, "failed": self.snapshotter.failed,
                "pending": self.snapshotter.pending}
