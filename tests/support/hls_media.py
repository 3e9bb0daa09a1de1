"""Encoded test media for the HLS segmenter's tests and benchmark: H.264 and AAC EncodedFrames made with
PyAV, as the stream plumbing hands them on (Annex B access units with SPS/PPS ahead of each keyframe,
raw AAC frames with the AudioSpecificConfig as extradata, pts in clock_rate ticks on one timeline).

    frames = make_frames(seconds=3)                      # video + audio, interleaved by time
    frames = make_frames(seconds=3, audio=False)         # video only
    write_ts(frames, path)                               # the same frames in an MPEG-TS file (for ffmpeg)
    await feed(output.push, frames, speed=4)             # push them at 4x real time, as a live source would

Encoding costs CPU, so keep the media small (320x240, a few seconds); `make_frames` caches its results.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from media.encoded import EncodedFrame

VIDEO_CLOCK = 90000


def _test_pattern(width: int, height: int, index: int) -> np.ndarray:
    """Moving colour bars with a bouncing square: cheap to make, not trivial to encode."""
    x = np.arange(width, dtype=np.int32)
    y = np.arange(height, dtype=np.int32)[:, None]
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[..., 0] = ((x + index * 4) * 255 // width) & 0xFF
    image[..., 1] = ((y + index * 2) * 255 // height) & 0xFF
    image[..., 2] = ((x ^ y) + index) & 0xFF
    size = max(8, height // 6)
    left = (index * 7) % max(1, width - size)
    top = (index * 5) % max(1, height - size)
    image[top : top + size, left : left + size] = 255
    return image


def encode_video(seconds: float, width: int = 320, height: int = 240, fps: int = 30,
                 keyframe_interval: int = 30, start_pts: int = 0) -> list[EncodedFrame]:
    """H.264 baseline from libx264 (no B-frames, so pts order is decode order), a keyframe every
    `keyframe_interval` frames, SPS/PPS in band ahead of each keyframe."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, fps)
    codec.framerate = Fraction(fps, 1)
    codec.gop_size = keyframe_interval
    codec.profile = "baseline"
    codec.options = {"preset": "ultrafast", "tune": "zerolatency", "keyint": str(keyframe_interval),
                     "min-keyint": str(keyframe_interval), "scenecut": "0", "bframes": "0"}
    step = VIDEO_CLOCK // fps
    out: list[EncodedFrame] = []

    def collect(packets: list[av.Packet]) -> None:
        for packet in packets:
            assert packet.pts is not None
            out.append(EncodedFrame("H264", bytes(packet), start_pts + packet.pts * step, VIDEO_CLOCK,
                                    packet.is_keyframe, width, height))

    for index in range(round(seconds * fps)):
        frame = av.VideoFrame.from_ndarray(_test_pattern(width, height, index), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = index
        collect(codec.encode(frame))
    collect(codec.encode(None))
    return out


def encode_audio(seconds: float, sample_rate: int = 48000, channels: int = 2, start_pts: int = 0,
                 frequency: float = 440.0) -> list[EncodedFrame]:
    """AAC-LC from FFmpeg's encoder: 1024-sample raw frames of a sine, the AudioSpecificConfig as extradata."""
    codec = av.CodecContext.create("aac", "w")
    codec.sample_rate = sample_rate
    codec.layout = "stereo" if channels == 2 else "mono"
    codec.format = "fltp"
    codec.bit_rate = 64000
    codec.time_base = Fraction(1, sample_rate)
    codec.open()
    extradata = codec.extradata
    samples = round(seconds * sample_rate)
    out: list[EncodedFrame] = []

    def collect(packets: list[av.Packet]) -> None:
        for packet in packets:
            assert packet.pts is not None
            if packet.pts < 0:
                continue  # the encoder's priming frame
            out.append(EncodedFrame("AAC", bytes(packet), start_pts + packet.pts, sample_rate, True,
                                    channels=channels, extradata=extradata))

    t = np.arange(samples, dtype=np.float32) / sample_rate
    wave = (0.3 * np.sin(2 * math.pi * frequency * t)).astype(np.float32)
    for start in range(0, samples - 1023, 1024):
        chunk = np.tile(wave[start : start + 1024], (channels, 1))
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=codec.layout.name)
        frame.sample_rate = sample_rate
        frame.pts = start
        collect(codec.encode(frame))
    collect(codec.encode(None))
    return out


def interleave(*tracks: list[EncodedFrame]) -> list[EncodedFrame]:
    """Frames of several tracks in arrival order (by time on the shared timeline)."""
    merged = [frame for track in tracks for frame in track]
    merged.sort(key=lambda frame: frame.pts / frame.clock_rate)
    return merged


@functools.lru_cache(maxsize=16)
def _cached(seconds: float, video: bool, audio: bool, width: int, height: int, fps: int,
            keyframe_interval: int) -> tuple[EncodedFrame, ...]:
    tracks = []
    if video:
        tracks.append(encode_video(seconds, width, height, fps, keyframe_interval))
    if audio:
        tracks.append(encode_audio(seconds))
    return tuple(interleave(*tracks))


def make_frames(seconds: float = 3.0, *, video: bool = True, audio: bool = True, width: int = 320,
                height: int = 240, fps: int = 30, keyframe_interval: int = 30) -> list[EncodedFrame]:
    """`seconds` of test media (cached: encoding is the slow part), interleaved by time. The frames are
    shared between callers: treat them as read-only."""
    return list(_cached(seconds, video, audio, width, height, fps, keyframe_interval))


def shifted(frames: list[EncodedFrame], seconds: float) -> list[EncodedFrame]:
    """The same frames later on the timeline (to make a longer stream out of a cached one)."""
    return [EncodedFrame(f.codec, f.data, f.pts + round(seconds * f.clock_rate), f.clock_rate, f.keyframe,
                         f.width, f.height, f.channels, f.extradata) for f in frames]


def adts(frame: EncodedFrame) -> bytes:
    """A raw AAC frame with the 7-byte ADTS header (ISO 14496-3 1.A.2) made from its AudioSpecificConfig,
    as MPEG-TS carries AAC."""
    assert frame.extradata is not None and len(frame.extradata) >= 2
    object_type = frame.extradata[0] >> 3
    rate_index = (frame.extradata[0] & 0x07) << 1 | frame.extradata[1] >> 7
    channels = (frame.extradata[1] >> 3) & 0x0F
    length = len(frame.data) + 7
    header = bytes([
        0xFF, 0xF1,  # syncword, MPEG-4, layer 0, no CRC
        (object_type - 1) << 6 | rate_index << 2 | channels >> 2,
        (channels & 0x03) << 6 | length >> 11,
        (length >> 3) & 0xFF,
        (length & 0x07) << 5 | 0x1F,
        0xFC,  # buffer fullness 0x7FF (VBR), one raw data block
    ])
    return header + frame.data


def write_ts(frames: list[EncodedFrame], path: Path) -> None:
    """The frames in one MPEG-TS file (muxed by FFmpeg; AAC as ADTS), e.g. as input for `ffmpeg -c copy`."""
    with av.open(str(path), "w", format="mpegts") as container:
        streams = {}
        for frame in frames:
            if frame.codec in streams:
                continue
            if frame.codec == "H264":
                stream = container.add_mux_stream("h264", width=frame.width, height=frame.height)
            else:
                stream = container.add_mux_stream("aac", rate=frame.clock_rate)
            stream.time_base = Fraction(1, frame.clock_rate)
            streams[frame.codec] = stream
        for frame in frames:
            packet = av.Packet(adts(frame) if frame.codec == "AAC" else frame.data)
            packet.stream = streams[frame.codec]
            packet.time_base = Fraction(1, frame.clock_rate)
            packet.pts = packet.dts = frame.pts
            packet.is_keyframe = frame.keyframe
            container.mux(packet)


async def feed(push: Callable[[EncodedFrame], None], frames: list[EncodedFrame], speed: float = 1.0) -> None:
    """Push `frames` at `speed` times real time (by their timeline seconds), as a live source would."""
    if not frames:
        return
    start = time.monotonic()
    base = frames[0].seconds
    for frame in frames:
        delay = start + (frame.seconds - base) / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        push(frame)
