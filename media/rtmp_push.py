"""A stream pushed to an RTMP server, in a worker thread of the push's own (connecting and sending block;
the loop never waits).

    pusher = RtmpPusher("rtmp://host/live/name", video="H264", audio="AAC", on_done=done)
    source.subscribe(pusher.push)     # EncodedFrames, on the event loop thread (H.264 and AAC only)
    pusher.stop()                     # the worker sends what is queued and unpublishes; done(result)

It is the recorder's machinery (media/record.py: a bounded FrameWorker, frames taken as they come, a
keyframe asked for every `keyframe_interval`) with RtmpPushWriter in place of the file writer: our own
RTMP client (media.rtmp.client, no I/O) over a blocking socket with a timeout on every step, FLV bodies
built from the frames (media.rtmp.flv): the AVC sequence header from the SPS and PPS of the first
keyframe (again when they change), NAL units length-prefixed, AAC with its AudioSpecificConfig first.
FLV carries H.264 and AAC only: the caller brings VP8 and Opus through the transcoder.

The connection is made at the first video keyframe (or first audio frame of an audio-only stream). A
server that refuses the publish, does not answer within IO_TIMEOUT seconds, or stops reading for that
long ends the push with the reason in the result. (FFmpeg's RTMP client through PyAV would do the
sending too, but its reads have no timeout there: a server that accepts and never answers would hold the
worker thread for good.)
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable

from .encoded import EncodedFrame
from .record import Container, Recorder, RecordError, RecordResult, RecordSettings
from .rtmp.client import PublishClient, Published, PublishTarget, Refused
from .rtmp.connection import ProtocolViolation
from .rtmp.flv import audio_config_body, audio_frame_body, video_config_body, video_frame_body

FLV = Container("flv", ".flv", "video/x-flv")
IO_TIMEOUT = 10.0  # seconds a connect, the publish handshake or a send may take


def annexb_nal_units(access_unit: bytes) -> list[bytes]:
    """The NAL units of an H.264 access unit in Annex B (start codes of 3 or 4 bytes)."""
    out = []
    for piece in access_unit.split(b"\x00\x00\x01"):
        nal = piece.rstrip(b"\x00") if piece else piece
        if nal:
            out.append(nal)
    return out


class RtmpPushWriter:
    """Frames to an RTMP server, in the calling (worker) thread. Raises RecordError when the server
    cannot be reached, refuses, or stops taking data."""

    def __init__(self, url: str, video: str | None, audio: str | None, timeout: float = IO_TIMEOUT):
        self.target = PublishTarget.parse(url)
        self.video = video
        self.audio = audio
        self.timeout = timeout
        self.client: PublishClient | None = None
        self.sock: socket.socket | None = None
        self.origin: float | None = None  # seconds on the stream's timeline at timestamp 0
        self._avc: tuple[bytes, bytes] | None = None
        self._aac_sent = False
        self.frames = 0
        self.skipped = 0
        self.media_seconds = 0.0
        self.closed = False

    @property
    def started(self) -> bool:
        return self.client is not None and self.client.published

    def write(self, frame: EncodedFrame) -> None:
        kind = frame.kind
        if (self.video if kind == "video" else self.audio) != frame.codec:
            self.skipped += 1
            return
        if self.client is None:
            if (kind == "video" and not frame.keyframe) or (kind == "audio" and self.video is not None):
                self.skipped += 1
                return
            self._connect()
            self.origin = frame.seconds
        assert self.origin is not None
        timestamp = round((frame.seconds - self.origin) * 1000)
        if timestamp < 0:
            self.skipped += 1
            return
        if kind == "video":
            self._video(frame, timestamp)
        else:
            self._audio(frame, timestamp)
        self.frames += 1
        self.media_seconds = max(self.media_seconds, timestamp / 1000)

    def _video(self, frame: EncodedFrame, timestamp: int) -> None:
        assert self.client is not None
        nals = annexb_nal_units(frame.data)
        if frame.keyframe:
            sps = next((n for n in nals if n[0] & 0x1F == 7), None)
            pps = next((n for n in nals if n[0] & 0x1F == 8), None)
            if sps is not None and pps is not None and (sps, pps) != self._avc:
                self._avc = (sps, pps)
                self.client.send_media("video", timestamp, video_config_body(sps, pps))
        if self._avc is None:
            self.skipped += 1
            return
        nals = [n for n in nals if n[0] & 0x1F not in (7, 8, 9)]
        self.client.send_media("video", timestamp, video_frame_body(nals, frame.keyframe))
        self._flush()

    def _audio(self, frame: EncodedFrame, timestamp: int) -> None:
        assert self.client is not None
        if not self._aac_sent:
            if not frame.extradata:
                self.skipped += 1
                return
            self.client.send_media("audio", timestamp, audio_config_body(frame.extradata))
            self._aac_sent = True
        self.client.send_media("audio", timestamp, audio_frame_body(frame.data))
        self._flush()

    def _connect(self) -> None:
        target = self.target
        client = PublishClient(target)
        where = f"{target.host}:{target.port}"
        try:
            self.sock = socket.create_connection((target.host, target.port), timeout=self.timeout)
        except OSError as exc:
            raise RecordError(f"Cannot connect to the RTMP server {where}: {exc.strerror or exc}") from None
        deadline = time.monotonic() + self.timeout
        self.client = client
        self._flush()
        while not client.published:
            if time.monotonic() > deadline:
                raise RecordError(f"The RTMP server {where} did not take the publish within {self.timeout:g} s")
            try:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = self.sock.recv(65536)
            except TimeoutError:
                raise RecordError(f"The RTMP server {where} did not take the publish within {self.timeout:g} s") \
                    from None
            except OSError as exc:
                raise RecordError(f"The RTMP server {where} failed: {exc.strerror or exc}") from None
            if not data:
                raise RecordError(f"The RTMP server {where} closed the connection")
            for event in client.receive(data):
                if isinstance(event, Refused):
                    raise RecordError(f"The RTMP server refused the publish: {event.reason}")
                if isinstance(event, ProtocolViolation):
                    raise RecordError(f"The RTMP server broke the protocol: {event.reason}")
                assert isinstance(event, Published)
            self._flush(read=False)
        self.sock.settimeout(self.timeout)

    def _flush(self, read: bool = True) -> None:
        """Send what the client has to say; take in whatever the server sent meanwhile (acks, pings)."""
        assert self.client is not None and self.sock is not None
        out = self.client.data_to_send()
        try:
            if out:
                self.sock.sendall(out)
            while read:
                self.sock.settimeout(0.0)  # only what is there already
                try:
                    data = self.sock.recv(65536)
                except BlockingIOError:
                    break
                finally:
                    self.sock.settimeout(self.timeout)
                if not data:
                    raise RecordError("The RTMP server closed the connection")
                for event in self.client.receive(data):
                    if isinstance(event, Refused | ProtocolViolation):
                        raise RecordError(f"The RTMP server ended the publish: {event.reason}")
                more = self.client.data_to_send()
                if more:
                    self.sock.sendall(more)
        except TimeoutError:
            raise RecordError(f"The RTMP server took no data for {self.timeout:g} s") from None
        except OSError as exc:
            raise RecordError(f"Sending to the RTMP server failed: {exc.strerror or exc}") from None

    def close(self) -> None:
        """Unpublish and close (what is queued was written before)."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.client is not None and self.client.published:
                self.client.unpublish()
                self._flush(read=False)
        finally:
            self.abandon()

    def abandon(self) -> None:
        self.closed = True
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


class RtmpPusher(Recorder):
    """One push. Every method runs on the event loop thread; `on_done(result)` once, when the worker
    closed the connection (after stop()) or gave up (the server refused or went away)."""

    def __init__(self, url: str, video: str | None, audio: str | None, keyframe_interval: float = 2.0,
                 on_done: Callable[[RecordResult], None] | None = None, label: str = "push",
                 queue_frames: int = 300, timeout: float = IO_TIMEOUT):
        writer = RtmpPushWriter(url, video, audio, timeout)  # ValueError for a URL that cannot be pushed to
        settings = RecordSettings(keyframe_interval=keyframe_interval, queue_frames=queue_frames)
        super().__init__(io.BytesIO(), FLV, video, audio, settings, on_done, label=f"push:{label}")
        self.writer = writer  # type: ignore[assignment]  # the recorder's writer interface, to a server

    @property
    def connected(self) -> bool:
        """The publish is accepted and frames are going out."""
        return self.writer.started and not self.done
