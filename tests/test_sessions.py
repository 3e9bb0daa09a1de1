"""Session life cycle: keepAlive reconnects, expiry, wss, and what the server says about itself."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from media import native
from tests.support.backend import Backend
from tests.support.server import ServerProcess
from tests.support.wsclient import WsClient


async def test_keepalive_session_resumes_with_its_auth_token(server: ServerProcess) -> None:
    async with WsClient(server.ws_url) as first:
        user = await first.connect(keepAlive=True, custom={"n": 1})
    async with WsClient(server.ws_url) as second:
        resumed = await second.connect(keepAlive=True, authToken=user["authToken"])
    assert resumed["sessionId"] == user["sessionId"]
    assert resumed["authToken"] == user["authToken"]
    assert resumed["custom"] == {"n": 1}


async def test_without_keepalive_a_token_does_not_resume(server: ServerProcess) -> None:
    async with WsClient(server.ws_url) as first:
        user = await first.connect()
    async with WsClient(server.ws_url) as second:
        fresh = await second.connect(authToken=user["authToken"])
    assert fresh["sessionId"] != user["sessionId"]


async def test_a_token_cannot_cross_applications(server: ServerProcess, backend: Backend) -> None:
    server.add_app("other", "otherKey", backend.url)
    async with WsClient(server.ws_url) as first:
        user = await first.connect(keepAlive=True)
    async with WsClient(server.ws_url) as second:
        other = await second.connect(appKey="otherKey", authToken=user["authToken"])
    assert other["sessionId"] != user["sessionId"]


async def test_reconnect_takes_over_a_socket_that_is_still_open(server: ServerProcess) -> None:
    async with WsClient(server.ws_url) as first, WsClient(server.ws_url) as second:
        user = await first.connect(keepAlive=True)
        resumed = await second.connect(keepAlive=True, authToken=user["authToken"])
        assert resumed["sessionId"] == user["sessionId"]
        await asyncio.wait_for(first.closed.wait(), 10)  # the old socket is closed by the server
        await second.send("ping")
        await second.expect("pong")


async def test_keepalive_session_expires_after_the_grace_period(start_server: Callable[..., ServerProcess],
                                                                backend: Backend) -> None:
    server = start_server(extra_args=["--ws-keepalive-grace", "0.5"])
    server.add_app("shop", "shopKey", backend.url)
    async with WsClient(server.ws_url) as first:
        user = await first.connect(appKey="shopKey", keepAlive=True)
    gone = await asyncio.to_thread(backend.wait_for, "ConnectionStatusEvent",
                                   lambda c: c.body["status"] == "DISCONNECTED")
    assert gone.body["sessionId"] == user["sessionId"]
    assert "no reconnect within 0.5 s" in gone.body["info"]
    async with WsClient(server.ws_url) as late:
        fresh = await late.connect(appKey="shopKey", authToken=user["authToken"])
    assert fresh["sessionId"] != user["sessionId"]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_wss_with_a_certificate(start_server: Callable[..., ServerProcess],
                                      certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server = start_server(extra_args=["--cert", str(cert), "--key", str(key), "--wss-port", "0"])
    assert server.urls["wss"].startswith("wss://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(cert))
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.urls["wss"], ssl=context) as ws:
            await ws.send_json({"message": "connection", "data": [{"appKey": "defaultApp"}]})
            while True:
                msg = await asyncio.wait_for(ws.receive_json(), 10)
                if msg["message"] == "getUserData":
                    break
    assert msg["data"][0]["sessionId"]


async def test_server_reports_its_media_core(server: ServerProcess) -> None:
    assert "media core: native Cython" in server.log()
    async with aiohttp.ClientSession() as http:
        async with http.get(server.rest_url + "/health") as resp:
            health = await resp.json()
    assert health["mediaCore"].startswith("native Cython")
    assert health["sessions"] == 0


def test_a_missing_native_module_is_loud(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "NATIVE_MODULES", ("rtp", "no_such_module"))
    with pytest.raises(native.NativeCoreMissing, match="media._native.no_such_module"):
        native.require_native()


def test_serve_refuses_to_start_without_the_native_core(tmp_path: Path) -> None:
    """A build without the extension (here: a copy of the sources) stops with one clear line."""
    import shutil
    import sys

    from tests.support.server import REPO

    tree = tmp_path / "tree"
    for part in ("media", "streaming", "sip"):
        shutil.copytree(REPO / part, tree / part, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    # The editable install's import hook would find the real tree's extension: leave it out.
    script = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path "
              "if not getattr(f, '__module__', '').startswith('__editable__')]; "
              "from streaming.cli import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", script, "serve", "--data-dir", str(tmp_path / "d")],
                          cwd=tree, capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)})
    assert done.returncode == 2
    assert "the native media core is not built" in done.stderr
    assert "Traceback" not in done.stderr
