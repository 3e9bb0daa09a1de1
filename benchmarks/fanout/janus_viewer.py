"""The viewer's side of the Janus API over HTTP (aiohttp): one session and one streaming handle per viewer
(as one browser tab), `watch` to get Janus's offer, `start` with the viewer's answer.

Janus answers a plugin message with an ack and delivers the plugin's event (carrying the offer) on the
session's long poll (GET /janus/<session>), so the offer is awaited there.
"""

from __future__ import annotations

import socket
import uuid
from typing import Any

import aiohttp
import aioice.ice

PLUGIN = "janus.plugin.streaming"
_bound: dict[str, str] = {}  # ICE address -> device its sockets are bound to


def bind_ice_to_device(address: str, device: str) -> None:
    """Bind aioice's sockets on `address` to `device` (SO_BINDTODEVICE), as libnice binds Janus's to its
    veth end: a socket bound to a device only receives what arrives on that device, so both sides must
    send over the veth pair (unbound, traffic between two local addresses would take `lo` and never reach
    Janus). Patches aioice's protocol once for this process."""
    if not _bound:
        original = aioice.ice.StunProtocol.connection_made

        def connection_made(self: aioice.ice.StunProtocol, transport: Any) -> None:
            sock = transport.get_extra_info("socket")
            name = sock.getsockname() if sock is not None else None
            if name and name[0] in _bound:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, _bound[name[0]].encode())
            original(self, transport)

        aioice.ice.StunProtocol.connection_made = connection_made  # type: ignore[method-assign]
    _bound[address] = device


class JanusWatch:
    """One viewer's Janus session and handle on a streaming mountpoint."""

    def __init__(self, http: aiohttp.ClientSession, url: str, timeout: float):
        self.http = http
        self.url = url  # .../janus
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.session: int | None = None
        self.handle: int | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(f"{self.url}{path}", json={"transaction": uuid.uuid4().hex[:12], **body},
                                  timeout=self.timeout) as resp:
            resp.raise_for_status()
            answer: dict[str, Any] = await resp.json(content_type=None)
        if answer.get("janus") == "error":
            raise RuntimeError(f"Janus {body.get('janus')}: {answer.get('error')}")
        return answer

    async def open(self) -> None:
        """A session and a streaming handle (the counterpart of connecting to our server's WebSocket)."""
        self.session = (await self._post("", {"janus": "create"}))["data"]["id"]
        self.handle = (await self._post(f"/{self.session}", {"janus": "attach", "plugin": PLUGIN}))["data"]["id"]

    async def watch(self, mountpoint: int) -> str:
        """`watch` the mountpoint: Janus's SDP offer."""
        await self._post(f"/{self.session}/{self.handle}",
                         {"janus": "message", "body": {"request": "watch", "id": mountpoint}})
        event = await self._event_with_jsep()
        return str(event["jsep"]["sdp"])

    async def _event_with_jsep(self) -> dict[str, Any]:
        """Long-poll the session until the handle's event with an SDP arrives (the aiohttp timeout bounds it)."""
        while True:
            async with self.http.get(f"{self.url}/{self.session}?maxev=5", timeout=self.timeout) as resp:
                resp.raise_for_status()
                events = await resp.json(content_type=None)
            for event in events if isinstance(events, list) else [events]:
                data = event.get("plugindata", {}).get("data", {})
                if "error" in data:
                    raise RuntimeError(f"Janus watch: {data['error']}")
                if event.get("jsep") and event.get("sender") == self.handle:
                    return dict(event)

    async def start(self, answer_sdp: str) -> None:
        """`start` with the answer; the candidates are in the SDP, so trickle ends at once."""
        path = f"/{self.session}/{self.handle}"
        await self._post(path, {"janus": "message", "body": {"request": "start"},
                                "jsep": {"type": "answer", "sdp": answer_sdp}})
        await self._post(path, {"janus": "trickle", "candidate": {"completed": True}})

    async def close(self) -> None:
        """Destroy the session (its handle and PeerConnection with it); errors ignored at shutdown."""
        if self.session is None:
            return
        try:
            await self._post(f"/{self.session}", {"janus": "destroy"})
        except (aiohttp.ClientError, RuntimeError, TimeoutError):
            pass
        self.session = None
