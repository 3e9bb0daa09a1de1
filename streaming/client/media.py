"""What the test client sends: a generated test pattern, a tone, or a file.

The test pattern carries its frame number in a row of black and white blocks at the top left, so a
player that decodes can tell which frame it shows (`pattern_index`): that survives lossy coding at any
sane bitrate and lets a benchmark measure glass-to-glass latency with publisher and player in one
process.

A file with H.264 video is sent as it is (no decode, no encode): its packets are converted to Annex B
when the container stores them length-prefixed (MP4, MKV) and looped with continuous timestamps. A file
with another video codec goes through aiortc's MediaPlayer, which decodes it and lets aiortc encode.
"""

from __future__ import annotations

import asyncio
import fractions
import math
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import av
import av.bitstream
import numpy as np
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_RATE = 48000
AUDIO_PTIME = 0.020

# The frame number code: INDEX_BITS blocks of INDEX_BLOCK x INDEX_BLOCK pixels, most significant first.
INDEX_BITS = 16
INDEX_BLOCK = 16


class _Pacer:
    """Releases item n at start + n * interval, in real time (the pacing is the point of the sleep)."""

    def __init__(self) -> None:
        self._start: float | None = None

    async def wait_until(self, offset: float) -> None:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time() - offset
            return
        delay = self._start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


class TestPatternTrack(MediaStreamTrack):
    """A moving test pattern (yuv420p) at a fixed size and frame rate, with its frame number coded in
    the top left corner."""

    kind = "video"

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0) -> None:
        super().__init__()
        if width < 16 or height < 16 or width % 2 or height % 2:
            raise ValueError(f"test pattern size must be even and at least 16x16, not {width}x{height}")
        if not 0 < fps <= 240:
            raise ValueError(f"test pattern frame rate must be in (0, 240], not {fps}")
        self.width = width
        self.height = height
        self.fps = fps
        self.frames_sent = 0
        self._pacer = _Pacer()
        # Luma: a diagonal gradient; chroma: four colour bars. Built once, copied per frame.
        ys, xs = np.mgrid[0:height, 0:width]
        self._luma = (16 + (xs * 160 // width + ys * 60 // height)).astype(np.uint8)
        bars = np.array([90, 160, 40, 200], dtype=np.uint8)
        cw = width // 2
        u = np.repeat(bars, -(-cw // 4))[:cw]
        self._u = np.tile(u, (height // 2, 1))
        self._v = np.tile(u[::-1], (height // 2, 1))
        self._box = max(16, min(width, height) // 6)

    def frame_at(self, index: int) -> av.VideoFrame:
        w, h, box = self.width, self.height, self._box
        y = self._luma.copy()
        # A bright box that moves across the picture, so the encoder has motion to code.
        x0 = (index * 4) % max(1, w - box)
        y0 = (h - box) // 2
        y[y0:y0 + box, x0:x0 + box] = 235
        if w >= INDEX_BITS * INDEX_BLOCK and h >= INDEX_BLOCK:
            code = index % (1 << INDEX_BITS)
            for bit in range(INDEX_BITS):
                on = (code >> (INDEX_BITS - 1 - bit)) & 1
                y[0:INDEX_BLOCK, bit * INDEX_BLOCK:(bit + 1) * INDEX_BLOCK] = 235 if on else 16
        planes = np.concatenate([y, self._u.reshape(h // 4, w), self._v.reshape(h // 4, w)])
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts = round(index * VIDEO_CLOCK / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        return frame

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        index = self.frames_sent
        await self._pacer.wait_until(index / self.fps)
        self.frames_sent += 1
        return self.frame_at(index)


def pattern_index(frame: av.VideoFrame) -> int | None:
    """The frame number a TestPatternTrack coded into this (decoded) frame, or None if the frame is too
    small to carry it or the code is unreadable."""
    if frame.width < INDEX_BITS * INDEX_BLOCK or frame.height < INDEX_BLOCK:
        return None
    luma = frame.to_ndarray(format="gray")
    margin = INDEX_BLOCK // 4
    code = 0
    for bit in range(INDEX_BITS):
        x = bit * INDEX_BLOCK
        block = luma[margin:INDEX_BLOCK - margin, x + margin:x + INDEX_BLOCK - margin]
        level = float(block.mean())
        if 60 < level < 190:  # neither black nor white: not our pattern (or badly damaged)
            return None
        code = (code << 1) | (level >= 128)
    return code


class ToneTrack(MediaStreamTrack):
    """A sine tone, 48 kHz mono s16 in 20 ms frames."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0, level: float = 0.25) -> None:
        super().__init__()
        self.frequency = frequency
        self.level = level
        self.frames_sent = 0
        self._samples = int(AUDIO_RATE * AUDIO_PTIME)
        self._pacer = _Pacer()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        index = self.frames_sent
        await self._pacer.wait_until(index * AUDIO_PTIME)
        self.frames_sent += 1
        start = index * self._samples
        t = (np.arange(start, start + self._samples) / AUDIO_RATE) * (2 * math.pi * self.frequency)
        samples = (np.sin(t) * (self.level * 32767)).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame


class H264FileTrack(MediaStreamTrack):
    """The H.264 packets of a file, as they are (Annex B), paced in real time and looped forever with
    timestamps that keep going up. aiortc's sender packetizes av.Packet objects without encoding."""

    kind = "video"

    def __init__(self, path: str | Path, loop: bool = True) -> None:
        super().__init__()
        self.path = str(path)
        self.loop = loop
        self.packets_sent = 0
        self._pacer = _Pacer()
        self._offset = 0.0       # seconds added to this pass's timestamps
        self._pass_end = 0.0     # latest timestamp (+ one frame) seen in this pass
        self._packets = self._read_pass()
        self.width, self.height = self._probe()

    def _probe(self) -> tuple[int, int]:
        with av.open(self.path) as container:
            if not container.streams.video:
                raise ValueError(f"{self.path}: no video stream")
            stream = container.streams.video[0]
            if stream.codec_context.name != "h264":
                raise ValueError(f"{self.path}: video is {stream.codec_context.name}, not h264")
            return stream.codec_context.width, stream.codec_context.height

    def _read_pass(self) -> Generator[tuple[float, av.Packet], None, None]:
        """One pass over the file: (seconds from the start of the file, Annex B packet)."""
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            extradata = stream.codec_context.extradata or b""
            bsf = None
            if extradata[:1] == b"\x01":  # avcC: length-prefixed NAL units
                bsf = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", stream)
            rate = float(stream.average_rate or stream.guessed_rate or 30)
            time_base = stream.time_base or fractions.Fraction(1, VIDEO_CLOCK)
            first: int | None = None
            count = 0
            for raw in container.demux(stream):
                if raw.size == 0:
                    continue
                for packet in bsf.filter(raw) if bsf is not None else [raw]:
                    stamp = packet.dts if packet.dts is not None else packet.pts
                    if stamp is None:
                        seconds = count / rate
                    else:
                        if first is None:
                            first = stamp
                        seconds = float((stamp - first) * time_base)
                    count += 1
                    self._pass_end = max(self._pass_end, seconds + 1 / rate)
                    yield seconds, packet

    def _next(self) -> tuple[float, av.Packet] | None:
        item = next(self._packets, None)
        if item is None and self.loop and self._pass_end > 0:
            self._offset += self._pass_end
            self._pass_end = 0.0
            self._packets = self._read_pass()
            item = next(self._packets, None)
        return item

    def stop(self) -> None:
        super().stop()
        self._packets.close()

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        item = self._next()
        if item is None:
            self.stop()
            raise MediaStreamError
        seconds, packet = item
        at = self._offset + seconds
        await self._pacer.wait_until(at)
        packet.pts = round(at * VIDEO_CLOCK)
        packet.dts = packet.pts
        packet.time_base = VIDEO_TIME_BASE
        self.packets_sent += 1
        return packet


@dataclass
class FileSource:
    video: MediaStreamTrack | None
    audio: MediaStreamTrack | None
    passthrough_codec: str | None  # "H264" when packets are sent as they are
    width: int | None
    height: int | None
    player: MediaPlayer | None = None

    def stop(self) -> None:
        for track in (self.video, self.audio):
            if track is not None:
                track.stop()


def open_file(path: str | Path, loop: bool = True) -> FileSource:
    """A source for `path`: H.264 video as it is (audio left out: it would need Opus already), anything
    else decoded by aiortc's MediaPlayer (video and audio) for aiortc to encode."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with av.open(str(path)) as container:
        video = container.streams.video[0] if container.streams.video else None
        codec = video.codec_context.name if video is not None else None
    if codec == "h264":
        track = H264FileTrack(path, loop=loop)
        return FileSource(track, None, "H264", track.width, track.height)
    player = MediaPlayer(str(path), loop=loop)
    width = height = None
    if video is not None:
        width, height = video.codec_context.width, video.codec_context.height
    return FileSource(player.video, player.audio, None, width, height, player)
