"""The pulls of the server, by URL: started by a viewer or over REST, shared, released, stopped; the
stream registry and the server's outputs are told through what the service is given."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from media.rtsp_client import RtspUrlError, parse_rtsp_url
from media.sfu import MediaCore
from media.stream import Stream, StreamNameInUse, StreamRegistry

from .allow import PullTarget
from .allow import check as check_host
from .failures import CONNECT_FAILED, SHUTDOWN, WRONG_FORMAT, PullFailed
from .pull import RtspPull
from .settings import PullSettings
from .urls import masked

log = logging.getLogger(__name__)


class PullService:
    """The pulls of the server, by URL as given (and by local stream name, when one was given)."""

    def __init__(self, registry: StreamRegistry, media: MediaCore, settings: PullSettings,
                 on_published: Callable[[Stream], None], on_unpublished: Callable[[Stream], None],
                 end_viewers: Callable[[Stream, str], Awaitable[None]]):
        self.registry = registry  # where a pull with a local stream name claims it
        self.media = media
        self.settings = settings
        self.on_published = on_published  # the server's outputs (HLS, recording) learn of the stream
        self.on_unpublished = on_unpublished
        self.end_viewers = end_viewers  # the viewers of a stream whose pull ended get their status
        self._pulls: dict[str, RtspPull] = {}

    def __len__(self) -> int:
        return len(self._pulls)

    def all(self) -> list[RtspPull]:
        return list(self._pulls.values())

    def find(self, text: str) -> RtspPull | None:
        pull = self._pulls.get(text)
        if pull is None:
            pull = next((p for p in self._pulls.values() if masked(p.text) == text), None)
        return pull

    async def acquire(self, text: str, viewer: Any = None, *, keep: bool | None = None, tcp: bool | None = None,
                      local_name: str | None = None) -> RtspPull:
        """The running pull of that URL, started if needed; `viewer` (if any) holds it until release().
        Raises PullFailed."""
        try:
            url = parse_rtsp_url(text)
        except RtspUrlError as exc:
            raise PullFailed(WRONG_FORMAT, str(exc)) from None
        pull = self._pulls.get(text)
        target: PullTarget | None = None
        if pull is None or pull.ended:
            if len(self._pulls) >= self.settings.max_pulls:
                raise PullFailed(CONNECT_FAILED, f"the server pulls {self.settings.max_pulls} URLs already "
                                                 "(rtsp.pull_max)")
            target = await check_host(self.settings.allowed_hosts, url.host, url.port)  # before any connection
            pull = self._pulls.get(text)  # the same URL may have been started during the lookup
        if pull is None or pull.ended:
            pull = RtspPull(self.media, self.settings, self.published, text, url,
                            self.settings.tcp if tcp is None else tcp, self.settings.keep if keep is None else keep,
                            local_name)
            assert target is not None  # a new pull is made only after its host was checked, above
            pull.connect_to = target.connect_to
            if local_name is not None:
                try:
                    pull.stream = self.registry.claim(local_name)
                except StreamNameInUse:
                    raise PullFailed(CONNECT_FAILED, f"the local stream name {local_name!r} is in use") from None
            self._pulls[text] = pull
            pull.start()
        if viewer is not None:
            pull.viewers.add(viewer)
        if keep:
            pull.keep = True
        try:
            await asyncio.shield(pull.started)
        except PullFailed:
            if viewer is not None:
                pull.viewers.discard(viewer)
            await self._forget(pull, "FAILED", None)
            raise
        if pull.ended:
            raise PullFailed(CONNECT_FAILED, "the pull was stopped")
        return pull

    def published(self, pull: RtspPull) -> None:
        pull.published = True
        self.on_published(pull.stream)

    def release(self, pull: RtspPull, viewer: Any) -> None:
        pull.viewers.discard(viewer)
        if not pull.viewers and not pull.keep and not pull.ended:
            asyncio.get_running_loop().create_task(self.stop(pull, "STOPPED", None))

    async def stop(self, pull: RtspPull, status: str, info: str | None) -> None:
        if pull.ended and self._pulls.get(pull.text) is not pull:
            return
        await pull.stop(status, info)
        await self._forget(pull, status, info)

    async def _forget(self, pull: RtspPull, status: str, info: str | None) -> None:
        if self._pulls.get(pull.text) is pull:
            del self._pulls[pull.text]
        if pull.status not in ("STOPPED", "FAILED"):
            pull.status = status
        was_published = pull.published and not pull.stream.closed
        if pull.local_name is not None:
            self.registry.release(pull.stream)
        pull.stream.end()
        if was_published:
            self.on_unpublished(pull.stream)
        await self.end_viewers(pull.stream, info or "Stopped by publisher stop")
        log.info("pull %s %s%s", masked(pull.text), status, f" ({info})" if info else "")

    def stream(self, name: str) -> Stream | None:
        """The stream of a playing pull, by URL or local stream name."""
        pull = self._pulls.get(name)
        if pull is None:
            pull = next((p for p in self._pulls.values() if p.local_name == name), None)
        if pull is None or pull.status not in ("PLAYING", "RECONNECTING") or pull.stream.closed:
            return None
        return pull.stream

    async def shutdown(self) -> None:
        for pull in list(self._pulls.values()):
            await self.stop(pull, "STOPPED", SHUTDOWN)

    def describe(self) -> list[dict[str, Any]]:
        return [p.describe() for p in self._pulls.values()]
