"""The peers of a bridged call's media, for tests and benchmarks, all on loopback.

- `Phone`: a plain RTP/AVP user agent whose media engine is ffmpeg. Like a phone it has one RTP port
  (announced in its SDP, and the source of what it sends: symmetric RTP). Behind that port, an ffmpeg
  sends a tone (`play_tone`) and another records what arrives (`record`), from an SDP file; the port
  relays between them and the call, and keeps every packet it got for the test to parse.
- `BrowserLeg`: the browser's side, an aiortc peer connection that sends a tone and records what it
  receives (sendrecv, as the WebSDK's call).
- `peak_frequency`: the strongest frequency of a recording (numpy FFT).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from streaming.client.media import TestPatternTrack, ToneTrack
from streaming.client.webrtc import codec_preferences

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
# ffmpeg's encoder, sample rate and RTP payload type per SIP codec
FFMPEG_CODECS: dict[str, tuple[str, int, int]] = {
    "PCMU": ("pcm_mulaw", 8000, 0), "PCMA": ("pcm_alaw", 8000, 8), "G722": ("g722", 16000, 9),
    "opus": ("libopus", 48000, 111),
}
RTPMAP = {"PCMU": "PCMU/8000", "PCMA": "PCMA/8000", "G722": "G722/8000", "opus": "opus/48000/2"}


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    """The frequency (Hz) of the largest FFT bin of a mono recording (its first quarter skipped)."""
    x = samples.astype(np.float64)
    x = x[len(x) // 4:]
    if len(x) < rate // 10:
        raise AssertionError(f"too little audio to analyse: {len(x)} samples")
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[:5] = 0  # DC
    return float(np.argmax(spectrum) * rate / len(x))


def sdp_of(codec: str, port: int, direction: str = "sendrecv", dtmf: bool = True, address: str = "127.0.0.1") -> str:
    pt = FFMPEG_CODECS[codec][2]
    formats = f"{pt} 101" if dtmf else str(pt)
    lines = ["v=0", f"o=phone 1 1 IN IP4 {address}", "s=phone", f"c=IN IP4 {address}", "t=0 0",
             f"m=audio {port} RTP/AVP {formats}", f"a=rtpmap:{pt} {RTPMAP[codec]}"]
    if dtmf:
        lines += ["a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16"]
    lines += ["a=ptime:20", f"a={direction}"]
    return "\r\n".join(lines) + "\r\n"


class _Port(asyncio.DatagramProtocol):
    def __init__(self, on_packet: Callable[[bytes, Any], None]):
        self.on_packet = on_packet

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_packet(data, addr)


class Phone:
    """One RTP port (the phone's), relaying to and from its ffmpeg processes."""

    def __init__(self, workdir: Path, codec: str):
        self.workdir = workdir
        self.codec = codec
        self.received: list[bytes] = []  # every RTP packet the call sent us
        self.sources: set[Any] = set()  # where they came from
        self.remote: tuple[str, int] | None = None  # the call's RTP address
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._inner: asyncio.DatagramTransport | None = None  # ffmpeg's side of the relay
        self._recorder_port: int | None = None
        self._processes: list[asyncio.subprocess.Process] = []
        self.sent_by_ffmpeg = 0

    async def start(self) -> Phone:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Port(self._from_call),
                                                                 local_addr=("127.0.0.1", 0))
        self.port = self._transport.get_extra_info("sockname")[1]
        self._inner, _ = await loop.create_datagram_endpoint(lambda: _Port(self._from_ffmpeg),
                                                             local_addr=("127.0.0.1", 0))
        return self

    @property
    def inner_port(self) -> int:
        assert self._inner is not None
        return int(self._inner.get_extra_info("sockname")[1])

    def sdp(self, direction: str = "sendrecv", dtmf: bool = True) -> str:
        return sdp_of(self.codec, self.port, direction, dtmf)

    def send(self, packet: bytes) -> None:
        """A datagram from the phone's port to the call."""
        assert self._transport is not None and self.remote is not None
        self._transport.sendto(packet, self.remote)

    def _from_call(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        self.sources.add(addr)
        if self._recorder_port is not None and self._inner is not None and len(data) >= 12 \
                and (data[1] & 0x7F) == FFMPEG_CODECS[self.codec][2]:
            self._inner.sendto(data, ("127.0.0.1", self._recorder_port))

    def _from_ffmpeg(self, data: bytes, addr: Any) -> None:
        if self.remote is not None and self._transport is not None:  # ffmpeg's RTCP goes to the next port
            self.sent_by_ffmpeg += 1
            self._transport.sendto(data, self.remote)

    async def play_tone(self, frequency: float, seconds: float) -> None:
        """ffmpeg encodes a tone in the phone's codec and sends it as RTP, through the phone's port."""
        encoder, rate, pt = FFMPEG_CODECS[self.codec]
        args = [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                f"sine=frequency={frequency}:sample_rate=48000:duration={seconds}", "-ac", "1", "-ar", str(rate),
                "-c:a", encoder]
        if self.codec == "opus":
            args += ["-b:a", "32k", "-frame_duration", "20"]
        else:
            args += ["-frame_size", str(rate // 50)] if self.codec != "G722" else []
        args += ["-payload_type", str(pt), "-f", "rtp", f"rtp://127.0.0.1:{self.inner_port}?pkt_size=1200"]
        self._processes.append(await asyncio.create_subprocess_exec(*args, stdin=subprocess.DEVNULL))

    async def wait_senders(self, timeout: float = 30.0) -> None:
        """Until every ffmpeg sending a tone has ended."""
        async with asyncio.timeout(timeout):
            for process in self._processes:
                await process.wait()

    async def record(self, seconds: float) -> Path:
        """ffmpeg records what the call sends (from its RTP in the phone's SDP) to a wav file; returns its
        path once ffmpeg has ended (call after the media started flowing: ffmpeg waits for it)."""
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        sdp_file = self.workdir / f"recv-{port}.sdp"
        sdp_file.write_text(sdp_of(self.codec, port, "recvonly", dtmf=False))
        out = self.workdir / f"recv-{port}.wav"
        args = [FFMPEG, "-hide_banner", "-loglevel", "error", "-protocol_whitelist", "file,udp,rtp",
                "-i", str(sdp_file), "-t", str(seconds), "-ac", "1", "-y", str(out)]
        process = await asyncio.create_subprocess_exec(*args, stdin=subprocess.DEVNULL)
        self._processes.append(process)
        await asyncio.sleep(0.3)  # ffmpeg binds its port; packets before that are only lost, not wrong
        self._recorder_port = port
        async with asyncio.timeout(seconds + 20):
            await process.wait()
        self._recorder_port = None
        assert process.returncode == 0, f"ffmpeg recorder failed ({process.returncode})"
        return out

    async def close(self) -> None:
        for process in self._processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        for transport in (self._transport, self._inner):
            if transport is not None:
                transport.close()


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        return np.concatenate(chunks), stream.rate


class BrowserLeg:
    """An aiortc peer connection as the browser's call: sends a tone, records what it receives (mono)."""

    def __init__(self, frequency: float = 700.0, video: str | None = None, offering: bool = True):
        self.pc = RTCPeerConnection()
        self.tone = ToneTrack(frequency)
        if offering:  # else `answer` puts the tone on the transceiver the server's offer makes
            self.pc.addTransceiver(self.tone, direction="sendrecv")
        if video is not None:  # a test pattern, offering only that codec
            transceiver = self.pc.addTransceiver(TestPatternTrack(320, 240, 15), direction="sendrecv")
            transceiver.setCodecPreferences(codec_preferences("video", video))
        self.samples: list[np.ndarray] = []
        self.video_frames = 0
        self.rate = 48000
        self._tasks: list[asyncio.Task[None]] = []

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            pull = self._pull if track.kind == "audio" else self._pull_video
            self._tasks.append(asyncio.get_running_loop().create_task(pull(track)))

    async def _pull_video(self, track: Any) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            self.video_frames += 1

    async def _pull(self, track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            data = frame.to_ndarray()
            channels = len(frame.layout.channels)
            self.rate = frame.sample_rate
            self.samples.append(data.reshape(-1, channels)[:, 0] if not frame.format.is_planar else data[0])

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, offer: str) -> str:
        """Answer the server's offer (a call to the browser) with the tone, sendrecv."""
        await self.pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        audio = next(t for t in self.pc.getTransceivers() if t.kind == "audio" and t.mid is not None)
        if audio.sender.track is None:
            audio.sender.replaceTrack(self.tone)
            audio.direction = "sendrecv"
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    async def answered(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    def recording(self, seconds: float | None = None) -> np.ndarray:
        if not self.samples:
            return np.zeros(0)
        audio = np.concatenate(self.samples)
        return audio[-int(seconds * self.rate):] if seconds else audio

    def level(self, seconds: float = 0.5) -> float:
        """RMS of the last `seconds` received."""
        audio = self.recording(seconds).astype(np.float64)
        return float(np.sqrt(np.mean(audio ** 2))) if len(audio) else 0.0

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


class VideoPort:
    """A phone's video RTP port: ffmpeg sends H.264 (libx264, packetization-mode 1) through it, and it
    keeps what the call sends."""

    PAYLOAD_TYPE = 96

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.remote: tuple[str, int] | None = None
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._inner: asyncio.DatagramTransport | None = None
        self._processes: list[asyncio.subprocess.Process] = []

    async def start(self) -> VideoPort:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Port(lambda data, addr: self.received.append(data)), local_addr=("127.0.0.1", 0))
        self.port = self._transport.get_extra_info("sockname")[1]
        self._inner, _ = await loop.create_datagram_endpoint(lambda: _Port(self._from_ffmpeg),
                                                             local_addr=("127.0.0.1", 0))
        return self

    def sdp_section(self) -> str:
        return (f"m=video {self.port} RTP/AVP {self.PAYLOAD_TYPE}\r\na=rtpmap:{self.PAYLOAD_TYPE} H264/90000\r\n"
                f"a=fmtp:{self.PAYLOAD_TYPE} profile-level-id=42e01f;packetization-mode=1\r\na=sendrecv\r\n")

    def _from_ffmpeg(self, data: bytes, addr: Any) -> None:
        if self.remote is not None and self._transport is not None:
            self._transport.sendto(data, self.remote)

    async def send_video(self, seconds: float) -> None:
        assert self._inner is not None
        inner = self._inner.get_extra_info("sockname")[1]
        args = [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                f"testsrc=size=320x240:rate=15:duration={seconds}", "-c:v", "libx264", "-profile:v", "baseline",
                "-tune", "zerolatency", "-g", "15", "-pix_fmt", "yuv420p", "-payload_type", str(self.PAYLOAD_TYPE),
                "-f", "rtp", f"rtp://127.0.0.1:{inner}?pkt_size=1200"]
        self._processes.append(await asyncio.create_subprocess_exec(*args, stdin=subprocess.DEVNULL))

    async def close(self) -> None:
        for process in self._processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        for transport in (self._transport, self._inner):
            if transport is not None:
                transport.close()


def pcap_udp_payloads(path: Path) -> list[tuple[float, bytes]]:
    """(capture time, UDP payload) of each IPv4 packet of a classic pcap file (Ethernet or Linux cooked)."""
    data = path.read_bytes()
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    link = {1: 14, 113: 16}[struct.unpack(order + "I", data[20:24])[0]]
    out = []
    pos = 24
    while pos + 16 <= len(data):
        seconds, micros, length, _ = struct.unpack(order + "IIII", data[pos:pos + 16])
        frame = data[pos + 16:pos + 16 + length]
        pos += 16 + length
        ip = frame[link:]
        udp = ip[(ip[0] & 0x0F) * 4:]
        out.append((seconds + micros / 1e6, udp[8:]))
    return out
