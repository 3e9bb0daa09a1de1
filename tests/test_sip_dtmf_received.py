"""Digits a SIP phone sends as RFC 4733 (RFC 2833) telephone-events, end to end through the gateway: the
client session gets one `notifyDTMF` per digit, in order, and the backend one `DTMFEvent` hook each.

The phone is SIPp answering a call the client places (no registrar: `sipDomain` is SIPp's address); after
the ACK it plays SIPp's own captures of a phone's RFC 2833 digits (/usr/share/sip-tester/dtmf_2833_N.pcap,
each an event's start, updates and three end packets) to the RTP address of the gateway's INVITE SDP, then
hangs up. The browser leg is an aiortc peer connection speaking the WebSDK protocol (as benchmarks/
bench_sip.py does). Everything is checked once the call is over, so a digit reported twice shows up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.backend import Backend
from tests.support.rtp_phone import BrowserLeg
from tests.support.server import ServerProcess
from tests.support.sip_peers import Sipp, free_port
from tests.support.wsclient import WsClient

CAPTURES = Path("/usr/share/sip-tester")
# Capture name -> the digit it carries; distinct digits (each capture has its own RTP timestamp, and one
# capture played twice would be one event retransmitted, not two presses).
DIGITS = {"1": "1", "9": "9", "star": "*", "0": "0", "pound": "#", "5": "5"}

SDP_ANSWER = """v=0
o=sipp 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [local_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv"""


def phone_scenario(captures: list[str]) -> str:
    """A SIPp UAS: answers with PCMU and telephone-event 101, plays each capture (pausing between them so
    one playback ends before the next starts), then sends BYE."""
    plays = "".join(f"""  <nop><action><exec play_pcap_audio="{CAPTURES / f'dtmf_2833_{name}.pcap'}"/></action></nop>
  <pause milliseconds="400"/>
""" for name in captures)
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="dtmf phone">
  <recv request="INVITE">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="from"/>
      <ereg regexp="sip:[^>]*" search_in="hdr" header="Contact:" assign_to="contact"/>
    </action>
  </recv>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:phone@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{SDP_ANSWER}
]]></send>
  <recv request="ACK"/>
  <pause milliseconds="300"/>
{plays}  <send retrans="500"><![CDATA[
BYE [$contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:phone@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To: [$from]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
  <Reference variables="from,contact"/>
</scenario>
"""


@pytest.fixture
def sip_server(start_server: Any, backend: Backend) -> ServerProcess:
    server: ServerProcess = start_server(["--sip-udp-port", "0", "--sip-tcp-port", "0"])
    server.add_app("sipApp", "sipApp", backend.url)
    return server


@pytest.fixture
async def browser() -> AsyncIterator[BrowserLeg]:
    leg = BrowserLeg(700.0)
    yield leg
    await leg.close()


def frames(client: WsClient, name: str) -> list[dict[str, Any]]:
    return [doc["data"][0] for doc in client.messages if doc.get("message") == name]


async def test_phone_digits_reach_the_client_and_the_backend_once_each(
        sip_server: ServerProcess, backend: Backend, browser: BrowserLeg) -> None:
    sipp = Sipp(phone_scenario(list(DIGITS)))
    media_port = free_port()
    sipp.start(None, "-mp", str(media_port))
    loop = asyncio.get_running_loop()
    try:
        async with WsClient(sip_server.ws_url) as client:
            await client.connect(appKey="sipApp", sipLogin="alice", sipAuthenticationName="alice",
                                 sipPassword="alice", sipDomain="127.0.0.1", sipPort=str(sipp.port),
                                 sipRegisterRequired=False)
            await client.send("call", {"callId": "dtmf-call", "callee": "phone", "visibleName": "Alice",
                                       "hasVideo": False, "hasAudio": True, "sdp": await browser.offer()})
            answer = await client.expect("setRemoteSDP", timeout=20)
            assert answer["data"][0] == "dtmf-call"
            await browser.answered(answer["data"][1])
            await client.expect("talk", timeout=20, where={"callId": "dtmf-call"})
            await client.expect("finish", timeout=30, where={"callId": "dtmf-call"})
            code, output = await loop.run_in_executor(None, sipp.wait, 30)
            assert code == 0, output
            reported = frames(client, "notifyDTMF")
    finally:
        sipp.stop()

    assert [f["dtmf"] for f in reported] == list(DIGITS.values()), reported
    assert all(f["callId"] == "dtmf-call" and f["type"] == "RFC2833" for f in reported), reported
    await loop.run_in_executor(None, lambda: backend.wait_for(
        "CallStatusEvent", lambda c: c.body.get("status") == "FINISH", 15))
    await loop.run_in_executor(None, lambda: backend.wait_for(
        "DTMFEvent", lambda c: len(backend.hooks("DTMFEvent")) >= len(DIGITS), 15))
    hooks = backend.hooks("DTMFEvent")
    assert [h.body["dtmf"] for h in hooks] == list(DIGITS.values()), [h.body for h in hooks]
    assert all(h.body["callId"] == "dtmf-call" for h in hooks)
