"""Randomized hostile input for the SIP stack: mutations of real messages and random bytes never raise
anything but ParseError / FramingError, never make the Endpoint raise, and what parses serializes to
something that parses the same."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sip.endpoint import Endpoint
from sip.framing import FramingError, StreamFramer
from sip.message import ParseError, Request, parse
from sip.transaction import Peer, ServerTransaction
from sip.uri import UriError, target_uri
from tests.support.wire_fuzz import BOUNDED
from tests.test_sip_protocol import INVITE

SEEDS = [
    INVITE,
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\n"
    b"Call-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:b@h>\r\nContent-Length: 0\r\n\r\n",
    b"BYE sip:b@h SIP/2.0\r\nVia: SIP/2.0/TCP [::1]:5060;branch=z9hG4bKy;rport\r\nFrom: a <sip:a@h>;tag=1\r\n"
    b"To: <sip:b@h>;tag=2\r\ni: c\r\nCSeq: 2 BYE\r\nl: 0\r\n\r\n",
]
PEER = Peer("udp", "127.0.0.1", 5099)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        choice = draw(st.integers(0, 3))
        at = draw(st.integers(0, len(data)))
        if choice == 0 and data:
            del data[at:at + draw(st.integers(1, 20))]
        elif choice == 1:
            data[at:at] = draw(st.binary(max_size=30))
        elif choice == 2:
            data[at:at] = draw(st.sampled_from([b"\r\n", b":", b";", b",", b"<", b">", b'"', b" ", b"\r\n ",
                                                b"Content-Length: 99999\r\n", b"Via: SIP/2.0/UDP x\r\n"]))
        elif data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
    return bytes(data)


@BOUNDED
@given(st.one_of(mutated(), st.binary(max_size=400)))
def test_parse_raises_only_parse_error_and_round_trips(data: bytes) -> None:
    try:
        message = parse(data)
    except ParseError:
        return
    again = parse(bytes(message))
    assert type(again) is type(message) and again.body == message.body
    assert again.headers.get_all("Via") == message.headers.get_all("Via")


@BOUNDED
@given(st.lists(st.one_of(mutated(), st.binary(max_size=200)), max_size=5))
def test_endpoint_survives_anything(datagrams: list[bytes]) -> None:
    sent: list[bytes] = []

    def on_request(req: Request, tx: ServerTransaction | None, peer: Peer) -> None:
        if tx is not None:
            from sip.message import response_to
            tx.respond(response_to(req, 200), 0.0)
    endpoint = Endpoint(lambda d, p: sent.append(d), on_request)
    for i, data in enumerate(datagrams):
        endpoint.receive(data, PEER, float(i))
        endpoint.poll(float(i) + 0.5)
    for data in sent:
        parse(data)  # whatever it answers is itself a valid message


@BOUNDED
@given(st.lists(st.one_of(mutated(), st.binary(max_size=100)), max_size=4), st.integers(1, 50))
def test_stream_framer_raises_only_framing_error(chunks: list[bytes], step: int) -> None:
    framer = StreamFramer(max_message=4096)
    data = b"".join(chunks)
    try:
        for at in range(0, len(data), step):
            framer.feed(data[at:at + step])
    except FramingError:
        pass


@BOUNDED
@given(st.text(max_size=80))
def test_target_uri_raises_only_uri_error(text: str) -> None:
    try:
        uri = target_uri(text, "pbx.example.com")
    except UriError:
        return
    assert "\r" not in str(uri) and "\n" not in str(uri)
