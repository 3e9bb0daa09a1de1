"""A subscription of a user agent (RFC 6665), used for the registration event package (RFC 3680): SUBSCRIBE
with digest auth, NOTIFYs matched to it, refresh before it expires, and terminate (SUBSCRIBE Expires: 0).

`on_status(status, info, message)` hears "Active" / "Pending" (each NOTIFY, the body in the message) and
"Terminated" (once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .dialog import Dialog, new_tag
from .message import Message, Request, response_to
from .stack import SipTimeout
from .transaction import Peer, ServerTransaction
from .uri import SipUri

if TYPE_CHECKING:
    from .agent import UserAgent

log = logging.getLogger(__name__)


class Subscription:
    def __init__(self, sub_id: str, agent: UserAgent, target: SipUri, event: str, expires: int,
                 on_status: Callable[[str, str, Message | None], None]):
        self.id = sub_id
        self.agent = agent
        self.target = target
        self.event = event
        self.expires = expires
        self.on_status = on_status
        self.tag = new_tag()
        self.call_id = ""
        self.dialog: Dialog | None = None
        self.terminated = False
        self._refresh: asyncio.TimerHandle | None = None
        self._cseq = 1

    async def start(self) -> None:
        request = self.agent.new_request("SUBSCRIBE", str(self.target), f"<{self.target}>", tag=self.tag)
        self.call_id = request.call_id
        self.agent.add_dialog(self.call_id, self.tag, self)
        await self._send(request, self.expires)

    async def _send(self, request: Request, expires: int) -> None:
        request.headers.add("Event", self.event)
        request.headers.add("Expires", str(expires))
        request.headers.add("Accept", "application/reginfo+xml" if self.event == "reg" else "*/*")
        try:
            peer = await self.agent.peer_for(self.dialog)
            response = await self.agent.send(request, peer)
        except (SipTimeout, OSError) as exc:
            self._end(f"no answer: {exc}", None)
            return
        if not 200 <= response.status < 300:
            self._end(f"{response.status} {response.reason}", response)
            return
        if self.dialog is None:
            self.dialog = Dialog.as_caller(request, response, self.agent.contact)
        granted = response.headers.get("Expires")
        seconds = int(granted) if granted and granted.isdigit() else expires
        if expires == 0:
            return  # the final NOTIFY says Terminated
        if self._refresh is not None:
            self._refresh.cancel()
        delay = max(1.0, seconds / 2 if seconds < 120 else seconds - 30)
        self._refresh = asyncio.get_running_loop().call_later(delay, lambda: self.agent.spawn(self.refresh()))

    async def refresh(self) -> None:
        if self.terminated or self.dialog is None:
            return
        request = self.dialog.request("SUBSCRIBE", self.agent.stack.via(self.agent.transport))
        await self._send(request, self.expires)

    async def terminate(self) -> None:
        if self.terminated:
            return
        if self._refresh is not None:
            self._refresh.cancel()
        if self.dialog is None:
            self._end("Terminated by the client", None)
            return
        request = self.dialog.request("SUBSCRIBE", self.agent.stack.via(self.agent.transport))
        await self._send(request, 0)
        if not self.terminated:
            self._end("Terminated by the client", None)

    def handle_request(self, request: Request, tx: ServerTransaction | None, peer: Peer) -> None:
        if tx is None:
            return
        if request.method != "NOTIFY":
            self.agent.stack.respond(tx, response_to(request, 405))
            return
        self.agent.stack.respond(tx, response_to(request, 200))
        if self.dialog is None:
            # The NOTIFY came before the 200 of the SUBSCRIBE (RFC 6665 §4.1.2.4): it makes the dialog.
            self.dialog = Dialog.as_callee(request, self.tag, self.agent.contact)
            self.dialog.local_cseq = self._cseq
        else:
            self.dialog.refresh_target(request)
            self.dialog.accepts_remote(request)
        state = (request.headers.get("Subscription-State") or "").split(";")[0].strip().lower()
        if state == "terminated":
            self._end("Terminated by the notifier", request)
        else:
            self.on_status("Pending" if state == "pending" else "Active", state, request)

    def _end(self, info: str, message: Message | None) -> None:
        if self.terminated:
            return
        self.terminated = True
        if self._refresh is not None:
            self._refresh.cancel()
        loop = asyncio.get_running_loop()
        loop.call_later(32.0, lambda: self.agent.remove_dialog(self.call_id, self.tag))
        self.on_status("Terminated", info, message)
