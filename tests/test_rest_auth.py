"""The management REST API's access rule: every /rest-api/ route asks for the configured credentials,
a server bound beyond loopback without credentials locks it, and loopback without credentials is open."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from streaming import config as config_module
from streaming import rest_api
from streaming.rest_auth import RestAuth, is_loopback
from streaming.server import Server
from tests.support.server import ServerProcess
from tests.support.wsclient import WsClient

TOKEN = "s3cret-token-0123456789abcdef"
USER, PASSWORD = "ops", "pa:ss-word"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def rest_api_routes(tmp_path: Path) -> list[tuple[str, str]]:
    """(method, path) of every /rest-api/ route the REST application has, read from its router."""
    args = config_module.argparse.Namespace(**{"server.data_dir": str(tmp_path / "enumerate")})
    server = Server(config_module.load(args, environ={}))
    try:
        app = rest_api.build_app(server)
        found = set()
        for route in app.router.routes():
            canonical = route.resource.canonical if route.resource is not None else ""
            if canonical.startswith("/rest-api/") and route.method != "HEAD":
                found.add((route.method, re.sub(r"\{[^}]+\}", "x", canonical)))
    finally:
        server.transcoders.close()
        server.apps.close()
    return sorted(found)


# -- the rule itself (no I/O) ------------------------------------------------------------------------


def test_bearer_and_basic_are_checked() -> None:
    auth = RestAuth(token=TOKEN, users={USER: PASSWORD, "other": "x" * 20}, loopback=False)
    assert auth.check(f"Bearer {TOKEN}") is None
    assert auth.check(f"bearer   {TOKEN} ") is None
    assert auth.check(_basic(USER, PASSWORD)) is None
    assert auth.check(_basic("other", "x" * 20)) is None
    assert auth.check(None) == "Authentication required"
    assert auth.check(f"Bearer {TOKEN}x") == "Invalid credentials"
    assert auth.check(f"Bearer {TOKEN[:-1]}") == "Invalid credentials"
    assert auth.check(_basic(USER, "wrong")) == "Invalid credentials"
    assert auth.check(_basic("other", PASSWORD)) == "Invalid credentials"  # another user's password
    assert auth.check(_basic("nobody", PASSWORD)) == "Invalid credentials"
    assert auth.check("Basic !!!notbase64") == "Malformed Basic credentials"
    assert auth.check("Basic " + base64.b64encode(b"no-colon").decode()) == "Malformed Basic credentials"
    assert auth.check("Basic " + base64.b64encode(b"\xff\xfe:x").decode()) == "Malformed Basic credentials"
    assert auth.check("Digest username=x") == "Unsupported authentication scheme: use Bearer or Basic"
    assert auth.challenges() == ['Bearer realm="streaming"', 'Basic realm="streaming", charset="UTF-8"']


def test_a_scheme_that_is_not_configured_is_refused() -> None:
    only_token = RestAuth(token=TOKEN, loopback=True)
    assert only_token.check(_basic(USER, PASSWORD)).startswith("Unsupported")  # type: ignore[union-attr]
    only_users = RestAuth(users={USER: PASSWORD}, loopback=True)
    assert only_users.check(f"Bearer {TOKEN}").startswith("Unsupported")  # type: ignore[union-attr]


def test_without_credentials_loopback_is_open_and_anything_else_locked() -> None:
    assert RestAuth(loopback=True).mode == "open"
    assert RestAuth(loopback=True).check(None) is None
    assert RestAuth(loopback=False).mode == "locked"
    assert RestAuth(loopback=False).check(f"Bearer {TOKEN}") == "locked"
    assert RestAuth(token=TOKEN, loopback=False).mode == "credentials"
    assert [is_loopback(a) for a in ("127.0.0.1", "127.8.0.1", "::1", "0.0.0.0", "::", "192.0.2.1")] == [
        True, True, True, False, False, False]


def test_which_paths_are_protected() -> None:
    auth = RestAuth(token=TOKEN)
    assert auth.protects("/rest-api/stream/find_all")
    assert auth.protects("/rest-api")
    assert auth.protects("/metrics")
    assert not RestAuth(token=TOKEN, protect_metrics=False).protects("/metrics")
    for open_path in ("/", "/health", "/apps/EchoApp/connect", "/websdk/flashphoner.js", "/client/records/a.mp4",
                      "/rest-apix"):
        assert not auth.protects(open_path)


@pytest.mark.parametrize("raw", ["short", "has space in it 0123456789"])
def test_a_weak_or_malformed_token_is_a_config_error(raw: str) -> None:
    with pytest.raises(config_module.ConfigError, match="rest.token must be at least 16 characters"):
        config_module.load(None, environ={"STREAMING_REST_TOKEN": raw})


# -- the real server ----------------------------------------------------------------------------------


async def test_every_rest_api_route_asks_for_credentials(tmp_path: Path,
                                                          start_server: Callable[..., ServerProcess]) -> None:
    routes = rest_api_routes(tmp_path)
    assert len(routes) >= 17, routes  # the router was read, not a stub
    server = start_server(extra_args=["--rest-token", TOKEN, "--rest-users", f"{USER}:{PASSWORD}"])
    async with aiohttp.ClientSession() as http:
        for method, path in routes:
            url = server.rest_url + path
            for headers in ({}, {"Authorization": f"Bearer {TOKEN}0"}, {"Authorization": _basic(USER, "nope")},
                            {"Authorization": "Basic"}):
                async with http.request(method, url, json={}, headers=headers) as resp:
                    assert resp.status == 401, (method, path, headers, resp.status)
                    assert (await resp.json())["status"] == 401
                    assert resp.headers.getall("WWW-Authenticate") == [
                        'Bearer realm="streaming"', 'Basic realm="streaming", charset="UTF-8"']
            for headers in ({"Authorization": f"Bearer {TOKEN}"}, {"Authorization": _basic(USER, PASSWORD)}):
                async with http.request(method, url, json={}, headers=headers) as resp:
                    # Past the check, each route answers as it does for an empty body (404 nothing found,
                    # 400 a required field ...): never the access rule's 401 or 403.
                    assert resp.status not in (401, 403), (method, path, resp.status, await resp.text())
        # What stays open: the demo pages and the WebSDK, /health, the embedded backend (the connect hook
        # goes through it).
        for path in ("/", "/health", "/websdk/flashphoner.js"):
            async with http.get(server.rest_url + path) as resp:
                assert resp.status == 200, path
        async with http.post(server.rest_url + "/apps/EchoApp/connect", json={"a": 1}) as resp:
            assert resp.status == 200 and await resp.json() == {"a": 1}
    async with WsClient(server.ws_url) as client:
        user = await client.connect()
    assert user["sessionId"]
    assert "REST API requires Bearer or Basic" in server.log()


async def test_loopback_without_credentials_is_open(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(server.rest_url + "/rest-api/connection/find_all", json={}) as resp:
            assert resp.status == 404  # no connections: the handler answered
    assert "REST API open to loopback clients" in server.log()


async def test_bound_beyond_loopback_without_credentials_the_rest_api_is_locked(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(extra_args=["--bind", "0.0.0.0"])
    assert "The REST API is LOCKED: the server listens on 0.0.0.0" in server.log()
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
            async with http.post(server.rest_url + "/rest-api/connection/find_all", json={},
                                 headers=headers) as resp:
                assert resp.status == 403
                body = await resp.json()
                assert "set rest.token or rest.users" in body["info"]
                assert "WWW-Authenticate" not in resp.headers
        async with http.get(server.rest_url + "/health") as resp:
            assert resp.status == 200
    async with WsClient(server.ws_url) as client:  # clients and the embedded backend work as before
        assert (await client.connect())["sessionId"]


async def test_bound_beyond_loopback_with_a_token_serves_it(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(extra_args=["--bind", "0.0.0.0"], env={"STREAMING_REST_TOKEN": TOKEN})
    assert "LOCKED" not in server.log()
    async with aiohttp.ClientSession() as http:
        async with http.post(server.rest_url + "/rest-api/connection/find_all", json={}) as resp:
            assert resp.status == 401
        async with http.post(server.rest_url + "/rest-api/connection/find_all", json={},
                             headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 404
