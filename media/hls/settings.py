"""What the HLS modules share: the settings of an output, its errors, and the names of its files.

File names are ours, never built from a request: segmentN.ts (or segmentN.m4s), partN.K.m4s, init.mp4.
"""

from __future__ import annotations

from dataclasses import dataclass

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".mp4": "video/mp4",
    ".m4s": "video/mp4",
}
SUPPORTED_CODECS = ("H264", "AAC")
VIDEO_CLOCK = 90000
AAC_SAMPLES_PER_FRAME = 1024
INIT_NAME = "init.mp4"


@dataclass
class HlsSettings:
    low_latency: bool = False
    segment_duration: float = 2.0  # target, seconds; video cuts at the first keyframe past it
    window: int = 6  # segments listed in the playlist
    # LL-HLS part target, seconds. 0.5 s: at 30 fps a part is 15 frames, a 2 s segment 4 parts, and
    # PART-HOLD-BACK (3 part targets) is 1.5 s (hls.js in Chromium played 1 s segments about 2.4 s behind).
    part_duration: float = 0.5
    grace: int = 2  # segments (and parts of segments) kept on disk and served after they leave the playlist
    video: bool | None = None  # False: leave video out; None: audio-only if no video comes (detect_seconds)
    audio: bool | None = None  # False: leave audio out
    detect_seconds: float = 1.0  # with video=None, audio this long with no video frame makes it audio-only
    queue_frames: int = 600  # frames waiting for the worker; beyond that they are dropped and counted
    recent_delays: int = 1000  # ReadyDelay entries kept

    def __post_init__(self) -> None:
        if not self.segment_duration > 0 or not self.part_duration > 0:
            raise ValueError("segment_duration and part_duration must be positive")
        if self.low_latency and self.part_duration > self.segment_duration:
            raise ValueError("part_duration must not exceed segment_duration")
        if self.window < 1 or self.grace < 0 or self.queue_frames < 1:
            raise ValueError("window and queue_frames must be at least 1, grace at least 0")


class PlaylistNotReady(Exception):
    """A blocking playlist request asks for too far ahead, or for a part without a media sequence number
    (RFC 8216bis 6.2.5.2): answer 400 Bad Request."""


class PlaylistTimeout(TimeoutError):
    """The requested playlist (or the first one) did not come within the timeout: answer 503."""


class HlsClosed(Exception):
    """The output was closed, or ended before it made anything: answer 404."""


@dataclass(frozen=True, slots=True)
class ReadyDelay:
    """How long a finished segment or part took to get listed."""

    kind: str  # "segment" | "part"
    msn: int
    part: int | None
    pushed: float  # loop time its last frame was pushed
    cut: float  # loop time the next frame came, so it was known to be finished
    listed: float  # loop time it was listed in the playlist

    @property
    def seconds(self) -> float:
        return self.listed - self.pushed


def segment_name(msn: int, low_latency: bool) -> str:
    return f"segment{msn}.{'m4s' if low_latency else 'ts'}"


def part_name(msn: int, part: int) -> str:
    return f"part{msn}.{part}.m4s"
