"""Sessions opened by the official client, @flashphoner/websdk, in headless Chromium.

The page is the server's own demo page (`{rest_url}/`), which loads the WebSDK bundle the server
serves at /websdk/flashphoner.js and calls Flashphoner.init({}). A small harness injected into the page
records every SESSION_STATUS callback (with its object) and every WebSocket the SDK opens, so the
tests can see what the client saw and reach the socket the SDK keeps to itself.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlsplit

import pytest

from tests.support.backend import Backend
from tests.support.browser import Browser, browser_fixture, chromium_fixture, dumps  # noqa: F401
from tests.support.server import ServerProcess
from tests.support.wsclient import WsClient

# Installed into the page once the WebSDK is loaded. window.__t.events: every session callback as
# {session, status, obj}; window.__t.sockets: every WebSocket the page opened, with how it ended.
HARNESS = r"""
if (window.__t) { return true; }
if (typeof Flashphoner === "undefined") { return false; }
var t = window.__t = {events: [], sockets: [], ws: [], sessions: {}};
var NativeWebSocket = window.WebSocket;
function TracedWebSocket(url, protocols) {
    var ws = protocols === undefined ? new NativeWebSocket(url) : new NativeWebSocket(url, protocols);
    var record = {url: String(url), opened: false, error: false, closed: null};
    t.ws.push(ws);
    t.sockets.push(record);
    ws.addEventListener("open", function () { record.opened = true; });
    ws.addEventListener("error", function () { record.error = true; });
    ws.addEventListener("close", function (e) {
        record.closed = {code: e.code, reason: e.reason, wasClean: e.wasClean};
    });
    return ws;
}
TracedWebSocket.prototype = NativeWebSocket.prototype;
["CONNECTING", "OPEN", "CLOSING", "CLOSED"].forEach(function (k) {
    TracedWebSocket[k] = NativeWebSocket[k];
});
window.WebSocket = TracedWebSocket;

t.create = function (name, options) {
    var S = Flashphoner.constants.SESSION_STATUS;
    var firstSocket = t.ws.length;
    var session = Flashphoner.createSession(options);
    t.sessions[name] = {session: session, socket: t.ws[firstSocket]};
    function record(status, obj) {
        var event = {session: name, status: status, obj: obj === undefined ? null : obj,
                     at: performance.now()};
        t.events.push(event);
        t.waiters = t.waiters.filter(function (w) { return !w(event); });
    }
    [S.CONNECTED, S.ESTABLISHED, S.DISCONNECTED, S.FAILED].forEach(function (status) {
        session.on(status, function (s, obj) { record(status, obj); });
    });
    // WARN is called with the `fail` object alone.
    session.on(S.WARN, function (obj) { record(S.WARN, obj); });
    return session.id();
};
// Calls done(event) with session `name`'s first event whose status is in `statuses`, now or later.
t.waiters = [];
t.waitFor = function (name, statuses, done) {
    function match(e) { return e.session === name && statuses.indexOf(e.status) >= 0; }
    var found = t.events.filter(match)[0];
    if (found) { done(found); return; }
    t.waiters.push(function (e) { if (match(e)) { done(e); return true; } return false; });
};
return true;
"""


# -- helpers ------------------------------------------------------------------------------------------


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def rest(server: ServerProcess, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """POST JSON to the server's REST API: (status, parsed answer or None)."""
    request = urllib.request.Request(server.rest_url + path, data=json.dumps(body or {}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with _NO_PROXY.open(request, timeout=10) as resp:
            status, raw = resp.status, resp.read()
    except HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw.strip() else None
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


def listed_sessions(server: ServerProcess) -> dict[str, dict[str, Any]]:
    """sessionId -> entry of /rest-api/connection/find_all ({} when the server answers 404)."""
    status, answer = rest(server, "/rest-api/connection/find_all")
    if status == 404:
        return {}
    assert status == 200 and isinstance(answer, list), (status, answer)
    return {entry["sessionId"]: entry for entry in answer}


class Page:
    """The demo page with the harness: create WebSDK sessions and read what their callbacks saw."""

    def __init__(self, browser: Browser, server: ServerProcess):
        self.b = browser
        self.server = server

    def open(self) -> Page:
        ws_port = urlsplit(self.server.ws_url).port
        self.b.open(f"{self.server.rest_url}/?ws={ws_port}")
        loaded = self.b.js(HARNESS)
        assert loaded, ("window.Flashphoner is not defined: the demo page did not load the WebSDK from "
                        f"/websdk/flashphoner.js\n{self.b.describe()}")
        return self

    def create(self, name: str, **options: Any) -> None:
        options.setdefault("urlServer", self.server.ws_url)
        self.b.js("window.__t.create(arguments[0], arguments[1])", name, options)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        events = self.b.js("return window.__t.events")
        return [e for e in events if name is None or e["session"] == name]

    def statuses(self, name: str) -> list[str]:
        return [e["status"] for e in self.events(name)]

    def wait_event(self, name: str, *statuses: str, timeout: float = 10.0) -> dict[str, Any]:
        """Session `name`'s first callback with one of `statuses`, waited for in the page."""
        event = self.b.js_async("window.__t.waitFor(arguments[0], arguments[1], arguments[2])",
                                name, list(statuses), timeout=timeout)
        assert isinstance(event, dict) and event.get("status") in statuses, event
        return event

    def wait_status(self, name: str, status: str, timeout: float = 10.0) -> Any:
        """The object of session `name`'s first `status` callback, once there is one."""
        return self.wait_event(name, status, timeout=timeout)["obj"]

    def established(self, name: str, timeout: float = 10.0, **options: Any) -> dict[str, Any]:
        """Create session `name` and return getUserData's object once it is ESTABLISHED."""
        self.create(name, **options)
        user_data = self.wait_status(name, "ESTABLISHED", timeout)
        assert isinstance(user_data, dict), f"ESTABLISHED without the getUserData object: {user_data!r}"
        return user_data

    def disconnect(self, name: str) -> None:
        self.b.js("window.__t.sessions[arguments[0]].session.disconnect()", name)

    def socket_close(self, name: str, code: int, reason: str) -> None:
        """Close the session's WebSocket behind the SDK's back (as a dropped connection would)."""
        self.b.js("window.__t.sessions[arguments[0]].socket.close(arguments[1], arguments[2])",
                  name, code, reason)

    def user_agent(self) -> str:
        return str(self.b.js("return navigator.userAgent"))


@pytest.fixture
def page(server: ServerProcess, browser: Browser) -> Iterator[Page]:
    yield Page(browser, server).open()


Listing = dict[str, dict[str, Any]]


def status_is(session_id: str, status: str) -> Callable[[Listing], bool]:
    return lambda listed: listed.get(session_id, {}).get("status") == status


def wait_listed(server: ServerProcess, browser: Browser, predicate: Callable[[Listing], bool],
                what: str, timeout: float = 10.0) -> Listing:
    def check() -> tuple[Listing] | None:
        listed = listed_sessions(server)
        return (listed,) if predicate(listed) else None  # a tuple: truthy even for an empty listing

    return browser.wait_until(check, timeout, what)[0]


CONTEXT = ("nodeId", "sessionId", "appKey")


# -- tests ----------------------------------------------------------------------------------------------


def test_session_established_and_listed(server: ServerProcess, page: Page) -> None:
    user_data = page.established("a", appKey="defaultApp")
    for key in ("sessionId", "authToken", "nodeId", "appKey"):
        assert isinstance(user_data.get(key), str) and user_data[key], f"getUserData lacks {key}: {user_data}"
    assert user_data["appKey"] == "defaultApp"
    assert page.statuses("a")[:2] == ["CONNECTED", "ESTABLISHED"], page.events("a")
    # The client's own fields come back (the echo backend approves them unchanged).
    assert user_data.get("clientVersion") == "2.0"
    assert user_data.get("clientBrowserVersion") == page.user_agent()

    listed = listed_sessions(server)
    assert user_data["sessionId"] in listed, f"find_all does not list the session: {dumps(listed)}"
    entry = listed[user_data["sessionId"]]
    assert entry["appKey"] == "defaultApp"
    assert entry["nodeId"] == user_data["nodeId"]
    assert entry["status"] == "ESTABLISHED"
    assert entry["clientBrowserVersion"] == page.user_agent()
    assert "WebRTC" in (entry.get("mediaProviders") or []), entry
    assert "authToken" not in entry, "find_all must not hand out the session's authToken"
    # find answers with the one session asked for.
    status, found = rest(server, "/rest-api/connection/find", {"sessionId": user_data["sessionId"]})
    assert status == 200 and [e["sessionId"] for e in found] == [user_data["sessionId"]], (status, found)


def test_disconnect_drops_the_session(server: ServerProcess, page: Page, browser: Browser) -> None:
    user_data = page.established("a")
    assert user_data["sessionId"] in listed_sessions(server)
    page.disconnect("a")
    page.wait_status("a", "DISCONNECTED")
    assert "FAILED" not in page.statuses("a"), page.events("a")
    wait_listed(server, browser, lambda listed: not listed, "find_all to list no session")
    status, answer = rest(server, "/rest-api/connection/find_all")
    assert status == 404, (status, answer)
    status, answer = rest(server, "/rest-api/connection/find", {"sessionId": user_data["sessionId"]})
    assert status == 404, (status, answer)


def _refused_session(server: ServerProcess, backend: Backend, page: Page) -> list[dict[str, Any]]:
    """Open a WebSDK session to an app whose backend refuses `connect`; the session's events once its
    socket is gone."""
    backend.on("connect", status=403, body={"info": "no entry for you"})
    server.add_app("refuser", "refuserKey", backend.url)
    page.create("r", appKey="refuserKey")
    page.wait_event("r", "FAILED", "DISCONNECTED")
    return page.events("r")


def test_backend_refusal_reason_reaches_client_and_backend(server: ServerProcess, backend: Backend,
                                                           page: Page) -> None:
    events = _refused_session(server, backend, page)
    statuses = [e["status"] for e in events]
    assert "ESTABLISHED" not in statuses, events
    warnings = [e["obj"] for e in events if e["status"] == "WARN"]
    assert warnings and warnings[0].get("info") == "no entry for you", events
    assert warnings[0].get("apiMethod") == "connect", warnings

    connect = backend.wait_for("connect")
    assert connect.body["appKey"] == "refuserKey"
    event = backend.wait_for("ConnectionStatusEvent", lambda c: c.body.get("status") == "FAILED")
    for key in CONTEXT:
        assert event.body.get(key) == connect.body[key], (event.body, connect.body)
    assert event.body.get("info") == "no entry for you", event.body
    assert not any(c.body.get("status") == "ESTABLISHED" for c in backend.hooks("ConnectionStatusEvent"))
    # A refused session never becomes a server session.
    assert listed_sessions(server) == {}


def test_backend_refusal_is_failed_for_the_websdk(server: ServerProcess, backend: Backend, page: Page) -> None:
    events = _refused_session(server, backend, page)
    statuses = [e["status"] for e in events]
    assert "FAILED" in statuses and "DISCONNECTED" not in statuses, events
    assert statuses.index("WARN") < statuses.index("FAILED"), events


def test_backend_sees_connect_and_status_events(server: ServerProcess, backend: Backend, page: Page) -> None:
    server.add_app("hooked", "hookedKey", backend.url)
    user_data = page.established("h", appKey="hookedKey", custom={"room": "blue"})
    session_id = user_data["sessionId"]

    connect = backend.wait_for("connect")
    for key in CONTEXT:
        assert connect.body.get(key) == user_data[key], f"connect {key}: {connect.body} vs {user_data}"
    assert connect.body["appKey"] == "hookedKey"
    assert connect.body.get("clientVersion") == "2.0"
    assert connect.body.get("custom") == {"room": "blue"}
    assert "WebRTC" in connect.body.get("mediaProviders", [])

    established = backend.wait_for("ConnectionStatusEvent", lambda c: c.body.get("status") == "ESTABLISHED")
    for key in CONTEXT:
        assert established.body.get(key) == user_data[key], established.body

    page.disconnect("h")
    page.wait_status("h", "DISCONNECTED")
    disconnected = backend.wait_for("ConnectionStatusEvent",
                                    lambda c: c.body.get("status") == "DISCONNECTED")
    for key in CONTEXT:
        assert disconnected.body.get(key) == user_data[key], disconnected.body
    # In order, once each.
    statuses = [c.body["status"] for c in backend.hooks("ConnectionStatusEvent")
                if c.body.get("sessionId") == session_id]
    assert statuses == ["ESTABLISHED", "DISCONNECTED"], statuses
    assert connect.at <= established.at <= disconnected.at


def test_rest_terminate_disconnects_only_that_session(server: ServerProcess, page: Page,
                                                      browser: Browser) -> None:
    first = page.established("one")
    second = page.established("two")
    assert first["sessionId"] != second["sessionId"]
    assert first["authToken"] != second["authToken"]
    assert set(listed_sessions(server)) == {first["sessionId"], second["sessionId"]}

    status, answer = rest(server, "/rest-api/connection/terminate", {"sessionId": first["sessionId"]})
    assert status == 200, (status, answer)
    page.wait_status("one", "DISCONNECTED")
    listed = wait_listed(server, browser, lambda listed: first["sessionId"] not in listed,
                         "the terminated session to leave find_all")
    assert set(listed) == {second["sessionId"]}
    assert listed[second["sessionId"]]["status"] == "ESTABLISHED"
    assert page.statuses("two") == ["CONNECTED", "ESTABLISHED"], page.events("two")
    status, answer = rest(server, "/rest-api/connection/terminate", {"sessionId": first["sessionId"]})
    assert status == 404, (status, answer)

    # The other session's socket is still live: terminating it now reaches its client too.
    status, answer = rest(server, "/rest-api/connection/terminate", {"sessionId": second["sessionId"]})
    assert status == 200, (status, answer)
    page.wait_status("two", "DISCONNECTED")


def test_keepalive_session_survives_a_dropped_socket(server: ServerProcess, page: Page,
                                                     browser: Browser) -> None:
    before = page.established("k1", keepAlive=True)
    session_id, token = before["sessionId"], before["authToken"]
    # The socket goes away without the SDK's disconnect(): the session waits for its client.
    page.socket_close("k1", 4000, "network gone")
    page.wait_status("k1", "DISCONNECTED")
    listed = wait_listed(server, browser, status_is(session_id, "DETACHED"),
                         "the keepAlive session to be DETACHED")
    assert listed[session_id]["keepAlive"] is True

    # A new client session that brings the authToken gets the same server session back.
    after = page.established("k2", keepAlive=True, authToken=token)
    assert after["sessionId"] == session_id, (before, after)
    assert after["authToken"] == token
    listed = wait_listed(server, browser, status_is(session_id, "ESTABLISHED"),
                         "the resumed session to be ESTABLISHED")
    assert set(listed) == {session_id}


def test_session_without_keepalive_is_not_resumed(server: ServerProcess, page: Page,
                                                  browser: Browser) -> None:
    before = page.established("n1")
    page.socket_close("n1", 4000, "network gone")
    page.wait_status("n1", "DISCONNECTED")
    wait_listed(server, browser, lambda listed: before["sessionId"] not in listed,
                "the session without keepAlive to be closed")
    after = page.established("n2", authToken=before["authToken"])
    assert after["sessionId"] != before["sessionId"]
    assert after["authToken"] != before["authToken"]
    assert set(listed_sessions(server)) == {after["sessionId"]}


async def _wait_rest(server: ServerProcess, predicate: Callable[[Listing], bool], what: str,
                     limit: float = 10.0) -> Listing:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        listed = await asyncio.to_thread(listed_sessions, server)
        if predicate(listed):
            return listed
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {limit} s waiting for {what}; find_all: {dumps(listed)}")
        await asyncio.sleep(0.05)  # poll interval of a condition with a deadline


def _drop_tcp(client: WsClient) -> None:
    """End the TCP connection under the WebSocket without a close frame (a vanished client)."""
    assert client.ws is not None
    sock = client.ws.get_extra_info("socket")
    assert sock is not None
    sock.shutdown(socket.SHUT_RDWR)


async def test_keepalive_resume_after_abrupt_drop_and_expiry(
        start_server: Callable[..., ServerProcess], backend: Backend) -> None:
    """Protocol-level: the TCP connection vanishes (no close frame). Within the grace period the
    authToken brings the same session back; after a second drop and no reconnect the session ends
    when the grace period runs out."""
    grace = 1.5
    srv = start_server(extra_args=["--ws-keepalive-grace", str(grace)])
    srv.add_app("ka", "kaKey", backend.url)

    async with WsClient(srv.ws_url) as first:
        user_data = await first.connect(appKey="kaKey", keepAlive=True)
        session_id, token = user_data["sessionId"], user_data["authToken"]
        _drop_tcp(first)
        await asyncio.wait_for(first.closed.wait(), 10)
    listed = await _wait_rest(srv, status_is(session_id, "DETACHED"),
                              "the session to be DETACHED")
    assert set(listed) == {session_id}

    async with WsClient(srv.ws_url) as second:
        resumed = await second.connect(appKey="kaKey", keepAlive=True, authToken=token)
        assert resumed["sessionId"] == session_id
        assert resumed["authToken"] == token
        await _wait_rest(srv, status_is(session_id, "ESTABLISHED"),
                         "the session to be ESTABLISHED again")
        # The backend saw one session: no second connect, no DISCONNECTED for the drop.
        assert len(backend.hooks("connect")) == 1
        _drop_tcp(second)
        await asyncio.wait_for(second.closed.wait(), 10)

    # Nobody comes back: the grace period ends the session.
    await _wait_rest(srv, lambda ls: session_id not in ls, "the grace period to end the session",
                     limit=grace + 10)
    event = await asyncio.to_thread(backend.wait_for, "ConnectionStatusEvent",
                                    lambda c: c.body.get("status") == "DISCONNECTED")
    assert event.body["sessionId"] == session_id
    statuses = [c.body["status"] for c in backend.hooks("ConnectionStatusEvent")]
    assert statuses == ["ESTABLISHED", "DISCONNECTED"], statuses

    # The expired token opens a new session.
    async with WsClient(srv.ws_url) as third:
        fresh = await third.connect(appKey="kaKey", keepAlive=True, authToken=token)
        assert fresh["sessionId"] != session_id


async def test_backend_hears_of_a_client_that_left_during_connect(
        start_server: Callable[..., ServerProcess], backend: Backend) -> None:
    """The backend approved `connect` (slowly); the client was gone by then. The backend must still
    learn that the session it approved ended (ConnectionStatusEvent), and no session may linger."""
    srv = start_server()
    srv.add_app("slow", "slowKey", backend.url)
    backend.on("connect", delay=1.0)
    async with WsClient(srv.ws_url) as client:
        await client.send("connection", {"appKey": "slowKey", "clientVersion": "2.0"})
        connect = await asyncio.to_thread(backend.wait_for, "connect")
    # The socket is closed while the backend still holds its answer.
    event = await asyncio.to_thread(backend.wait_for, "ConnectionStatusEvent", lambda c: True, 4.0)
    assert event.body["sessionId"] == connect.body["sessionId"]
    assert event.body["status"] in ("DISCONNECTED", "FAILED"), event.body
    assert await asyncio.to_thread(listed_sessions, srv) == {}
