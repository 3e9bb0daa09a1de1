"""A minimal client of the WebSDK wire protocol for protocol-level tests (the browser tests use the
official WebSDK itself)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp


class WsClient:
    def __init__(self, url: str):
        self.url = url
        self.messages: list[dict[str, Any]] = []
        self._http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._new = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    async def __aenter__(self) -> WsClient:
        self._http = aiohttp.ClientSession()
        self.ws = await self._http.ws_connect(self.url, max_msg_size=0, autoping=True)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
        if self._http is not None:
            await self._http.close()

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    doc = json.loads(msg.data)
                    if doc.get("message") == "ping":
                        await self.ws.send_str(json.dumps({"message": "pong", "data": [None]}))
                    self.messages.append(doc)
                    self._new.set()
        finally:
            self.closed.set()
            self._new.set()

    async def send(self, message: str, obj: Any = None) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps({"message": message, "data": [obj]}))

    async def send_raw(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send_str(text)

    async def expect(self, message: str, timeout: float = 10.0, after: int = 0,
                     where: Any = None) -> dict[str, Any]:
        """The first `message` frame (at index >= after) whose data[0] matches `where` (a dict subset)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for doc in self.messages[after:]:
                if doc.get("message") != message:
                    continue
                obj = doc.get("data", [None])[0]
                if where is None or (isinstance(obj, dict) and all(obj.get(k) == v for k, v in where.items())):
                    return doc
            remaining = deadline - loop.time()
            if remaining <= 0 or self.closed.is_set():
                got = [d.get("message") for d in self.messages]
                raise AssertionError(f"no {message} within {timeout} s (socket closed: "
                                     f"{self.closed.is_set()}); got {got}")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), remaining)
            except TimeoutError:
                pass

    async def wait_until(self, condition: Any, timeout: float = 10.0) -> None:
        """Wait, without polling, until condition() holds after some message arrived."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0 or self.closed.is_set():
                raise AssertionError(f"condition not met within {timeout} s")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), remaining)
            except TimeoutError:
                pass

    async def connect(self, **fields: Any) -> dict[str, Any]:
        """Send `connection` as the WebSDK does and return getUserData's object."""
        obj = {"appKey": "defaultApp", "mediaProviders": ["WebRTC"], "clientVersion": "2.0",
               "clientOSVersion": "test", "clientBrowserVersion": "test", "msePacketizationVersion": 2,
               **fields}
        await self.send("connection", obj)
        doc = await self.expect("getUserData")
        return doc["data"][0]
