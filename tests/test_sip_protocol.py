"""The sans-I/O SIP stack (sip/): message parsing at its limits, URIs, digest answers checked against
RFC 2617's example and kamailio-style challenges, client and server transactions driven by `now`, and
the Endpoint's stateless answers. A UAC and a UAS Endpoint talk to each other in memory, with loss."""

from __future__ import annotations

import hashlib

import pytest

from sip.auth import DigestClient, digest, parse_challenge
from sip.dialog import Dialog
from sip.endpoint import Endpoint
from sip.framing import FramingError, StreamFramer
from sip.message import (
    MAX_HEADER_LINE,
    MAX_MESSAGE,
    ParseError,
    Request,
    Response,
    parse,
    parse_via,
    response_to,
    split_list,
)
from sip.transaction import T1, T2, ClientTransaction, Peer, ServerTransaction
from sip.uri import NameAddr, SipUri, UriError, target_uri

INVITE = (b"INVITE sip:bob@example.com SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKaaa;rport, SIP/2.0/TCP proxy.example.com;branch=z9hG4bKbbb\r\n"
          b"v: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKccc\r\n"
          b"Max-Forwards: 70\r\n"
          b"f: \"Alice, A.\" <sip:alice@example.com>;tag=1928\r\n"
          b"t: <sip:bob@example.com>\r\n"
          b"i: a84b4c76e66710\r\n"
          b"CSeq: 314159 INVITE\r\n"
          b"Subject: a long\r\n  folded\r\n\tsubject\r\n"
          b"m: <sip:alice@10.0.0.1>, <sip:alice@10.0.0.2>\r\n"
          b"c: application/sdp\r\n"
          b"l: 4\r\n\r\nv=0\r\nEXTRA")
UAC = Peer("udp", "127.0.0.1", 5061)
UAS = Peer("udp", "127.0.0.1", 5062)


def request(method: str = "OPTIONS", branch: str = "z9hG4bK1", to_tag: str | None = None, cseq: int = 1) -> Request:
    req = Request(method=method, uri="sip:bob@127.0.0.1:5062")
    req.headers.add("Via", f"SIP/2.0/UDP 127.0.0.1:5061;branch={branch}")
    req.headers.add("Max-Forwards", "70")
    req.headers.add("From", "<sip:alice@127.0.0.1>;tag=a1")
    req.headers.add("To", "<sip:bob@127.0.0.1>" + (f";tag={to_tag}" if to_tag else ""))
    req.headers.add("Call-ID", "call-1")
    req.headers.add("CSeq", f"{cseq} {method}")
    return req


# -- messages -------------------------------------------------------------------------------------


def test_parse_compact_folded_and_list_headers() -> None:
    message = parse(INVITE)
    assert isinstance(message, Request) and message.method == "INVITE"
    vias = message.headers.get_all("Via")
    assert len(vias) == 3 and parse_via(vias[1]).transport == "TCP" and parse_via(vias[2]).branch == "z9hG4bKccc"
    assert message.headers.get("Subject") == "a long folded subject"
    assert message.headers.get_all("Contact") == ["<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2>"]
    assert NameAddr.parse(message.headers.get("From") or "").display == "Alice, A."
    assert message.body == b"v=0\r"[:4] and message.cseq == (314159, "INVITE")


def test_serialize_round_trip_sets_content_length() -> None:
    message = parse(INVITE)
    again = parse(bytes(message))
    assert isinstance(again, Request)
    assert again.headers.get_all("Via") == message.headers.get_all("Via") and again.body == message.body
    assert b"Content-Length: 4\r\n" in bytes(message)


@pytest.mark.parametrize(("data", "reason"), [
    (INVITE.replace(b"l: 4", b"l: 400"), "Content-Length 400 but only"),
    (INVITE.replace(b"l: 4", b"l: -1"), "malformed Content-Length"),
    (INVITE.replace(b"l: 4", b"l: 4x"), "malformed Content-Length"),
    (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 1 BYE"), "does not match"),
    (INVITE.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), "unsupported SIP version"),
    (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: lots"), "Max-Forwards"),
    (INVITE.replace(b"Subject:", b"Sub ject:"), "malformed header line"),
    (INVITE.replace(b"Subject: a long", b"Subject: " + b"x" * MAX_HEADER_LINE), "longer than"),
    (INVITE.replace(b"Max-Forwards: 70\r\n", b"X-A: 1\r\n" * 200), "more than"),
])
def test_malformed_requests_carry_enough_to_answer_400(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(data)
    assert reason in caught.value.reason
    assert caught.value.request is not None and caught.value.request.method == "INVITE"
    answer = response_to(caught.value.request, 400)
    assert answer.status == 400 and answer.headers.get_all("Via")


@pytest.mark.parametrize("data", [
    INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 99999999999 INVITE"),
    INVITE.replace(b"i: a84b4c76e66710\r\n", b""),
    b"", b"\r\n\r\n", b"garbage", b"SIP/2.0 999 What\r\n\r\n", b"INVITE\r\n\r\n",
    b"\xff\xfe\x00 nonsense SIP/2.0\r\n\r\n",
    INVITE.replace(b"Via: SIP/2.0/UDP 10.0.0.1:5060", b"Via: HTTP/1.1 10.0.0.1:5060"),
])
def test_garbage_is_refused_without_an_answer(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse(data)
    ep, wire, seen = endpoint()
    ep.receive(data, UAC, 0.0)
    assert wire.sent == [] and seen == []


def test_oversized_message_is_513() -> None:
    with pytest.raises(ParseError) as caught:
        parse(INVITE + b"x" * MAX_MESSAGE)
    assert caught.value.status == 513


def test_split_list_keeps_quoted_commas_and_uris() -> None:
    assert split_list('"A, B" <sip:a@x;p=1,2>, sip:b@y') == ['"A, B" <sip:a@x;p=1,2>', "sip:b@y"]


def test_stream_framer_cuts_messages_and_keepalives_at_any_split() -> None:
    two = bytes(parse(INVITE)) + b"\r\n\r\n" + bytes(parse(INVITE))
    for cut in range(0, len(two), 7):
        framer = StreamFramer()
        out = framer.feed(two[:cut]) + framer.feed(two[cut:])
        assert len(out) == 2 and all(isinstance(parse(m, stream=True), Request) for m in out)
    with pytest.raises(FramingError):
        StreamFramer().feed(b"INVITE sip:x SIP/2.0\r\nContent-Length: abc\r\n\r\n")
    with pytest.raises(FramingError):
        StreamFramer(max_message=100).feed(b"x" * 200)


# -- URIs -----------------------------------------------------------------------------------------


def test_uris_and_targets() -> None:
    uri = SipUri.parse("sips:alice:pw@[::1]:5061;transport=tls;lr?subject=x")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == ("sips", "alice", "pw", "::1", 5061)
    assert uri.params == {"transport": "tls", "lr": None} and str(uri).startswith("sips:alice:pw@[::1]:5061")
    assert str(target_uri("1001", "pbx.example.com")) == "sip:1001@pbx.example.com"
    assert str(target_uri("tel:+1-555-0100", "pbx")) == "sip:+15550100@pbx;user=phone"
    assert str(target_uri("bob@other.org", "pbx")) == "sip:bob@other.org"
    assert str(target_uri("sip:bob@h:5070", "pbx")) == "sip:bob@h:5070"
    for bad in ("", "sip:", "sip:bob@", "bob smith", "tel:abc", "<sip:x>", "sip:a@b:99999", "x\r\nVia: y"):
        with pytest.raises(UriError):
            target_uri(bad, "pbx")


# -- digest ---------------------------------------------------------------------------------------


def test_digest_matches_rfc2617_example() -> None:
    # RFC 2617 §3.5 (HTTP, but the same arithmetic).
    assert digest("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html",
                  "dcd98b7102dd2f0e8b11d0f600bfb0c093", "auth", "00000001",
                  "0a4f113b") == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
@pytest.mark.parametrize("status", [401, 407])
def test_digest_client_answers_challenges(algorithm: str, status: int) -> None:
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    challenge = Response(status=status)
    challenge.headers.add(header, f'Digest realm="pbx", nonce="n1", qop="auth,auth-int", algorithm={algorithm}, '
                                  'opaque="o"')
    client = DigestClient("alice", "secret")
    assert client.challenged(challenge)
    req = request("REGISTER")
    client.authorize(req)
    answer_header = "Authorization" if status == 401 else "Proxy-Authorization"
    answer = req.headers.get(answer_header) or ""
    params = parse_challenge(answer)
    h = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5
    ha1 = h(b"alice:pbx:secret").hexdigest()
    ha2 = h(f"REGISTER:{req.uri}".encode()).hexdigest()
    expected = h(f"{ha1}:n1:{params['nc']}:{params['cnonce']}:auth:{ha2}".encode()).hexdigest()
    assert params["response"] == expected and params["opaque"] == "o" and params["nc"] == "00000001"
    client.authorize(req)
    assert parse_challenge(req.headers.get_all(answer_header)[0])["nc"] == "00000002"
    # The same nonce again on a retry (not stale): the password was refused.
    assert not client.challenged(challenge, retry=True)


def test_digest_refuses_unknown_algorithms() -> None:
    challenge = Response(status=401)
    challenge.headers.add("WWW-Authenticate", 'Digest realm="r", nonce="n", algorithm=SHA-512-256')
    assert not DigestClient("a", "b").challenged(challenge)


# -- transactions ---------------------------------------------------------------------------------


class Wire:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Peer]] = []

    def __call__(self, data: bytes, peer: Peer) -> None:
        self.sent.append((data, peer))


def test_invite_client_retransmits_with_timer_a_then_times_out_with_timer_b() -> None:
    wire = Wire()
    timeouts: list[bool] = []
    tx = ClientTransaction(wire, request("INVITE"), UAS, 0.0, lambda r: None, lambda: timeouts.append(True))
    now = 0.0
    while not tx.terminated:
        now = tx.deadline() or now
        tx.timer(now)
    sent_at = len(wire.sent)
    assert timeouts == [True] and now == pytest.approx(64 * T1)
    assert sent_at == 7  # 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5


def test_non_invite_client_caps_retransmissions_at_t2_and_acks_nothing() -> None:
    wire = Wire()
    tx = ClientTransaction(wire, request("OPTIONS"), UAS, 0.0, lambda r: None, lambda: None)
    times = []
    now = 0.0
    while not tx.terminated:
        now = tx.deadline() or now
        before = len(wire.sent)
        tx.timer(now)
        if len(wire.sent) > before:
            times.append(now)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert max(gaps) == pytest.approx(T2) and min(gaps) == pytest.approx(T1)


def test_invite_client_acks_an_error_and_absorbs_its_retransmission() -> None:
    wire = Wire()
    got: list[int] = []
    invite = request("INVITE")
    tx = ClientTransaction(wire, invite, UAS, 0.0, lambda r: got.append(r.status), lambda: None)
    busy = response_to(invite, 486, None, "b1")
    tx.receive(busy, 0.1)
    tx.receive(busy, 0.2)
    acks = [parse(d) for d, _ in wire.sent[1:]]
    assert got == [486] and len(acks) == 2 and all(isinstance(a, Request) and a.method == "ACK" for a in acks)
    assert "tag=b1" in (acks[0].headers.get("To") or "")


def test_server_invite_retransmits_final_until_ack() -> None:
    wire = Wire()
    tx = ServerTransaction(wire, request("INVITE"), UAC, 0.0)
    timeouts: list[bool] = []
    tx.on_timeout = lambda: timeouts.append(True)
    tx.respond(response_to(tx.request, 200, None, "x"), 0.0)
    tx.timer(T1)
    tx.timer(T1 * 3)
    assert len(wire.sent) == 3
    tx.receive_ack(2.0)
    tx.timer(100.0)
    assert tx.terminated and timeouts == [] and len(wire.sent) == 3


# -- endpoint -------------------------------------------------------------------------------------


def endpoint(invite_rate: float = 100.0) -> tuple[Endpoint, Wire, list[Request]]:
    wire = Wire()
    seen: list[Request] = []

    def on_request(req: Request, tx: ServerTransaction | None, peer: Peer) -> None:
        seen.append(req)
        if tx is not None and req.method != "INVITE":
            tx.respond(response_to(req, 200, None, "t"), 0.0)
    return Endpoint(wire, on_request, invite_rate=invite_rate), wire, seen


def answers(wire: Wire) -> list[int]:
    return [r.status for d, _ in wire.sent if isinstance(r := parse(d), Response)]


def test_endpoint_answers_hostile_input_statelessly() -> None:
    ep, wire, seen = endpoint()
    ep.receive(INVITE.replace(b"l: 4", b"l: 99"), UAC, 0.0)
    ep.receive(bytes(request("FOO")), UAC, 0.0)
    ep.receive(bytes(request("REGISTER", branch="z9hG4bK2")), UAC, 0.0)
    ep.receive(bytes(request("CANCEL", branch="z9hG4bK3")), UAC, 0.0)
    ep.receive(b"\x00\x01garbage", UAC, 0.0)
    assert answers(wire) == [400, 501, 405, 481] and seen == []
    assert b"Warning: 399" in wire.sent[0][0]


def test_endpoint_throttles_invite_floods_with_503_retry_after() -> None:
    ep, wire, seen = endpoint(invite_rate=5)
    for i in range(20):
        ep.receive(bytes(request("INVITE", branch=f"z9hG4bKf{i}")), UAC, 0.0)
    finals = [parse(d) for d, _ in wire.sent if b" 503 " in d.split(b"\r\n")[0]]
    assert len(seen) == 5 and len(finals) == 15
    assert all(isinstance(f, Response) and f.headers.get("Retry-After") for f in finals)
    ep.receive(bytes(request("INVITE", branch="z9hG4bKlater")), UAC, 1.0)
    assert len(seen) == 6  # the bucket refills


def test_endpoint_absorbs_retransmissions_and_cancels() -> None:
    ep, wire, seen = endpoint()
    invite = request("INVITE", branch="z9hG4bKinv")
    cancelled: list[bool] = []
    ep.receive(bytes(invite), UAC, 0.0)
    assert len(seen) == 1
    ep.receive(bytes(invite), UAC, 0.1)
    assert len(seen) == 1 and answers(wire) == [100, 100]
    tx = ep._servers[("z9hG4bKinv", "127.0.0.1:5061", "INVITE")]
    tx.on_cancel = lambda: cancelled.append(True)
    ep.receive(bytes(request("CANCEL", branch="z9hG4bKinv")), UAC, 0.2)
    assert cancelled == [True] and answers(wire)[-1] == 200


def test_client_and_server_endpoints_in_memory_with_loss() -> None:
    """A UAC sends OPTIONS through a wire that drops the first two datagrams each way."""
    queue: list[tuple[bytes, Peer, Peer]] = []
    dropped = {"uac": 0, "uas": 0}

    def wire_from(name: str, src: Peer) -> Wire:
        class Lossy(Wire):
            def __call__(self, data: bytes, peer: Peer) -> None:
                if dropped[name] < 2:
                    dropped[name] += 1
                    return
                queue.append((data, src, peer))
        return Lossy()

    got: list[int] = []
    server_seen: list[str] = []

    def serve(req: Request, tx: ServerTransaction | None, peer: Peer) -> None:
        server_seen.append(req.method)
        assert tx is not None
        tx.respond(response_to(req, 200, None, "s"), now)

    uac = Endpoint(wire_from("uac", UAC), lambda *a: None)
    uas = Endpoint(wire_from("uas", UAS), serve)
    now = 0.0
    uac.request(request("OPTIONS"), UAS, now, lambda r: got.append(r.status), lambda: got.append(-1))
    while not got and now < 40:
        while queue:
            data, src, dst = queue.pop(0)
            (uas if dst == UAS else uac).receive(data, src, now)
        deadlines = [d for d in (uac.deadline(), uas.deadline()) if d is not None]
        now = min(deadlines) if deadlines else now + 1
        uac.poll(now)
        uas.poll(now)
    assert got == [200] and server_seen == ["OPTIONS"]


def test_dialog_builds_in_dialog_requests_with_route_set() -> None:
    invite = request("INVITE")
    invite.headers.add("Contact", "<sip:alice@127.0.0.1:5061>")
    ok = response_to(invite, 200, None, "bobtag")
    ok.headers.add("Record-Route", "<sip:p2.example.com;lr>")
    ok.headers.add("Record-Route", "<sip:p1.example.com;lr>")
    ok.headers.add("Contact", "<sip:bob@192.0.2.4>")
    dialog = Dialog.as_caller(invite, ok, "<sip:alice@127.0.0.1:5061>")
    bye = dialog.request("BYE", "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKbye")
    assert bye.uri == "sip:bob@192.0.2.4" and bye.headers.get_all("Route") == ["<sip:p1.example.com;lr>",
                                                                           "<sip:p2.example.com;lr>"]
    assert bye.cseq == (2, "BYE") and "tag=bobtag" in (bye.headers.get("To") or "")
    late = request("INFO", to_tag="a1", cseq=5)
    callee = Dialog.as_callee(request("INVITE", cseq=10), "mine", "<sip:me@h>")
    assert not callee.accepts_remote(late) and callee.accepts_remote(request("INFO", cseq=11))
