"""One RTMP connection of a publisher: the bytes in and out of media.rtmp's ServerConnection, the
backend's decision (publishStream hook), the stream it publishes and the hooks that follow
(StreamStatusEvent, unPublishStream).

Life cycle: handshake and connect are answered by the protocol machine; publish asks the backend of
`rtmp.app_key` (publishStream, the stream key as `name`, the RTMP app as `rtmpApp`); a refusal or a
name in use is told to the client (NetStream.Publish.Denied / BadName) and closes the connection.
Accepted, the stream is claimed in the registry and the media goes into it (media.rtmp_ingest); it is
announced to the outputs once its tracks exist. Any protocol violation, an unsupported codec, silence
for `rtmp.timeout` seconds or a lost connection end the stream: its viewers are stopped, the backend
gets StreamStatusEvent UNPUBLISHED (FAILED with the reason when it was not the publisher's choice), and
the server goes on.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from media.rtmp import Connected, Media, Metadata, ProtocolViolation, PublishRequested, ServerConnection, Unpublished
from media.rtmp.flv import FlvError, UnsupportedCodec
from media.rtmp_ingest import RtmpIngest
from media.stream import Stream, StreamNameInUse

from ..hooks import EventQueue
from ..rest_config import default_method_config

if TYPE_CHECKING:
    from .service import RtmpService

log = logging.getLogger(__name__)

NAME_IN_USE = "Stream name is already in use"
RESTRICTED = "Restricted access"
STOPPED_BY_PUBLISHER = "Stopped by publisher stop"
MAX_PENDING_BYTES = 16 << 20  # media kept while the backend decides
MAX_WRITE_BUFFER = 1 << 20  # bytes of answers waiting for a client that does not read


class RtmpPublisher(asyncio.Protocol):
    def __init__(self, service: RtmpService):
        self.service = service
        self.protocol = ServerConnection(service.settings.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.id = str(uuid.uuid4())
        self.session_id = f"rtmp-{self.id[:8]}"
        self.request: PublishRequested | None = None
        self.stream: Stream | None = None
        self.ingest: RtmpIngest | None = None
        self.status = "NEW"  # NEW, PENDING (asking the backend), PUBLISHING, UNPUBLISHED, FAILED
        self.info: str | None = None
        self.announced = False  # the outputs were told
        self.events: EventQueue | None = None
        self.app_key = service.settings.app_key
        self.created_at = service.now()
        self.closed = False
        self._pending: list[Media] = []  # media that came while the backend decides
        self._pending_bytes = 0
        self._metadata: dict[str, Any] | None = None  # onMetaData that came before the ingest
        self._watchdog: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.service.connections.add(self)
        self._arm_watchdog()

    def data_received(self, data: bytes) -> None:
        now = self.service.now()
        for event in self.protocol.receive(data, now):
            if isinstance(event, Media):
                self._media(event, now)
            elif isinstance(event, PublishRequested):
                self.request = event
                self.status = "PENDING"
                asyncio.get_running_loop().create_task(self._authorize(event))
            elif isinstance(event, Metadata):
                if self.ingest is not None:
                    self.ingest.on_metadata(event.values)
                else:
                    self._metadata = event.values
            elif isinstance(event, Unpublished):
                self._finish("UNPUBLISHED", None, by_publisher=True)
            elif isinstance(event, ProtocolViolation):
                log.warning("rtmp %s: closing: %s", self.peer, event.reason)
                self._finish("FAILED", f"RTMP protocol error: {event.reason}")
            elif isinstance(event, Connected):
                log.info("rtmp %s: connect app=%r", self.peer, event.app)
            if self.closed:
                break
        self._flush()
        if self.protocol.closed:
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        self.service.connections.discard(self)
        if self.status in ("PENDING", "PUBLISHING", "NEW"):
            reason = "the publisher's connection was lost" + (f" ({exc})" if exc else "")
            self._finish("UNPUBLISHED" if self.status == "PUBLISHING" else "FAILED", reason)

    # -- steps -----------------------------------------------------------------------------------------

    async def _authorize(self, request: PublishRequested) -> None:
        service = self.service
        app = service.apps.get(self.app_key)
        problem = service.validate_name(request.name)
        if problem is not None:
            self._refuse(problem, "NetStream.Publish.BadName")
            return
        if app is None:
            log.warning("rtmp %s: publish %r refused: application %r (rtmp.app_key) does not exist",
                        self.peer, request.name, self.app_key)
            self._refuse(RESTRICTED)
            return
        self.events = EventQueue(service.hooks, app)
        result = await service.hooks.call(app, "publishStream", self._body("NEW"),
                                          default_method_config("publishStream"))
        if self.closed:
            return
        if not result.allowed:
            log.info("rtmp %s: publish %r refused by the backend: %s", self.peer, request.name, result.reason)
            self._refuse(result.reason or RESTRICTED)
            return
        try:
            self.stream = service.registry.claim(request.name)
        except StreamNameInUse:
            self._refuse(NAME_IN_USE, "NetStream.Publish.BadName")
            return
        self.ingest = RtmpIngest(self.stream, service.core, service.transcode_settings(),
                                 asyncio.get_running_loop())
        if self._metadata is not None:
            self.ingest.on_metadata(self._metadata)
        self.protocol.accept_publish()
        self.status = "PUBLISHING"
        self._flush()
        log.info("rtmp %s: publishing %r (app %r)", self.peer, request.name, request.app)
        self._report("StreamStatusEvent", self._body("PUBLISHING"))
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        now = service.now()
        for media in pending:
            self._media(media, now)

    def _refuse(self, reason: str, code: str = "NetStream.Publish.Denied") -> None:
        self.status = "FAILED"
        self.info = reason
        self.protocol.refuse_publish(reason, code)
        self._flush()
        if self.request is not None:
            self._report("StreamStatusEvent", self._body("FAILED", reason))
        self._close_events()
        self._close()

    def _media(self, media: Media, now: float) -> None:
        ingest = self.ingest
        if ingest is None:
            if self.status == "PENDING" and len(self._pending) < 512 and self._pending_bytes < MAX_PENDING_BYTES:
                self._pending.append(media)  # the backend is deciding: keep the start (configs, keyframe)
                self._pending_bytes += len(media.body)
            return
        try:
            ingest.on_media(media.kind, media.timestamp, media.body, now)
        except UnsupportedCodec as exc:
            if media.kind == "video" or not ingest.stream.tracks:
                log.warning("rtmp %s: closing: %s", self.peer, exc)
                self._finish("FAILED", str(exc))
                return
            if ingest.audio_problem is None:
                ingest.audio_problem = str(exc)
                log.warning("rtmp %s: %s; the stream %r has no audio", self.peer, exc, ingest.stream.name)
        except FlvError as exc:
            ingest.stats.bad_frames += 1
            if ingest.stats.bad_frames == 1:
                log.warning("rtmp %s: dropped a %s message: %s", self.peer, media.kind, exc)
        if not self.announced and ingest.ready(now) and self.stream is not None:
            self.announced = True
            self.service.stream_published(self.stream)

    def _finish(self, status: str, info: str | None, by_publisher: bool = False,
                viewers_info: str = STOPPED_BY_PUBLISHER) -> None:
        """The publish is over (the publisher's choice, a lost connection, a violation). Viewers get
        `viewers_info` (a WebSDK status string); the backend the reason."""
        if self.status in ("UNPUBLISHED", "FAILED"):
            self._close()
            return
        was_publishing = self.status == "PUBLISHING"
        self.status = status
        self.info = info
        if was_publishing and by_publisher:
            self._report("unPublishStream", self._body("UNPUBLISHED"))
        self._end_stream(viewers_info)
        if self.request is not None:
            self._report("StreamStatusEvent", self._body(status, info))
        log.info("rtmp %s: %s%s", self.peer, status, f" ({info})" if info else "")
        self._close_events()
        self._close()

    def stop(self, info: str) -> None:
        """The server ends the stream (REST, shutdown): the client is told, the connection closed."""
        if self.status in ("UNPUBLISHED", "FAILED"):
            return
        self.protocol.end_publish(info)
        self._flush()
        self._finish("UNPUBLISHED", info, viewers_info=info)

    def _end_stream(self, info: str) -> None:
        ingest = self.ingest
        if ingest is not None and not ingest.closed:
            ingest.close()
            reencoded = ingest.video_transcoder.stats.frames_out if ingest.video_transcoder is not None else 0
            self.service.count(ingest.stats.video_frames, ingest.stats.audio_frames, ingest.stats.bytes, reencoded)
        stream = self.stream
        if stream is None:
            return
        self.service.registry.release(stream)  # ends the stream: outputs and transcoders learn of it
        asyncio.ensure_future(self.service.end_viewers(stream, info))

    # -- helpers ---------------------------------------------------------------------------------------

    def _body(self, status: str, info: str | None = None) -> dict[str, Any]:
        request = self.request
        body: dict[str, Any] = {
            "nodeId": self.service.node_id, "appKey": self.app_key, "sessionId": self.session_id,
            "mediaSessionId": self.id, "name": request.name if request else "", "published": True,
            "hasVideo": True, "hasAudio": True, "status": status, "record": False, "mediaProvider": "RTMP",
            "rtmpApp": request.app if request else "", "remoteAddress": self.peer,
        }
        if request is not None and request.query:
            body["rtmpQuery"] = request.query
        if info:
            body["info"] = info
        return body

    def _report(self, method: str, body: dict[str, Any]) -> None:
        if self.events is not None:
            self.events.push(method, body, default_method_config(method))

    def _close_events(self) -> None:
        events, self.events = self.events, None
        if events is not None:
            asyncio.get_running_loop().create_task(events.close(self.service.hooks_timeout))

    def _flush(self) -> None:
        out = self.protocol.data_to_send()
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
                log.warning("rtmp %s: closing: the client does not read its answers", self.peer)
                self._finish("FAILED", "the client does not read")
                return
            transport.write(out)

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _arm_watchdog(self) -> None:
        timeout = self.service.settings.timeout
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(timeout / 2, self._check_silence)

    def _check_silence(self) -> None:
        if self.closed:
            return
        now = self.service.now()
        timeout = self.service.settings.timeout
        last = self.protocol.last_received or self.created_at
        if not self.protocol.handshake.done and now - self.created_at > timeout:
            log.warning("rtmp %s: closing: no handshake within %g s", self.peer, timeout)
            self._finish("FAILED", f"no RTMP handshake within {timeout:g} s")
            return
        if now - last > timeout:
            log.warning("rtmp %s: closing: nothing received for %g s", self.peer, timeout)
            self._finish("FAILED", f"no data from the publisher for {timeout:g} s")
            return
        self._arm_watchdog()

    def describe(self) -> dict[str, Any]:
        request = self.request
        out: dict[str, Any] = {"mediaSessionId": self.id, "name": request.name if request else None,
                               "published": True, "status": self.status, "info": self.info,
                               "sessionId": self.session_id, "appKey": self.app_key, "mediaProvider": "RTMP",
                               "rtmpApp": request.app if request else None, "remoteAddress": self.peer}
        if self.ingest is not None:
            out.update(self.ingest.describe())
        return out
