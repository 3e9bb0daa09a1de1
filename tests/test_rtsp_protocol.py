"""The sans-IO RTSP server protocol (media.rtsp_protocol): parsing at every byte boundary, interleaved
frames among requests, limits, garbage, Transport headers, SDP, Basic/Digest and the session rules."""

from __future__ import annotations

import base64
import random

import pytest

from media.rtsp_protocol.auth import Authenticator, digest_response, parse_auth_params
from media.rtsp_protocol.parser import (
    MAX_BODY,
    MAX_HEADERS,
    MAX_REQUEST_LINE,
    Event,
    InterleavedFrame,
    ParseError,
    Request,
    RequestParser,
    response,
)
from media.rtsp_protocol.sdp import SdpTrack, build_sdp
from media.rtsp_protocol.session import PLAYING, READY, RtspError, SessionMachine, parse_target
from media.rtsp_protocol.transport import Transport, UnsupportedTransport, parse_transport, transport_reply

DESCRIBE = b"DESCRIBE rtsp://127.0.0.1:554/cam1 RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n"
SET_PARAMETER = b"SET_PARAMETER rtsp://h/cam1 RTSP/1.0\r\nCSeq: 3\r\nContent-Length: 5\r\n\r\nhello"
FRAME = b"$\x01\x00\x04\x80\xc9\x00\x01"
STREAM = DESCRIBE + FRAME + SET_PARAMETER + b"$\x00\x00\x00" + DESCRIBE


def summary(events: list[Event]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for event in events:
        if isinstance(event, Request):
            out.append((event.method, (event.uri, event.cseq, event.body)))
        elif isinstance(event, InterleavedFrame):
            out.append(("$", (event.channel, event.data)))
        else:
            out.append(("error", event.status))
    return out


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[Event]:
    parser = RequestParser()
    events: list[Event] = []
    last = 0
    for cut in sorted(cuts) + [len(data)]:
        events += parser.feed(data[last:cut])
        last = cut
    return events


def test_requests_and_interleaved_frames_come_out_whole_at_any_split() -> None:
    expected = summary(RequestParser().feed(STREAM))
    assert expected == [
        ("DESCRIBE", ("rtsp://127.0.0.1:554/cam1", "2", b"")),
        ("$", (1, b"\x80\xc9\x00\x01")),
        ("SET_PARAMETER", ("rtsp://h/cam1", "3", b"hello")),
        ("$", (0, b"")),
        ("DESCRIBE", ("rtsp://127.0.0.1:554/cam1", "2", b"")),
    ]
    for cut in range(len(STREAM) + 1):  # every single split point
        assert summary(feed_in_pieces(STREAM, [cut])) == expected, cut
    rng = random.Random(7)
    for _ in range(300):
        cuts = rng.sample(range(len(STREAM)), rng.randint(2, 12))
        assert summary(feed_in_pieces(STREAM, cuts)) == expected
    assert summary(feed_in_pieces(STREAM, list(range(len(STREAM))))) == expected  # byte by byte


def test_headers_are_case_insensitive_and_bare_newlines_are_taken() -> None:
    [request] = RequestParser().feed(b"OPTIONS * RTSP/1.0\ncseq: 9\nsession: ABC;timeout=60\n\n")
    assert isinstance(request, Request)
    assert request.cseq == "9" and request.session_id == "ABC" and request.header("CSEQ") == "9"


@pytest.mark.parametrize("data, status", [
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS client hello
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # HTTP, not RTSP
    (b"DESCRIBE rtsp://h/cam1 RTSP/2.0\r\nCSeq: 1\r\n\r\n", 505),
    (b"DESCRIBE rtsp://h/cam1\r\nCSeq: 1\r\n\r\n", 400),  # no version
    (b"DESCRIBE rtsp://h/cam1 RTSP/1.0\r\nno colon here\r\n\r\n", 400),
    (b"DESCRIBE rtsp://h/cam1 RTSP/1.0\r\nCSeq: 1\r\nContent-Length: -5\r\n\r\n", 400),
    (b"DESCRIBE rtsp://h/cam1 RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 99999999999999999999\r\n\r\n", 413),
    (b"DESCRIBE rtsp://h/cam1 RTSP/1.0\r\nCSeq: 1\r\nContent-Length: " + str(MAX_BODY + 1).encode() + b"\r\n\r\n",
     413),
])
def test_bad_input_is_one_clear_error_and_the_parser_stops(data: bytes, status: int) -> None:
    parser = RequestParser()
    events = parser.feed(data)
    assert [e.status for e in events if isinstance(e, ParseError)] == [status]
    assert parser.broken
    assert parser.feed(DESCRIBE) == []  # the framing is lost: nothing more is taken


def test_an_error_keeps_the_cseq_when_it_was_readable() -> None:
    [error] = RequestParser().feed(b"DESCRIBE rtsp://h/cam1 RTSP/2.0\r\nCSeq: 17\r\n\r\n")
    assert isinstance(error, ParseError) and error.cseq == "17"


def test_an_endless_request_line_is_refused_without_growing() -> None:
    parser = RequestParser()
    events: list[Event] = []
    chunk = b"DESCRIBE rtsp://h/" + b"a" * 1000
    for _ in range(10):
        events += parser.feed(chunk)
        if events:
            break
    assert [e.status for e in events if isinstance(e, ParseError)] == [414]
    assert len(parser._buf) == 0
    assert MAX_REQUEST_LINE < 10 * len(chunk)


def test_too_many_headers_or_header_bytes_are_refused_before_the_end_of_the_head() -> None:
    parser = RequestParser()
    head = b"DESCRIBE rtsp://h/cam1 RTSP/1.0\r\n" + b"X-A: b\r\n" * (MAX_HEADERS + 1)
    [error] = parser.feed(head)  # no empty line yet: refused anyway
    assert isinstance(error, ParseError) and error.status == 431
    parser = RequestParser()
    events = parser.feed(b"DESCRIBE rtsp://h/cam1 RTSP/1.0\r\nX-Big: " + b"x" * 40000)
    assert [e.status for e in events if isinstance(e, ParseError)] == [431]


def test_a_huge_content_length_is_refused_at_once_not_buffered() -> None:
    parser = RequestParser()
    [error] = parser.feed(b"SET_PARAMETER rtsp://h/cam1 RTSP/1.0\r\nCSeq: 4\r\nContent-Length: 2000000000\r\n\r\n")
    assert isinstance(error, ParseError) and error.status == 413 and error.cseq == "4"
    assert parser.feed(b"x" * 100000) == [] and len(parser._buf) == 0


def test_random_garbage_never_raises() -> None:
    rng = random.Random(1)
    for _ in range(500):
        parser = RequestParser()
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        pieces = [data[i:i + 7] for i in range(0, len(data), 7)]
        for piece in pieces:
            for event in parser.feed(piece):
                assert isinstance(event, Request | InterleavedFrame | ParseError)


def test_responses_serialize_with_cseq_and_length() -> None:
    data = response(200, "5", [("Public", "OPTIONS")], b"v=0\r\n")
    assert data == (b"RTSP/1.0 200 OK\r\nCSeq: 5\r\nServer: streaming\r\nPublic: OPTIONS\r\n"
                    b"Content-Length: 5\r\n\r\nv=0\r\n")
    assert response(455, "1").startswith(b"RTSP/1.0 455 Method Not Valid in This State\r\n")
    with pytest.raises(ValueError):
        response(200, "1", [("X", "a\r\nInjected: 1")])


def test_targets() -> None:
    target = parse_target("rtsp://127.0.0.1:8554/cam1/trackID=1?token=a%20b")
    assert target is not None and (target.name, target.track, target.query) == ("cam1", 1, {"token": "a b"})
    assert parse_target("rtsp://h/cam1/") is not None
    for bad in ("*", "rtsp://h/", "rtsp://h/a/b/c", "rtsp://h/cam1/stream=1", "http://h/cam1"):
        assert parse_target(bad) is None, bad


def test_transports() -> None:
    assert parse_transport("RTP/AVP;unicast;client_port=5000-5001") == Transport(False, (5000, 5001))
    assert parse_transport("RTP/AVP/UDP;unicast;client_port=5000") == Transport(False, (5000, 5001))
    assert parse_transport("RTP/AVP/TCP;unicast;interleaved=2-3") == Transport(True, None, (2, 3))
    assert parse_transport("RTP/AVP/TCP;unicast") == Transport(True)
    # The first one we serve of a list.
    assert parse_transport("RTP/SAVP;unicast;client_port=1-2,RTP/AVP/TCP;interleaved=0-1").tcp
    for bad in ("RTP/AVP;multicast", "RTP/AVP;unicast", "RTP/AVP;unicast;client_port=x-y",
                "RTP/AVP/TCP;interleaved=300-301", "RTP/AVP;unicast;client_port=5000-5001;mode=record",
                "RAW/RAW/UDP;unicast;client_port=1-2", ""):
        with pytest.raises(UnsupportedTransport):
            parse_transport(bad)
    assert transport_reply(Transport(False, (5000, 5001)), 0xABC, (6000, 6001)) == \
        "RTP/AVP;unicast;client_port=5000-5001;server_port=6000-6001;ssrc=00000ABC"
    assert transport_reply(Transport(True, None, (0, 1)), 1, None) == \
        "RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=00000001"


def test_sdp_carries_rtpmap_and_fmtp_with_parameter_sets() -> None:
    sps = bytes.fromhex("6742c01fd90141fa10")
    pps = bytes.fromhex("68cb8cb2")
    sdp = build_sdp("cam1", [SdpTrack("video", "H264", 102, 90000, sps=sps, pps=pps),
                             SdpTrack("video", "VP8", 96, 90000),
                             SdpTrack("audio", "opus", 111, 48000)], 1, "127.0.0.1")
    lines = sdp.split("\r\n")
    assert "a=rtpmap:102 H264/90000" in lines
    fmtp = next(line for line in lines if line.startswith("a=fmtp:102 "))
    assert "packetization-mode=1" in fmtp and "profile-level-id=42C01F" in fmtp
    assert f"sprop-parameter-sets={base64.b64encode(sps).decode()},{base64.b64encode(pps).decode()}" in fmtp
    assert "a=rtpmap:96 VP8/90000" in lines and "a=rtpmap:111 opus/48000/2" in lines
    assert [line for line in lines if line.startswith("a=control:")] == [
        "a=control:*", "a=control:trackID=0", "a=control:trackID=1", "a=control:trackID=2"]
    # Without parameter sets yet: the publisher's profile, and no sprop (players take them in-band).
    sdp = build_sdp("cam1", [SdpTrack("video", "H264", 102, 90000, profile_level_id="42e01f")], 1)
    assert "a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n" in sdp and "sprop" not in sdp


# --- authentication ----------------------------------------------------------------------------------

def test_digest_matches_the_rfc_2617_example() -> None:
    # RFC 2617 section 3.5.
    assert digest_response("Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html",
                           "dcd98b7102dd2f0e8b11d0f600bfb0c093", "auth", "00000001",
                           "0a4f113b") == "6629fae49393a05397450978507c4ef1"
    # RFC 2069 style (no qop): MD5(HA1:nonce:HA2), computed independently.
    import hashlib

    ha1 = hashlib.md5(b"Mufasa:testrealm@host.com:Circle Of Life").hexdigest()
    ha2 = hashlib.md5(b"GET:/dir/index.html").hexdigest()
    assert digest_response("Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html",
                           "dcd98b7102dd2f0e8b11d0f600bfb0c093") == \
        hashlib.md5(f"{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:{ha2}".encode()).hexdigest()


def test_auth_params_with_quotes_and_commas() -> None:
    params = parse_auth_params('username="Mufasa", realm="a, b", nonce=abc, uri="rtsp://h/x?a=1"')
    assert params == {"username": "Mufasa", "realm": "a, b", "nonce": "abc", "uri": "rtsp://h/x?a=1"}


def digest_header(auth: Authenticator, connection: str, user: str, password: str, method: str, uri: str,
                  qop: bool = False) -> str:
    nonce = auth.nonce(connection)
    if qop:
        value = digest_response(user, auth.realm, password, method, uri, nonce, "auth", "00000001", "c0ffee")
        return (f'Digest username="{user}", realm="{auth.realm}", nonce="{nonce}", uri="{uri}", '
                f'qop=auth, nc=00000001, cnonce="c0ffee", response="{value}"')
    value = digest_response(user, auth.realm, password, method, uri, nonce)
    return f'Digest username="{user}", realm="{auth.realm}", nonce="{nonce}", uri="{uri}", response="{value}"'


def test_digest_authenticator() -> None:
    auth = Authenticator("digest", {"alice": "s3cret"})
    assert 'nonce="' in auth.challenge("c1") and auth.challenge("c1").startswith("Digest ")
    uri = "rtsp://127.0.0.1/cam1"
    for qop in (False, True):
        header = digest_header(auth, "c1", "alice", "s3cret", "DESCRIBE", uri, qop)
        assert auth.check(header, "DESCRIBE", "c1") == "alice"
    assert auth.check(digest_header(auth, "c1", "alice", "wrong", "DESCRIBE", uri), "DESCRIBE", "c1") is None
    assert auth.check(digest_header(auth, "c1", "bob", "s3cret", "DESCRIBE", uri), "DESCRIBE", "c1") is None
    # Signed for another method, or with the nonce of another connection.
    assert auth.check(digest_header(auth, "c1", "alice", "s3cret", "DESCRIBE", uri), "PLAY", "c1") is None
    assert auth.check(digest_header(auth, "c2", "alice", "s3cret", "DESCRIBE", uri), "DESCRIBE", "c1") is None
    assert auth.check("Basic " + base64.b64encode(b"alice:s3cret").decode(), "DESCRIBE", "c1") is None
    assert auth.check(None, "DESCRIBE", "c1") is None
    assert auth.check("Digest garbage,,,=", "DESCRIBE", "c1") is None


def test_basic_authenticator() -> None:
    auth = Authenticator("basic", {"alice": "s3cret"})
    assert auth.challenge("c") == 'Basic realm="streaming"'
    assert auth.check("Basic " + base64.b64encode(b"alice:s3cret").decode(), "PLAY", "c") == "alice"
    assert auth.check("Basic " + base64.b64encode(b"alice:nope").decode(), "PLAY", "c") is None
    assert auth.check("Basic !!!notbase64", "PLAY", "c") is None


# --- the session machine -----------------------------------------------------------------------------

def req(method: str, uri: str = "rtsp://h/cam1", session: str | None = None) -> Request:
    headers = [("CSeq", "1")] + ([("Session", session)] if session else [])
    return Request(method, uri, headers)


def target(uri: str) -> object:
    found = parse_target(uri)
    assert found is not None
    return found


def status_of(call: object) -> int:
    with pytest.raises(RtspError) as info:
        call()  # type: ignore[operator]
    return info.value.status


def test_session_rules() -> None:
    machine = SessionMachine(timeout=60)
    udp = Transport(False, (5000, 5001))
    tcp = Transport(True)
    t0 = parse_target("rtsp://h/cam1/trackID=0")
    t1 = parse_target("rtsp://h/cam1/trackID=1")
    other = parse_target("rtsp://h/cam2/trackID=0")
    aggregate = parse_target("rtsp://h/cam1")
    assert t0 and t1 and other and aggregate
    # PLAY, PAUSE and TEARDOWN before any SETUP: not valid in this state.
    for method in ("PLAY", "PAUSE", "TEARDOWN"):
        assert status_of(lambda m=method: getattr(machine, m.lower())(req(m), *(
            [aggregate, 0.0] if m == "PLAY" else [0.0]))) == 455
    # A session id this connection did not make.
    assert status_of(lambda: machine.play(req("PLAY", session="NOPE"), aggregate, 0.0)) == 454
    assert status_of(lambda: machine.setup(req("SETUP", session="NOPE"), t0, udp, 0.0, set())) == 454
    assert status_of(lambda: machine.setup(req("SETUP"), aggregate, udp, 0.0, set())) == 459
    session, chosen = machine.setup(req("SETUP"), t0, tcp, 0.0, set())
    assert chosen.interleaved == (0, 1) and session.state == READY
    # The same track twice, or a track of another stream in the session.
    assert status_of(lambda: machine.setup(req("SETUP", session=session.id), t0, udp, 0.0, set())) == 455
    assert status_of(lambda: machine.setup(req("SETUP", session=session.id), other, udp, 0.0, set())) == 459
    # Interleaved channels already taken on the connection.
    assert status_of(lambda: machine.setup(req("SETUP", session=session.id), t1, Transport(True, None, (0, 1)),
                                           0.0, {0, 1})) == 461
    _same, second = machine.setup(req("SETUP", session=session.id), t1, tcp, 0.0, {0, 1})
    assert second.interleaved == (2, 3)
    assert machine.play(req("PLAY", session=session.id), aggregate, 1.0).state == PLAYING
    assert status_of(lambda: machine.setup(req("SETUP", session=session.id), t1, tcp, 1.0, set())) == 455
    assert machine.pause(req("PAUSE", session=session.id), 2.0).state == READY
    assert machine.play(req("PLAY", session=session.id), aggregate, 3.0).state == PLAYING
    assert machine.session_header(session) == f"{session.id};timeout=60"
    # Another connection's machine does not know this session.
    assert status_of(lambda: SessionMachine(60).play(req("PLAY", session=session.id), aggregate, 0.0)) == 454
    machine.teardown(req("TEARDOWN", session=session.id), 4.0)
    assert status_of(lambda: machine.play(req("PLAY", session=session.id), aggregate, 5.0)) == 454


def test_sessions_expire_without_activity() -> None:
    machine = SessionMachine(timeout=10)
    t0 = parse_target("rtsp://h/cam1/trackID=0")
    assert t0
    session, _ = machine.setup(req("SETUP"), t0, Transport(True), 100.0, set())
    machine.find(req("GET_PARAMETER", session=session.id), 108.0, required=False, method="GET_PARAMETER")
    assert machine.expired(115.0) == []  # the keep-alive at 108 counts
    assert [s.id for s in machine.expired(118.5)] == [session.id]
    assert machine.sessions == {}
