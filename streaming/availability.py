"""`availableStream` (the WebSDK's `stream.available()`): whether a stream of that name can be played now.

The answer is the `availableStream` message the WebSDK waits for: `id` (the asking stream object's
mediaSessionId), `status` "true" or "false" (strings: the client compares with "true"), and `info` with
the reason when it is not available. The client resolves or rejects its promise with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from media.stream import Stream

from . import protocol
from .session import Session
from .streams import NOT_FOUND


class StreamAvailability:
    """`published(name)`: the stream a viewer of `name` would play now (the server's lookup for its
    outputs: a connected publisher, or a camera being pulled), else None."""

    def __init__(self, published: Callable[[str], Stream | None]):
        self._published = published

    def handlers(self) -> dict[str, Any]:
        return {"availableStream": self.on_available}

    async def on_available(self, session: Session, obj: dict[str, Any]) -> None:
        msid = protocol.require_str(obj, "mediaSessionId", "availableStream", max_length=128)
        name = protocol.require_str(obj, "name", "availableStream", max_length=1024)
        assert msid is not None and name is not None
        stream = self._published(name)
        answer: dict[str, Any] = {"id": msid, "mediaSessionId": msid, "name": name}
        if stream is not None and stream.tracks and not stream.closed:
            answer["status"] = "true"
        else:
            answer.update(status="false", info=NOT_FOUND)
        await session.send(protocol.frame("availableStream", answer))
