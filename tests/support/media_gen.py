"""Encoded test media made with PyAV, and RTP made from it as a browser would send it.

- `numbered_picture(index, width, height)`: a picture that carries its own frame number (8 black/white
  blocks across the top half, most significant bit first) above a moving bar, so a test can decode any
  frame that came out of a pipeline and tell which input frame it shows (`read_frame_number`). A frame
  decoded against broken references shows a wrong number; so does a frame whose timestamp moved.
- `encode_video("VP8" | "H264", ...)` and `encode_opus(...)`: lists of `EncodedSample` (data, pts in
  clock ticks, keyframe). H.264 is what a browser sends: constrained baseline, no B-frames, Annex B with
  SPS and PPS before every IDR. Opus is 20 ms packets of a sine at 48 kHz.
- `packetize(codec, samples, ...)`: RTP packets per frame (aiortc's own packetizers: RFC 7741 VP8
  descriptor with a 15-bit PictureID, RFC 6184 STAP-A/FU-A for H.264, one packet per Opus frame), marker
  on each frame's last packet.
- `write_webm(path, ...)`: a VP8 + Opus WebM file (for benchmarks against the ffmpeg command line), and
  `read_packets(path)` to get its packets back as EncodedSamples.

Everything is deterministic (no randomness), small by default and fast enough for tests on 2 cores.
"""

from __future__ import annotations

import fractions
import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import av
import numpy as np
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import RtpPacket

VIDEO_CLOCK = 90000
OPUS_CLOCK = 48000
NUMBER_BITS = 8  # frame numbers 0..255 can be read back; higher ones wrap
BLACK, WHITE = 16, 235  # video-range luma


@dataclass(frozen=True)
class EncodedSample:
    """One encoded frame: `pts` in clock ticks (90 kHz video, 48 kHz Opus), counted from 0."""

    data: bytes
    pts: int
    keyframe: bool


@functools.lru_cache(maxsize=4)
def _texture(height: int, width: int) -> np.ndarray:
    """Random 8x8-pixel shades (seeded: the same every time), wider than the picture so it can scroll."""
    rng = np.random.default_rng(20240611)
    cells = rng.integers(40, 200, ((height + 7) // 8, (2 * width + 7) // 8), dtype=np.uint8)
    return np.kron(cells, np.ones((8, 8), np.uint8))[:height]


def numbered_picture(index: int, width: int = 320, height: int = 240, textured: bool = False) -> av.VideoFrame:
    """A yuv420p picture showing `index` (mod 256) as 8 blocks across the top half, and a bar moving
    across the bottom half. `textured` puts a scrolling texture behind the bar, so that an encoder has
    about as much work as with a camera picture (benchmarks); tests keep the flat one."""
    half = height // 2
    y = np.full((height, width), 80, np.uint8)
    if textured:
        shift = (index * 3) % width
        y[half:] = _texture(height - half, width)[:, shift:shift + width]
    for bit in range(NUMBER_BITS):
        on = (index >> (NUMBER_BITS - 1 - bit)) & 1
        x0, x1 = bit * width // NUMBER_BITS, (bit + 1) * width // NUMBER_BITS
        y[:half, x0:x1] = WHITE if on else BLACK
    bar = max(2, width // 20)
    x = (index * 4) % max(1, width - bar)
    y[half:, x:x + bar] = WHITE
    frame = av.VideoFrame(width, height, "yuv420p")
    _fill_plane(frame.planes[0], y)
    for plane in frame.planes[1:]:
        _fill_plane(plane, np.full((plane.height, plane.width), 128, np.uint8))
    return frame


def _fill_plane(plane: av.video.plane.VideoPlane, values: np.ndarray) -> None:
    rows = np.zeros((plane.height, plane.line_size), np.uint8)
    rows[:, : values.shape[1]] = values
    plane.update(rows.tobytes())


def read_frame_number(picture: av.VideoFrame) -> int:
    """The number `numbered_picture` drew, from a decoded picture of any size (the middle of each block
    is sampled, away from edges that scaling and coding blur)."""
    y = picture.reformat(format="gray").to_ndarray()
    height, width = y.shape
    top, bottom = height // 8, height * 3 // 8
    number = 0
    for bit in range(NUMBER_BITS):
        x0, x1 = bit * width // NUMBER_BITS, (bit + 1) * width // NUMBER_BITS
        margin = max(1, (x1 - x0) // 4)
        block = y[top:bottom, x0 + margin:x1 - margin]
        number = number << 1 | int(block.mean() > (BLACK + WHITE) / 2)
    return number


def video_encoder(codec: str, width: int, height: int, fps: int = 30, keyframe_interval: int = 30,
                  bitrate: int = 400_000) -> av.VideoCodecContext:
    """A PyAV encoder set up as a browser's: realtime, no B-frames, a keyframe every `keyframe_interval`
    frames; 90 kHz time base."""
    if codec == "VP8":
        context = cast(av.VideoCodecContext, av.CodecContext.create("libvpx", "w"))
        context.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                           "auto-alt-ref": "0"}
    elif codec == "H264":
        context = cast(av.VideoCodecContext, av.CodecContext.create("libx264", "w"))
        context.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline",
                           "sc_threshold": "0", "forced-idr": "1"}
    else:
        raise ValueError(f"no test encoder for {codec!r}")
    context.width, context.height = width, height
    context.pix_fmt = "yuv420p"
    context.time_base = fractions.Fraction(1, VIDEO_CLOCK)
    context.framerate = fractions.Fraction(fps, 1)
    context.bit_rate = bitrate
    context.gop_size = keyframe_interval
    context.max_b_frames = 0
    context.thread_count = 1
    return context


def encode_video(codec: str, width: int = 320, height: int = 240, frames: int = 60, fps: int = 30,
                 keyframe_interval: int = 30, bitrate: int = 400_000, first: int = 0) -> list[EncodedSample]:
    """`frames` numbered pictures (numbers first, first+1, ...) encoded to VP8 or H.264, one sample per
    picture, pts = number * 90000 / fps. Keyframes exactly every `keyframe_interval` frames."""
    context = video_encoder(codec, width, height, fps, keyframe_interval, bitrate)
    step = VIDEO_CLOCK // fps
    out: list[EncodedSample] = []
    for n in range(first, first + frames):
        picture = numbered_picture(n, width, height)
        picture.pts = n * step
        picture.time_base = context.time_base
        if (n - first) % keyframe_interval == 0:
            picture.pict_type = av.video.frame.PictureType.I
        packets = context.encode(picture)
        if n == first + frames - 1:
            packets += context.encode(None)
        for packet in packets:
            assert packet.pts is not None
            out.append(EncodedSample(bytes(packet), packet.pts, bool(packet.is_keyframe)))
    assert len(out) == frames, (codec, len(out), frames)  # one packet per picture: no lookahead
    return out


def sine(seconds: float, frequency: float = 440.0, rate: int = OPUS_CLOCK, channels: int = 2,
         start: int = 0) -> np.ndarray:
    """float32 samples, shape (channels, n), amplitude 0.5; `start` offsets the phase in samples."""
    t = (np.arange(round(seconds * rate)) + start) / rate
    wave = (0.5 * np.sin(2 * math.pi * frequency * t)).astype(np.float32)
    return np.repeat(wave[np.newaxis, :], channels, axis=0)


def encode_opus(seconds: float = 1.0, frequency: float = 440.0, bitrate: int = 64_000) -> list[EncodedSample]:
    """A stereo sine as 20 ms Opus packets (libopus, 48 kHz), pts in 48 kHz ticks from 0."""
    context = cast(av.AudioCodecContext, av.CodecContext.create("libopus", "w"))
    context.sample_rate = OPUS_CLOCK
    context.layout = "stereo"
    context.format = "flt"
    context.bit_rate = bitrate
    context.time_base = fractions.Fraction(1, OPUS_CLOCK)
    context.open()
    size = context.frame_size  # 960
    samples = sine(seconds, frequency)
    out: list[EncodedSample] = []
    chunks = samples.shape[1] // size
    for k in range(chunks + 1):
        if k < chunks:
            chunk = np.ascontiguousarray(samples[:, k * size:(k + 1) * size].T).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="stereo")
            frame.sample_rate = OPUS_CLOCK
            frame.pts = k * size
            frame.time_base = context.time_base
            packets = context.encode(frame)
        else:
            packets = context.encode(None)
        for packet in packets:
            out.append(EncodedSample(bytes(packet), len(out) * size, True))
    return out[:chunks]


def packetize(codec: str, samples: Iterable[EncodedSample], payload_type: int = 96, ssrc: int = 0x1234ABCD,
              sequence_start: int = 1000, timestamp_start: int = 12345) -> list[list[bytes]]:
    """RTP packets of each sample (a list per frame), as a WebRTC sender makes them."""
    out: list[list[bytes]] = []
    seq = sequence_start
    picture_id = 0
    for sample in samples:
        if codec == "VP8":
            payloads = Vp8Encoder._packetize(sample.data, picture_id)
            picture_id = (picture_id + 1) % (1 << 15)
        elif codec == "H264":
            payloads = H264Encoder._packetize(H264Encoder._split_bitstream(sample.data))
        elif codec == "opus":
            payloads = [sample.data]
        else:
            raise ValueError(f"cannot packetize {codec!r}")
        packets = []
        for k, payload in enumerate(payloads):
            packet = RtpPacket(payload_type=payload_type, marker=int(k == len(payloads) - 1),
                               sequence_number=seq & 0xFFFF, timestamp=(timestamp_start + sample.pts) & 0xFFFFFFFF,
                               ssrc=ssrc, payload=payload)
            packets.append(packet.serialize())
            seq += 1
        out.append(packets)
    return out


def write_webm(path: Path, seconds: float = 5.0, width: int = 1280, height: int = 720, fps: int = 30,
               keyframe_interval: int = 60, video_bitrate: int = 2_000_000, textured: bool = True) -> None:
    """A VP8 + Opus (stereo 48 kHz sine) WebM file of numbered pictures, as a browser recording would be."""
    with av.open(str(path), "w", format="webm") as container:
        video = container.add_stream("libvpx", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.bit_rate = video_bitrate
        video.codec_context.gop_size = keyframe_interval
        video.codec_context.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        audio = container.add_stream("libopus", rate=OPUS_CLOCK)
        audio.layout = "stereo"
        audio.bit_rate = 64_000
        frames = round(seconds * fps)
        samples = sine(seconds)
        audio_size = 960
        audio_pos = 0
        for n in range(frames):
            picture = numbered_picture(n, width, height, textured)
            picture.pts = n
            picture.time_base = fractions.Fraction(1, fps)
            for packet in video.encode(picture):
                container.mux(packet)
            while audio_pos < samples.shape[1] and audio_pos <= (n + 1) * OPUS_CLOCK // fps:
                chunk = samples[:, audio_pos:audio_pos + audio_size]
                if chunk.shape[1] < audio_size:
                    break
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="stereo")
                frame.sample_rate = OPUS_CLOCK
                frame.pts = audio_pos
                frame.time_base = fractions.Fraction(1, OPUS_CLOCK)
                for packet in audio.encode(frame):
                    container.mux(packet)
                audio_pos += audio_size
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)


def read_packets(path: Path) -> dict[str, list[EncodedSample]]:
    """The VP8 and Opus packets of a file, pts rescaled to 90 kHz (video) and 48 kHz (audio), from 0."""
    out: dict[str, list[EncodedSample]] = {"VP8": [], "opus": []}
    previous_duration: fractions.Fraction | float = 0.02
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size == 0 or packet.pts is None:
                continue
            name = packet.stream.codec_context.name
            key = {"vp8": "VP8", "opus": "opus", "libopus": "opus"}.get(name)
            if key is None:
                continue
            if key == "VP8":
                pts = round(packet.pts * packet.time_base * VIDEO_CLOCK)
            else:  # WebM keeps milliseconds: count the samples instead, as an RTP sender does
                previous = out[key][-1] if out[key] else None
                pts = 0 if previous is None else previous.pts + round(previous_duration * OPUS_CLOCK)
                previous_duration = packet.duration * packet.time_base if packet.duration else 0.02
            out[key].append(EncodedSample(bytes(packet), pts, bool(packet.is_keyframe)))
    if out["VP8"]:
        base = out["VP8"][0].pts
        out["VP8"] = [EncodedSample(s.data, s.pts - base, s.keyframe) for s in out["VP8"]]
    return out
