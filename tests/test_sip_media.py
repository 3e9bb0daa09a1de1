"""The media of a bridged SIP call, end to end on loopback: an aiortc peer as the browser (sendrecv) and a
plain RTP phone whose media engine is ffmpeg (tones sent and recorded from SDP), both joined by
CallMedia. Tones of known frequencies go each way and come out at those frequencies (numpy FFT)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import av
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from media import native
from media.sfu import MediaCore, WebRtcViewer
from media.sip_media import CallMedia, SipMediaError, SipMediaSettings
from media.stream import StreamRegistry
from media.transcode import Transcoders
from tests.support.rtp_phone import BrowserLeg, Phone, peak_frequency, read_wav, sdp_of

BROWSER_TONE = 700.0
PHONE_TONE = 1000.0
TOLERANCE = 15.0  # Hz


async def wait_for(condition: Callable[[], Any], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


class Call:
    """A CallMedia with its browser leg connected and its phone, and what its callbacks got."""

    def __init__(self, media: CallMedia, browser: BrowserLeg, phone: Phone, registry: StreamRegistry):
        self.media = media
        self.browser = browser
        self.phone = phone
        self.registry = registry

    @property
    def sip(self) -> dict[str, Any]:
        return self.media.describe()["sip"]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[tuple[CallMedia, BrowserLeg, Phone, Transcoders]] = []

    async def make(codec: str, *, settings: SipMediaSettings | None = None, outgoing: bool = False,
                   phone_direction: str = "sendrecv", python_core: bool = False) -> tuple[Call, list[str], list[bool]]:
        core = MediaCore(native.rtp_module(python_core), native.rtcp_module(python_core),
                         native.track_module(python_core))
        registry = StreamRegistry()
        transcoders = Transcoders(core.track, core.rtp)
        digits: list[str] = []
        timeouts: list[bool] = []
        media = CallMedia(core, transcoders, settings or SipMediaSettings(), call_id=f"call{len(made)}",
                          has_video=False, claim=registry.claim, release=registry.release,
                          on_dtmf=digits.append, on_timeout=lambda: timeouts.append(True))
        browser = BrowserLeg(BROWSER_TONE)
        phone = await Phone(tmp_path, codec).start()
        made.append((media, browser, phone, transcoders))
        await browser.answered(await media.browser_answer(await browser.offer()))
        if outgoing:
            offer = media.sip_offer()
            assert "a=rtpmap:0 PCMU/8000" in offer and "a=rtpmap:101 telephone-event/8000" in offer
            media.sip_answered(phone.sdp(phone_direction))
        else:
            answer = media.sip_answer(phone.sdp(phone_direction))
            assert f" {phone.codec}/" in answer
        phone.remote = ("127.0.0.1", media.describe()["sip"]["local_port"])
        return Call(media, browser, phone, registry), digits, timeouts

    yield make
    for media, browser, phone, transcoders in made:
        await media.close()
        await browser.close()
        await phone.close()
        transcoders.close()


@pytest.mark.parametrize("codec", ["PCMU", "PCMA", "G722", "opus"])
async def test_tone_goes_each_way_at_its_frequency(setup: Callable[..., Any], codec: str) -> None:
    call, _digits, _timeouts = await setup(codec)
    media = call.media
    assert media.describe()["sip"]["codec"] == codec
    if codec == "opus":  # same codec both legs: forwarded, nothing decoded
        assert media.audio_transcoders == [] and not media.transcoding
    else:
        assert [(t.source.name, t.target.name) for t in media.audio_transcoders] == \
            [("opus", codec), (codec, "opus")]
    await call.phone.play_tone(PHONE_TONE, 8.0)
    await wait_for(lambda: call.sip["latched"])
    recorded, rate = read_wav(await call.phone.record(2.5))
    assert abs(peak_frequency(recorded, rate) - BROWSER_TONE) < TOLERANCE
    await wait_for(lambda: len(call.browser.recording()) > 2 * call.browser.rate)
    assert abs(peak_frequency(call.browser.recording(1.5), call.browser.rate) - PHONE_TONE) < TOLERANCE
    # Symmetric RTP: everything reached the phone from the call's own RTP port.
    assert call.phone.sources == {("127.0.0.1", call.sip["local_port"])}
    assert call.sip["junk"] == 0 and call.sip["lost"] == 0
    await media.close()
    assert len(call.registry) == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:  # the port is free again
        again.bind(("127.0.0.1", call.sip["local_port"]))


def rtp_fields(packet: bytes) -> tuple[int, bool, int, int, int, bytes]:
    first, second, seq, ts, ssrc = struct.unpack_from("!BBHII", packet)
    assert first >> 6 == 2
    return second & 0x7F, bool(second & 0x80), seq, ts, ssrc, packet[12 + 4 * (first & 0x0F):]


async def test_dtmf_goes_out_as_rfc4733_events(setup: Callable[..., Any]) -> None:
    call, _digits, _timeouts = await setup("PCMU", outgoing=True)
    try:
        await wait_for(lambda: len(call.phone.received) > 20, 5)  # the browser's audio, transcoded
    except TimeoutError:
        raise AssertionError(call.media.describe()) from None
    start = len(call.phone.received)
    call.media.send_dtmf("19#", 100)
    await wait_for(lambda: sum(1 for p in call.phone.received if p[1] & 0x7F == 101) >= 3 * 7)  # 4 updates, 3 ends
    await asyncio.sleep(0.3)  # audio resumes after the last event
    packets = [rtp_fields(p) for p in call.phone.received[start - 5:]]
    assert len({p[4] for p in packets}) == 1  # one SSRC for audio and events
    seqs = [p[2] for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))  # continuous numbering
    events: dict[int, list[tuple[bool, int, int, bool]]] = {}
    order = []
    for pt, marker, _seq, ts, _ssrc, payload in packets:
        if pt != 101:
            assert pt == 0
            continue
        code, flags, duration = struct.unpack("!BBH", payload)
        if ts not in events:
            order.append(ts)
        events.setdefault(ts, []).append((marker, code, duration, bool(flags & 0x80)))
    assert [events[ts][0][1] for ts in order] == [1, 9, 11]
    for ts in order:
        event = events[ts]
        assert event[0][0] and not any(marker for marker, *_ in event[1:])  # marker on the first only
        durations = [duration for _m, _c, duration, _e in event]
        assert durations == sorted(durations)
        ends = [e for e in event if e[3]]
        assert len(ends) == 3 and event[-3:] == ends and all(e[2] == 800 for e in ends)  # 100 ms at 8 kHz
    # No audio inside an event: between an event's first and last packet, only its own packets.
    for ts in order:
        positions = [k for k, p in enumerate(packets) if p[0] == 101 and p[3] == ts]
        assert all(packets[k][0] == 101 for k in range(positions[0], positions[-1] + 1))
    assert order == sorted(order)
    assert packets[-1][0] == 0  # audio again after the events
    assert call.sip["dtmf_sent"] == 3


def event_packet(seq: int, ts: int, code: int, end: bool, duration: int, marker: bool = False) -> bytes:
    return struct.pack("!BBHIIBBH", 0x80, (0x80 if marker else 0) | 101, seq, ts, 0xABCD,
                       code, (0x80 if end else 0) | 10, duration)


async def test_received_dtmf_is_reported_once_per_event(setup: Callable[..., Any]) -> None:
    call, digits, _timeouts = await setup("PCMA")
    seq = 1000
    script = [(5, 8000), (10, 16000)]
    for code, ts in script:  # an event with updates and three end packets, as RFC 4733 says
        for k, (end, duration) in enumerate([(False, 160), (False, 320), (True, 480), (True, 480), (True, 480)]):
            call.phone.send(event_packet(seq, ts, code, end, duration, marker=k == 0))
            seq += 1
    call.phone.send(event_packet(seq, 24000, 7, False, 160, marker=True))  # its end packets are lost
    call.phone.send(event_packet(seq + 1, 32000, 8, True, 480, marker=True))
    call.phone.send(event_packet(seq + 2, 32000, 8, True, 480))  # a late copy
    await wait_for(lambda: len(digits) >= 4)
    await asyncio.sleep(0.2)
    assert digits == ["5", "*", "7", "8"]


async def test_hold_stops_sending_and_unhold_resumes(setup: Callable[..., Any]) -> None:
    call, _digits, _timeouts = await setup("PCMU")
    await wait_for(lambda: len(call.phone.received) > 10)
    answer = call.media.sip_answer(call.phone.sdp("sendonly"))  # the phone holds the call
    assert "a=recvonly" in answer and call.media.remote_direction == "sendonly"
    await asyncio.sleep(0.2)
    held = len(call.phone.received)
    await asyncio.sleep(1.0)
    assert len(call.phone.received) == held
    call.media.sip_answer(call.phone.sdp("sendrecv"))
    await wait_for(lambda: len(call.phone.received) > held + 10)
    # Our own hold: an offer with sendonly, and nothing is sent meanwhile either.
    offer = call.media.sip_offer("sendonly")
    assert "a=sendonly" in offer
    call.media.sip_answered(call.phone.sdp("recvonly"))
    await asyncio.sleep(0.2)
    held = len(call.phone.received)
    await asyncio.sleep(1.0)
    assert len(call.phone.received) == held
    offer = call.media.sip_offer("sendrecv")
    call.media.sip_answered(call.phone.sdp("sendrecv"))
    await wait_for(lambda: len(call.phone.received) > held + 10)


async def test_rtp_timeout_fires_unless_on_hold(setup: Callable[..., Any]) -> None:
    settings = SipMediaSettings(rtp_timeout=1.0)
    call, _digits, timeouts = await setup("PCMU", settings=settings, phone_direction="inactive")
    await asyncio.sleep(2.5)  # the phone holds us: silence is expected
    assert timeouts == []
    call.media.sip_answer(call.phone.sdp("sendrecv"))
    async with asyncio.timeout(5):
        while not timeouts:
            await asyncio.sleep(0.05)
    assert timeouts == [True]

    call2, _d, timeouts2 = await setup("PCMU", settings=settings)
    await call2.phone.play_tone(PHONE_TONE, 3.0)  # RTP flows, then stops
    await wait_for(lambda: call2.sip["rtp_received"] > 50)
    assert timeouts2 == []
    async with asyncio.timeout(8):
        while not timeouts2:
            await asyncio.sleep(0.05)


async def test_garbage_on_the_sip_port_is_counted_and_ignored(setup: Callable[..., Any]) -> None:
    call, _digits, _timeouts = await setup("PCMU")
    await call.phone.play_tone(PHONE_TONE, 6.0)
    await wait_for(lambda: call.sip["latched"])
    junk = [b"\x80", b"\x00" * 40,  # short; version 0
            bytes([0x8F, 0]) + b"\x00" * 14,  # 15 CSRCs announced, 4 there
            bytes([0x90, 0]) + b"\x00" * 10 + b"\x00\x00\xff\xff",  # an extension longer than the packet
            bytes([0xA0, 0]) + b"\x00" * 10 + b"\x00\x00\x00\x40"]  # padding longer than the payload
    for packet in junk:
        call.phone.send(packet)
    call.phone.send(struct.pack("!BBHII", 0x80, 77, 1, 1, 1) + b"xyz")  # a payload type nobody agreed
    try:
        await wait_for(lambda: call.sip["junk"] >= len(junk) and call.sip["unknown_payload"] >= 1, 3)
    except TimeoutError:
        raise AssertionError(call.sip) from None
    before = len(call.browser.recording())
    await wait_for(lambda: len(call.browser.recording()) > before + call.browser.rate)
    assert abs(peak_frequency(call.browser.recording(1.0), call.browser.rate) - PHONE_TONE) < TOLERANCE
    # A stranger's datagrams once the phone is latched are dropped, not played.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.sendto(struct.pack("!BBHII", 0x80, 0, 5, 5, 5) + b"\xff" * 160,
                        ("127.0.0.1", call.sip["local_port"]))
    await wait_for(lambda: call.sip["foreign"] >= 1)


async def test_the_calls_streams_play_like_any_stream(setup: Callable[..., Any]) -> None:
    call, _digits, _timeouts = await setup("G722")
    await call.phone.play_tone(PHONE_TONE, 8.0)
    core = call.media.core
    heard = {}
    for name, tone in zip(call.media.stream_names, (BROWSER_TONE, PHONE_TONE), strict=True):
        stream = call.registry.get(name)
        assert stream is not None and [t.codec.name for t in stream.tracks] == ["opus"]
        client = RTCPeerConnection()
        client.addTransceiver("audio", direction="recvonly")
        await client.setLocalDescription(await client.createOffer())
        viewer = WebRtcViewer(core, stream)
        answer = await viewer.start(client.localDescription.sdp)
        listener = BrowserLeg.__new__(BrowserLeg)  # only its recorder
        listener.samples, listener.rate, listener._tasks = [], 48000, []

        @client.on("track")
        def on_track(track: Any, listener: BrowserLeg = listener) -> None:
            listener._tasks.append(asyncio.get_running_loop().create_task(listener._pull(track)))

        await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        viewer.attach()
        try:
            await wait_for(lambda listener=listener: len(listener.recording()) > 2 * 48000)  # type: ignore[misc]
            heard[name] = peak_frequency(listener.recording(1.5), listener.rate)
            assert abs(heard[name] - tone) < TOLERANCE, heard
        finally:
            for task in listener._tasks:
                task.cancel()
            await viewer.close()
            await client.close()


async def test_browser_offer_that_cannot_be_used_is_a_sip_media_error(setup: Callable[..., Any]) -> None:
    call, _digits, _timeouts = await setup("PCMU")
    with pytest.raises(SipMediaError, match="negotiated already"):
        await call.media.browser_answer("v=0\r\n")
    core = call.media.core
    registry = StreamRegistry()
    other = CallMedia(core, Transcoders(core.track, core.rtp), SipMediaSettings(), call_id="bad/../x y",
                      has_video=False, claim=registry.claim, release=registry.release,
                      on_dtmf=lambda d: None, on_timeout=lambda: None)
    assert other.stream_names == ("bad_.._x_y-browser", "bad_.._x_y-sip")
    for junk in ("", "garbage", "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n" * 2000):
        with pytest.raises(SipMediaError):
            await other.browser_answer(junk)
    await other.close()
    assert len(registry) == 0
    with pytest.raises(SipMediaError, match="exists already"):
        CallMedia(core, Transcoders(core.track, core.rtp), SipMediaSettings(), call_id=call.media.call_id,
                  has_video=False, claim=call.registry.claim, release=call.registry.release,
                  on_dtmf=lambda d: None, on_timeout=lambda: None)


@pytest.mark.parametrize("browser_video", ["H264", "VP8"])
async def test_video_calls_carry_h264_to_and_from_the_phone(tmp_path: Path, browser_video: str) -> None:
    from media.depacketize import Depacketizer
    from tests.support.rtp_phone import VideoPort

    core = MediaCore(native.rtp_module(), native.rtcp_module(), native.track_module())
    registry = StreamRegistry()
    transcoders = Transcoders(core.track, core.rtp)
    media = CallMedia(core, transcoders, SipMediaSettings(), call_id="video", has_video=True,
                      claim=registry.claim, release=registry.release, on_dtmf=lambda d: None,
                      on_timeout=lambda: None)
    browser = BrowserLeg(BROWSER_TONE, video=browser_video)
    phone = await Phone(tmp_path, "PCMU").start()
    video = await VideoPort().start()
    try:
        await browser.answered(await media.browser_answer(await browser.offer()))
        assert media.describe()["browser"]["codecs"] == {"audio": "opus", "video": browser_video}
        offer = media.sip_offer()
        assert "m=video" in offer and "H264/90000" in offer and "packetization-mode=1" in offer
        media.sip_answered(phone.sdp().replace("a=sendrecv\r\n", "a=sendrecv\r\n" + video.sdp_section(), 1))
        described = media.describe()
        assert described["sip"]["video"] == "H264"
        video.remote = ("127.0.0.1", described["sip"]["video_port"])
        # VP8 in the browser: the shared transcoders make H.264 for the phone and VP8 for the browser.
        assert described["video_transcoders"] == (2 if browser_video == "VP8" else 0)
        await video.send_video(10.0)
        # The browser's video reaches the phone as H.264 it can reassemble into keyframes and frames.
        await wait_for(lambda: len(video.received) > 100, 30)
        depacketizer = Depacketizer("H264", 90000)
        frames = [f for packet in video.received if packet[1] & 0x7F == VideoPort.PAYLOAD_TYPE
                  for f in depacketizer.push(packet)]
        assert frames and frames[0].keyframe
        decoder = av.CodecContext.create("h264", "r")
        pictures = [p for f in frames for p in decoder.decode(av.Packet(f.data))]
        assert len(pictures) >= 5 and pictures[0].width == 320
        # The phone's H.264 reaches the browser, who decodes it.
        await wait_for(lambda: browser.video_frames >= 15, 30)
    finally:
        await media.close()
        await browser.close()
        await phone.close()
        await video.close()
        transcoders.close()


async def test_rtcp_reports_go_to_the_peers_rtcp_port(setup: Callable[..., Any],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from media import rtcp as rtcp_twin
    from media import sip_media

    monkeypatch.setattr(sip_media, "RTCP_INTERVAL", 0.3)
    call, _digits, _timeouts = await setup("PCMU")
    loop = asyncio.get_running_loop()
    reports: list[bytes] = []

    class Collect(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            reports.append(data)

    rtcp_port, _ = await loop.create_datagram_endpoint(Collect, local_addr=("127.0.0.1", 0))
    port = rtcp_port.get_extra_info("sockname")[1]
    try:  # a re-INVITE naming the phone's RTCP port (RFC 3605)
        call.media.sip_answer(call.phone.sdp().replace("a=ptime:20", f"a=ptime:20\r\na=rtcp:{port}"))
        await call.phone.play_tone(PHONE_TONE, 5.0)
        await wait_for(lambda: any(rtcp_twin.parse_rtcp(r)[0].packet_type == rtcp_twin.RTCP_SR for r in reports))
        audio_ssrc = {rtp_fields(p)[4] for p in call.phone.received}
        sender_report = next(p for r in reports for p in rtcp_twin.parse_rtcp(r) if p.packet_type == rtcp_twin.RTCP_SR)
        assert audio_ssrc == {sender_report.ssrc} and sender_report.packet_count > 0
        # A report about the phone's stream rides along once its RTP has come in.
        await wait_for(lambda: any(p.packet_type == rtcp_twin.RTCP_SR and p.reports
                                   for r in reports[-2:] for p in rtcp_twin.parse_rtcp(r)))
        assert any(p.packet_type == rtcp_twin.RTCP_SDES for p in rtcp_twin.parse_rtcp(reports[-1]))
        # The phone's own reports reach the call's RTCP port (RTP + 1) and are counted; junk is not.
        rtcp_port.sendto(rtcp_twin.build_rr(0xABCD), ("127.0.0.1", call.sip["local_port"] + 1))
        rtcp_port.sendto(b"\x01\x02", ("127.0.0.1", call.sip["local_port"] + 1))
        await wait_for(lambda: call.sip["rtcp_received"] >= 1 and call.sip["junk"] >= 1)
    finally:
        rtcp_port.close()


async def test_a_full_port_range_is_a_sip_media_error() -> None:
    core = MediaCore(native.rtp_module(), native.rtcp_module(), native.track_module())
    registry = StreamRegistry()
    settings = SipMediaSettings(port_min=23456, port_max=23458)  # room for one call
    calls = [CallMedia(core, Transcoders(core.track, core.rtp), settings, call_id=f"c{k}", has_video=False,
                       claim=registry.claim, release=registry.release, on_dtmf=lambda d: None,
                       on_timeout=lambda: None) for k in range(2)]
    try:
        assert "m=audio 23456 RTP/AVP" in calls[0].sip_offer()
        with pytest.raises(SipMediaError, match="no RTP port"):
            calls[1].sip_answer(sdp_of("PCMU", 4000))
        await calls[0].close()
        assert "m=audio 23456 RTP/AVP" in calls[1].sip_answer(sdp_of("PCMU", 4000))  # free again
    finally:
        for call in calls:
            await call.close()


@pytest.mark.parametrize("codec", ["PCMA", "opus"])
async def test_a_call_to_the_browser_offers_it_our_sdp(tmp_path: Path, codec: str) -> None:
    """An incoming SIP call: the server offers to the browser (the WebSDK answers), the SIP peer's
    offer gets our answer, and tones go both ways."""
    core = MediaCore(native.rtp_module(), native.rtcp_module(), native.track_module())
    registry = StreamRegistry()
    transcoders = Transcoders(core.track, core.rtp)
    media = CallMedia(core, transcoders, SipMediaSettings(), call_id="incoming", has_video=False,
                      claim=registry.claim, release=registry.release, on_dtmf=lambda d: None,
                      on_timeout=lambda: None)
    browser = BrowserLeg(BROWSER_TONE, offering=False)
    phone = await Phone(tmp_path, codec).start()
    try:
        offer = await media.browser_offer()
        assert "opus/48000/2" in offer and "a=sendrecv" in offer and "m=video" not in offer
        assert "extmap" not in offer
        with pytest.raises(SipMediaError, match="negotiated already"):
            await media.browser_offer()
        await media.browser_answered(await browser.answer(offer))
        with pytest.raises(SipMediaError, match="no offer"):
            await media.browser_answered("v=0\r\n")
        media.sip_answer(phone.sdp())
        phone.remote = ("127.0.0.1", media.describe()["sip"]["local_port"])
        await phone.play_tone(PHONE_TONE, 8.0)
        recorded, rate = read_wav(await phone.record(2.0))
        assert abs(peak_frequency(recorded, rate) - BROWSER_TONE) < TOLERANCE
        await wait_for(lambda: len(browser.recording()) > 2 * browser.rate)
        assert abs(peak_frequency(browser.recording(1.5), browser.rate) - PHONE_TONE) < TOLERANCE
    finally:
        await media.close()
        await browser.close()
        await phone.close()
        transcoders.close()


async def test_a_browser_answer_without_audio_is_a_sip_media_error() -> None:
    core = MediaCore(native.rtp_module(), native.rtcp_module(), native.track_module())
    registry = StreamRegistry()
    media = CallMedia(core, Transcoders(core.track, core.rtp), SipMediaSettings(), call_id="x", has_video=False,
                      claim=registry.claim, release=registry.release, on_dtmf=lambda d: None,
                      on_timeout=lambda: None)
    try:
        offer = await media.browser_offer()
        client = RTCPeerConnection()
        await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await client.setLocalDescription(await client.createAnswer())
        rejected = client.localDescription.sdp.replace("a=rtpmap:96 opus/48000/2", "a=rtpmap:96 PCMU/8000")
        with pytest.raises(SipMediaError):
            await media.browser_answered(rejected)
        await client.close()
    finally:
        await media.close()


async def test_python_twins_bridge_a_call_too(setup: Callable[..., Any]) -> None:
    """A server on --python-core: the SIP leg's rewriting and ingest run on the readable twins."""
    call, _digits, _timeouts = await setup("PCMU", python_core=True)
    assert native.is_twin(call.media.core.rtp)
    await call.phone.play_tone(PHONE_TONE, 6.0)
    recorded, rate = read_wav(await call.phone.record(2.0))
    assert abs(peak_frequency(recorded, rate) - BROWSER_TONE) < TOLERANCE
    await wait_for(lambda: len(call.browser.recording()) > 2 * call.browser.rate)
    assert abs(peak_frequency(call.browser.recording(1.5), call.browser.rate) - PHONE_TONE) < TOLERANCE


async def test_a_reinvite_to_another_codec_rewires_the_call(setup: Callable[..., Any]) -> None:
    call, _digits, _timeouts = await setup("PCMU")
    await wait_for(lambda: len(call.phone.received) > 10)
    old = call.media.audio_transcoders
    assert len(old) == 2
    call.phone.codec = "opus"  # the phone's re-INVITE offers Opus only now
    answer = call.media.sip_answer(call.phone.sdp())
    assert "opus/48000/2" in answer and "PCMU" not in answer
    assert call.media.audio_transcoders == [] and not call.media.transcoding
    assert all(t.join(5) for t in old)  # the transcoders' threads ended
    await call.phone.play_tone(PHONE_TONE, 6.0)
    recorded, rate = read_wav(await call.phone.record(2.0))
    assert abs(peak_frequency(recorded, rate) - BROWSER_TONE) < TOLERANCE
    before = len(call.browser.recording())
    await wait_for(lambda: len(call.browser.recording()) > before + 2 * call.browser.rate)
    assert abs(peak_frequency(call.browser.recording(1.5), call.browser.rate) - PHONE_TONE) < TOLERANCE
    # Another RTP clock, another SSRC (RFC 7160); each numbered without a gap.
    packets = [rtp_fields(p) for p in call.phone.received]
    ssrcs = list(dict.fromkeys(p[4] for p in packets))
    assert len(ssrcs) == 2
    for ssrc in ssrcs:
        seqs = [p[2] for p in packets if p[4] == ssrc]
        assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))


async def test_a_real_phones_rfc2833_digits_are_reported_once_each(setup: Callable[..., Any]) -> None:
    """SIPp's captures of a phone's digits (with the phone's own quirks: the three end packets share a
    sequence number), replayed from the phone's port at their captured pace."""
    from tests.support.rtp_phone import pcap_udp_payloads

    call, digits, _timeouts = await setup("PCMU")
    names = {"1": "1", "5": "5", "star": "*", "pound": "#", "0": "0"}
    for name in names:
        packets = pcap_udp_payloads(Path(f"/usr/share/sip-tester/dtmf_2833_{name}.pcap"))
        start = packets[0][0]
        began = asyncio.get_running_loop().time()
        for at, packet in packets:
            await asyncio.sleep(max(0.0, began + at - start - asyncio.get_running_loop().time()))
            call.phone.send(packet)
        await asyncio.sleep(0.1)
    await wait_for(lambda: len(digits) >= len(names))
    await asyncio.sleep(0.3)
    assert digits == list(names.values())
    assert call.sip["dtmf_received"] == len(names)


async def test_hostile_sdp_in_a_running_call_is_refused_and_the_call_goes_on(setup: Callable[..., Any]) -> None:
    call, _digits, _timeouts = await setup("PCMU")
    await wait_for(lambda: len(call.phone.received) > 10)
    bad = ["", "v=0\r\n" + "a=x\r\n" * 5000, call.phone.sdp().replace("RTP/AVP 0 101", "RTP/AVP 18"),
           call.phone.sdp().replace("c=IN IP4 127.0.0.1", "c=IN IP4 evil.example"),
           call.phone.sdp().replace("RTP/AVP", "RTP/SAVP"), call.phone.sdp().replace("m=audio", "m=video")]
    for sdp in bad:
        with pytest.raises(SipMediaError):
            call.media.sip_answer(sdp)
        with pytest.raises(SipMediaError):
            call.media.sip_answered(sdp)
    with pytest.raises(ValueError):
        call.media.sip_offer("sideways")
    with pytest.raises(ValueError):
        call.media.send_dtmf("12X")
    assert call.sip["codec"] == "PCMU" and call.sip["remote_direction"] == "sendrecv"
    before = len(call.phone.received)
    await wait_for(lambda: len(call.phone.received) > before + 25)  # still sending, to the same place
    assert call.phone.sources == {("127.0.0.1", call.sip["local_port"])}
    await call.media.close()
    await call.media.close()  # idempotent
    with pytest.raises(SipMediaError, match="ended"):
        call.media.sip_offer()


async def test_the_browser_leaving_ends_the_calls_media(setup: Callable[..., Any]) -> None:
    call, _digits, timeouts = await setup("PCMU")
    await wait_for(lambda: call.media.describe()["browser"]["connected"])
    await call.browser.close()  # the tab is gone: DTLS close_notify, ICE stops
    await wait_for(lambda: timeouts == [True], 40)
    await asyncio.sleep(0.3)
    assert timeouts == [True]  # once


async def test_a_reinvite_to_another_g711_law_gives_new_transcoders(setup: Callable[..., Any]) -> None:
    """PCMU -> PCMA: both transcoders are made anew; the browser's audio goes on at the same frequency
    (the new transcoder's output is a new source its rewriter continues from, not a jump back in time)."""
    call, _digits, _timeouts = await setup("PCMU")
    await call.phone.play_tone(PHONE_TONE, 2.0)
    await wait_for(lambda: len(call.browser.recording()) > call.browser.rate)
    await call.phone.wait_senders()
    old = call.media.audio_transcoders
    call.phone.codec = "PCMA"
    assert "PCMA/8000" in call.media.sip_answer(call.phone.sdp())
    assert [(t.source.name, t.target.name) for t in call.media.audio_transcoders] == \
        [("opus", "PCMA"), ("PCMA", "opus")]
    assert all(t.join(5) for t in old)
    await call.phone.play_tone(PHONE_TONE * 1.5, 6.0)
    before = len(call.browser.recording())
    await wait_for(lambda: len(call.browser.recording()) > before + 2 * call.browser.rate)
    assert abs(peak_frequency(call.browser.recording(1.5), call.browser.rate) - PHONE_TONE * 1.5) < TOLERANCE
    recorded, rate = read_wav(await call.phone.record(2.0))
    assert abs(peak_frequency(recorded, rate) - BROWSER_TONE) < TOLERANCE
