"""REST hooks against a real HTTP backend: context fields, restClientConfig, signatures, isolation."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import aiohttp
import pytest

from streaming.hooks import SIGNATURE_HEADER, verify_signature
from tests.support.backend import Backend
from tests.support.server import ServerProcess
from tests.support.wsclient import WsClient

CONTEXT = ("nodeId", "sessionId", "appKey")


async def find_all(server: ServerProcess) -> tuple[int, object]:
    async with aiohttp.ClientSession() as http:
        async with http.post(server.rest_url + "/rest-api/connection/find_all", json={}) as resp:
            return resp.status, await resp.json()


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


async def test_connect_and_connection_events_carry_the_context(server: ServerProcess, backend: Backend) -> None:
    server.add_app("shop", "shopKey", backend.url)
    async with WsClient(server.ws_url) as client:
        user = await client.connect(appKey="shopKey", custom={"login": "alice"})
        connect = backend.wait_for("connect")
        assert {k: connect.body[k] for k in CONTEXT} == {k: user[k] for k in CONTEXT}
        assert connect.body["appKey"] == "shopKey"
        assert connect.body["custom"] == {"login": "alice"}
        assert "authToken" not in connect.body  # the session's secret stays with the session
        established = backend.wait_for("ConnectionStatusEvent", lambda c: c.body["status"] == "ESTABLISHED")
        assert established.body["sessionId"] == user["sessionId"]
        assert user["custom"] == {"login": "alice"} and user["authToken"]
    closed = await asyncio.to_thread(backend.wait_for, "ConnectionStatusEvent",
                                     lambda c: c.body["status"] == "DISCONNECTED")
    assert closed.body["sessionId"] == user["sessionId"]
    assert all(closed.body[k] for k in CONTEXT)


async def test_refused_connect_reaches_the_client_with_the_reason(server: ServerProcess,
                                                                  backend: Backend) -> None:
    server.add_app("shop", "shopKey", backend.url)
    backend.on("connect", status=403, body={"info": "Banned user"})
    async with WsClient(server.ws_url) as client:
        await client.send("connection", {"appKey": "shopKey"})
        fail = await client.expect("fail")
        assert fail["data"][0]["info"] == "Banned user"
        await asyncio.wait_for(client.closed.wait(), 10)
    assert not [m for m in client.messages if m["message"] == "getUserData"]
    event = await asyncio.to_thread(backend.wait_for, "ConnectionStatusEvent")
    assert event.body["status"] == "FAILED" and event.body["info"] == "Banned user"
    assert (await find_all(server))[0] == 404


async def test_unknown_app_key_is_refused(server: ServerProcess) -> None:
    async with WsClient(server.ws_url) as client:
        await client.send("connection", {"appKey": "nobodysApp"})
        fail = await client.expect("fail")
        assert "nobodysApp" in fail["data"][0]["info"]
        await asyncio.wait_for(client.closed.wait(), 10)


DEAD_URL = "http://127.0.0.1:9"  # the discard port: nothing listens there in the test namespace


async def test_down_backend_refuses_connect_by_default(server: ServerProcess) -> None:
    server.add_app("dead", "deadKey", DEAD_URL)
    async with WsClient(server.ws_url) as client:
        await client.send("connection", {"appKey": "deadKey"})
        fail = await client.expect("fail")
        assert "backend unreachable for connect" in fail["data"][0]["info"]
        await asyncio.wait_for(client.closed.wait(), 10)


async def test_down_backend_lets_connect_in_under_log(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(extra_args=["--hooks-connect-on-error", "LOG"])
    server.add_app("dead", "deadKey", DEAD_URL)
    async with WsClient(server.ws_url) as client:
        user = await client.connect(appKey="deadKey")
        assert user["sessionId"]
        # Events to the dead backend fail quietly and the session goes on.
        await client.send("ping")
        await client.expect("pong")


@pytest.mark.parametrize("on_error, allowed", [("FAIL", False), ("LOG", True)])
async def test_direct_invocation_on_a_down_backend(on_error: str, allowed: bool) -> None:
    from streaming.apps import App
    from streaming.hooks import HookClient
    from streaming.rest_config import MethodConfig

    client = HookClient(timeout=2.0)
    await client.start()
    try:
        app = App("shop", "shopKey", DEAD_URL, methods=frozenset({"publishStream", "StreamStatusEvent"}))
        body = {"name": "cam1", "nodeId": "n", "sessionId": "s", "appKey": "shopKey"}
        result = await client.call(app, "publishStream", body, MethodConfig(on_error=on_error))
        assert result.allowed is allowed
        assert result.status is None and "backend unreachable for publishStream" in (result.reason or "")
        # An event never fails anything, whatever restOnError says.
        event = await client.call(app, "StreamStatusEvent", body, MethodConfig(on_error="FAIL"))
        assert event.allowed
    finally:
        await client.close()


async def test_non_200_refuses_a_direct_invocation_even_under_log(backend: Backend) -> None:
    from streaming.apps import App
    from streaming.hooks import HookClient
    from streaming.rest_config import MethodConfig

    backend.on("publishStream", status=403)
    client = HookClient(timeout=2.0)
    await client.start()
    try:
        app = App("shop", "shopKey", backend.url, methods=frozenset({"publishStream"}))
        result = await client.call(app, "publishStream", {"name": "x"}, MethodConfig(on_error="LOG"))
        assert not result.allowed and result.status == 403 and result.reason == "Restricted access"
        backend.on("publishStream", status=500, body="database is down")
        result = await client.call(app, "publishStream", {"name": "x"}, MethodConfig(on_error="LOG"))
        assert not result.allowed and result.reason == "database is down"
    finally:
        await client.close()


async def test_overwrite_of_a_field(server: ServerProcess, backend: Backend) -> None:
    """Under OVERWRITE the backend rewrites the fields named in restOverwrite, and only those."""
    server.add_app("shop", "shopKey", backend.url)
    backend.on("connect", transform=lambda body: {
        **body, "custom": {"role": "viewer"}, "clientVersion": "forged", "sessionId": "forged",
        "restClientConfig": {"connect": {"restPolicy": "OVERWRITE", "restOverwrite": "custom,sessionId"}}})
    async with WsClient(server.ws_url) as client:
        user = await client.connect(appKey="shopKey", custom={"role": "admin"})
    assert user["custom"] == {"role": "viewer"}
    assert user["clientVersion"] == "2.0"  # not listed in restOverwrite
    assert user["sessionId"] != "forged"  # context fields are the server's


async def test_notify_ignores_the_answers_fields(server: ServerProcess, backend: Backend) -> None:
    server.add_app("shop", "shopKey", backend.url)
    backend.on("connect", transform=lambda body: {**body, "custom": {"role": "viewer"}})
    async with WsClient(server.ws_url) as client:
        user = await client.connect(appKey="shopKey", custom={"role": "admin"})
    assert user["custom"] == {"role": "admin"}


async def test_rest_and_client_exclude(server: ServerProcess, backend: Backend) -> None:
    server.add_app("shop", "shopKey", backend.url)
    backend.on("connect", transform=lambda body: {**body, "restClientConfig": {
        "connect": {"clientExclude": "clientOSVersion,custom"},
        "ConnectionStatusEvent": {"restExclude": "info,appKey"},
    }})
    async with WsClient(server.ws_url) as client:
        user = await client.connect(appKey="shopKey", custom={"x": 1})
        assert "clientOSVersion" not in user and "custom" not in user
        assert user["sessionId"] and user["authToken"]
    event = await asyncio.to_thread(backend.wait_for, "ConnectionStatusEvent",
                                    lambda c: c.body.get("status") == "DISCONNECTED")
    assert "info" not in event.body  # restExclude
    assert all(k in event.body for k in CONTEXT)  # context fields are never excluded


async def test_disable_means_not_called(server: ServerProcess, backend: Backend) -> None:
    server.add_app("shop", "shopKey", backend.url)
    backend.on("connect", transform=lambda body: {**body, "restClientConfig": {
        "ConnectionStatusEvent": {"restPolicy": "DISABLE"}}})
    async with WsClient(server.ws_url) as client:
        await client.connect(appKey="shopKey")
    # A second session with the default config proves events flow; the first one's never came.
    backend.on("connect")
    async with WsClient(server.ws_url) as client:
        second = await client.connect(appKey="shopKey")
    await asyncio.to_thread(backend.wait_for, "ConnectionStatusEvent",
                            lambda c: c.body["sessionId"] == second["sessionId"]
                            and c.body["status"] == "DISCONNECTED")
    first_events = [c for c in backend.hooks("ConnectionStatusEvent") if c.body["sessionId"] != second["sessionId"]]
    assert first_events == []


async def test_only_enabled_methods_are_called(server: ServerProcess, backend: Backend) -> None:
    server.add_app("shop", "shopKey", backend.url, "--method", "connect")
    async with WsClient(server.ws_url) as client:
        await client.connect(appKey="shopKey")
    async with WsClient(server.ws_url) as client:
        await client.connect(appKey="shopKey")
    await asyncio.to_thread(wait_until, lambda: len(backend.hooks("connect")) == 2)
    assert backend.hooks("ConnectionStatusEvent") == []


async def test_signed_bodies_verify_and_tampering_fails(server: ServerProcess, backend: Backend) -> None:
    server.add_app("shop", "shopKey", backend.url, "--secret", "correct horse")
    async with WsClient(server.ws_url) as client:
        await client.connect(appKey="shopKey")
    call = backend.wait_for("connect")
    header = call.headers[SIGNATURE_HEADER]
    now = time.time()
    assert verify_signature("correct horse", header, call.raw, now)
    tampered = call.raw.replace(b'"shopKey"', b'"evilKey"')
    assert tampered != call.raw
    assert not verify_signature("correct horse", header, tampered, now)
    assert not verify_signature("wrong secret", header, call.raw, now)
    assert not verify_signature("correct horse", header, call.raw, now + 3600)  # replayed much later
    assert json.loads(call.raw)["appKey"] == "shopKey"


async def test_unsigned_app_sends_no_signature(server: ServerProcess, backend: Backend) -> None:
    server.add_app("shop", "shopKey", backend.url)
    async with WsClient(server.ws_url) as client:
        await client.connect(appKey="shopKey")
    assert SIGNATURE_HEADER not in backend.wait_for("connect").headers


async def test_slow_backend_blocks_no_other_session(start_server: Callable[..., ServerProcess],
                                                    backend: Backend) -> None:
    server = start_server(extra_args=["--hooks-timeout", "20"])
    server.add_app("slow", "slowKey", backend.url)
    backend.on("connect", delay=5.0)
    async with WsClient(server.ws_url) as slow, WsClient(server.ws_url) as fast:
        await slow.send("connection", {"appKey": "slowKey"})
        await asyncio.to_thread(backend.wait_for, "connect")  # the slow call is in flight
        user = await fast.connect()  # defaultApp, the embedded backend
        assert user["sessionId"]
        # The slow session is answered pings while its connect waits, and the fast one is fully
        # served before the slow backend has answered.
        await slow.send("ping")
        await slow.expect("pong")
        await fast.send("ping")
        await fast.expect("pong")
        assert not [m for m in slow.messages if m["message"] == "getUserData"], \
            "the fast session waited for the slow backend"
        await slow.expect("getUserData", timeout=20)


async def test_backend_timeout_fails_closed(start_server: Callable[..., ServerProcess], backend: Backend) -> None:
    server = start_server(extra_args=["--hooks-timeout", "0.5"])
    server.add_app("slow", "slowKey", backend.url)
    backend.on("connect", delay=5.0)
    async with WsClient(server.ws_url) as client:
        await client.send("connection", {"appKey": "slowKey"})
        fail = await client.expect("fail")
        assert "did not answer connect within 0.5 s" in fail["data"][0]["info"]


async def test_rest_api_terminate(server: ServerProcess) -> None:
    async with WsClient(server.ws_url) as client:
        user = await client.connect()
        status, found = await find_all(server)
        assert status == 200 and [s["sessionId"] for s in found] == [user["sessionId"]]  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http:
            async with http.post(server.rest_url + "/rest-api/connection/terminate",
                                 json={"sessionId": user["sessionId"]}) as resp:
                assert resp.status == 200
            async with http.post(server.rest_url + "/rest-api/connection/terminate",
                                 json={"sessionId": "nope"}) as resp:
                assert resp.status == 404
            async with http.post(server.rest_url + "/rest-api/connection/find", data=b"{bad") as resp:
                assert resp.status == 400
        await asyncio.wait_for(client.closed.wait(), 10)
    assert (await find_all(server))[0] == 404
