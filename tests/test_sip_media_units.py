"""The sans-I/O parts of the SIP call media: the SIP leg's SDP (parsed, checked, built; hostile input is a
clear error), RFC 4733 events sent and received, and the audio transcoder on its own thread."""

from __future__ import annotations

import asyncio
import random
import struct
import threading

import av
import numpy as np
import pytest

from media import sip_dtmf, sip_sdp
from media.sip_audio import CODECS, AudioTranscoder
from media.sip_media import SipMediaSettings, _answer_direction
from tests.support.rtp_phone import peak_frequency, sdp_of

BASIC = sdp_of("PCMU", 4000)


def test_parse_reads_a_phones_offer() -> None:
    sdp = sip_sdp.parse(
        "v=0\r\no=x 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
        "m=audio 5004 RTP/AVP 9 8 0 96 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\na=rtcp:6000\r\na=ptime:20\r\na=sendonly\r\n"
        "m=video 5006 RTP/AVP 97\r\nc=IN IP4 10.0.0.2\r\na=rtpmap:97 H264/90000\r\n"
        "a=fmtp:97 profile-level-id=42e01f;packetization-mode=1\r\n")
    audio, video = sdp.media
    assert [audio.codecs[pt].name for pt in audio.formats] == ["G722", "PCMA", "PCMU", "opus", "telephone-event"]
    assert (audio.address, audio.port, audio.rtcp_port, audio.direction, audio.ptime) == \
        ("10.0.0.1", 5004, 6000, "sendonly", 20)
    codec, dtmf = sip_sdp.choose_audio(audio, ("opus", "PCMU"))
    assert (codec.name, codec.payload_type) == ("PCMU", 0)  # the offerer's order, among what we take
    assert dtmf is not None and dtmf.payload_type == 101
    assert sip_sdp.choose_audio(audio, ("G722", "opus"))[0].name == "G722"
    assert video.address == "10.0.0.2" and sip_sdp.choose_video(video) is not None


def test_session_level_direction_and_static_types_without_rtpmap() -> None:
    sdp = sip_sdp.parse("v=0\r\nc=IN IP4 127.0.0.1\r\na=inactive\r\nm=audio 7000 RTP/AVP 8\r\n")
    assert sdp.media[0].direction == "inactive"
    assert sip_sdp.choose_audio(sdp.media[0], ("PCMA",))[0].clock_rate == 8000


@pytest.mark.parametrize("sdp, reason", [
    ("", "empty"),
    ("hello", "v=0"),
    ("v=0\r\nc=IN IP4 127.0.0.1\r\n", "no media"),
    ("v=0\r\nm=audio 7000 RTP/AVP 0\r\n", "no connection address"),
    ("v=0\r\nc=IN IP4 example.com\r\nm=audio 7000 RTP/AVP 0\r\n", "not an IP address"),
    ("v=0\r\nc=IN IP6 127.0.0.1\r\nm=audio 7000 RTP/AVP 0\r\n", "not IP6"),
    ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 99999 RTP/AVP 0\r\n", "media port"),
    ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 7000 RTP/AVP 300\r\n", "payload type"),
    ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio x RTP/AVP 0\r\n", "not a number"),
    ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 7000 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n", "bad rtpmap"),
    ("v=0\r\nc=IN IP4 127.0.0.1\r\n" + "m=audio 7000 RTP/AVP 0\r\n" * 9, "media sections"),
    ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 7000 RTP/AVP " + " ".join(["0"] * 40) + "\r\n", "formats"),
    ("v=0\r\n" + "a=x\r\n" * 300, "lines"),
    ("v=0\r\n" + "a=" + "x" * 20000, "larger"),
    ("v=0\r\nthis is not sdp\r\n", "bad SDP line"),
])
def test_bad_sdp_is_a_clear_error(sdp: str, reason: str) -> None:
    with pytest.raises(sip_sdp.SdpError, match=reason):
        sip_sdp.parse(sdp)


def test_no_common_codec_and_secure_profiles_are_refused() -> None:
    g729 = sip_sdp.parse("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 7000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n")
    with pytest.raises(sip_sdp.SdpError, match="no audio codec in common.*G729"):
        sip_sdp.choose_audio(g729.media[0], ("PCMU",))
    srtp = sip_sdp.parse("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 7000 RTP/SAVP 0\r\n")
    with pytest.raises(sip_sdp.SdpError, match="RTP/SAVP"):
        sip_sdp.choose_audio(srtp.media[0], ("PCMU",))
    mono_opus = sip_sdp.parse("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 7000 RTP/AVP 96\r\na=rtpmap:96 opus/48000\r\n")
    with pytest.raises(sip_sdp.SdpError):  # RFC 7587: opus is always opus/48000/2
        sip_sdp.choose_audio(mono_opus.media[0], ("opus",))


def test_fuzzed_sdp_only_ever_raises_sdp_error() -> None:
    rng = random.Random(4733)
    pieces = BASIC.split("\r\n") + ["m=video 0 RTP/AVP", "a=rtpmap:", "c=IN IP4 ::1", "a=rtcp:0", "m=", "a=fmtp:1"]
    for _ in range(3000):
        lines = [rng.choice(pieces) for _ in range(rng.randrange(1, 12))]
        if rng.random() < 0.3:
            lines = ["v=0", *lines]
        text = "\r\n".join(lines)
        if rng.random() < 0.3:
            cut = rng.randrange(len(text) + 1)
            text = text[:cut] + chr(rng.randrange(32, 0x3000)) + text[cut:]
        try:
            parsed = sip_sdp.parse(text)
        except sip_sdp.SdpError:
            continue
        for media in parsed.media:
            if media.kind == "audio" and not media.rejected:
                try:
                    sip_sdp.choose_audio(media, ("opus", "PCMU", "PCMA", "G722"))
                except sip_sdp.SdpError:
                    pass


def test_build_round_trips_and_bumps_the_version() -> None:
    origin = sip_sdp.Origin(1234)
    offer = sip_sdp.MediaOffer("audio", 20000, (sip_sdp.CATALOG["opus"], sip_sdp.CATALOG["pcmu"],
                                                sip_sdp.CATALOG["telephone-event"]), "sendonly", ptime=20)
    first = sip_sdp.build(origin, "192.0.2.7", [offer])
    second = sip_sdp.build(origin, "192.0.2.7", [offer])
    assert "o=- 1234 1 IN IP4 192.0.2.7" in first and "o=- 1234 2 IN IP4 192.0.2.7" in second
    parsed = sip_sdp.parse(first).media[0]
    assert (parsed.port, parsed.rtcp_port, parsed.direction, parsed.address) == (20000, 20001, "sendonly", "192.0.2.7")
    assert [parsed.codecs[pt].name for pt in parsed.formats] == ["opus", "PCMU", "telephone-event"]
    rejected = sip_sdp.build(origin, "::1", [sip_sdp.MediaOffer("image", 0, (), proto="udptl")])
    assert "m=image 0 udptl 0" in rejected and "c=IN IP6 ::1" in rejected


@pytest.mark.parametrize("wanted, offered, answer", [
    ("sendrecv", "sendrecv", "sendrecv"), ("sendrecv", "sendonly", "recvonly"),
    ("sendrecv", "recvonly", "sendonly"), ("sendrecv", "inactive", "inactive"),
    ("sendonly", "sendrecv", "sendonly"), ("sendonly", "sendonly", "inactive"),
    ("inactive", "sendrecv", "inactive"),
])
def test_answer_direction(wanted: str, offered: str, answer: str) -> None:
    assert _answer_direction(wanted, offered) == answer


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="port range"):
        SipMediaSettings(port_min=30000, port_max=20000)
    with pytest.raises(ValueError, match="codecs"):
        SipMediaSettings(codecs=("G729",))
    with pytest.raises(ValueError, match="rtp_timeout"):
        SipMediaSettings(rtp_timeout=0)


# -- RFC 4733 ----------------------------------------------------------------------------------------


def test_dtmf_sender_makes_events_of_rfc_4733_shape() -> None:
    sender = sip_dtmf.DtmfSender(8000)
    sender.send("4d", 100)
    packets: list[sip_dtmf.EventPacket] = []
    now = 10.0
    while sender.active:
        packets += sender.due(now)
        now += 0.02
    assert sender.events_sent == 2
    by_event: dict[int, list[tuple[int, int, int]]] = {}
    for packet in packets:
        code, flags, duration = struct.unpack("!BBH", packet.payload)
        by_event.setdefault(packet.timestamp, []).append((code, flags, duration))
        assert packet.marker == (len(by_event[packet.timestamp]) == 1)
    first, second = by_event.values()
    assert [c for c, _f, _d in first] == [4] * 7 and [c for c, _f, _d in second] == [15] * 7
    for event in (first, second):
        assert [d for _c, _f, d in event] == [160, 320, 480, 640, 800, 800, 800]
        assert [bool(f & 0x80) for _c, f, _d in event] == [False] * 4 + [True] * 3
        assert all(f & 0x3F == sip_dtmf.VOLUME for _c, f, _d in event)
    start1, start2 = by_event
    assert (start2 - start1) / 8000 >= 0.1 + sip_dtmf.PAUSE - 0.001  # the second starts after a pause


@pytest.mark.parametrize("digits, duration", [("12x", 100), ("", 100), ("1", 10), ("1", 10_000), ("9" * 65, 100)])
def test_dtmf_sender_refuses_what_is_not_dtmf(digits: str, duration: int) -> None:
    with pytest.raises(ValueError):
        sip_dtmf.DtmfSender().send(digits, duration)


def test_dtmf_duration_fits_the_event_clock() -> None:
    sip_dtmf.DtmfSender(48000).send("1", 1365)
    with pytest.raises(ValueError, match="at most 1365 ms at a 48000 Hz"):
        sip_dtmf.DtmfSender(48000).send("1", 2000)


def test_dtmf_receiver_reports_each_event_once() -> None:
    receiver = sip_dtmf.DtmfReceiver()
    got: list[str] = []
    for ts, code in ((100, 1), (900, 11)):
        for end, duration in ((False, 160), (False, 320), (True, 400), (True, 400), (True, 400)):
            got += receiver.push(sip_dtmf.payload(code, end, duration), ts)
    got += receiver.push(sip_dtmf.payload(3, False, 160), 2000)  # ends lost
    got += receiver.push(sip_dtmf.payload(16, True, 160), 2500)  # flash: not a digit
    got += receiver.push(b"\x01", 2600)
    got += receiver.push(sip_dtmf.payload(0, True, 160), 3000)
    got += receiver.push(sip_dtmf.payload(1, True, 400), 100)  # a very late copy of the first
    assert got == ["1", "#", "3", "0"]
    assert receiver.junk == 1 and receiver.ignored == 1


def test_dtmf_receiver_survives_random_payloads() -> None:
    rng = random.Random(2833)
    receiver = sip_dtmf.DtmfReceiver()
    for _ in range(5000):
        digits = receiver.push(rng.randbytes(rng.randrange(0, 8)), rng.randrange(1 << 32))
        assert all(d in sip_dtmf.DIGITS for d in digits)


# -- the audio transcoder ----------------------------------------------------------------------------


def _encode_tone(codec: str, frequency: float, seconds: float) -> list[tuple[bytes, int]]:
    spec = CODECS[codec.lower()]
    encoder = av.CodecContext.create(spec.encoder, "w")
    encoder.sample_rate = spec.sample_rate
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.open()
    t = np.arange(int(spec.sample_rate * seconds)) / spec.sample_rate
    pcm = (np.sin(2 * np.pi * frequency * t) * 12000).astype(np.int16)
    out = []
    n = spec.frame_samples
    for k, start in enumerate(range(0, len(pcm) - n + 1, n)):
        frame = av.AudioFrame.from_ndarray(pcm[start:start + n].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = spec.sample_rate
        frame.pts = start
        out += [(bytes(p), k * spec.frame_ticks) for p in encoder.encode(frame)]
    return out


def _decode(codec: str, payloads: list[tuple[bytes, int]]) -> np.ndarray:
    spec = CODECS[codec.lower()]
    decoder = av.CodecContext.create(spec.decoder, "r")
    decoder.sample_rate = spec.sample_rate
    decoder.layout = "stereo" if spec.channels == 2 else "mono"
    chunks = []
    for payload, _ts in payloads:
        for frame in decoder.decode(av.Packet(payload)):
            chunks.append(frame.to_ndarray().reshape(-1, spec.channels)[:, 0] if not frame.format.is_planar
                          else frame.to_ndarray()[0])
    return np.concatenate(chunks)


@pytest.mark.parametrize("source, target", [("PCMU", "opus"), ("opus", "PCMA"), ("opus", "G722"), ("G722", "opus")])
async def test_audio_transcoder_keeps_the_tone_and_works_off_the_loop(source: str, target: str) -> None:
    payloads = _encode_tone(source, 600.0, 1.0)
    out: list[tuple[bytes, int]] = []
    threads: set[int] = set()

    def collect(batch: list[tuple[bytes, int]]) -> None:
        threads.add(threading.get_ident())
        out.extend(batch)

    transcoder = AudioTranscoder("test", source, target, collect)
    transcoder.start(asyncio.get_running_loop())
    gap_at = len(payloads) // 2
    for k, (payload, ts) in enumerate(payloads):
        if k == gap_at:  # two packets lost: silence fills them, timestamps stay on the input's clock
            continue
        if k == gap_at + 1:
            continue
        transcoder.push(payload, ts)
        await asyncio.sleep(0.002)
    async with asyncio.timeout(10):
        while len(out) < len(payloads) - 3:
            await asyncio.sleep(0.02)
    transcoder.close()
    assert transcoder.join(5)
    spec = CODECS[target.lower()]
    assert threads == {threading.get_ident()}  # results come back on the loop
    assert transcoder.thread.ident not in threads  # the codec work ran elsewhere
    steps = {b[1] - a[1] for a, b in zip(out, out[1:], strict=False)}
    assert steps == {spec.frame_ticks}
    assert transcoder.stats.silence_filled > 0
    assert abs(peak_frequency(_decode(target, out), spec.sample_rate) - 600.0) < 10
