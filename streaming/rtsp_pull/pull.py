"""One camera URL published as one Stream for as long as it is wanted: the connection's life cycle
(connect, hold with keep-alives, receiver reports and a media watchdog, reconnect with exponential
backoff), the camera's tracks as the stream's PublishedTracks, and the RTCP both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from media.rtsp_client import RemoteTrack, RtspUrl, sprop_parameter_sets
from media.sfu import MediaCore, receiver_report
from media.stream import Codec, PublishedTrack, Stream

from .camera import CameraConnection
from .failures import CONNECT_FAILED, NO_COMMON_CODECS, WRONG_FORMAT, PullFailed
from .settings import PullSettings
from .urls import masked

log = logging.getLogger(__name__)

PULLED_CODECS = ("H264", "VP8", "opus")  # what the routing core forwards as it is
REPORT_INTERVAL = 5.0  # receiver reports to the camera
MAX_BACKOFF_START = 1.0


def codec_for(track: RemoteTrack) -> Codec:
    """The routing core's codec of a camera track, with the aiortc codec WebRTC viewers negotiate."""
    parameters: dict[str, Any] = {}
    if track.codec == "H264":
        sps, _pps = sprop_parameter_sets(track.fmtp)
        profile = track.fmtp.get("profile-level-id") or (sps[1:4].hex() if sps is not None and len(sps) >= 4 else None)
        parameters = {"level-asymmetry-allowed": "1", "packetization-mode": track.fmtp.get("packetization-mode", "1"),
                      "profile-level-id": (profile or "42e01f").lower()}
    channels = 2 if track.codec == "opus" else None
    native = RTCRtpCodecParameters(mimeType=f"{track.kind}/{track.codec}", clockRate=track.clock_rate,
                                   channels=channels, payloadType=track.payload_type, parameters=parameters)
    return Codec(track.kind, track.codec, track.clock_rate, track.payload_type, parameters, native=native)


@dataclass
class PullStats:
    connects: int = 0
    reconnects: int = 0
    packets: int = 0
    bytes: int = 0
    errors: int = 0  # packets an output failed on


class RtspPull:
    """One camera URL published as one Stream, for as long as it is wanted."""

    def __init__(self, media: MediaCore, settings: PullSettings, on_published: Callable[[RtspPull], None],
                 text: str, url: RtspUrl, tcp: bool, keep: bool, local_name: str | None = None):
        self.media = media  # the implementation modules (native or twins) and the clock
        self.settings = settings
        self.on_published = on_published  # called once, when the camera first plays
        self.text = text  # the URL as given: the stream's name
        self.url = url
        self.connect_to = url.host  # the address checked against rtsp.pull_allowed_hosts, when it was
        self.tcp = tcp
        self.keep = keep
        self.local_name = local_name
        self.stream = Stream(masked(text))  # the name outputs and logs show
        self.viewers: set[Any] = set()
        self.status = "NEW"  # NEW, PLAYING, RECONNECTING, STOPPED, FAILED
        self.info: str | None = None
        self.error: str | None = None
        self.stats = PullStats()
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.created_at = time.time()
        self._tracks: list[PublishedTrack] = []  # per camera track of the current connection
        self._connection: CameraConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self.rtcp_ssrc = secrets.randbits(32) or 1
        self.published = False  # the outputs were told (Server.stream_published)
        self._connected_at = 0.0

    @property
    def ended(self) -> bool:
        return self.status in ("STOPPED", "FAILED")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        settings = self.settings
        backoff = MAX_BACKOFF_START
        while not self.ended:
            try:
                await self._connect(settings.connect_timeout)
            except PullFailed as exc:
                if not self.started.done():
                    self.started.set_exception(exc)
                    return
                log.info("pull %s: reconnect failed: %s; next try in %g s", masked(self.text), exc, backoff)
                self.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a camera's answer must never take the pull down silently
                if not isinstance(exc, OSError | ConnectionError | TimeoutError):
                    log.exception("pull %s: unexpected error", masked(self.text))
                failure = PullFailed(CONNECT_FAILED, str(exc) or type(exc).__name__)
                if not self.started.done():
                    self.started.set_exception(failure)
                    return
                log.info("pull %s: reconnect failed: %s; next try in %g s", masked(self.text), failure, backoff)
                self.error = str(failure)
            else:
                if not self.started.done():
                    self.started.set_result(None)
                backoff = MAX_BACKOFF_START
                why = await self._hold()
                if self.ended:
                    return
                log.warning("pull %s: %s; reconnecting", masked(self.text), why)
                self.error = why
            finally:
                if self._connection is not None:
                    await self._connection.close(teardown=self.ended)
                    self._connection = None
            if self.ended:
                return
            self.status = "RECONNECTING"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, settings.retry_max)

    async def _connect(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        connection = CameraConnection(self.url, self._on_rtp, self._on_rtcp)
        self._connection = connection
        self.stats.connects += 1
        try:
            await asyncio.wait_for(self._handshake(connection, loop), timeout)
        except TimeoutError:
            raise PullFailed(CONNECT_FAILED, f"the camera was not playing within {timeout:g} s") from None
        if self.status == "NEW":
            self.on_published(self)
        elif self.status == "RECONNECTING":
            self.stats.reconnects += 1
            log.info("pull %s: reconnected", masked(self.text))
        self.status = "PLAYING"
        self.error = None
        self._connected_at = loop.time()

    async def _handshake(self, connection: CameraConnection, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await loop.create_connection(lambda: connection, self.connect_to, self.url.port)
        except OSError as exc:
            raise PullFailed(CONNECT_FAILED, f"cannot connect to {self.url.host}:{self.url.port}: "
                                             f"{exc.strerror or exc}") from None
        remote = await connection.describe()
        usable = [t for t in remote if t.codec in PULLED_CODECS]
        if not usable:
            names = ", ".join(f"{t.kind} {t.codec}" for t in remote) or "no audio or video"
            raise PullFailed(NO_COMMON_CODECS, f"the camera offers {names}; pulled: H264, VP8, Opus")
        usable = [t for t in usable if t.kind == "video"][:1] + [t for t in usable if t.kind == "audio"][:1]
        pairs = [(remote, self._track_for(remote)) for remote in usable]
        chosen = [(remote, track) for remote, track in pairs if track is not None]
        if not chosen:
            raise PullFailed(WRONG_FORMAT, "the camera's codecs changed since the pull started")
        self._tracks = [track for _remote, track in chosen]
        await connection.setup([remote for remote, _track in chosen], self.tcp)
        await connection.play()

    def _track_for(self, remote: RemoteTrack) -> PublishedTrack | None:
        """The stream's track for a camera track: made on the first connection, the same one after a
        reconnect (None when the camera now sends another codec for that kind)."""
        existing = self.stream.track(remote.kind)
        if existing is not None:
            return existing if existing.codec.name == remote.codec else None
        if self.status != "NEW":
            return None
        core = self.media
        codec = codec_for(remote)
        track = PublishedTrack(codec, core.track.IngestTrack(codec.name, codec.clock_rate), core.track,
                               self._request_keyframe)
        self.stream.tracks.append(track)
        return track

    async def _hold(self) -> str:
        """While the camera sends: keep-alives, receiver reports and the media watchdog. Returns why it
        ended."""
        connection = self._connection
        assert connection is not None
        loop = asyncio.get_running_loop()
        media_timeout = self.settings.timeout
        keepalive_every = max(1.0, min(connection.session_timeout / 2, 30.0))
        next_keepalive = loop.time() + keepalive_every
        next_report = loop.time() + REPORT_INTERVAL
        while not self.ended:
            if connection.closed.done():
                return connection.closed.result()
            now = loop.time()
            last = [t.ingest.last_packet_at for t in self._tracks if t.ingest.last_packet_at is not None]
            since = max([*last, self._connected_at])
            if now - since > media_timeout:
                return f"no media for {media_timeout:g} s"
            if now >= next_keepalive:
                next_keepalive = now + keepalive_every
                loop.create_task(self._keep_alive(connection))
            if now >= next_report:
                next_report = now + REPORT_INTERVAL
                self._send_reports(connection, now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(connection.closed), 0.5)
        return "stopped"

    async def _keep_alive(self, connection: CameraConnection) -> None:
        try:
            await connection.keep_alive()
        except (ConnectionError, OSError) as exc:
            connection._lose(f"keep-alive failed: {exc}")

    def _send_reports(self, connection: CameraConnection, now: float) -> None:
        for index, track in enumerate(self._tracks):
            report = receiver_report(self.media.rtcp, self.rtcp_ssrc, [track], now)
            if report is not None:
                connection.send_rtcp(index, report[0])

    def _on_rtp(self, index: int, data: bytes) -> None:
        if index < len(self._tracks):
            self.stats.packets += 1
            self.stats.bytes += len(data)
            try:
                self._tracks[index].on_rtp(data, self.media.now())
            except Exception:  # noqa: BLE001 - one output's fault must not cut the camera off for all
                self.stats.errors += 1
                if self.stats.errors == 1:
                    log.exception("pull %s: forwarding a packet failed", masked(self.text))

    def _on_rtcp(self, index: int, data: bytes) -> None:
        if index >= len(self._tracks):
            return
        rtcp = self.media.rtcp
        try:
            packets = rtcp.parse_rtcp(data)
        except ValueError:
            return
        track = self._tracks[index]
        for packet in packets:
            if packet.packet_type == rtcp.RTCP_SR and packet.ssrc == track.ingest.ssrc:
                track.on_sender_report(packet.ntp_timestamp, packet.rtp_timestamp, self.media.now())

    def _request_keyframe(self, media_ssrc: int) -> None:
        """A PLI on the track's RTCP channel: cameras that speak AVPF answer it, the others ignore it."""
        connection = self._connection
        if connection is None:
            return
        for index, track in enumerate(self._tracks):
            if track.ingest.ssrc == media_ssrc:
                connection.send_rtcp(index, self.media.rtcp.build_pli(self.rtcp_ssrc, media_ssrc))

    async def stop(self, status: str = "STOPPED", info: str | None = None) -> None:
        if self.ended:
            return
        self.status = status
        self.info = info
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            await self._connection.close(teardown=True)
            self._connection = None

    def describe(self) -> dict[str, Any]:
        return {
            "uri": masked(self.text), "localStreamName": self.local_name, "status": self.status,
            "info": self.info, "error": self.error, "transport": "tcp" if self.tcp else "udp",
            "keep": self.keep, "viewers": len(self.viewers), "createdAt": round(self.created_at, 3),
            "connects": self.stats.connects, "reconnects": self.stats.reconnects, "packets": self.stats.packets,
            "bytes": self.stats.bytes, "errors": self.stats.errors,
            "tracks": [{"kind": t.kind, "codec": t.codec.name, "packets": t.ingest.packets,
                        "keyframes": t.ingest.keyframes} for t in self.stream.tracks],
        }
