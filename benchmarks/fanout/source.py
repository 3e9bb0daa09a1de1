"""The published media, encoded once into a cache folder and sent as it is (no encode at run time).

Video: 10 s of a moving 1280x720 test pattern at 30 fps, H.264 constrained baseline from libx264
(`-tune zerolatency`, a keyframe every 2 s, about 2 Mbit/s) in MP4; the test client's H264FileTrack sends
its packets without re-encoding and loops it. Fresh noise in every frame keeps the encoder at its
bitrate, as a camera picture would (a clean pattern would code to a few hundred kbit/s).
Audio: 10 s of a tone in Opus (48 kHz, 20 ms packets) in Ogg; OpusPacketTrack sends the packets as they
are, looped with continuous timestamps (aiortc's Opus encoder packs av.Packet objects without encoding).
"""

from __future__ import annotations

import asyncio
import fractions
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "build" / "bench-media"

WIDTH, HEIGHT, FPS = 1280, 720, 30
SECONDS = 10
VIDEO_BITRATE = 2_000_000
KEYFRAME_INTERVAL = 2 * FPS
AUDIO_RATE = 48000
AUDIO_FRAME = 960  # 20 ms
AUDIO_BITRATE = 32000
VERSION = 1  # bump when the generated media change


@dataclass
class MediaFiles:
    video: Path  # H.264 in MP4
    audio: Path  # Opus in Ogg


def ensure_media(cache: Path = CACHE) -> MediaFiles:
    """The cached files, generated on first use (a few seconds of libx264 time)."""
    cache.mkdir(parents=True, exist_ok=True)
    files = MediaFiles(cache / f"fanout-{WIDTH}x{HEIGHT}p{FPS}-h264-v{VERSION}.mp4",
                       cache / f"fanout-opus-v{VERSION}.ogg")
    if not files.video.is_file():
        _write_atomically(files.video, _encode_video)
    if not files.audio.is_file():
        _write_atomically(files.audio, _encode_audio)
    return files


def _write_atomically(path: Path, encode: Callable[[Path], None]) -> None:
    partial = path.with_name(path.stem + ".partial" + path.suffix)
    encode(partial)
    partial.replace(path)


def _pattern_planes(index: int, rng: np.random.Generator, base: np.ndarray, u: np.ndarray,
                    v: np.ndarray) -> np.ndarray:
    y = base.copy()
    box = HEIGHT // 5
    x0 = (index * 12) % (WIDTH - box)
    y0 = (HEIGHT - box) // 2 + int(HEIGHT / 6 * math.sin(index / 15))
    y[y0:y0 + box, x0:x0 + box] = 235
    noise = rng.integers(-10, 11, size=y.shape, dtype=np.int16)
    y = np.clip(y.astype(np.int16) + noise, 16, 235).astype(np.uint8)
    return np.concatenate([y, u.reshape(HEIGHT // 4, WIDTH), v.reshape(HEIGHT // 4, WIDTH)])


def _encode_video(path: Path) -> None:
    rng = np.random.default_rng(7)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = (16 + (xs * 160 // WIDTH + ys * 60 // HEIGHT)).astype(np.uint8)
    bars = np.array([90, 160, 40, 200], dtype=np.uint8)
    row = np.repeat(bars, WIDTH // 8)[:WIDTH // 2]
    u = np.tile(row, (HEIGHT // 2, 1))
    v = np.tile(row[::-1], (HEIGHT // 2, 1))
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.bit_rate = VIDEO_BITRATE
        stream.codec_context.options = {
            "preset": "veryfast",
            "tune": "zerolatency",
            "profile": "baseline",  # x264's baseline is constrained baseline (no FMO/ASO), as browsers send
            "x264-params": (f"keyint={KEYFRAME_INTERVAL}:min-keyint={KEYFRAME_INTERVAL}:scenecut=0:"
                            f"vbv-maxrate={VIDEO_BITRATE // 1000}:vbv-bufsize={VIDEO_BITRATE // 1000}"),
        }
        for index in range(SECONDS * FPS):
            frame = av.VideoFrame.from_ndarray(_pattern_planes(index, rng, base, u, v), format="yuv420p")
            frame.pts = index
            frame.time_base = fractions.Fraction(1, FPS)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _encode_audio(path: Path) -> None:
    with av.open(str(path), "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=AUDIO_RATE)
        stream.bit_rate = AUDIO_BITRATE
        stream.layout = "mono"
        stream.codec_context.options = {"application": "voip", "frame_duration": "20"}
        total = SECONDS * AUDIO_RATE
        for start in range(0, total, AUDIO_FRAME):
            t = np.arange(start, start + AUDIO_FRAME) / AUDIO_RATE
            tone = 0.2 * np.sin(2 * math.pi * (440 + 220 * (t % 1.0)) * t)  # a rising sweep, each second
            samples = (tone * 32767).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = AUDIO_RATE
            frame.pts = start
            frame.time_base = fractions.Fraction(1, AUDIO_RATE)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def read_opus_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


class OpusPacketTrack(MediaStreamTrack):
    """Pre-encoded Opus packets, paced in real time (20 ms each) and looped with timestamps that keep
    going up."""

    kind = "audio"

    def __init__(self, packets: list[bytes]) -> None:
        super().__init__()
        if not packets:
            raise ValueError("no Opus packets to send")
        self.packets = packets
        self.packets_sent = 0
        self._start: float | None = None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        index = self.packets_sent
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        delay = self._start + index * AUDIO_FRAME / AUDIO_RATE - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # real-time pacing is the point of this sleep
        self.packets_sent += 1
        packet = av.Packet(self.packets[index % len(self.packets)])
        packet.pts = index * AUDIO_FRAME
        packet.time_base = fractions.Fraction(1, AUDIO_RATE)
        return packet
