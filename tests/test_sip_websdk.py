"""The SIP gateway with the official WebSDK in Chromium and real SIP peers on loopback: kamailio as the
registrar and proxy (digest auth), baresip as the far phone (auto-answer, a sine tone out, what it hears
recorded to WAV).

Chromium's fake microphone plays a WAV of a known tone (BROWSER_TONE); baresip sends another
(PHONE_TONE). A call carries audio both ways when the browser's received audio level rises and
baresip's recording of what it heard has its strongest frequency at BROWSER_TONE (numpy FFT).
"""

from __future__ import annotations

import shutil
import tempfile
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.support.backend import Backend
from tests.support.browser import CHROMEDRIVER, Browser, chromium_options
from tests.support.server import ServerProcess
from tests.support.sip_peers import Baresip, Kamailio, wait_for

BROWSER_TONE = 660
PHONE_TONE = 440
USERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}

HARNESS = r"""
if (window.__s) { return true; }
if (typeof Flashphoner === "undefined") { return false; }
var m = window.__s = {sessions: {}, calls: {}, events: [], waiters: [], incoming: 0};
var NativePC = window.RTCPeerConnection;
m.pcs = [];
window.RTCPeerConnection = function (config, constraints) {
    var pc = new NativePC(config, constraints);
    m.pcs.push(pc);
    return pc;
};
window.RTCPeerConnection.prototype = NativePC.prototype;
Object.keys(NativePC).forEach(function (k) { window.RTCPeerConnection[k] = NativePC[k]; });
function record(target, status, extra) {
    var event = {target: target, status: status};
    if (extra) { Object.keys(extra).forEach(function (k) { event[k] = extra[k]; }); }
    m.events.push(event);
    m.waiters = m.waiters.filter(function (w) { return !w(event); });
}
m.waitFor = function (target, statuses, done) {
    function match(e) { return e.target === target && statuses.indexOf(e.status) >= 0; }
    var found = m.events.filter(match)[0];
    if (found) { done(found); return; }
    m.waiters.push(function (e) { if (match(e)) { done(e); return true; } return false; });
};
function div(id) {
    var d = document.createElement("div");
    d.id = id;
    document.body.appendChild(d);
    return d;
}
function watchCall(target, call) {
    var C = Flashphoner.constants.CALL_STATUS;
    m.calls[target] = call;
    [C.TRYING, C.RING, C.SESSION_PROGRESS, C.ESTABLISHED, C.HOLD, C.FINISH, C.FAILED, C.BUSY].forEach(function (s) {
        call.on(s, function (c) { record(target, s, {info: c.getInfo ? c.getInfo() : null}); });
    });
}
m.connect = function (name, url, sip, appKey) {
    var S = Flashphoner.constants.SESSION_STATUS;
    var session = Flashphoner.createSession({urlServer: url, appKey: appKey || "defaultApp", sipOptions: sip});
    m.sessions[name] = session;
    [S.ESTABLISHED, S.REGISTERED, S.DISCONNECTED, S.FAILED].forEach(function (s) {
        session.on(s, function () { record(name, s, null); });
    });
    session.on(S.WARN, function (w) { record(name, "WARN", {info: w && w.info}); });
    session.on(S.INCOMING_CALL, function (call) {
        var target = name + "-in" + (m.incoming++);
        watchCall(target, call);
        record(name, "INCOMING_CALL", {call: target, caller: call.caller()});
    });
};
m.call = function (sessionName, target, callee) {
    var call = m.sessions[sessionName].createCall({
        callee: callee, visibleName: "Alice", localVideoDisplay: div("local-" + target),
        remoteVideoDisplay: div("remote-" + target), constraints: {audio: true, video: false}
    });
    watchCall(target, call);
    call.call();
};
m.answer = function (target) {
    m.calls[target].answer({localVideoDisplay: div("local-" + target), remoteVideoDisplay: div("remote-" + target),
                            constraints: {audio: true, video: false}});
};
m.audioIn = function (done) {
    Promise.all(m.pcs.map(function (pc) { return pc.getStats(null); })).then(function (reports) {
        var out = {packets: 0, energy: 0, level: 0};
        reports.forEach(function (report) {
            report.forEach(function (r) {
                if (r.type === "inbound-rtp" && (r.kind || r.mediaType) === "audio") {
                    out.packets += r.packetsReceived || 0;
                    out.energy += r.totalAudioEnergy || 0;
                    out.level = Math.max(out.level, r.audioLevel || 0);
                }
            });
        });
        done(out);
    }, function (e) { done({error: String(e)}); });
};
return true;
"""


def write_tone(path: Path, frequency: int, seconds: float = 10.0, rate: int = 48000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.5 * 32767 * np.sin(2 * np.pi * frequency * t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


def read_wav(path: Path) -> tuple[np.ndarray, int, int]:
    """Samples, rate and channels of a 16-bit WAV, also one still being written (its sizes not yet set)."""
    raw = path.read_bytes()
    fmt = raw.find(b"fmt ")
    data_at = raw.find(b"data")
    if fmt < 0 or data_at < 0:
        return np.zeros(0), 8000, 1
    channels = int.from_bytes(raw[fmt + 10:fmt + 12], "little")
    rate = int.from_bytes(raw[fmt + 12:fmt + 16], "little")
    body = raw[data_at + 8:]
    body = body[:len(body) // 2 * 2]
    return np.frombuffer(body, dtype="<i2").astype(np.float64), rate, max(1, channels)


def dominant_frequency(path: Path) -> tuple[float, float]:
    """The strongest frequency of a WAV recording (skipping its first half second) and its RMS level."""
    data, rate, channels = read_wav(path)
    if channels > 1:
        data = data[:len(data) // channels * channels].reshape(-1, channels)[:, 0]
    data = data[rate // 2:]
    if len(data) < rate // 4:
        return 0.0, 0.0
    spectrum = np.abs(np.fft.rfft(data * np.hanning(len(data))))
    freqs = np.fft.rfftfreq(len(data), 1 / rate)
    spectrum[freqs < 100] = 0
    return float(freqs[int(np.argmax(spectrum))]), float(np.sqrt(np.mean(data ** 2)))


@pytest.fixture(scope="module")
def tone_chromium() -> Iterator[webdriver.Chrome]:
    folder = Path(tempfile.mkdtemp(prefix="chromium-sip-"))
    tone = folder / "tone.wav"
    write_tone(tone, BROWSER_TONE)
    options = chromium_options(str(folder / "profile"))
    options.add_argument(f"--use-file-for-fake-audio-capture={tone}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def browser(tone_chromium: webdriver.Chrome, request: pytest.FixtureRequest) -> Iterator[Browser]:
    b = Browser(tone_chromium)
    b.reset()
    failed_before = request.session.testsfailed
    yield b
    if request.session.testsfailed > failed_before:
        request.node.add_report_section("teardown", "browser console", b.describe())
    b.reset()


@pytest.fixture
def kamailio() -> Iterator[Kamailio]:
    k = Kamailio(USERS).start()
    yield k
    k.stop()


@pytest.fixture
def bob(kamailio: Kamailio) -> Iterator[Baresip]:
    phone = Baresip("bob", USERS["bob"], kamailio.port, tone=PHONE_TONE).start()
    phone.wait_registered()
    yield phone
    phone.stop()


@pytest.fixture
def sip_server(kamailio: Kamailio, start_server: Any, backend: Backend) -> ServerProcess:
    # The registrar first: it is then stopped after the server, whose un-REGISTERs it answers.
    server: ServerProcess = start_server(["--sip-udp-port", "0", "--sip-tcp-port", "0", "--log-level", "debug"])
    server.add_app("sipApp", "sipApp", backend.url)
    return server


class Phone:
    """The test page: WebSDK sessions with SIP accounts, and their calls."""

    def __init__(self, browser: Browser, server: ServerProcess, kamailio: Kamailio):
        self.b = browser
        self.server = server
        self.kamailio = kamailio

    def open(self) -> Phone:
        self.b.open(f"{self.server.rest_url}/?ws={urlsplit(self.server.ws_url).port}")
        assert self.b.wait_js(HARNESS, timeout=10), "the page did not load the WebSDK"
        return self

    def connect(self, name: str, login: str, password: str | None = None, app_key: str = "sipApp") -> None:
        sip = {"login": login, "authenticationName": login, "password": password or USERS[login],
               "domain": "127.0.0.1", "port": str(self.kamailio.port), "registerRequired": True}
        self.b.js("window.__s.connect(arguments[0], arguments[1], arguments[2], arguments[3])", name,
                  self.server.ws_url, sip, app_key)

    def wait(self, target: str, *statuses: str, timeout: float = 20.0) -> dict[str, Any]:
        event = self.b.js_async("window.__s.waitFor(arguments[0], arguments[1], arguments[2])", target,
                                list(statuses), timeout=timeout)
        assert isinstance(event, dict), event
        return event

    def call(self, session: str, target: str, callee: str) -> None:
        self.b.js("window.__s.call(arguments[0], arguments[1], arguments[2])", session, target, callee)

    def audio_in(self) -> dict[str, Any]:
        stats = self.b.js_async("window.__s.audioIn(arguments[0])", timeout=10)
        assert isinstance(stats, dict) and "error" not in stats, stats
        return stats

    def events(self, target: str) -> list[str]:
        return list(self.b.js("var t = arguments[0]; return window.__s.events.filter(function (e) "
                              "{ return e.target === t; }).map(function (e) { return e.status + "
                              "(e.info ? ' (' + e.info + ')' : ''); })", target))


@pytest.fixture
def phone(browser: Browser, sip_server: ServerProcess, kamailio: Kamailio) -> Phone:
    return Phone(browser, sip_server, kamailio).open()


def assert_hears(phone: Phone) -> None:
    """The browser's received audio level rises above silence."""
    phone.b.wait_until(lambda: phone.audio_in()["energy"] > 0.001 and phone.audio_in()["packets"] > 50, 20,
                       "the browser to receive audio")


def assert_recorded_tone(bob: Baresip) -> None:
    def recorded() -> tuple[float, float] | None:
        files = [p for p in bob.recordings() if p.name.endswith("-dec.wav")]
        if not files or files[-1].stat().st_size < 64000:
            return None
        frequency, level = dominant_frequency(files[-1])
        return (frequency, level) if level > 100 else None

    frequency, level = wait_for(recorded, 20, "baresip to record the browser's audio")
    assert abs(frequency - BROWSER_TONE) < 15, f"baresip heard {frequency:.0f} Hz, the browser sent {BROWSER_TONE}"


def test_register_call_baresip_audio_both_ways_and_hangup(phone: Phone, bob: Baresip, backend: Backend) -> None:
    phone.connect("alice", "alice")
    phone.wait("alice", "REGISTERED")
    registered = backend.wait_for("RegistrationStatusEvent", lambda c: c.body.get("status") == "REGISTERED")
    assert registered.body["sipStatus"] == 200 and "REGISTER" in registered.body["sipMessageRaw"]

    phone.call("alice", "out", "bob")
    phone.wait("out", "ESTABLISHED", "FAILED", "FINISH")
    assert "ESTABLISHED" in phone.events("out"), (phone.events("out"), phone.server.log()[-3000:])
    bob.wait_event("CALL_ESTABLISHED")
    assert backend.hooks("call"), "the call was not asked of the backend"
    assert_hears(phone)
    assert_recorded_tone(bob)
    established = backend.wait_for("CallStatusEvent", lambda c: c.body.get("status") == "ESTABLISHED")
    assert established.body["sipStatus"] == 200

    phone.b.js("window.__s.calls['out'].hangup()")
    phone.wait("out", "FINISH")
    bob.wait_event("CALL_CLOSED")
    backend.wait_for("CallStatusEvent", lambda c: c.body.get("status") == "FINISH")


def test_wrong_password_fails_registration(phone: Phone, backend: Backend) -> None:
    phone.connect("alice", "alice", password="not-the-password")
    phone.wait("alice", "WARN")
    failed = backend.wait_for("RegistrationStatusEvent", lambda c: c.body.get("status") == "FAILED")
    assert failed.body["sipStatus"] in (401, 403)


def test_baresip_calls_the_browser_which_answers_then_bob_hangs_up(phone: Phone, bob: Baresip,
                                                                   backend: Backend) -> None:
    phone.connect("alice", "alice")
    phone.wait("alice", "REGISTERED")
    bob.command("dial", f"sip:alice@127.0.0.1:{phone.kamailio.port}")
    incoming = phone.wait("alice", "INCOMING_CALL")
    assert incoming["caller"] == "bob"
    target = incoming["call"]
    phone.b.js("window.__s.answer(arguments[0])", target)
    phone.wait(target, "ESTABLISHED", "FAILED", "FINISH")
    assert "ESTABLISHED" in phone.events(target)
    bob.wait_event("CALL_ESTABLISHED")
    assert_hears(phone)
    assert_recorded_tone(bob)
    bob.command("hangup")
    phone.wait(target, "FINISH")
    backend.wait_for("OnCallEvent")


def test_early_hangup_cancels_the_invite(phone: Phone, kamailio: Kamailio) -> None:
    carol = Baresip("carol", USERS["carol"], kamailio.port, auto_answer=False).start()
    try:
        carol.wait_registered()
        phone.connect("alice", "alice")
        phone.wait("alice", "REGISTERED")
        phone.call("alice", "out", "carol")
        phone.wait("out", "RING")
        carol.wait_event("CALL_INCOMING")
        phone.b.js("window.__s.calls['out'].hangup()")
        try:
            carol.wait_event("CALL_CLOSED")
        except AssertionError:
            raise AssertionError("\n".join(line for line in phone.server.log().splitlines()
                                           if "sip" in line)) from None
        assert "ESTABLISHED" not in phone.events("out")
    finally:
        carol.stop()


def established_call(phone: Phone, bob: Baresip) -> None:
    phone.connect("alice", "alice")
    phone.wait("alice", "REGISTERED")
    phone.call("alice", "out", "bob")
    phone.wait("out", "ESTABLISHED", "FAILED", "FINISH")
    assert "ESTABLISHED" in phone.events("out"), phone.events("out")
    bob.wait_event("CALL_ESTABLISHED")


def test_hold_and_unhold_from_the_browser(phone: Phone, bob: Baresip, backend: Backend) -> None:
    established_call(phone, bob)
    phone.b.js("window.__s.calls['out'].hold()")
    phone.wait("out", "HOLD")
    backend.wait_for("hold")
    held = backend.wait_for("CallStatusEvent", lambda c: c.body.get("status") == "HOLD")
    assert held.body["sipStatus"] == 200
    before = phone.events("out").count("ESTABLISHED")
    phone.b.js("window.__s.calls['out'].unhold()")
    phone.b.wait_until(lambda: phone.events("out").count("ESTABLISHED") > before, 15, "ESTABLISHED after unhold")
    bob.command("hangup")
    phone.wait("out", "FINISH")


@pytest.mark.parametrize("kind", ["RFC2833", "INFO"])
def test_dtmf_reaches_baresip(phone: Phone, bob: Baresip, backend: Backend, kind: str) -> None:
    established_call(phone, bob)
    start = bob.event_count()
    phone.b.js("window.__s.calls['out'].sendDTMF(arguments[0], arguments[1])", "5", kind)
    event = bob.wait_event("CALL_DTMF_START", after=start)
    assert event.get("param") == "5", event
    backend.wait_for("sendDTMF", lambda c: c.body.get("type") == kind)
    phone.b.js("window.__s.calls['out'].hangup()")
    phone.wait("out", "FINISH")


def test_blind_transfer_to_a_second_baresip(phone: Phone, bob: Baresip, kamailio: Kamailio,
                                            backend: Backend) -> None:
    carol = Baresip("carol", USERS["carol"], kamailio.port, tone=880).start()
    try:
        carol.wait_registered()
        established_call(phone, bob)
        phone.b.js("window.__s.calls['out'].transfer(arguments[0])", "carol")
        carol.wait_event("CALL_ESTABLISHED", timeout=20)
        for status in ("ACCEPTED", "COMPLETED"):
            backend.wait_for("TransferStatusEvent", lambda c, s=status: c.body.get("status") == s)
        # The transferor leaves once the target answered: the browser's call ends, bob talks to carol.
        phone.wait("out", "FINISH")
        bob.wait_event("CALL_CLOSED", timeout=20)
    finally:
        carol.stop()


PHONE_PAGE = "/websdk/examples/demo/sip/phone/phone.html"


def test_the_websdk_phone_demo_page_connects_calls_and_hangs_up(browser: Browser, sip_server: ServerProcess,
                                                               kamailio: Kamailio, bob: Baresip) -> None:
    """The WebSDK's own examples/demo/sip/phone page, unmodified: fill the form, Connect, Call, Hangup."""
    from selenium.webdriver.common.by import By

    driver = browser.driver
    browser.open(sip_server.rest_url + PHONE_PAGE)
    # The page loads its form, then fills in its defaults: wait for its Connect button to be armed.
    browser.wait_until(lambda: browser.js("var b = document.getElementById('connectBtn');"
                                          "return b && b.textContent === 'Connect' && !b.disabled;"),
                       15, "the phone page's form")
    # The page wants every field filled, the outbound proxy too.
    fields = {"urlServer": sip_server.ws_url, "sipLogin": "alice", "sipAuthenticationName": "alice",
              "sipPassword": USERS["alice"], "sipDomain": "127.0.0.1",
              "sipOutboundProxy": f"127.0.0.1:{kamailio.port}", "sipPort": str(kamailio.port)}
    for element_id, value in fields.items():
        element = driver.find_element(By.ID, element_id)
        element.clear()
        element.send_keys(value)

    def text(element_id: str) -> str:
        return str(driver.find_element(By.ID, element_id).text)

    driver.find_element(By.ID, "connectBtn").click()
    browser.wait_until(lambda: text("regStatus") == "REGISTERED", 20, "REGISTERED on the phone page")
    callee = driver.find_element(By.ID, "callee")
    callee.clear()
    callee.send_keys("bob")
    driver.find_element(By.ID, "callBtn").click()
    browser.wait_until(lambda: text("callStatus") == "ESTABLISHED", 20, "ESTABLISHED on the phone page")
    bob.wait_event("CALL_ESTABLISHED")
    driver.find_element(By.ID, "callBtn").click()  # now labelled Hangup
    browser.wait_until(lambda: text("callStatus") in ("FINISH", ""), 20, "the call to end on the phone page")
    bob.wait_event("CALL_CLOSED")


SDP_ANSWER = """v=0
o=sipp 1 [cseq] IN IP4 [local_ip]
s=-
c=IN IP4 [local_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a={direction}"""


def _reinvite(cseq: int, direction: str) -> str:
    sdp = SDP_ANSWER.replace("[cseq]", str(cseq + 1)).format(direction=direction)
    return f"""  <pause milliseconds="500"/>
  <send retrans="500">
    <![CDATA[
INVITE [$contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To: [$from]
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:callee@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{sdp}
]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
  <send>
    <![CDATA[
ACK [$contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To: [$from]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0

]]>
  </send>
"""


def callee_scenario(answer: int = 200) -> str:
    """A SIPp phone: answers the call, checks an INFO_RELAY and an INFO DTMF, holds and unholds the
    browser by re-INVITE, then hangs up. With `answer` 486 it is busy instead."""
    if answer != 200:
        return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="busy">
  <recv request="INVITE"/>
  <send><![CDATA[
SIP/2.0 {answer} Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="ACK"/>
</scenario>
"""
    respond = """  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
"""
    sdp = SDP_ANSWER.replace("[cseq]", "1").format(direction="sendrecv")
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="callee">
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
Contact: <sip:callee@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{sdp}
]]></send>
  <recv request="ACK"/>
  <recv request="INFO">
    <action>
      <ereg regexp="application/dtmf$" search_in="hdr" header="Content-Type:" check_it="true" assign_to="t1"/>
      <ereg regexp="^7" search_in="body" check_it="true" assign_to="d1"/>
    </action>
  </recv>
{respond}  <recv request="INFO">
    <action>
      <ereg regexp="application/dtmf-relay" search_in="hdr" header="Content-Type:" check_it="true" assign_to="t2"/>
      <ereg regexp="Signal=8" search_in="body" check_it="true" assign_to="d2"/>
    </action>
  </recv>
{respond}{_reinvite(1, "sendonly")}{_reinvite(2, "sendrecv")}  <pause milliseconds="500"/>
  <send retrans="500"><![CDATA[
BYE [$contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To: [$from]
Call-ID: [call_id]
CSeq: 3 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
  <Reference variables="t1,d1,t2,d2"/>
</scenario>
"""


def test_sipp_phone_checks_info_dtmf_holds_unholds_and_hangs_up(phone: Phone, backend: Backend) -> None:
    from tests.support.sip_peers import Sipp

    sipp = Sipp(callee_scenario()).start(None)
    try:
        phone.connect("alice", "alice")
        phone.wait("alice", "REGISTERED")
        phone.call("alice", "out", f"sip:callee@127.0.0.1:{sipp.port}")
        phone.wait("out", "ESTABLISHED", "FAILED", "FINISH")
        assert "ESTABLISHED" in phone.events("out"), phone.events("out")
        phone.b.js("window.__s.calls['out'].sendDTMF('7', 'INFO_RELAY')")
        phone.b.js("window.__s.calls['out'].sendDTMF('8', 'INFO')")
        phone.wait("out", "HOLD")  # the phone put us on hold (sendonly)
        phone.b.wait_until(lambda: phone.events("out").count("ESTABLISHED") >= 2, 15,
                           f"unheld by the phone: {phone.events('out')} {sipp.messages()[-3000:]}")
        phone.wait("out", "FINISH")  # and hung up
        code, output = sipp.wait(30)
        assert code == 0, output
    finally:
        sipp.stop()
    held = backend.wait_for("CallStatusEvent", lambda c: c.body.get("status") == "HOLD")
    assert "a=sendonly" in held.body["sipMessageRaw"]


def test_busy_phone_gives_busy(phone: Phone, backend: Backend) -> None:
    from tests.support.sip_peers import Sipp

    sipp = Sipp(callee_scenario(486)).start(None)
    try:
        phone.connect("alice", "alice")
        phone.wait("alice", "REGISTERED")
        phone.call("alice", "out", f"sip:busy@127.0.0.1:{sipp.port}")
        phone.wait("out", "BUSY")
        code, output = sipp.wait(30)
        assert code == 0, output
    finally:
        sipp.stop()
    busy = backend.wait_for("CallStatusEvent", lambda c: c.body.get("status") == "BUSY")
    assert busy.body["sipStatus"] == 486


def test_browser_declines_an_incoming_call(phone: Phone, bob: Baresip, backend: Backend) -> None:
    phone.connect("alice", "alice")
    phone.wait("alice", "REGISTERED")
    bob.command("dial", f"sip:alice@127.0.0.1:{phone.kamailio.port}")
    target = phone.wait("alice", "INCOMING_CALL")["call"]
    phone.b.js("window.__s.calls[arguments[0]].hangup()", target)
    closed = bob.wait_event("CALL_CLOSED")
    assert "603" in str(closed.get("param", "")) or "Decline" in str(closed.get("param", "")), closed
    backend.wait_for("hangup")


TRANSFEREE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="refers the browser to bob">
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
Contact: <sip:callee@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [local_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv request="ACK"/>
  <pause milliseconds="500"/>
  <send retrans="500"><![CDATA[
REFER [$contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To: [$from]
Call-ID: [call_id]
CSeq: 1 REFER
Contact: <sip:callee@[local_ip]:[local_port]>
Refer-To: <sip:bob@127.0.0.1:KAMAILIO_PORT>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="202"/>
  <recv request="NOTIFY"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="NOTIFY">
    <action><ereg regexp="SIP/2.0 200" search_in="body" check_it="true" assign_to="done"/></action>
  </recv>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <Reference variables="done"/>
</scenario>
"""


def test_the_far_end_transfers_the_browser_to_bob(phone: Phone, bob: Baresip, kamailio: Kamailio) -> None:
    """An incoming REFER: the gateway calls bob with the browser's media, reports to the referrer with
    NOTIFY sipfrag, and leaves it; the browser's call goes on, now with bob (his tone reaches it)."""
    from tests.support.sip_peers import Sipp

    sipp = Sipp(TRANSFEREE.replace("KAMAILIO_PORT", str(kamailio.port))).start(None)
    try:
        phone.connect("alice", "alice")
        phone.wait("alice", "REGISTERED")
        phone.call("alice", "out", f"sip:callee@127.0.0.1:{sipp.port}")
        phone.wait("out", "ESTABLISHED", "FAILED", "FINISH")
        bob.wait_event("CALL_ESTABLISHED", timeout=20)
        code, output = sipp.wait(30)
        assert code == 0, output + "\n".join(line for line in phone.server.log().splitlines() if "SIP" in line)
    finally:
        sipp.stop()
    assert "FINISH" not in phone.events("out") and "FAILED" not in phone.events("out"), \
        "\n".join(line for line in phone.server.log().splitlines() if "sip_service" in line)
    assert_hears(phone)
    assert_recorded_tone(bob)
    phone.b.js("window.__s.calls['out'].hangup()")
    bob.wait_event("CALL_CLOSED")
