"""Stream messages of the client protocol: publishStream, playStream, unPublishStream, stopStream.

Each publish or play of a client is a MediaSession keyed by the client-made mediaSessionId. Statuses go
to the client (notifyStreamStatusEvent) and to the backend (StreamStatusEvent); the backend decides
publishStream and playStream first (direct invocations).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from media import native
from media.picture_size import track_picture_size
from media.sfu import MediaCore, WebRtcPublisher, WebRtcViewer
from media.stream import PublishedTrack, Stream, StreamNameInUse, StreamRegistry
from media.transcode import Target, Transcoder, Transcoders, TranscodingDisabled
from media.webrtc import NoCommonCodecs, SdpError, accepts, offered_codecs

from . import protocol
from .hooks import HookClient
from .protocol import ProtocolError
from .rtsp_pull import PullFailed, RtspPull, is_rtsp_url, masked
from .session import Session

log = logging.getLogger(__name__)

MAX_SDP = 65536
# Stream names end up in URLs and file names (HLS, RTSP, records): printable, no separators.
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-.@~+=:]{1,128}$")

# Status info strings the WebSDK knows (constants.js STREAM_STATUS_INFO).
NAME_IN_USE = "Stream name is already in use"
NOT_FOUND = "Stream not found"
STOPPED_BY_PUBLISHER = "Stopped by publisher stop"
STOPPED_BY_DISCONNECT = "Stopped by session disconnect"
NO_COMMON_CODECS = "No common codecs"
RESTRICTED = "Restricted access"
ICE_TIMEOUT = "Failed by ICE timeout"
DTLS_ERROR = "Failed by DTLS error"
RTP_ACTIVITY = "Failed by RTP activity"
TRANSCODING_DISABLED = "Transcoding required, but disabled"
MAX_PLAY_SIZE = 4096  # width or height a viewer may ask for
VIEWER_SILENT = "Failed by RTP activity: the viewer sent no RTCP for {:g} s"


@dataclass
class MediaSession:
    id: str
    name: str
    published: bool
    session: Session
    has_audio: bool
    has_video: bool
    custom: Any = None
    status: str = "PENDING"
    info: str | None = None
    endpoint: WebRtcPublisher | WebRtcViewer | None = None
    stream: Stream | None = None
    viewers: set[MediaSession] = field(default_factory=set)
    connect_timer: asyncio.TimerHandle | None = None
    transcoders: list[Transcoder] = field(default_factory=list)
    pull: RtspPull | None = None  # the camera this viewer plays (name is an rtsp:// URL)
    # Set by the publisher's stream events (streaming/events.py); a viewer holds its publisher's.
    audio_state: dict[str, Any] = field(default_factory=lambda: {"muted": False})
    video_state: dict[str, Any] = field(default_factory=lambda: {"muted": False})
    record: bool = False  # being recorded (streaming/recording.py)
    record_name: str | None = None  # its file in the records folder, once there is one
    rtmp_url: str | None = None  # publishStream's rtmpUrl: pushed there once published (streaming/rtmp)

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def ended(self) -> bool:
        return self.status in ("FAILED", "STOPPED", "UNPUBLISHED")

    def status_object(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "mediaSessionId": self.id,
            "name": self.name,
            "published": self.published,
            "hasVideo": self.has_video,
            "hasAudio": self.has_audio,
            "status": self.status,
            "record": self.record,
            "audioState": dict(self.audio_state),
            "videoState": dict(self.video_state),
        }
        if self.record_name is not None:
            obj["recordName"] = self.record_name
        if self.info:
            obj["info"] = self.info
        if self.custom is not None:
            obj["custom"] = self.custom
        return obj


# What a backend never overwrites in a publish or play: the stream's identity and the client's SDP.
_NOT_OVERWRITTEN = ("mediaSessionId", "sdp", "published")


def overwritten(request: dict[str, Any], decided: dict[str, Any]) -> dict[str, Any]:
    """The fields of a hook's outcome (`decided`: the body after restOverwrite) that differ from the
    client's request, leaving out what a backend may not change and the context fields."""
    return {k: v for k, v in decided.items()
            if k not in _NOT_OVERWRITTEN and k not in ("nodeId", "sessionId", "appKey") and request.get(k) != v}


def _play_size(value: Any) -> int:
    """A viewer's width or height: 0 (as published) or 1..MAX_PLAY_SIZE, given as a number or text."""
    if value in (None, "", 0, "0"):
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit() \
            or not 0 <= int(value) <= MAX_PLAY_SIZE:
        raise ValueError(f"width and height must be whole numbers 0..{MAX_PLAY_SIZE}")
    return int(value)


def client_max_size(client_data: dict[str, Any]) -> tuple[int, int]:
    """The largest picture a session's client takes: `width` / `height` of its `connect` (as sent, or as
    the backend overwrote them); 0 is no bound. Values that are not sizes count as none."""
    try:
        return _play_size(client_data.get("width")), _play_size(client_data.get("height"))
    except ValueError:
        return 0, 0


def within(width: int, height: int, limit: tuple[int, int]) -> bool:
    """Whether a picture of width x height fits the bounds (0 in `limit`: unbounded). A size not known
    (0) does not fit a bound: the transcoder then learns it from the frames and scales if needed."""
    bound_w, bound_h = limit
    return (not bound_w or 0 < width <= bound_w) and (not bound_h or 0 < height <= bound_h)


async def picture_size(stream: Stream) -> tuple[int, int]:
    """The stream's video size from its cached keyframe, (0, 0) when not known (decoding an H.264
    keyframe is codec work: it runs in a thread)."""
    track = stream.track("video")
    if track is None:
        return 0, 0
    depacketize = stream.depacketize or native.depacketize_module()
    return await asyncio.to_thread(track_picture_size, track, depacketize)


def validate_name(name: str) -> str | None:
    """None when the name is fine, else why not."""
    if not _NAME_RE.match(name) or name in (".", ".."):
        return ("Invalid stream name: use 1..128 letters, digits and _-.@~+=: "
                "(no spaces, slashes or control characters)")
    return None


class CameraPulls(Protocol):
    """The cameras viewers play by rtsp:// URL (streaming/rtsp_pull's PullService)."""

    async def acquire(self, text: str, viewer: Any) -> RtspPull: ...

    def release(self, pull: RtspPull, viewer: Any) -> None: ...

    def stream(self, name: str) -> Stream | None: ...


class StreamService:
    """`registry`: where a publisher claims its stream's name (shared with the pulls); `hooks`: the
    backend (publishStream, playStream); `transcoders`: for viewers that need another codec or size;
    `pulls`: the cameras; `on_published` / `on_unpublished`: the server's outputs (HLS, recording)
    learn of a client's stream; `prepare_recording`: a publisher's `record: true`."""

    def __init__(self, core: MediaCore, registry: StreamRegistry, hooks: HookClient, transcoders: Transcoders,
                 pulls: CameraPulls, *, on_published: Callable[[Stream], None],
                 on_unpublished: Callable[[Stream], None], prepare_recording: Callable[[MediaSession], None],
                 connect_timeout: float = 20.0, activity_timeout: float = 10.0):
        self.core = core
        self.registry = registry
        self.hooks = hooks
        self.transcoders = transcoders
        self.pulls = pulls
        self._on_published = on_published
        self._on_unpublished = on_unpublished
        self._prepare_recording = prepare_recording
        self.connect_timeout = connect_timeout
        self._media: dict[str, MediaSession] = {}
        self._publishers: dict[str, MediaSession] = {}  # by stream name
        self.activity_timeout = activity_timeout
        self._watchdog: asyncio.Task[None] | None = None
        # Publishers that are not clients (RTMP): the stream of a name, or None.
        self.sources: list[Callable[[str], Stream | None]] = []

    def start(self) -> None:
        self._watchdog = asyncio.get_running_loop().create_task(self._watch_activity())

    async def shutdown(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()

    async def _watch_activity(self) -> None:
        """A publisher that stops sending RTP fails; a viewer that stops sending RTCP (gone without a
        word: a killed tab, a cut network) is stopped. Checked once a second for all streams."""
        while True:
            await asyncio.sleep(min(1.0, self.activity_timeout / 2))
            now = self.core.now()
            for ms in list(self._media.values()):
                if ms.status not in ("PUBLISHING", "PLAYING") or ms.endpoint is None:
                    continue
                if isinstance(ms.endpoint, WebRtcPublisher):
                    if ms.endpoint.idle_for(now) > self.activity_timeout:
                        await self._fail(ms, RTP_ACTIVITY)
                elif ms.endpoint.silent_for(now) > self.activity_timeout:
                    await self._fail(ms, VIEWER_SILENT.format(self.activity_timeout))

    def handlers(self) -> dict[str, Any]:
        return {
            "publishStream": self.publish,
            "playStream": self.play,
            "unPublishStream": self.unpublish,
            "stopStream": self.stop,
        }

    # -- client messages ---------------------------------------------------------------------------

    async def publish(self, session: Session, obj: dict[str, Any]) -> None:
        ms = self._begin(session, obj, "publishStream", published=True)
        if ms is None:
            return
        decided = await self._authorize(ms, "publishStream", obj)
        if decided is None:
            return
        obj = decided
        rtmp_url = obj.get("rtmpUrl")  # the backend may set or change it (OVERWRITE)
        ms.rtmp_url = rtmp_url if isinstance(rtmp_url, str) and rtmp_url else None
        try:
            stream = self.registry.claim(ms.name)
        except StreamNameInUse:
            await self._fail(ms, NAME_IN_USE)
            return
        ms.stream = stream
        publisher = WebRtcPublisher(self.core, stream)
        ms.endpoint = publisher
        try:
            answer = await publisher.start(obj["sdp"])
        except (SdpError, NoCommonCodecs) as exc:
            await self._fail(ms, NO_COMMON_CODECS if isinstance(exc, NoCommonCodecs) else f"Bad SDP: {exc}")
            return
        if ms.ended:  # stopped while we were answering
            return
        if obj.get("record") is True:
            self._prepare_recording(ms)  # recordName from the first status on
        self._publishers[ms.name] = ms
        publisher.peer.on_state = lambda state: self._peer_state(ms, state)
        self._arm_connect_timeout(ms)
        await session.send(protocol.frame("setRemoteSDP", ms.id, answer))

    async def play(self, session: Session, obj: dict[str, Any]) -> None:
        ms = self._begin(session, obj, "playStream", published=False)
        if ms is None:
            return
        decided = await self._authorize(ms, "playStream", obj)
        if decided is None:
            return
        obj = decided
        if is_rtsp_url(ms.name):
            stream = await self._pulled(ms)
        else:
            publisher = self._publishers.get(ms.name)
            ok = publisher is not None and not publisher.ended and publisher.stream is not None
            stream = publisher.stream if ok and publisher is not None else None
            if publisher is None:
                stream = self.source(ms.name)
            if stream is None or not stream.tracks:
                await self._fail(ms, NOT_FOUND)
                return
            if publisher is not None:
                publisher.viewers.add(ms)
                ms.audio_state, ms.video_state = dict(publisher.audio_state), dict(publisher.video_state)
        if stream is None or ms.ended:
            return
        ms.stream = stream
        limit = client_max_size(session.client_data)
        source_size = await picture_size(stream) if limit != (0, 0) else (0, 0)
        if ms.ended:
            return
        try:
            derived = self._derived_tracks(ms, stream, obj, limit, source_size)
        except SdpError as exc:
            await self._fail(ms, f"Bad SDP: {exc}")
            return
        except TranscodingDisabled:
            await self._fail(ms, TRANSCODING_DISABLED)
            return
        except ValueError as exc:
            await self._fail(ms, str(exc))
            return
        viewer = WebRtcViewer(self.core, stream, derived)
        ms.endpoint = viewer
        try:
            answer = await viewer.start(obj["sdp"])
        except NoCommonCodecs:
            await self._fail(ms, NO_COMMON_CODECS)
            return
        except SdpError as exc:
            await self._fail(ms, f"Bad SDP: {exc}")
            return
        if ms.ended:
            return
        viewer.peer.on_state = lambda state: self._peer_state(ms, state)
        self._arm_connect_timeout(ms)
        await session.send(protocol.frame("setRemoteSDP", ms.id, answer))

    async def _pulled(self, ms: MediaSession) -> Stream | None:
        """The stream of the camera an rtsp:// name points at, pulled (or joined) for this viewer."""
        try:
            ms.pull = await self.pulls.acquire(ms.name, ms)
        except PullFailed as exc:
            log.info("playStream of %s failed: %s", masked(ms.name), exc.detail)
            await self._fail(ms, exc.info)
            return None
        if ms.ended:  # stopped while the camera was answering
            self.pulls.release(ms.pull, ms)
            return None
        if not ms.pull.stream.tracks:
            await self._fail(ms, NOT_FOUND)
            return None
        return ms.pull.stream

    async def unpublish(self, session: Session, obj: dict[str, Any]) -> None:
        ms = self._own(session, obj, "unPublishStream")
        await self._tell_backend_of_stop(ms, "unPublishStream")
        await self._end(ms, "UNPUBLISHED", None)

    async def stop(self, session: Session, obj: dict[str, Any]) -> None:
        ms = self._own(session, obj, "stopStream")
        await self._tell_backend_of_stop(ms, "stopStream")
        await self._end(ms, "UNPUBLISHED" if ms.published else "STOPPED", None)

    async def _tell_backend_of_stop(self, ms: MediaSession, method: str) -> None:
        """unPublishStream / stopStream: direct invocations the backend may refuse, but a client that
        stops its stream is never held to it (as in WCS): a refusal is logged and the stream stops."""
        session = ms.session
        body = {**ms.status_object(), **session.context}
        result = await self.hooks.call(session.app, method, body, session.rest_config.for_method(method))
        if not result.allowed:
            shown = masked(ms.name) if is_rtsp_url(ms.name) else ms.name
            log.warning("backend refused %s of %r (%s): the stream stops anyway", method, shown,
                        result.reason or RESTRICTED)

    async def session_closed(self, session: Session, reason: str) -> None:
        for ms in [m for m in self._media.values() if m.session is session]:
            await self._end(ms, "UNPUBLISHED" if ms.published else "STOPPED", STOPPED_BY_DISCONNECT)

    # -- steps -------------------------------------------------------------------------------------

    def _begin(self, session: Session, obj: dict[str, Any], message: str, published: bool) -> MediaSession | None:
        msid = protocol.require_str(obj, "mediaSessionId", message, max_length=128)
        assert msid is not None
        try:
            name = protocol.require_str(obj, "name", message, max_length=1024)
            sdp = protocol.require_str(obj, "sdp", message, max_length=MAX_SDP)
            assert name is not None and sdp is not None
            if msid in self._media:
                raise ProtocolError(f"mediaSessionId {msid!r} is already in use")
        except ProtocolError as exc:
            # Addressed to the stream, so the client's stream object fails instead of hanging.
            raise ProtocolError(exc.info, "StreamStatusEvent", msid) from None
        ms = MediaSession(msid, name, published, session, obj.get("hasAudio") is not False,
                          obj.get("hasVideo") is not False, custom=obj.get("custom"))
        self._media[msid] = ms
        problem = None if not published and is_rtsp_url(name) else validate_name(name)
        if problem is not None:
            ms.name = name[:128]
            asyncio.get_running_loop().create_task(self._fail(ms, problem))
            return None
        return ms

    def _derived_tracks(self, ms: MediaSession, stream: Stream, obj: dict[str, Any],
                        limit: tuple[int, int] = (0, 0),
                        source_size: tuple[int, int] = (0, 0)) -> dict[str, PublishedTrack]:
        """The transcoded tracks this viewer needs: video in a codec its offer accepts when it does not
        accept the publisher's, or at the width/height it asked for, or scaled down to the largest size
        its session's `connect` allows (`limit`) when the picture (`source_size`, (0, 0): not known yet)
        is bigger. Shared with every other viewer that needs the same (MediaSession.transcoders holds
        them, released when the viewer ends)."""
        width, height = _play_size(obj.get("width")), _play_size(obj.get("height"))
        fit = False
        if limit != (0, 0):
            asked = width or height
            too_big = (limit[0] and width > limit[0]) or (limit[1] and height > limit[1])
            if (asked and too_big) or (not asked and not within(*source_size, limit)):
                width, height, fit = limit[0], limit[1], True  # the most the client takes, aspect kept
        offered = offered_codecs(obj["sdp"])
        derived: dict[str, PublishedTrack] = {}
        for track in stream.tracks:
            choices = offered.get(track.kind, [])
            if track.kind != "video" or not choices:
                continue  # audio is Opus both ways: browsers all take it
            same_codec = accepts(choices, track.codec.native)
            if same_codec and not (width or height):
                continue
            codec = track.codec.name if same_codec else choices[0].mimeType.split("/", 1)[1]
            target = Target("video", codec, width, height, fit=fit)
            transcoder = self.transcoders.acquire(stream, target, self.core.now())
            ms.transcoders.append(transcoder)
            derived["video"] = transcoder.rtp_track()
        return derived

    def _own(self, session: Session, obj: dict[str, Any], message: str) -> MediaSession:
        msid = protocol.require_str(obj, "mediaSessionId", message, max_length=128)
        ms = self._media.get(msid or "")
        if ms is None or ms.session is not session:  # someone else's stream is as good as none
            raise ProtocolError(NOT_FOUND, "StreamStatusEvent", msid)
        return ms

    async def _authorize(self, ms: MediaSession, method: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The backend's word on a publish or play: None when refused (the stream has failed), else the
        request to go on with, with the fields the backend overwrote (restPolicy OVERWRITE) applied."""
        session = ms.session
        body = {k: v for k, v in obj.items() if k != "sdp"}
        body.update(session.context)
        result = await self.hooks.call(session.app, method, body, session.rest_config.for_method(method))
        if not result.allowed:
            await self._fail(ms, result.reason or RESTRICTED)
            return None
        if ms.ended:
            return None
        decided = {**obj, **overwritten(obj, result.data)}
        problem = self._apply_overwrite(ms, decided)
        if problem is not None:
            await self._fail(ms, problem)
            return None
        return decided

    def _apply_overwrite(self, ms: MediaSession, decided: dict[str, Any]) -> str | None:
        """Take a backend's name and custom for the stream; None when fine, else why the stream fails."""
        name = decided.get("name")
        if not isinstance(name, str):
            return "The backend gave a stream name that is not a string"
        if name != ms.name:
            problem = None if not ms.published and is_rtsp_url(name) else validate_name(name)
            if problem is not None:
                return f"The backend gave a bad stream name: {problem}"
            log.info("stream %r renamed %r by the backend", ms.name if not is_rtsp_url(ms.name) else masked(ms.name),
                     name if not is_rtsp_url(name) else masked(name))
            ms.name = name
        ms.custom = decided.get("custom")
        return None

    def _arm_connect_timeout(self, ms: MediaSession) -> None:
        loop = asyncio.get_running_loop()
        ms.connect_timer = loop.call_later(
            self.connect_timeout, lambda: loop.create_task(self._connect_timed_out(ms)))

    async def _connect_timed_out(self, ms: MediaSession) -> None:
        if ms.status == "PENDING":
            await self._fail(ms, ICE_TIMEOUT)

    def _peer_state(self, ms: MediaSession, state: str) -> None:
        loop = asyncio.get_running_loop()
        if state == "connected" and ms.status == "PENDING":
            if ms.connect_timer is not None:
                ms.connect_timer.cancel()
            if isinstance(ms.endpoint, WebRtcViewer):
                ms.endpoint.attach()
            elif isinstance(ms.endpoint, WebRtcPublisher):
                ms.endpoint.connected_at = self.core.now()
            loop.create_task(self._set_status(ms, "PUBLISHING" if ms.published else "PLAYING"))
            if ms.published and ms.stream is not None:
                ms.status = "PUBLISHING"  # so the outputs started now see the stream as published
                self._on_published(ms.stream)
        elif state == "failed" and not ms.ended:
            pc = ms.endpoint.peer.pc if ms.endpoint is not None else None
            ice_failed = pc is not None and pc.iceConnectionState == "failed"
            loop.create_task(self._fail(ms, ICE_TIMEOUT if ice_failed else DTLS_ERROR))

    async def _set_status(self, ms: MediaSession, status: str, info: str | None = None) -> None:
        ms.status = status
        ms.info = info
        obj = ms.status_object()
        await ms.session.send(protocol.frame("notifyStreamStatusEvent", obj))
        ms.session.report("StreamStatusEvent", obj)
        shown = masked(ms.name) if is_rtsp_url(ms.name) else ms.name  # no camera password in the log
        log.info("stream %r %s %s%s", shown, "publisher" if ms.published else "viewer", status,
                 f" ({info})" if info else "")

    async def _fail(self, ms: MediaSession, info: str) -> None:
        await self._end(ms, "FAILED", info)

    async def _end(self, ms: MediaSession, status: str, info: str | None) -> None:
        if ms.ended:
            return
        ms.status = status  # ended from here on: nothing else starts for it
        if ms.connect_timer is not None:
            ms.connect_timer.cancel()
        self._media.pop(ms.id, None)
        if ms.published:
            if self._publishers.get(ms.name) is ms:
                del self._publishers[ms.name]
            if ms.stream is not None:
                self.registry.release(ms.stream)
            for viewer in list(ms.viewers):
                await self._end(viewer, "STOPPED", STOPPED_BY_PUBLISHER)
        else:
            publisher = self._publishers.get(ms.name)
            if publisher is not None:
                publisher.viewers.discard(ms)
            if ms.pull is not None:
                self.pulls.release(ms.pull, ms)
        if ms.published and ms.stream is not None:
            self._on_unpublished(ms.stream)
        await self._set_status(ms, status, info)
        if ms.endpoint is not None:
            await ms.endpoint.close()
        for transcoder in ms.transcoders:
            self.transcoders.release(transcoder)
        ms.transcoders.clear()

    # -- for the other outputs (HLS, RTSP, recording) ---------------------------------------------

    def published(self, name: str) -> Stream | None:
        """The stream of that name if its publisher is connected and sending, else None."""
        ms = self._publishers.get(name)
        if ms is None or ms.status != "PUBLISHING" or ms.stream is None or ms.stream.closed:
            return self.pulls.stream(name) or self.source(name)
        return ms.stream

    def source(self, name: str) -> Stream | None:
        """The stream a publisher that is not a client (RTMP) publishes under `name`, else None."""
        for source in self.sources:
            stream = source(name)
            if stream is not None:
                return stream
        return None

    # -- for stream events, keep-alive and snapshots (streaming/events.py ...) --------------------

    def media_session(self, msid: str) -> MediaSession | None:
        return self._media.get(msid)

    def media_sessions(self) -> list[MediaSession]:
        return list(self._media.values())

    def publisher(self, name: str) -> MediaSession | None:
        """The client publishing `name` (connected or not yet), else None."""
        ms = self._publishers.get(name)
        return None if ms is None or ms.ended else ms

    async def terminate(self, ms: MediaSession, info: str) -> None:
        await self._fail(ms, info)

    async def end_viewers(self, stream: Stream, info: str) -> None:
        """A source that is not a client's publisher (a pulled camera) ended: so do its viewers."""
        for ms in [m for m in self._media.values() if not m.published and m.stream is stream]:
            await self._end(ms, "STOPPED", info)

    # -- introspection -----------------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for ms in self._media.values():
            entry = {**ms.status_object(), "sessionId": ms.session.id, "appKey": ms.session.app.app_key}
            if isinstance(ms.endpoint, WebRtcPublisher) and ms.stream is not None:
                entry["tracks"] = [{"kind": t.kind, "codec": t.codec.name, "packets": t.ingest.packets,
                                    "keyframes": t.ingest.keyframes, "keyframeRequests": t.keyframe_requests,
                                    "viewers": len(t.sinks),
                                    "junk": t.junk} for t in ms.stream.tracks]
                entry["decoders"] = ms.endpoint.peer.decoders
            elif isinstance(ms.endpoint, WebRtcViewer):
                entry["sent"] = sum(s.stats.sent for _t, s in ms.endpoint.sinks)
                entry["dropped"] = ms.endpoint.dropped
                entry["retransmitted"] = sum(s.stats.retransmitted for _t, s in ms.endpoint.sinks)
                # "udp": the native fan-out sends to the peer's socket itself (SRTP in C)
                entry["sendRoutes"] = sorted({s.output.route for _t, s in ms.endpoint.sinks})
            out.append(entry)
        return out
