"""The picture size of a published video track, read from the keyframe in its GOP cache.

VP8 says it in the keyframe's header; H.264 needs the keyframe decoded once (SPS cropping is not worth a
parser here), so `track_picture_size` is blocking and CPU-bound for H.264: run it in a worker thread.
"""

from __future__ import annotations

from types import ModuleType

from .encoded import h264_size
from .record import vp8_size
from .snapshot import cached_keyframe
from .stream import PublishedTrack


def track_picture_size(track: PublishedTrack, depacketize: ModuleType) -> tuple[int, int]:
    """(width, height) of the track's last keyframe; (0, 0) when there is none yet or it is unreadable."""
    keyframe = cached_keyframe(track, depacketize)
    if keyframe is None:
        return 0, 0
    if track.codec.name.upper() == "VP8":
        return vp8_size(keyframe)
    if track.codec.name.upper() == "H264":
        return h264_size(keyframe)
    return 0, 0
