"""SIP instant messages, IMDN, registration-event subscriptions and XCAP through the gateway, at the
client-protocol level (the WebSDK 2.0 in node_modules has no API for these messages; WCS clients send
them as sendMessage, sendIMDN, subscribe, sendXcapRequest). The client session registers with kamailio
(digest); SIPp scenarios are the far ends and check what arrives (ereg check_it fails the run)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.support.backend import Backend
from tests.support.server import ServerProcess
from tests.support.sip_peers import Kamailio, Sipp, free_port
from tests.support.wsclient import WsClient

USERS = {"alice": "alice-secret"}

RESPOND_200 = """  <send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:sipp@[local_ip]:[local_port]>
Content-Length: 0

]]>
  </send>
"""


def inbox(*patterns: str) -> str:
    """A SIPp UAS taking one MESSAGE whose body must match every pattern."""
    checks = "".join(f'<ereg regexp="{p}" search_in="body" check_it="true" assign_to="m{i}"/>'
                     for i, p in enumerate(patterns))
    names = ",".join(f"m{i}" for i in range(len(patterns)))
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="inbox">
  <recv request="MESSAGE"><action>{checks}</action></recv>
{RESPOND_200}  <Reference variables="{names}"/>
</scenario>
"""


def sender(kamailio_port: int, from_port: int, body: str) -> str:
    """A SIPp UAC sending one CPIM MESSAGE to alice through kamailio, From a SIPp inbox at `from_port`."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="sender">
  <send retrans="500">
    <![CDATA[
MESSAGE sip:alice@127.0.0.1:{kamailio_port} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:sipp@127.0.0.1:{from_port}>;tag=[call_number]
To: <sip:alice@127.0.0.1>
Call-ID: [call_id]
CSeq: 1 MESSAGE
Max-Forwards: 70
Content-Type: message/cpim
Content-Length: [len]

{body}
]]>
  </send>
  <recv response="200"/>
</scenario>
"""


@pytest.fixture
def notifier_port() -> int:
    return free_port()


@pytest.fixture
def kamailio(notifier_port: int) -> Iterator[Kamailio]:
    k = Kamailio(USERS, algorithm="SHA-256", subscribe_to=notifier_port).start()
    yield k
    k.stop()


@pytest.fixture
def xcap() -> Iterator[str]:
    """A small XCAP server (an HTTP document store) on loopback, in a thread of its own."""
    documents = {"/xcap-root/resource-lists/users/sip:alice@127.0.0.1/index": "<resource-lists/>"}
    loop = asyncio.new_event_loop()
    port = free_port(both=False)

    async def handle(request: web.Request) -> web.Response:
        if request.method == "PUT":
            documents[request.path] = await request.text()
            return web.Response(status=201)
        if request.path not in documents:
            return web.Response(status=404, text="no such document")
        return web.Response(text=documents[request.path], content_type="application/resource-lists+xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    import threading
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    yield f"http://127.0.0.1:{port}/xcap-root"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture
def sip_server(start_server: Any, backend: Backend, xcap: str) -> ServerProcess:
    server: ServerProcess = start_server(["--sip-udp-port", "0", "--sip-tcp-port", "0", "--sip-xcap-url", xcap])
    server.add_app("sipApp", "sipApp", backend.url)
    return server


async def registered_client(server: ServerProcess, kamailio: Kamailio) -> WsClient:
    client = WsClient(server.ws_url)
    await client.__aenter__()
    await client.connect(appKey="sipApp", sipLogin="alice", sipAuthenticationName="alice",
                         sipPassword=USERS["alice"], sipDomain="127.0.0.1", sipPort=str(kamailio.port),
                         sipRegisterRequired=True)
    await client.expect("registered", timeout=15)
    return client


async def sipp_done(sipp: Sipp, timeout: float = 30.0) -> tuple[int, str]:
    return await asyncio.get_running_loop().run_in_executor(None, sipp.wait, timeout)


async def test_message_out_with_cpim_and_imdn_then_the_delivery_notification(
        sip_server: ServerProcess, kamailio: Kamailio, backend: Backend) -> None:
    client = await registered_client(sip_server, kamailio)
    box = Sipp(inbox("hello from the browser", "imdn.Message-ID: msg-1",
                     "imdn.Disposition-Notification: positive-delivery")).start(None)
    try:
        await client.send("sendMessage", {"id": "msg-1", "to": f"sip:bob@127.0.0.1:{box.port}",
                                          "body": "hello from the browser", "contentType": "message/cpim",
                                          "isImdnRequired": True})
        await client.expect("notifyMessage", where={"id": "msg-1", "status": "ACCEPTED"}, timeout=15)
        code, output = await sipp_done(box)
        assert code == 0, output
    finally:
        box.stop()
    backend.wait_for("sendMessage", lambda c: c.body.get("id") == "msg-1")
    # bob's phone says it was delivered (an IMDN in CPIM, RFC 5438).
    imdn = ("From: <sip:bob@127.0.0.1>\r\nTo: <sip:alice@127.0.0.1>\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
            "imdn.Message-ID: n-1\r\n\r\nContent-Type: message/imdn+xml\r\nContent-Disposition: notification\r\n\r\n"
            '<?xml version="1.0" encoding="UTF-8"?><imdn xmlns="urn:ietf:params:imdn"><message-id>msg-1'
            "</message-id><delivery-notification><status><delivered/></status></delivery-notification></imdn>")
    phone = Sipp(sender(kamailio.port, free_port(), imdn)).start(f"127.0.0.1:{kamailio.port}")
    try:
        code, output = await sipp_done(phone)
        assert code == 0, output
    finally:
        phone.stop()
    await client.expect("notifyMessage", where={"id": "msg-1", "status": "IMDN_DELIVERED"}, timeout=15)
    backend.wait_for("MessageStatusEvent", lambda c: c.body.get("status") == "IMDN_DELIVERED")
    await client.close()


async def test_message_in_reaches_the_client_and_its_imdn_goes_back(
        sip_server: ServerProcess, kamailio: Kamailio, backend: Backend) -> None:
    client = await registered_client(sip_server, kamailio)
    box = Sipp(inbox("imdn.Message-ID", "message-id.m-in-1./message-id", "status..delivered/")).start(None)
    cpim = ("From: <sip:sipp@127.0.0.1>\r\nTo: <sip:alice@127.0.0.1>\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
            "imdn.Message-ID: m-in-1\r\nimdn.Disposition-Notification: positive-delivery\r\n\r\n"
            "Content-Type: text/plain\r\n\r\nhi browser")
    phone = Sipp(sender(kamailio.port, box.port, cpim)).start(f"127.0.0.1:{kamailio.port}")
    try:
        code, output = await sipp_done(phone)
        assert code == 0, output
        got = await client.expect("notifyMessage", where={"status": "RECEIVED"}, timeout=15)
        obj = got["data"][0]
        assert obj["body"].strip() == "hi browser" and obj["contentType"] == "text/plain" and obj["isImdnRequired"]
        assert obj["from"].startswith("sip:sipp@127.0.0.1") and "MESSAGE" in obj["sipMessageRaw"]
        code, output = await sipp_done(box)
        assert code == 0, output
    finally:
        phone.stop()
        box.stop()
    await client.expect("notifyMessage", where={"status": "IMDN_NOTIFICATION_SENT"}, timeout=15)
    backend.wait_for("OnMessageEvent", lambda c: c.body.get("body", "").strip() == "hi browser")
    await client.close()


NOTIFIER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="reg notifier">
  <recv request="SUBSCRIBE">
    <action>
      <ereg regexp="reg" search_in="hdr" header="Event:" check_it="true" assign_to="event"/>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="from"/>
      <ereg regexp="sip:[^>]*" search_in="hdr" header="Contact:" assign_to="contact"/>
    </action>
  </recv>
  <send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Expires: 60
Contact: <sip:sipp@[local_ip]:[local_port]>
Content-Length: 0

]]>
  </send>
  <send>
    <![CDATA[
NOTIFY [$contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:alice@127.0.0.1>;tag=[pid]SIPpTag01[call_number]
To: [$from]
Call-ID: [call_id]
CSeq: 1 NOTIFY
Contact: <sip:sipp@[local_ip]:[local_port]>
Max-Forwards: 70
Event: reg
Subscription-State: active;expires=60
Content-Type: application/reginfo+xml
Content-Length: [len]

<?xml version="1.0"?>
<reginfo xmlns="urn:ietf:params:xml:ns:reginfo" version="0" state="full">
<registration aor="sip:alice@127.0.0.1" id="a7" state="active">
<contact id="1" state="active" event="registered"><uri>sip:alice@127.0.0.1</uri></contact>
</registration></reginfo>
]]>
  </send>
  <recv response="200"/>
  <recv request="SUBSCRIBE">
    <action><ereg regexp="^ *0$" search_in="hdr" header="Expires:" check_it="true" assign_to="zero"/></action>
  </recv>
  <send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Expires: 0
Content-Length: 0

]]>
  </send>
  <send>
    <![CDATA[
NOTIFY [$contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:alice@127.0.0.1>;tag=[pid]SIPpTag01[call_number]
To: [$from]
Call-ID: [call_id]
CSeq: 2 NOTIFY
Max-Forwards: 70
Event: reg
Subscription-State: terminated;reason=timeout
Content-Length: 0

]]>
  </send>
  <recv response="200"/>
  <Reference variables="event,zero"/>
</scenario>
"""


async def test_subscribe_reg_active_notify_then_terminate(sip_server: ServerProcess, kamailio: Kamailio,
                                                          notifier_port: int, backend: Backend) -> None:
    client = await registered_client(sip_server, kamailio)
    notifier = Sipp(NOTIFIER, port=notifier_port).start(None)
    try:
        await client.send("subscribe", {"id": "sub-1", "event": "reg", "expires": 60})
        active = await client.expect("notifySubscription", where={"id": "sub-1", "status": "Active"}, timeout=15)
        assert "<reginfo" in active["data"][0]["requestBody"]
        await client.send("subscribe", {"id": "sub-1", "terminate": True})
        await client.expect("notifySubscription", where={"id": "sub-1", "status": "Terminated"}, timeout=15)
        code, output = await sipp_done(notifier)
        assert code == 0, output
    finally:
        notifier.stop()
    backend.wait_for("SubscriptionStatusEvent", lambda c: c.body.get("status") == "Active")
    await client.close()


async def test_xcap_request_reaches_the_configured_server(sip_server: ServerProcess, kamailio: Kamailio,
                                                          backend: Backend) -> None:
    client = await registered_client(sip_server, kamailio)
    await client.send("sendXcapRequest", {"id": "x1", "url": "/resource-lists/users/sip:alice@127.0.0.1/index"})
    got = await client.expect("notifyXcapResponse", where={"id": "x1"}, timeout=15)
    assert got["data"][0]["status"] == "ACCEPTED" and got["data"][0]["responseBody"] == "<resource-lists/>"
    await client.send("sendXcapRequest", {"id": "x2", "url": "/nothing/here"})
    missing = await client.expect("notifyXcapResponse", where={"id": "x2"}, timeout=15)
    assert missing["data"][0]["status"] == "FAILED" and missing["data"][0]["httpStatus"] == 404
    await client.send("sendXcapRequest", {"id": "x3", "url": "http://127.0.0.1:1/elsewhere"})
    elsewhere = await client.expect("notifyXcapResponse", where={"id": "x3"}, timeout=15)
    assert elsewhere["data"][0]["status"] == "FAILED"
    backend.wait_for("XcapStatusEvent")
    await client.close()


async def test_backend_refusing_send_message_fails_it(sip_server: ServerProcess, kamailio: Kamailio,
                                                      backend: Backend) -> None:
    backend.on("sendMessage", status=403, body={"info": "No messages today"})
    client = await registered_client(sip_server, kamailio)
    await client.send("sendMessage", {"id": "m9", "to": "bob", "body": "x"})
    got = await client.expect("notifyMessage", where={"id": "m9"}, timeout=15)
    assert got["data"][0]["status"] == "FAILED" and got["data"][0]["info"] == "No messages today"
    await client.close()


async def test_registration_is_refreshed_and_removed_when_the_session_ends(
        start_server: Any, backend: Backend, kamailio: Kamailio) -> None:
    server: ServerProcess = start_server(["--sip-udp-port", "0", "--sip-tcp-port", "0",
                                          "--sip-register-expires", "3"])
    server.add_app("sipApp", "sipApp", backend.url)
    client = await registered_client(server, kamailio)
    # Granted 3 s, refreshed at half of that: a second REGISTERED comes before the first one runs out.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: backend.wait_for(
        "RegistrationStatusEvent", lambda c: len([h for h in backend.hooks("RegistrationStatusEvent")
                                                  if h.body.get("status") == "REGISTERED"]) >= 3, timeout=15))
    await client.close()
    gone = await loop.run_in_executor(None, lambda: backend.wait_for(
        "RegistrationStatusEvent", lambda c: c.body.get("status") == "UNREGISTERED", timeout=15))
    # The registrar's 200 lists the contacts still bound: none.
    assert gone.body["sipStatus"] == 200 and "Contact:" not in gone.body["sipMessageRaw"]


async def test_multipart_message_with_recipients_and_an_explicit_imdn(
        sip_server: ServerProcess, kamailio: Kamailio, backend: Backend) -> None:
    client = await registered_client(sip_server, kamailio)
    box = Sipp(inbox("recipient-list", "resource-lists", 'entry uri=.sip:carol@127.0.0.1.',
                     "Content-Type: message/cpim", "to all of you")).start(None)
    try:
        await client.send("sendMessage", {"id": "mm-1", "to": f"sip:list@127.0.0.1:{box.port}",
                                          "body": "to all of you", "contentType": "multipart/mixed",
                                          "recipients": ["sip:carol@127.0.0.1", "sip:dave@127.0.0.1"]})
        await client.expect("notifyMessage", where={"id": "mm-1", "status": "ACCEPTED"}, timeout=15)
        code, output = await sipp_done(box)
        assert code == 0, output
    finally:
        box.stop()
    box = Sipp(inbox("message/imdn.xml", "message-id.their-7./message-id", "status..displayed/")).start(None)
    try:
        await client.send("sendIMDN", {"to": f"sip:bob@127.0.0.1:{box.port}", "messageId": "their-7",
                                       "status": "displayed"})
        await client.expect("notifyMessage", where={"id": "their-7", "status": "IMDN_NOTIFICATION_SENT"},
                            timeout=15)
        code, output = await sipp_done(box)
        assert code == 0, output
    finally:
        box.stop()
    await client.close()


async def test_rest_client_config_rules_the_sip_hooks(sip_server: ServerProcess, kamailio: Kamailio,
                                                      backend: Backend) -> None:
    """The connect answer's restClientConfig: OnMessageEvent under OVERWRITE changes what the client
    gets; restExclude keeps sipMessageRaw out of RegistrationStatusEvent, clientExclude out of the client's
    message statuses."""
    config = {"OnMessageEvent": {"restPolicy": "OVERWRITE", "restOverwrite": "body"},
              "RegistrationStatusEvent": {"restExclude": "sipMessageRaw"},
              "MessageStatusEvent": {"clientExclude": "sipMessageRaw"}}
    backend.on("connect", transform=lambda body: {**body, "restClientConfig": config})
    backend.on("OnMessageEvent", transform=lambda body: {**body, "body": "[filtered]"})
    client = await registered_client(sip_server, kamailio)
    loop = asyncio.get_running_loop()
    registered = await loop.run_in_executor(None, lambda: backend.wait_for("RegistrationStatusEvent"))
    assert "sipMessageRaw" not in registered.body and registered.body["sipStatus"] == 200
    phone = Sipp(sender(kamailio.port, free_port(), "From: <sip:x@127.0.0.1>\r\nTo: <sip:alice@127.0.0.1>\r\n\r\n"
                        "Content-Type: text/plain\r\n\r\nsomething rude")).start(f"127.0.0.1:{kamailio.port}")
    try:
        code, output = await sipp_done(phone)
        assert code == 0, output
    finally:
        phone.stop()
    got = await client.expect("notifyMessage", where={"status": "RECEIVED"}, timeout=15)
    assert got["data"][0]["body"] == "[filtered]"
    await client.send("sendMessage", {"id": "m2", "to": "nobody", "body": "x"})
    status = await client.expect("notifyMessage", where={"id": "m2"}, timeout=40)
    assert status["data"][0]["status"] == "FAILED" and "sipMessageRaw" not in status["data"][0]
    await client.close()


async def test_a_dead_registrar_does_not_hold_up_the_servers_stop(
        start_server: Any, backend: Backend, kamailio: Kamailio) -> None:
    server: ServerProcess = start_server(["--sip-udp-port", "0", "--sip-tcp-port", "0"])
    server.add_app("sipApp", "sipApp", backend.url)
    clients = [await registered_client(server, kamailio) for _ in range(2)]
    kamailio.stop()  # nobody will answer the un-REGISTERs now
    code = await asyncio.get_running_loop().run_in_executor(None, server.stop)
    for client in clients:
        await client.close()
    assert code == 0, server.log()[-3000:]
    # Both phones un-registered at once and were given up on together, not one after the other.
    assert "SIP shutdown: 2 phones did not finish hanging up or un-registering" in server.log()
