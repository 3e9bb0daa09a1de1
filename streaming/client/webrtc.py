"""Publishing and playing over WebRTC with aiortc, as the WebSDK's WebRTC media provider does it.

The offer goes out as createOffer/setLocalDescription made it, in one publishStream or playStream
message; nothing is trickled. (aiortc gathers its candidates inside setLocalDescription, so its offer
carries them, where a browser's WebSDK offer carries none; the server handles both.) The server's answer
comes back in setRemoteSDP, then notifyStreamStatusEvent says PUBLISHING or PLAYING, or FAILED with a
reason. `--codec` works like the WebSDK's stripCodecs: the other video codecs are left out of the offer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import av
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import SessionDescription

from media import ice

from .media import FileSource, TestPatternTrack, ToneTrack, open_file, pattern_index
from .session import Session, StreamSignal, WaitTimeout

log = logging.getLogger(__name__)

VIDEO_CODECS = ("H264", "VP8")


def use_ice_addresses(addresses: Sequence[str] | None) -> None:
    """Gather ICE host candidates on these addresses (process-wide; None: aioice's default, which skips
    loopback). Tests on a loopback-only network pass ["127.0.0.1"]."""
    ice.use_host_addresses(addresses)


def codec_preferences(kind: str, codec: str, receiving: bool = False) -> list[RTCRtpCodecCapability]:
    """The capabilities of `codec` (every profile aiortc has), plus RTX: what setCodecPreferences takes
    to offer only that codec."""
    capabilities = (RTCRtpReceiver if receiving else RTCRtpSender).getCapabilities(kind)
    assert capabilities is not None
    wanted = f"{kind}/{codec}".lower()
    chosen = [c for c in capabilities.codecs if c.mimeType.lower() == wanted]
    if not chosen:
        known = sorted({c.mimeType.split("/", 1)[1] for c in capabilities.codecs
                        if c.mimeType.lower() != f"{kind}/rtx"})
        raise ValueError(f"unknown {kind} codec {codec!r}; aiortc has {', '.join(known)}")
    rtx = [c for c in capabilities.codecs if c.mimeType.lower() == f"{kind}/rtx"]
    return chosen + rtx


def negotiated_codecs(sdp: str | None) -> dict[str, str]:
    """kind -> the codec an SDP answer chose (its first non-RTX payload type), e.g. {"video": "H264"}."""
    if not sdp:
        return {}
    chosen: dict[str, str] = {}
    for media in SessionDescription.parse(sdp).media:
        for codec in media.rtp.codecs:
            if codec.name.lower() not in ("rtx", "red", "ulpfec"):
                chosen.setdefault(media.kind, codec.name)
                break
    return chosen


class _WebRtcStream:
    """What a publisher and a player share: the peer connection and the stream's signalling."""

    published: bool
    _ready_status: str  # PUBLISHING or PLAYING

    def __init__(self, session: Session, name: str, custom: dict[str, Any] | None):
        self.session = session
        self.name = name
        self.custom = custom if custom is not None else {}
        self.media_session_id = str(uuid.uuid4())
        self.signal: StreamSignal = session.new_stream(self.media_session_id, name, self.published)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.on("connectionstatechange", self._on_connection_state)
        self.requested = False
        self.stopped = False
        self.started_at: float | None = None   # monotonic, when start() began
        self.ready_at: float | None = None     # monotonic, when PUBLISHING / PLAYING came

    @property
    def status(self) -> str:
        return self.signal.status

    @property
    def info(self) -> str | None:
        return self.signal.info or self.signal.local_error

    @property
    def codecs(self) -> dict[str, str]:
        """kind -> the codec the server's answer chose."""
        return negotiated_codecs(self.signal.remote_sdp)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.debug("%s %s: connection %s", self.name, self.media_session_id, state)
        if state == "failed" and not self.stopped:
            self.signal.fail_locally("Failed by ICE or DTLS (client side: the media connection failed)")

    def _request(self) -> dict[str, Any]:
        raise NotImplementedError

    async def _negotiate(self, ready_status: str, timeout: float) -> None:
        """Offer, send the request, apply the answer, wait for `ready_status`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.started_at = time.monotonic()
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)
        self.signal.status = "PENDING"
        request = self._request()
        await self.session.send(self.signal.request, request)
        self.requested = True
        await self.signal.wait(lambda: self.signal.remote_sdp is not None, "setRemoteSDP",
                               deadline - loop.time())
        assert self.signal.remote_sdp is not None
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(self.signal.remote_sdp, "answer"))
        except ValueError as exc:  # aiortc says what it could not accept in the answer
            self.signal.fail_locally(f"Bad answer SDP: {exc}")
            failure = self.signal.failure()
            assert failure is not None
            raise failure from exc
        await self.signal.wait(lambda: self.signal.status == ready_status, ready_status, deadline - loop.time())
        self.ready_at = time.monotonic()

    async def start(self, timeout: float = 20.0) -> None:
        try:
            await self._negotiate(self._ready_status, timeout)
        except BaseException:
            if self in self.session.media:
                self.session.media.remove(self)
            await self._close_media()
            raise

    async def hold(self, duration: float | None) -> None:
        """Keep the stream up for `duration` seconds (None: until it ends); StreamFailed if it ends
        before (the server stopped or failed it, or the media connection failed)."""
        try:
            await self.signal.wait(lambda: False, "end", float("inf") if duration is None else duration)
        except WaitTimeout:
            return

    async def wait_status(self, status: str, timeout: float = 10.0) -> None:
        """Until the server says `status` (e.g. UNPUBLISHED after the publisher left)."""
        await self.signal.wait(lambda: self.signal.status == status, status, timeout, fail_on_end=False)

    async def stop(self, wait: bool = False, timeout: float = 10.0) -> None:
        """Stop as the WebSDK does (unPublishStream / stopStream unless the stream already ended) and
        close the peer connection; with wait, also wait for the server to confirm the end."""
        if self.stopped:
            return
        self.stopped = True
        if self in self.session.media:
            self.session.media.remove(self)
        try:
            if self.requested and not self.signal.ended and not self.session.closed:
                message = "unPublishStream" if self.published else "stopStream"
                await self.session.send(message, {
                    "mediaSessionId": self.media_session_id, "name": self.name, "published": self.published,
                    "hasVideo": True, "hasAudio": True, "status": self.signal.status, "record": False,
                })
                if wait:
                    await self.signal.wait(lambda: self.signal.status in ("STOPPED", "UNPUBLISHED", "FAILED"),
                                           "end status", timeout, fail_on_end=False)
        finally:
            await self._close_media()

    async def _close_media(self) -> None:
        self.stopped = True
        await self.pc.close()

    async def rtp_stats(self) -> dict[str, Any]:
        """Per-kind RTP counters and the transport's byte counts, from pc.getStats()."""
        report = await self.pc.getStats()
        out: dict[str, Any] = {"inbound": {}, "outbound": {}, "transport": {"bytesSent": 0, "bytesReceived": 0,
                                                                         "packetsSent": 0, "packetsReceived": 0}}
        for stats in report.values():
            if stats.type == "inbound-rtp":
                entry = out["inbound"].setdefault(stats.kind, {"packetsReceived": 0, "packetsLost": 0})
                entry["packetsReceived"] += stats.packetsReceived
                entry["packetsLost"] += stats.packetsLost
            elif stats.type == "outbound-rtp":
                entry = out["outbound"].setdefault(stats.kind, {"packetsSent": 0, "bytesSent": 0})
                entry["packetsSent"] += stats.packetsSent
                entry["bytesSent"] += stats.bytesSent
            elif stats.type == "transport":
                for key in out["transport"]:
                    out["transport"][key] += getattr(stats, key)
        return out


def _set_codec(transceiver: RTCRtpTransceiver, codec: str | None, receiving: bool) -> None:
    if codec is not None and transceiver.kind == "video":
        transceiver.setCodecPreferences(codec_preferences("video", codec, receiving))


class Publisher(_WebRtcStream):
    """A published stream: a test pattern and a tone (or a file) sent to the server."""

    published = True
    _ready_status = "PUBLISHING"

    def __init__(self, session: Session, name: str, *, video: bool = True, audio: bool = True,
                 codec: str | None = None, file: str | None = None, width: int = 640, height: int = 480,
                 fps: float = 30.0, record: bool = False, custom: dict[str, Any] | None = None):
        if codec is not None:
            codec = codec.upper()
            if codec not in VIDEO_CODECS:
                raise ValueError(f"unsupported video codec {codec!r}: use one of {', '.join(VIDEO_CODECS)}")
        self.source: FileSource | None = open_file(file) if file is not None else None
        if self.source is not None and self.source.passthrough_codec is not None:
            if codec not in (None, self.source.passthrough_codec):
                raise ValueError(f"{file} holds {self.source.passthrough_codec}, sent as it is: it cannot "
                                 f"be published as {codec}")
            codec = self.source.passthrough_codec
        super().__init__(session, name, custom)
        self.codec = codec
        self.record = record
        self.tracks: list[MediaStreamTrack] = []
        if self.source is not None:
            chosen_video = self.source.video if video else None
            chosen_audio = (self.source.audio or ToneTrack()) if audio else None
            self.width, self.height = self.source.width, self.source.height
        else:
            chosen_video = TestPatternTrack(width, height, fps) if video else None
            chosen_audio = ToneTrack() if audio else None
            self.width, self.height = width, height
        if chosen_video is None and chosen_audio is None:
            raise ValueError("nothing to publish: neither video nor audio")
        for track in (chosen_audio, chosen_video):
            if track is not None:
                # addTrack (sendrecv), as the WebSDK does; the server answers recvonly.
                sender = self.pc.addTrack(track)
                transceiver = next(t for t in self.pc.getTransceivers() if t.sender is sender)
                _set_codec(transceiver, codec, receiving=False)
                self.tracks.append(track)
        self.has_video = chosen_video is not None
        self.has_audio = chosen_audio is not None

    def _request(self) -> dict[str, Any]:
        assert self.pc.localDescription is not None
        return {
            "mediaSessionId": self.media_session_id,
            "name": self.name,
            "published": True,
            "hasVideo": self.has_video,
            "hasAudio": self.has_audio,
            "status": "PENDING",
            "record": self.record,
            "mediaProvider": "WebRTC",
            "sdp": self.pc.localDescription.sdp,
            "custom": self.custom,
            "constraints": {"audio": self.has_audio, "video": self.has_video},
        }

    async def _close_media(self) -> None:
        for track in self.tracks:
            track.stop()
        if self.source is not None:
            self.source.stop()
        await super()._close_media()

    async def stats(self) -> dict[str, Any]:
        rtp = await self.rtp_stats()
        video = next((t for t in self.tracks if t.kind == "video"), None)
        frames = getattr(video, "frames_sent", getattr(video, "packets_sent", 0)) if video else 0
        return {
            "name": self.name, "mediaSessionId": self.media_session_id, "status": self.status, "info": self.info,
            "codecs": self.codecs, "width": self.width, "height": self.height, "framesSent": frames,
            "publishSeconds": _seconds(self.started_at, self.ready_at),
            "packetsSent": sum(e["packetsSent"] for e in rtp["outbound"].values()),
            "bytesSent": sum(e["bytesSent"] for e in rtp["outbound"].values()),
            "rtp": rtp,
        }


@dataclass
class KindCounters:
    frames: int = 0
    first_frame_at: float | None = None  # monotonic
    last_frame_at: float | None = None


@dataclass
class VideoCounters(KindCounters):
    width: int | None = None
    height: int | None = None
    sizes: dict[str, int] = field(default_factory=dict)  # "640x480" -> frames, when inspecting
    last_pattern_index: int | None = None                 # the test pattern's frame number, when inspecting


class Player(_WebRtcStream):
    """A played stream: recvonly transceivers; every frame aiortc decodes is counted."""

    published = False
    _ready_status = "PLAYING"

    def __init__(self, session: Session, name: str, *, video: bool = True, audio: bool = True,
                 codec: str | None = None, custom: dict[str, Any] | None = None, inspect: bool = False,
                 width: int = 0, height: int = 0):
        super().__init__(session, name, custom)
        self.inspect = inspect
        self.width = width  # asked of the server: 0 = as published
        self.height = height
        self.video = VideoCounters()
        self.audio = KindCounters()
        self.tracks_ended: list[str] = []
        self._readers: list[asyncio.Task[None]] = []
        self.want_video = video
        self.want_audio = audio
        if audio:
            self.pc.addTransceiver("audio", direction="recvonly")
        if video:
            transceiver = self.pc.addTransceiver("video", direction="recvonly")
            _set_codec(transceiver, codec.upper() if codec else None, receiving=True)
        self.pc.on("track", self._on_track)

    def _request(self) -> dict[str, Any]:
        assert self.pc.localDescription is not None
        return {
            "mediaSessionId": self.media_session_id,
            "name": self.name,
            "published": False,
            "hasVideo": True,
            "hasAudio": True,
            "status": "PENDING",
            "record": False,
            "width": self.width,
            "height": self.height,
            "mediaProvider": "WebRTC",
            "sdp": self.pc.localDescription.sdp,
            "custom": self.custom,
            "constraints": {"audio": self.want_audio, "video": self.want_video},
        }

    def _on_track(self, track: MediaStreamTrack) -> None:
        task = asyncio.get_running_loop().create_task(self._read_track(track),
                                                      name=f"client-play {self.name} {track.kind}")
        self._readers.append(task)

    async def _read_track(self, track: MediaStreamTrack) -> None:
        counters: KindCounters = self.video if track.kind == "video" else self.audio
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                counters.frames += 1
                counters.last_frame_at = now
                if counters.first_frame_at is None:
                    counters.first_frame_at = now
                if isinstance(counters, VideoCounters) and isinstance(frame, av.VideoFrame):
                    counters.width, counters.height = frame.width, frame.height
                    if self.inspect:
                        size = f"{frame.width}x{frame.height}"
                        counters.sizes[size] = counters.sizes.get(size, 0) + 1
                        counters.last_pattern_index = pattern_index(frame)
                self.session._pulse.fire()
        except MediaStreamError:
            self.tracks_ended.append(track.kind)
            self.session._pulse.fire()

    async def wait_frames(self, count: int, timeout: float = 10.0, kind: str = "video") -> None:
        """Until `count` frames of `kind` arrived (decoded); StreamFailed if the stream ends first."""
        counters = self.video if kind == "video" else self.audio
        await self.signal.wait(lambda: counters.frames >= count, f"{count} {kind} frames (got {counters.frames})",
                               timeout)

    async def _close_media(self) -> None:
        for task in self._readers:
            task.cancel()
        await super()._close_media()
        for task in self._readers:
            try:
                await task
            except (asyncio.CancelledError, MediaStreamError):
                pass

    async def stats(self) -> dict[str, Any]:
        rtp = await self.rtp_stats()
        video = asdict(self.video)
        for key in ("first_frame_at", "last_frame_at"):
            video.pop(key)
        if not self.inspect:
            video.pop("sizes")
            video.pop("last_pattern_index")
        return {
            "name": self.name, "mediaSessionId": self.media_session_id, "status": self.status, "info": self.info,
            "codecs": self.codecs,
            "frames": self.video.frames,
            "audioFrames": self.audio.frames,
            "width": self.video.width,
            "height": self.video.height,
            "video": video,
            "playSeconds": _seconds(self.started_at, self.ready_at),
            "firstFrameSeconds": _seconds(self.started_at, self.video.first_frame_at),
            "packetsReceived": sum(e["packetsReceived"] for e in rtp["inbound"].values()),
            "bytesReceived": rtp["transport"]["bytesReceived"],
            "rtp": rtp,
        }


def _seconds(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round(end - start, 4)

