"""A viewer that receives without decoding: aiortc does ICE, DTLS and SRTP, and the DTLS transport's
`_handle_rtp_data` is replaced so that every decrypted RTP packet is counted and inspected here and
never reaches aiortc's receiver (no jitter buffer, no depacketizing, no decoder).

It counts, per SSRC, packets received and the extended highest sequence number (expected = highest -
first + 1, so loss is expected - received), video frames (marker bits), and notes when the first H.264
keyframe starts (NAL type 5 or 7 as a single NAL unit, inside STAP-A, or at an FU-A start).

Like a browser, it sends an RTCP receiver report every second for each stream it receives (loss and
highest sequence number; no jitter, LSR or REMB): a viewer that never reports is dropped by the server.

Signalling: the server's client protocol (a Session from streaming.client, one per viewer as one browser
tab, with playStream carrying the offer), plain HTTP offer/answer for the MediaRelay baseline, or Janus's
API (janus_viewer.py), where Janus offers and the viewer answers.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket
from aiortc.sdp import SessionDescription

from streaming.client import Session
from streaming.client.webrtc import codec_preferences

from .janus_viewer import JanusWatch

H264_KEY_NALS = (5, 7)  # IDR slice, SPS
REPORT_INTERVAL = 1.0  # seconds between receiver reports


def h264_keyframe_start(payload: bytes) -> bool:
    """Whether an H.264 RTP payload (RFC 6184) starts a keyframe."""
    if not payload:
        return False
    nal = payload[0] & 0x1F
    if nal in H264_KEY_NALS:
        return True
    if nal == 24:  # STAP-A: 16-bit size, then a NAL unit, repeated
        pos = 1
        while pos + 2 < len(payload):
            size = (payload[pos] << 8) | payload[pos + 1]
            if payload[pos + 2] & 0x1F in H264_KEY_NALS:
                return True
            pos += 2 + size
        return False
    if nal == 28 and len(payload) > 1:  # FU-A: start bit and the fragmented NAL unit's type
        return bool(payload[1] & 0x80) and payload[1] & 0x1F in H264_KEY_NALS
    return False


def rtp_payload(data: bytes) -> bytes:
    offset = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10 and len(data) >= offset + 4:  # header extension
        offset += 4 + 4 * ((data[offset + 2] << 8) | data[offset + 3])
    end = len(data) - (data[-1] if data[0] & 0x20 and len(data) > offset else 0)  # padding
    return data[offset:end]


class SeqCounter:
    """Packets received and the extended highest sequence number of one SSRC."""

    __slots__ = ("video", "first", "highest", "received", "frames", "reported_expected", "reported_received")

    def __init__(self, seq: int, video: bool):
        self.video = video
        self.first = seq
        self.highest = seq
        self.received = 0
        self.frames = 0
        self.reported_expected = 0
        self.reported_received = 0

    def report(self, ssrc: int) -> RtcpReceiverInfo:
        """A report block (RFC 3550 section 6.4.1) for the packets since the last one."""
        expected, received = self.expected - self.reported_expected, self.received - self.reported_received
        self.reported_expected, self.reported_received = self.expected, self.received
        lost = expected - received
        fraction = min(255, (lost << 8) // expected) if expected > 0 and lost > 0 else 0
        cumulative = max(-0x800000, min(0x7FFFFF, self.expected - self.received))
        return RtcpReceiverInfo(ssrc=ssrc, fraction_lost=fraction, packets_lost=cumulative,
                                highest_sequence=self.highest & 0xFFFFFFFF, jitter=0, lsr=0, dlsr=0)

    def push(self, seq: int) -> None:
        delta = (seq - self.highest) & 0xFFFF
        if delta < 0x8000:
            self.highest += delta
        self.received += 1

    @property
    def expected(self) -> int:
        return self.highest - self.first + 1


class CountingViewer:
    def __init__(self, index: int):
        self.index = index
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("audio", direction="recvonly")
        video = self.pc.addTransceiver("video", direction="recvonly")
        video.setCodecPreferences(codec_preferences("video", "H264", receiving=True))
        self.counters: dict[int, SeqCounter] = {}
        self.video_pts: set[int] = set()
        self.requested_at: float | None = None
        self.keyframe_at: float | None = None
        self.keyframe = asyncio.Event()
        self.session: Session | None = None
        self.janus: JanusWatch | None = None
        self.error: str | None = None
        self.reports_sent = 0
        self._reporter: asyncio.Task[None] | None = None
        self._intercept()

    # -- packets -----------------------------------------------------------------------------------

    def _intercept(self) -> None:
        seen: set[int] = set()
        for transceiver in self.pc.getTransceivers():
            dtls = transceiver.receiver.transport
            if id(dtls) not in seen:
                seen.add(id(dtls))
                self._patch(dtls)

    def _patch(self, dtls: RTCDtlsTransport) -> None:
        counters = self.counters
        video_pts = self.video_pts

        async def on_rtp(data: bytes, arrival_time_ms: int) -> None:
            if len(data) < 12:
                return
            ssrc = int.from_bytes(data[8:12], "big")
            seq = (data[2] << 8) | data[3]
            counter = counters.get(ssrc)
            if counter is None:
                counter = counters[ssrc] = SeqCounter(seq, (data[1] & 0x7F) in video_pts)
            counter.push(seq)
            if counter.video:
                if data[1] & 0x80:
                    counter.frames += 1
                if self.keyframe_at is None and h264_keyframe_start(rtp_payload(data)):
                    self.keyframe_at = time.monotonic()
                    self.keyframe.set()

        dtls._handle_rtp_data = on_rtp  # type: ignore[method-assign]
        self._dtls = dtls

    async def _report(self) -> None:
        ssrc = self.pc.getTransceivers()[0].sender._ssrc
        while True:
            await asyncio.sleep(REPORT_INTERVAL)  # the reporting period
            if self._dtls._state is not State.CONNECTED or not self.counters:
                continue
            blocks = [counter.report(source) for source, counter in self.counters.items()][:31]
            try:
                await self._dtls._send_rtp(bytes(RtcpRrPacket(ssrc=ssrc, reports=blocks)))
            except ConnectionError:
                return
            self.reports_sent += 1

    def totals(self) -> tuple[int, int, int]:
        """(expected, received, video frames) over every SSRC so far."""
        expected = received = frames = 0
        for counter in self.counters.values():
            expected += counter.expected
            received += counter.received
            frames += counter.frames
        return expected, received, frames

    @property
    def join_ms(self) -> float | None:
        if self.requested_at is None or self.keyframe_at is None:
            return None
        return (self.keyframe_at - self.requested_at) * 1000

    # -- signalling --------------------------------------------------------------------------------

    async def _offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    def _note_video_pts(self, sdp: str) -> None:
        for media in SessionDescription.parse(sdp).media:
            if media.kind == "video":
                self.video_pts.update(c.payloadType for c in media.rtp.codecs if c.payloadType is not None)

    async def _answer(self, sdp: str) -> None:
        self._note_video_pts(sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        self._intercept()  # BUNDLE may have replaced a transport; no packet flows before ICE and DTLS
        self._reporter = asyncio.get_running_loop().create_task(self._report())

    async def _answer_offer(self, sdp: str) -> str:
        """The other way round (Janus offers): take the offer, return our answer. The recvonly
        transceivers made in __init__ are matched to the offer's m-lines by kind."""
        self._note_video_pts(sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._intercept()  # the transports exist once both descriptions are set
        self._reporter = asyncio.get_running_loop().create_task(self._report())
        return str(self.pc.localDescription.sdp)

    async def play_sfu(self, ws_url: str, name: str, timeout: float) -> None:
        """playStream over the server's client protocol, until PLAYING and the first keyframe."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.session = session = await Session.connect(ws_url, timeout=timeout)
        msid = str(uuid.uuid4())
        signal = session.new_stream(msid, name, False)
        sdp = await self._offer()
        signal.status = "PENDING"
        self.requested_at = time.monotonic()
        await session.send("playStream", {
            "mediaSessionId": msid, "name": name, "published": False, "hasVideo": True, "hasAudio": True,
            "status": "PENDING", "record": False, "width": 0, "height": 0, "mediaProvider": "WebRTC",
            "sdp": sdp, "custom": {}, "constraints": {"audio": True, "video": True},
        })
        await signal.wait(lambda: signal.remote_sdp is not None, "setRemoteSDP", deadline - loop.time())
        assert signal.remote_sdp is not None
        await self._answer(signal.remote_sdp)
        await signal.wait(lambda: signal.status == "PLAYING", "PLAYING", deadline - loop.time())
        await asyncio.wait_for(self.keyframe.wait(), max(0.0, deadline - loop.time()))

    async def play_relay(self, http: aiohttp.ClientSession, base_url: str, timeout: float) -> None:
        """POST the offer to the relay's /play, until the first keyframe."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sdp = await self._offer()
        self.requested_at = time.monotonic()
        async with http.post(f"{base_url}/play", json={"sdp": sdp, "type": "offer"},
                             timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            resp.raise_for_status()
            answer: dict[str, Any] = await resp.json()
        await self._answer(answer["sdp"])
        await asyncio.wait_for(self.keyframe.wait(), max(0.0, deadline - loop.time()))

    async def play_janus(self, http: aiohttp.ClientSession, url: str, mountpoint: int, timeout: float) -> None:
        """Janus's streaming plugin: watch (Janus offers), answer, start, until the first keyframe."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.janus = JanusWatch(http, url, timeout)
        await self.janus.open()
        self.requested_at = time.monotonic()  # as for our server: from the play request, connection made
        offer = await self.janus.watch(mountpoint)
        await self.janus.start(await self._answer_offer(offer))
        await asyncio.wait_for(self.keyframe.wait(), max(0.0, deadline - loop.time()))

    async def close(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
        if self.session is not None:
            await self.session.close()
        if self.janus is not None:
            await self.janus.close()
        await self.pc.close()
