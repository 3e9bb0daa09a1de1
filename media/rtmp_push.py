"""A stream pushed to an RTMP server: its frames muxed into FLV by FFmpeg (PyAV) and sent by FFmpeg's
RTMP client, in a worker thread of the push's own (connecting and writing block; the loop never waits).

    pusher = RtmpPusher("rtmp://host/live/name", video="H264", audio="AAC", on_done=done)
    source.subscribe(pusher.push)     # EncodedFrames, on the event loop thread (H.264 and AAC only)
    pusher.stop()                     # the worker sends what is queued and closes; done(result)

It is the recorder (media/record.py: a bounded FrameWorker, frames remuxed as they come, a keyframe
asked for every `keyframe_interval`) with an FLV muxer that writes to a URL instead of a file: FLV
carries H.264 and AAC only, so the caller brings VP8 and Opus through the transcoder. The connection is
made at the first video keyframe (or first audio frame of an audio-only stream); a server that refuses
it, or stops reading for IO_TIMEOUT seconds, ends the push with the reason in the result.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import av

from .encoded import EncodedFrame
from .record import (
    VIDEO_CLOCK,
    Container,
    Recorder,
    RecordError,
    RecordResult,
    RecordSettings,
    RecordWriter,
    reason_of,
)

FLV = Container("flv", ".flv", "video/x-flv")
IO_TIMEOUT = 10.0  # seconds a connect or write to the RTMP server may take


class FlvPushWriter(RecordWriter):
    """RecordWriter whose container is FLV over FFmpeg's RTMP client (url) rather than a file."""

    def __init__(self, url: str, video: str | None, audio: str | None, audio_rate: int = 48000,
                 audio_channels: int = 2):
        super().__init__(io.BytesIO(), FLV, video, audio, 1.0, audio_rate, audio_channels)
        self.url = url

    def _open(self, first: EncodedFrame) -> None:
        self.origin = first.seconds
        try:
            self.container = av.open(self.url, "w", format="flv",
                                     options={"rw_timeout": str(int(IO_TIMEOUT * 1_000_000)),
                                              "flvflags": "no_duration_filesize"})
            if self.video is not None:
                self.streams["video"] = self._video_stream(first)
                self._origin_ticks["video"] = round(self.origin * VIDEO_CLOCK)
            if self.audio is not None:
                self.streams["audio"] = self._audio_stream(first if first.kind == "audio" else None)
                self._origin_ticks["audio"] = round(self.origin * self.audio_rate)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise RecordError(f"Cannot push to the RTMP server: {reason_of(exc)}") from exc


class RtmpPusher(Recorder):
    """One push. Every method runs on the event loop thread; `on_done(result)` once, when the worker
    closed the connection (after stop()) or gave up (the server refused or went away)."""

    def __init__(self, url: str, video: str | None, audio: str | None, keyframe_interval: float = 2.0,
                 on_done: Callable[[RecordResult], None] | None = None, label: str = "push",
                 queue_frames: int = 300):
        settings = RecordSettings(keyframe_interval=keyframe_interval, queue_frames=queue_frames)
        super().__init__(io.BytesIO(), FLV, video, audio, settings, on_done, label=f"push:{label}")
        self.writer = FlvPushWriter(url, video, audio)

    @property
    def connected(self) -> bool:
        """The connection is made and frames are going out."""
        return self.writer.started and not self.done
