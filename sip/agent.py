"""A SIP user agent for one account (one client session): registration, calls, messages, subscriptions.

- `register()` sends REGISTER with digest auth, keeps it refreshed before it expires, and `close()`
  un-registers (Expires: 0). The listener hears REGISTERED, UNREGISTERED and FAILED.
- Calls are `SipCall` objects (sip/call.py); the agent routes in-dialog requests to them by Call-ID and
  local tag, and out-of-dialog INVITE, MESSAGE and NOTIFY to its listener.
- Every request that meets 401 or 407 is sent again once with credentials (RFC 3261 §22.2).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .auth import DigestClient
from .dialog import Dialog, new_tag
from .message import Message, Request, Response, response_to
from .stack import SipStack, SipTimeout
from .transaction import Peer, ServerTransaction
from .uri import NameAddr, SipUri, UriError

log = logging.getLogger(__name__)

DEFAULT_EXPIRES = 3600


@dataclass(frozen=True)
class Account:
    """The sip* fields of a client's `connect`."""

    login: str
    domain: str
    password: str = ""
    auth_name: str = ""
    display_name: str = ""
    outbound_proxy: str = ""
    port: int = 5060
    contact_params: str = ""
    register_required: bool = True
    transport: str = "udp"
    expires: int = DEFAULT_EXPIRES

    @property
    def aor(self) -> SipUri:
        return SipUri(host=self.domain, user=self.login)

    @property
    def from_value(self) -> str:
        return str(NameAddr(str(self.aor), self.display_name or None))


class AgentListener(Protocol):
    def registration_changed(self, status: str, info: str, message: Message | None) -> None: ...

    def incoming_invite(self, request: Request, tx: ServerTransaction, peer: Peer) -> None: ...

    def incoming_message(self, request: Request) -> int: ...

    def incoming_notify(self, request: Request) -> None: ...


class DialogUser(Protocol):
    """A call or subscription of this agent: gets the requests of its dialog."""

    def handle_request(self, request: Request, tx: ServerTransaction | None, peer: Peer) -> None: ...


class UserAgent:
    def __init__(self, stack: SipStack, account: Account, listener: AgentListener):
        self.stack = stack
        self.account = account
        self.listener = listener
        self.auth = DigestClient(account.auth_name or account.login, account.password)
        self.user = stack.new_user(self)
        self.registered = False
        self.closed = False
        self._reg_call_id = secrets.token_hex(12) + "@streaming"
        self._reg_tag = new_tag()
        self._cseq = 0
        self._refresh: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.dialogs: dict[tuple[str, str], DialogUser] = {}

    # -- addresses -------------------------------------------------------------------------------

    @property
    def transport(self) -> str:
        return self.account.transport

    @property
    def contact(self) -> str:
        uri = self.stack.contact_uri(self.user, self.transport)
        params = self.account.contact_params.strip().strip(";")
        return f"<{uri}>" + (f";{params}" if params else "")

    def proxy_uri(self) -> SipUri:
        """Where requests outside a dialog go: the outbound proxy, else the domain at sipPort."""
        proxy = self.account.outbound_proxy.strip()
        if proxy:
            text = proxy if proxy.lower().startswith(("sip:", "sips:")) else "sip:" + proxy
            uri = SipUri.parse(text)
        else:
            uri = SipUri(host=self.account.domain, port=self.account.port)
        if self.transport != "udp" and "transport" not in uri.params:
            uri.params["transport"] = self.transport
        return uri

    async def peer_for(self, dialog: Dialog | None = None) -> Peer:
        if dialog is not None and dialog.route_set:
            return await self.stack.resolve(SipUri.parse(NameAddr.parse(dialog.route_set[0]).uri))
        if dialog is not None and not self.account.outbound_proxy:
            return await self.stack.resolve(SipUri.parse(dialog.remote_target))
        return await self.stack.resolve(self.proxy_uri())

    def new_request(self, method: str, uri: str, to: str, *, call_id: str | None = None, tag: str | None = None,
                    cseq: int = 1) -> Request:
        request = Request(method=method, uri=uri)
        request.headers.add("Via", self.stack.via(self.transport))
        request.headers.add("Max-Forwards", "70")
        request.headers.add("From", f"{self.account.from_value};tag={tag or new_tag()}")
        request.headers.add("To", to)
        request.headers.add("Call-ID", call_id or secrets.token_hex(12) + "@streaming")
        request.headers.add("CSeq", f"{cseq} {method}")
        request.headers.add("Contact", self.contact)
        return request

    # -- requests with authentication ------------------------------------------------------------

    async def send(self, request: Request, peer: Peer | None = None, *,
                   on_provisional: Callable[[Response], None] | None = None,
                   on_late_2xx: Callable[[Response], None] | None = None,
                   on_resend: Callable[[Request], None] | None = None) -> Response:
        """Send and return the final response, answering one round of 401/407 challenges."""
        if peer is None:
            peer = await self.peer_for()
        self.auth.authorize(request)
        for attempt in range(3):
            response = await self.stack.transact(request, peer, on_provisional=on_provisional,
                                                 on_late_2xx=on_late_2xx)
            if response.status not in (401, 407) or not self.auth.challenged(response, attempt > 0):
                return response
            request = _next_attempt(request, self.stack.via(peer.transport))
            self.auth.authorize(request)
            if on_resend is not None:
                on_resend(request)
        return response

    # -- registration ----------------------------------------------------------------------------

    async def register(self) -> bool:
        ok = await self._register(self.account.expires)
        return ok

    async def _register(self, expires: int) -> bool:
        self._cseq += 1
        aor = str(self.account.aor)
        request = self.new_request("REGISTER", str(SipUri(host=self.account.domain)), f"<{aor}>",
                                   call_id=self._reg_call_id, tag=self._reg_tag, cseq=self._cseq)
        request.headers.add("Expires", str(expires))
        try:
            response = await self.send(request, on_resend=self._took_cseq)
        except (SipTimeout, OSError, UriError) as exc:
            if expires:
                self.registered = False
                self.listener.registration_changed("FAILED", str(exc), None)
            return False
        if expires == 0:
            self.registered = False
            self.listener.registration_changed("UNREGISTERED", f"{response.status} {response.reason}", response)
            return 200 <= response.status < 300
        if not 200 <= response.status < 300:
            self.registered = False
            self.listener.registration_changed("FAILED", f"{response.status} {response.reason}", response)
            return False
        granted = _granted_expires(response, self.stack.contact_uri(self.user, self.transport), expires)
        self.registered = True
        self.listener.registration_changed("REGISTERED", f"{response.status} {response.reason}", response)
        if not self.closed:
            # Refresh well before it runs out: at half the time for short ones, 30 s before for long ones.
            delay = max(1.0, granted / 2 if granted < 120 else granted - 30)
            loop = asyncio.get_running_loop()
            if self._refresh is not None:
                self._refresh.cancel()
            self._refresh = loop.call_later(delay, lambda: self.spawn(self._register(self.account.expires)))
        return True

    def _took_cseq(self, request: Request) -> None:
        self._cseq = request.cseq[0]

    async def close(self) -> None:
        """Un-register (when registered), end every dialog, and forget this agent."""
        if self.closed:
            return
        self.closed = True
        if self._refresh is not None:
            self._refresh.cancel()
        if self.registered:
            try:
                await asyncio.wait_for(self._register(0), 10)
            except TimeoutError:
                pass
        self.stack.forget_user(self.user)
        for key in list(self.dialogs):
            self.stack.dialogs.pop(key, None)
        for task in list(self._tasks):
            task.cancel()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- dialogs ---------------------------------------------------------------------------------

    def add_dialog(self, call_id: str, local_tag: str, user: DialogUser) -> None:
        self.dialogs[(call_id, local_tag)] = user
        self.stack.dialogs[(call_id, local_tag)] = self

    def remove_dialog(self, call_id: str, local_tag: str) -> None:
        self.dialogs.pop((call_id, local_tag), None)
        self.stack.dialogs.pop((call_id, local_tag), None)

    def handle_request(self, request: Request, tx: ServerTransaction | None, peer: Peer) -> None:
        to = NameAddr.parse(request.headers.get("To") or "")
        if to.tag:
            owner = self.dialogs.get((request.call_id, to.tag))
            if owner is None:
                if tx is not None:
                    self.stack.respond(tx, response_to(request, 481))
                return
            owner.handle_request(request, tx, peer)
            return
        if tx is None:
            return
        if request.method == "INVITE":
            self.listener.incoming_invite(request, tx, peer)
        elif request.method == "MESSAGE":
            status = self.listener.incoming_message(request)
            self.stack.respond(tx, response_to(request, status, None, new_tag()))
        elif request.method == "NOTIFY":
            self.stack.respond(tx, response_to(request, 481))
        else:
            self.stack.respond(tx, response_to(request, 405 if request.method != "BYE" else 481, None, new_tag()))


def _next_attempt(request: Request, via: str) -> Request:
    """The same request again with a new branch and the next CSeq (a challenge was answered)."""
    again = Request(method=request.method, uri=request.uri, headers=request.headers.copy(), body=request.body)
    again.headers.remove("Via")
    again.headers.add("Via", via, first=True)
    number, method = request.cseq
    again.headers.set("CSeq", f"{number + 1} {method}")
    return again


def _granted_expires(response: Response, contact_uri: str, asked: int) -> int:
    """What the registrar granted for our Contact (its expires param, else Expires, else what we asked)."""
    for value in response.headers.get_all("Contact"):
        try:
            contact = NameAddr.parse(value)
        except UriError:
            continue
        mine = contact.uri.split(";")[0] == contact_uri.split(";")[0]
        expires = contact.params.get("expires")
        if mine and expires and expires.isdigit():
            return int(expires)
    header = response.headers.get("Expires")
    if header and header.isdigit():
        return int(header)
    return asked
