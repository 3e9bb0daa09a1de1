"""The transaction layer's front door (RFC 3261 §17.1.3, §17.2.3, §8.2): every received message goes
through `Endpoint.receive(data, peer, now)`. No I/O; `send(data, peer)` is the transport's.

- Responses go to the client transaction their top Via branch and CSeq method name; others are dropped.
- Requests: a retransmission is absorbed by its server transaction; ACK of a non-2xx ends it; CANCEL
  is answered here (200, or 481 when nothing matches) and the INVITE's `on_cancel` is told.
- Stateless answers, so hostile or unknown input never reaches the user agents: 400 for malformed
  requests (when the top Via can carry an answer), 513 for oversized ones, 501 for unknown methods,
  405 for methods this endpoint does not serve, 503 with Retry-After for new INVITEs beyond the
  configured rate (a token bucket), 483 for Max-Forwards 0.
- Everything else is a new request for the user agents: `on_request(request, transaction)`; ACKs of
  2xx answers (their own transaction by RFC) come with transaction None.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from .message import ParseError, Request, Response, parse, parse_via, response_to
from .transaction import T1, ClientTransaction, Peer, Send, ServerTransaction

log = logging.getLogger(__name__)

BRANCH_COOKIE = "z9hG4bK"
KNOWN_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
                           "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"})
SERVED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "REFER", "MESSAGE", "NOTIFY", "UPDATE")


def new_branch() -> str:
    return BRANCH_COOKIE + secrets.token_hex(8)


class Endpoint:
    def __init__(self, send: Send, on_request: Callable[[Request, ServerTransaction | None, Peer], None], *,
                 invite_rate: float = 20.0, retry_after: int = 5, t1: float = T1):
        self.send = send
        self.on_request = on_request
        self.invite_rate = invite_rate
        self.retry_after = retry_after
        self.t1 = t1
        self._clients: dict[tuple[str, str], ClientTransaction] = {}
        self._servers: dict[tuple[str, str, str], ServerTransaction] = {}
        self._tokens = invite_rate
        self._tokens_at: float | None = None
        self.stats = {"received": 0, "malformed": 0, "rejected": 0, "throttled": 0, "stray": 0}

    # -- sending ---------------------------------------------------------------------------------

    def request(self, request: Request, peer: Peer, now: float, on_response: Callable[[Response], None],
                on_timeout: Callable[[], None]) -> ClientTransaction:
        """Send `request` in a new client transaction; its top Via (with a fresh branch) must be set."""
        branch = parse_via(request.headers.get_all("Via")[0]).branch or ""
        tx = ClientTransaction(self.send, request, peer, now, on_response, on_timeout, t1=self.t1)
        self._clients[(branch, request.method)] = tx
        return tx

    def stateless(self, message: Request | Response, peer: Peer) -> None:
        """Send outside any transaction (the ACK of a 2xx, a response with no transaction)."""
        self.send(bytes(message), peer)

    # -- receiving -------------------------------------------------------------------------------

    def receive(self, data: bytes, peer: Peer, now: float) -> None:
        self.stats["received"] += 1
        if not data.strip():
            return  # keep-alive
        try:
            message = parse(data, stream=peer.reliable)
        except ParseError as exc:
            self.stats["malformed"] += 1
            log.info("malformed SIP from %s:%d: %s", peer.host, peer.port, exc.reason)
            if exc.request is not None and exc.request.method != "ACK" and _answerable(exc.request):
                answer = response_to(exc.request, exc.status, None)
                answer.headers.add("Warning", f'399 - "{_quote(exc.reason)}"')
                self.send(bytes(answer), peer)
            return
        if isinstance(message, Response):
            self._response(message, now)
        else:
            self._request(message, peer, now)

    def _response(self, response: Response, now: float) -> None:
        via = parse_via(response.headers.get_all("Via")[0])
        tx = self._clients.get((via.branch or "", response.cseq[1]))
        if tx is None:
            self.stats["stray"] += 1
            return
        tx.receive(response, now)

    def _request(self, request: Request, peer: Peer, now: float) -> None:
        method = request.method.upper()
        via = parse_via(request.headers.get_all("Via")[0])
        branch = via.branch or ""
        if not branch.startswith(BRANCH_COOKIE):
            # An RFC 2543 peer: the transaction is known by what it sent (§17.2.3, simplified).
            branch = f"{request.call_id}|{request.cseq[0]}|{request.headers.get_all('Via')[0]}"
        sent_by = f"{via.host}:{via.port}"
        key = (branch, sent_by, "INVITE" if method == "ACK" else method)
        tx = self._servers.get(key)
        if method == "ACK":
            if tx is not None and tx.final_status >= 300:
                tx.receive_ack(now)
                return
            accepted = self._accepted_invite(request)
            if accepted is not None:
                accepted.receive_ack(now)
            self.on_request(request, None, peer)
            return
        if tx is not None:
            tx.receive_retransmission(now)
            return
        if method == "CANCEL":
            self._cancel(request, branch, sent_by, peer, now)
            return
        tx = ServerTransaction(self.send, request, peer, now, t1=self.t1)
        self._servers[key] = tx
        if request.method != method or method not in KNOWN_METHODS:
            self._reject(tx, 501, now)
            return
        if method not in SERVED_METHODS:
            answer = response_to(request, 405, None, secrets.token_hex(4))
            answer.headers.add("Allow", ", ".join(SERVED_METHODS))
            self.stats["rejected"] += 1
            tx.respond(answer, now)
            return
        if request.headers.get("Max-Forwards") == "0" and method != "OPTIONS":
            self._reject(tx, 483, now)
            return
        if method == "INVITE" and not _has_to_tag(request) and not self._take_token(now):
            self.stats["throttled"] += 1
            answer = response_to(request, 503, None, secrets.token_hex(4))
            answer.headers.add("Retry-After", str(self.retry_after))
            tx.respond(answer, now)
            return
        if method == "INVITE":
            tx.respond(response_to(request, 100), now)
        self.on_request(request, tx, peer)

    def _reject(self, tx: ServerTransaction, status: int, now: float) -> None:
        self.stats["rejected"] += 1
        tx.respond(response_to(tx.request, status, None, secrets.token_hex(4)), now)

    def _cancel(self, request: Request, branch: str, sent_by: str, peer: Peer, now: float) -> None:
        invite = self._servers.get((branch, sent_by, "INVITE"))
        tx = ServerTransaction(self.send, request, peer, now, t1=self.t1)
        self._servers[(branch, sent_by, "CANCEL")] = tx
        if invite is None or invite.answered:
            tx.respond(response_to(request, 481, None, secrets.token_hex(4)), now)
            return
        tx.respond(response_to(request, 200), now)
        if invite.on_cancel is not None:
            invite.on_cancel()

    def _accepted_invite(self, ack: Request) -> ServerTransaction | None:
        number = ack.cseq[0]
        for tx in self._servers.values():
            if tx.invite and tx.state == "accepted" and tx.request.call_id == ack.call_id \
                    and tx.request.cseq[0] == number:
                return tx
        return None

    def _take_token(self, now: float) -> bool:
        if self._tokens_at is not None:
            self._tokens = min(self.invite_rate, self._tokens + (now - self._tokens_at) * self.invite_rate)
        self._tokens_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    # -- timers ----------------------------------------------------------------------------------

    def deadline(self) -> float | None:
        times = [d for c in self._clients.values() if (d := c.deadline()) is not None]
        times += [d for s in self._servers.values() if (d := s.deadline()) is not None]
        return min(times) if times else None

    def poll(self, now: float) -> None:
        """Fire every timer due at `now` and forget ended transactions."""
        for ckey, ctx in list(self._clients.items()):
            ctx.timer(now)
            if ctx.terminated:
                del self._clients[ckey]
        for skey, stx in list(self._servers.items()):
            stx.timer(now)
            if stx.terminated:
                del self._servers[skey]

    def transport_failed(self, peer: Peer) -> None:
        for tx in self._clients.values():
            if tx.peer == peer:
                tx.transport_failed()

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)


def _answerable(request: Request) -> bool:
    """A malformed request gets its 400 only when the answer can be matched by its sender (RFC 3261
    §8.1.3.3: Via, From, To, Call-ID and a readable CSeq), else it is dropped."""
    try:
        parse_via(request.headers.get_all("Via")[0])
        request.cseq  # noqa: B018 - raises ValueError when unreadable
    except (IndexError, ValueError):
        return False
    return all(request.headers.get(name) for name in ("From", "To", "Call-ID"))


def _has_to_tag(request: Request) -> bool:
    to = (request.headers.get("To") or "").replace(" ", "").lower()
    return ";tag=" in to


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "'")[:200]
