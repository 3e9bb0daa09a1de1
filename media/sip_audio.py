"""Audio transcoding between the legs of a call: Opus (48 kHz, WebRTC) <-> PCMU / PCMA (8 kHz) and G.722
(16 kHz), with PyAV (FFmpeg's pcm_mulaw, pcm_alaw, g722, opus and libopus).

One AudioTranscoder converts one direction. It takes RTP payloads with their timestamps (`push`, on the
event loop thread) and gives back 20 ms payloads of the other codec with timestamps on its own RTP
clock (`on_output`, called on the loop thread, in batches). The codec work runs on its own FrameWorker
thread (media/worker.py, FRESHEST: when the worker falls behind, the oldest queued payload goes and is
counted), never on the event loop.

Timestamps: the output clock advances by the samples encoded; a gap in the input timestamps (loss,
silence suppression) of up to GAP_FILL_MAX is filled with silence so the output timeline follows the
input's; a longer gap, or time going back, starts a new timeline segment (what was buffered goes).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import av

from .encoded import EncodedFrame
from .worker import FrameWorker, Overflow

log = logging.getLogger(__name__)

QUEUE_PAYLOADS = 25  # half a second of 20 ms packets
GAP_FILL_MAX = 0.5  # seconds of missing input filled with silence
OPUS_BITRATE = 32_000


@dataclass(frozen=True)
class AudioCodec:
    name: str  # as in SDP
    decoder: str
    encoder: str
    sample_rate: int  # what the codec samples at
    rtp_clock: int  # its RTP timestamp rate (G.722: 8000 for 16 kHz audio, RFC 3551 4.5.2)
    channels: int  # decoded layout

    @property
    def frame_samples(self) -> int:
        """Samples in 20 ms."""
        return self.sample_rate // 50

    @property
    def frame_ticks(self) -> int:
        return self.rtp_clock // 50


CODECS = {
    "pcmu": AudioCodec("PCMU", "pcm_mulaw", "pcm_mulaw", 8000, 8000, 1),
    "pcma": AudioCodec("PCMA", "pcm_alaw", "pcm_alaw", 8000, 8000, 1),
    "g722": AudioCodec("G722", "g722", "g722", 16000, 8000, 1),
    "opus": AudioCodec("opus", "opus", "libopus", 48000, 48000, 2),
}
# An audio frame, for the worker's admission (it looks at the kind only).
_AUDIO = EncodedFrame("opus", b"", 0, 48000)


def codec(name: str) -> AudioCodec:
    try:
        return CODECS[name.lower()]
    except KeyError:
        raise ValueError(f"no audio transcoding for {name!r}: expected one of PCMU, PCMA, G722, opus") from None


@dataclass
class AudioTranscoderStats:
    packets_in: int = 0
    packets_out: int = 0
    dropped: int = 0  # queue full (loop side)
    decode_errors: int = 0
    errors: int = 0
    silence_filled: int = 0  # samples (input rate) of silence put in gaps
    cpu_seconds: float = 0.0


_Item = tuple[bytes, int]  # (payload, RTP timestamp)


class AudioTranscoder:
    def __init__(self, name: str, source: str, target: str, on_output: Callable[[list[tuple[bytes, int]]], None],
                 queue_payloads: int = QUEUE_PAYLOADS):
        self.source = codec(source)
        self.target = codec(target)
        self.name = name
        self.on_output = on_output
        self.stats = AudioTranscoderStats()
        self._closed = False
        self._outbox: list[tuple[bytes, int]] = []
        self._out_lock = threading.Lock()
        self._flush_scheduled = False
        # worker side
        self._decoder: av.AudioCodecContext | None = None
        self._encoder: av.AudioCodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        self._fifo: av.AudioFifo | None = None
        self._next_in: int | None = None  # the input timestamp expected next
        self._out_ts = 0  # output RTP timestamp of the first sample in the fifo
        self._worker: FrameWorker[_Item] = FrameWorker(f"sip audio {name}", self._process, queue_payloads,
                                                       Overflow.FRESHEST, setup=self._setup)

    @property
    def thread(self) -> threading.Thread:
        return self._worker.thread

    # -- loop side ---------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._worker.start(loop)

    def push(self, payload: bytes, timestamp: int) -> None:
        if self._closed:
            return
        self.stats.packets_in += 1
        self._worker.push(_AUDIO, (payload, timestamp))
        self.stats.dropped = self._worker.dropped

    def close(self) -> None:
        self._closed = True
        self._worker.stop()

    def join(self, timeout: float | None = None) -> bool:
        return self._worker.join(timeout)

    def _flush(self) -> None:
        with self._out_lock:
            out, self._outbox = self._outbox, []
            self._flush_scheduled = False
        if out and not self._closed:
            self.on_output(out)

    # -- worker side -------------------------------------------------------------------------------

    def _setup(self) -> None:
        source, target = self.source, self.target
        layout_in = "stereo" if source.channels == 2 else "mono"
        decoder = cast(av.AudioCodecContext, av.CodecContext.create(source.decoder, "r"))
        decoder.sample_rate = source.sample_rate
        decoder.layout = layout_in
        decoder.open()
        encoder = cast(av.AudioCodecContext, av.CodecContext.create(target.encoder, "w"))
        encoder.sample_rate = target.sample_rate
        encoder.layout = "mono"
        encoder.format = "s16"
        encoder.time_base = fractions.Fraction(1, target.sample_rate)
        if target.encoder == "libopus":
            encoder.bit_rate = OPUS_BITRATE
            encoder.options = {"application": "voip", "frame_duration": "20"}
        encoder.open()
        self._decoder, self._encoder = decoder, encoder
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=target.sample_rate)
        self._fifo = av.AudioFifo()

    def _process(self, item: _Item) -> None:
        payload, timestamp = item
        try:
            out = self._transcode(payload, timestamp)
        except av.FFmpegError:
            self.stats.decode_errors += 1
            out = []
        except Exception:
            self.stats.errors += 1
            if self.stats.errors == 1:
                log.exception("%s failed on a packet", self._worker.name)
            out = []
        self.stats.cpu_seconds = self._worker.thread_cpu_seconds()
        if out:
            self.stats.packets_out += len(out)
            with self._out_lock:
                self._outbox.extend(out)
                if self._flush_scheduled:
                    return
                self._flush_scheduled = True
            self._worker.post(self._flush)

    def _transcode(self, payload: bytes, timestamp: int) -> list[tuple[bytes, int]]:
        assert self._decoder is not None and self._encoder is not None
        assert self._resampler is not None and self._fifo is not None
        source, target = self.source, self.target
        packet = av.Packet(payload)
        frames = self._decoder.decode(packet)
        gap = None if self._next_in is None else (timestamp - self._next_in) & 0xFFFFFFFF
        if gap is not None and gap >= 0x80000000:
            gap -= 0x100000000
        if gap is None or gap < 0 or gap > GAP_FILL_MAX * source.rtp_clock:
            self._fifo = av.AudioFifo()  # a new segment: the output timeline carries on from where it is
        elif gap > source.frame_ticks // 4:
            samples = gap * target.sample_rate // source.rtp_clock
            self.stats.silence_filled += samples
            self._fifo.write(self._silence(samples))
        ticks = 0
        for frame in frames:
            ticks += frame.samples * source.rtp_clock // source.sample_rate
            frame.pts = None
            for converted in self._resampler.resample(frame):
                converted.pts = None
                self._fifo.write(converted)
        self._next_in = (timestamp + (ticks or source.frame_ticks)) & 0xFFFFFFFF
        out: list[tuple[bytes, int]] = []
        while self._fifo.samples >= target.frame_samples:
            chunk = self._fifo.read(target.frame_samples)
            assert chunk is not None
            chunk.pts = None
            for encoded in self._encoder.encode(chunk):
                out.append((bytes(encoded), self._out_ts & 0xFFFFFFFF))
                self._out_ts += target.frame_ticks
        return out

    def _silence(self, samples: int) -> av.AudioFrame:
        silence = av.AudioFrame(format="s16", layout="mono", samples=samples)
        silence.sample_rate = self.target.sample_rate
        for plane in silence.planes:
            plane.update(bytes(plane.buffer_size))
        return silence
