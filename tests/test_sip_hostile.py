"""Hostile SIP at the real server's SIP ports: raw datagrams and TCP streams with malformed messages,
huge headers, wrong Content-Length, unknown methods and dialogs, and an INVITE flood from SIPp. Each gets
its RFC 3261 answer (400, 481, 404, 405, 501, 503 with Retry-After, 513), and the server still serves:
OPTIONS is answered and /health counts what happened."""

from __future__ import annotations

import json
import socket
import urllib.request
from typing import Any

import pytest

from tests.support.server import ServerProcess
from tests.support.sip_peers import Sipp

OPTIONS_TEMPLATE = (
    "{method} sip:{user}@127.0.0.1:{port} SIP/2.0\r\n"
    "Via: SIP/2.0/{transport} 127.0.0.1:{local};branch=z9hG4bK{branch};rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:mallory@127.0.0.1>;tag=m1\r\n"
    "To: <sip:{user}@127.0.0.1>{to_tag}\r\n"
    "Call-ID: {branch}@hostile\r\n"
    "CSeq: 1 {cseq_method}\r\n"
    "{extra}"
    "Content-Length: {length}\r\n\r\n{body}")


def message(port: int, local: int, *, method: str = "OPTIONS", user: str = "nobody", branch: str = "1",
            to_tag: str = "", extra: str = "", body: str = "", length: int | None = None,
            cseq_method: str | None = None, transport: str = "UDP") -> bytes:
    return OPTIONS_TEMPLATE.format(method=method, user=user, port=port, local=local, branch=branch,
                                   to_tag=f";tag={to_tag}" if to_tag else "", extra=extra, body=body,
                                   length=len(body.encode()) if length is None else length,
                                   cseq_method=cseq_method or method, transport=transport).encode()


class UdpProbe:
    def __init__(self, port: int):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.local = self.sock.getsockname()[1]

    def ask(self, data: bytes, expect_answer: bool = True) -> str | None:
        """Send one datagram and return the status line of the final answer (skipping 100 Trying)."""
        self.sock.sendto(data, ("127.0.0.1", self.port))
        while True:
            try:
                answer = self.sock.recv(65536).decode(errors="replace")
            except TimeoutError:
                if expect_answer:
                    raise AssertionError(f"no answer to {data[:60]!r}") from None
                return None
            status = answer.split("\r\n", 1)[0]
            if " 100 " not in status:
                return answer

    def close(self) -> None:
        self.sock.close()


def status_of(answer: str | None) -> int:
    assert answer is not None
    return int(answer.split(" ", 2)[1])


def health(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(server.rest_url + "/health", timeout=10) as resp:  # noqa: S310 - loopback
        return dict(json.loads(resp.read())["sip"])


@pytest.fixture
def sip_server(start_server: Any) -> ServerProcess:
    server: ServerProcess = start_server(["--sip-udp-port", "0", "--sip-tcp-port", "0", "--sip-invite-rate", "5"])
    return server


def sip_port(server: ServerProcess, transport: str = "udp") -> int:
    return int(server.urls[f"sip_{transport}"].rsplit(":", 1)[1])


def test_malformed_and_unknown_requests_get_their_rfc_answers(sip_server: ServerProcess) -> None:
    port = sip_port(sip_server)
    probe = UdpProbe(port)
    try:
        local = probe.local
        assert status_of(probe.ask(message(port, local, branch="ok1"))) == 200
        # Content-Length larger than the body: 400 with the reason in a Warning.
        answer = probe.ask(message(port, local, branch="cl", body="v=0", length=300))
        assert status_of(answer) == 400 and "Content-Length 300" in (answer or "")
        assert status_of(probe.ask(message(port, local, branch="cl2", length=-5))) == 400
        # A header of 10 kB, and 300 headers.
        huge = "X-Huge: " + "a" * 10_000 + "\r\n"
        assert status_of(probe.ask(message(port, local, branch="huge", extra=huge))) == 400
        many = "".join(f"X-H{i}: {i}\r\n" for i in range(300))
        assert status_of(probe.ask(message(port, local, branch="many", extra=many))) == 400
        # CSeq method differing from the request's.
        assert status_of(probe.ask(message(port, local, branch="cseq", cseq_method="BYE"))) == 400
        # Methods: unknown (501), known but not served here (405, with Allow).
        assert status_of(probe.ask(message(port, local, method="FROBNICATE", branch="m1"))) == 501
        answer = probe.ask(message(port, local, method="PUBLISH", branch="m2"))
        assert status_of(answer) == 405 and "Allow:" in (answer or "")
        # Requests of dialogs and transactions that do not exist: 481.
        assert status_of(probe.ask(message(port, local, method="BYE", branch="d1", to_tag="nope"))) == 481
        assert status_of(probe.ask(message(port, local, method="INFO", branch="d2", to_tag="nope"))) == 481
        assert status_of(probe.ask(message(port, local, method="CANCEL", branch="nothing"))) == 481
        # An INVITE for nobody registered here: 404.
        answer = probe.ask(message(port, local, method="INVITE", branch="inv", body="v=0\r\n"))
        assert status_of(answer) == 404
        to = next(line for line in (answer or "").split("\r\n") if line.startswith("To:"))
        ack = message(port, local, method="ACK", branch="inv").decode().replace("To: <sip:nobody@127.0.0.1>", to)
        probe.sock.sendto(ack.encode(), ("127.0.0.1", port))  # ends the 404's retransmissions
        # Garbage and a datagram without a usable Via: no answer, and no harm.
        assert probe.ask(b"\x00\xff" * 100, expect_answer=False) is None
        assert probe.ask(b"OPTIONS sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n", expect_answer=False) is None
        # Too large for any SIP message (sent in pieces over TCP below); over UDP the kernel limit is near.
        assert status_of(probe.ask(message(port, local, branch="ok2"))) == 200
    finally:
        probe.close()
    stats = health(sip_server)
    assert stats["malformed"] >= 6 and stats["rejected"] >= 2


def test_tcp_stream_with_a_bad_message_is_closed_and_others_go_on(sip_server: ServerProcess) -> None:
    port = sip_port(sip_server, "tcp")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as good:
        local = good.getsockname()[1]
        good.sendall(message(port, local, branch="t1", transport="TCP"))
        assert b"SIP/2.0 200 OK" in good.recv(65536)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as bad:
            bad.sendall(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: lots\r\n\r\n")
            assert bad.recv(65536) == b""  # the server closed it: the stream cannot be framed
        with socket.create_connection(("127.0.0.1", port), timeout=5) as endless:
            endless.sendall(b"OPTIONS sip:x SIP/2.0\r\n" + b"X: y\r\n" * 12_000)
            assert endless.recv(65536) == b""
        # The first connection still works, also for a message split in small pieces.
        data = message(port, local, branch="t2", transport="TCP")
        for at in range(0, len(data), 13):
            good.sendall(data[at:at + 13])
        assert b"SIP/2.0 200 OK" in good.recv(65536)


FLOOD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="invite flood">
  <send retrans="500">
    <![CDATA[
INVITE sip:flood@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:sipp@[local_ip]:[local_port]>;tag=[call_number]
To: <sip:flood@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:sipp@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [local_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="404" optional="true" next="ack"/>
  <recv response="503"/>
  <label id="ack"/>
  <send>
    <![CDATA[
ACK sip:flood@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]>
  </send>
</scenario>
"""


def test_invite_flood_gets_503_with_retry_after_and_the_server_still_serves(sip_server: ServerProcess) -> None:
    port = sip_port(sip_server)
    sipp = Sipp(FLOOD).start(f"127.0.0.1:{port}", "-r", "200", "-l", "200", calls=300)
    try:
        code, output = sipp.wait(90)
    finally:
        sipp.stop()
    stats = health(sip_server)
    assert stats["throttled"] >= 200, (stats, output)
    # Every INVITE got a final answer SIPp accepted (404 within the rate, 503 beyond it).
    assert code == 0, output
    probe = UdpProbe(port)
    try:
        answer = probe.ask(message(port, probe.local, method="INVITE", branch="after", body="v=0\r\n"))
        assert status_of(answer) in (404, 503)
        assert status_of(probe.ask(message(port, probe.local, branch="after-options"))) == 200
    finally:
        probe.close()


def test_503_carries_retry_after(sip_server: ServerProcess) -> None:
    port = sip_port(sip_server)
    probe = UdpProbe(port)
    try:
        answers = [probe.ask(message(port, probe.local, method="INVITE", branch=f"f{i}", body="v=0\r\n"))
                   for i in range(12)]
    finally:
        probe.close()
    throttled = [a for a in answers if a is not None and status_of(a) == 503]
    assert throttled and all("Retry-After: 5" in a for a in throttled)


def test_sip_over_tls_when_a_certificate_is_configured(start_server: Any, tmp_path: Any) -> None:
    import ssl
    import subprocess

    cert, key = tmp_path / "sip.crt", tmp_path / "sip.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-days", "1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server: ServerProcess = start_server(["--sip-tls-port", "0", "--sip-cert", str(cert), "--sip-key", str(key)])
    port = sip_port(server, "tls")
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        local = tls.getsockname()[1]
        tls.sendall(message(port, local, branch="tls1", transport="TLS"))
        answer = tls.recv(65536).decode()
        assert answer.startswith("SIP/2.0 200 OK") and "SIP/2.0/TLS" in answer
        tls.sendall(message(port, local, method="BYE", branch="tls2", to_tag="x", transport="TLS"))
        assert tls.recv(65536).startswith(b"SIP/2.0 481")
