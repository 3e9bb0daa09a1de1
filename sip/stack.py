"""One SIP stack for the whole server: the transport, the Endpoint, and the routing of requests to the
user agents (one per client session) and to the dialogs they hold.

- A request inside a dialog (To tag) goes to the dialog's owner; an unknown dialog gets 481.
- A request outside a dialog goes to the user agent its Request-URI user names (each user agent
  registers a Contact with a user part of its own); an unknown user gets 404. OPTIONS is answered here.
- `transact()` sends a request in a client transaction and returns its final response (awaitable);
  provisional responses and retransmitted 2xx go to callbacks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .dialog import new_tag
from .endpoint import SERVED_METHODS, Endpoint, new_branch
from .message import Request, Response, response_to
from .transaction import Peer, ServerTransaction
from .transport import SipTransport
from .uri import NameAddr, SipUri

log = logging.getLogger(__name__)

USER_AGENT = "streaming-sip/0.1"


class SipTimeout(Exception):
    """No final response: the peer did not answer within 64*T1, or the transport failed."""


class RequestHandler(Protocol):
    """What owns dialogs and addresses: a user agent (sip/agent.py)."""

    def handle_request(self, request: Request, tx: ServerTransaction | None, peer: Peer) -> None: ...


@dataclass(frozen=True)
class StackSettings:
    bind: str = "127.0.0.1"
    udp_port: int = 5060
    tcp_port: int | None = 5060
    tls_port: int | None = None
    cert: str | None = None
    key: str | None = None
    public_address: str | None = None  # announced in Via and Contact instead of the bound one
    invite_rate: float = 20.0  # new INVITEs per second before 503
    retry_after: int = 5


class SipStack:
    def __init__(self, settings: StackSettings):
        self.settings = settings
        self.transport = SipTransport(lambda send: Endpoint(send, self._on_request, invite_rate=settings.invite_rate,
                                                             retry_after=settings.retry_after))
        self.endpoint = self.transport.endpoint
        self.users: dict[str, RequestHandler] = {}  # by Contact user part
        self.dialogs: dict[tuple[str, str], RequestHandler] = {}  # (Call-ID, local tag)

    async def start(self) -> None:
        s = self.settings
        await self.transport.start(s.bind, s.udp_port, s.tcp_port, s.tls_port, s.cert, s.key)
        log.info("SIP listening on %s", ", ".join(f"{t} {h}:{p}" for t, (h, p) in self.transport.local.items()))

    async def close(self) -> None:
        await self.transport.close()

    def now(self) -> float:
        return self.transport.now()

    # -- addresses -------------------------------------------------------------------------------

    def local(self, transport: str) -> tuple[str, int]:
        host, port = self.transport.local.get(transport) or self.transport.local["udp"]
        if self.settings.public_address:
            host = self.settings.public_address
        elif host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return host, port

    def via(self, transport: str) -> str:
        host, port = self.local(transport)
        shown = f"[{host}]" if ":" in host else host
        return f"SIP/2.0/{transport.upper()} {shown}:{port};branch={new_branch()};rport"

    def contact_uri(self, user: str, transport: str) -> str:
        host, port = self.local(transport)
        uri = SipUri(host=host, user=user, port=port)
        if transport != "udp":
            uri.params["transport"] = transport
        return str(uri)

    def new_user(self, handler: RequestHandler) -> str:
        user = "u" + secrets.token_hex(6)
        self.users[user] = handler
        return user

    def forget_user(self, user: str) -> None:
        self.users.pop(user, None)

    async def resolve(self, uri: SipUri) -> Peer:
        """Where to send a request for `uri` (RFC 3263 without NAPTR/SRV: host, port, transport param)."""
        transport = (uri.params.get("transport") or ("tls" if uri.scheme == "sips" else "udp")).lower()
        if transport not in ("udp", "tcp", "tls"):
            transport = "udp"
        port = uri.port or (5061 if transport == "tls" else 5060)
        host = uri.params.get("maddr") or uri.host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=2)  # SOCK_DGRAM
            if not infos:
                raise OSError(f"cannot resolve {host}") from None
            host = str(infos[0][4][0])
        return Peer(transport, host, port)

    # -- sending ---------------------------------------------------------------------------------

    def transact(self, request: Request, peer: Peer, *, on_provisional: Callable[[Response], None] | None = None,
                 on_late_2xx: Callable[[Response], None] | None = None) -> asyncio.Future[Response]:
        """Send in a client transaction; the future gets the final response or SipTimeout."""
        if request.headers.get("User-Agent") is None:
            request.headers.add("User-Agent", USER_AGENT)
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()

        def on_response(response: Response) -> None:
            if response.status < 200:
                if on_provisional is not None:
                    on_provisional(response)
            elif not future.done():
                future.set_result(response)
            elif on_late_2xx is not None and response.status < 300:
                on_late_2xx(response)

        def on_timeout() -> None:
            if not future.done():
                future.set_exception(SipTimeout(f"no answer to {request.method} from {peer.host}:{peer.port}"))

        self.endpoint.request(request, peer, self.now(), on_response, on_timeout)
        return future

    def respond(self, tx: ServerTransaction, response: Response) -> None:
        if response.headers.get("Server") is None:
            response.headers.add("Server", USER_AGENT)
        tx.respond(response, self.now())

    def send_stateless(self, message: Request | Response, peer: Peer) -> None:
        self.endpoint.stateless(message, peer)

    # -- receiving -------------------------------------------------------------------------------

    def _on_request(self, request: Request, tx: ServerTransaction | None, peer: Peer) -> None:
        to = NameAddr.parse(request.headers.get("To") or "")
        if to.tag:
            handler = self.dialogs.get((request.call_id, to.tag))
            if handler is None:
                if tx is not None:
                    self.respond(tx, response_to(request, 481))
                return
            handler.handle_request(request, tx, peer)
            return
        if tx is None:
            return  # an ACK outside any dialog: nothing to acknowledge
        if request.method == "OPTIONS":
            answer = response_to(request, 200, None, new_tag())
            answer.headers.add("Allow", ", ".join(SERVED_METHODS))
            answer.headers.add("Accept", "application/sdp")
            self.respond(tx, answer)
            return
        try:
            user = SipUri.parse(request.uri).user
        except ValueError:
            user = None
        handler = self.users.get(user or "")
        if handler is None:
            self.respond(tx, response_to(request, 404 if request.method != "BYE" else 481, None, new_tag()))
            return
        handler.handle_request(request, tx, peer)
