"""SIP dialogs (RFC 3261 §12): the state two user agents share for a call or a subscription, and the
requests built inside one. No I/O.

A dialog is known by Call-ID, local tag and remote tag. It keeps the route set (Record-Route, reversed
for the caller), the remote target (the peer's Contact, updated by target refresh requests), and both
CSeq counters: a request with a CSeq lower than the last one seen is out of order (answered 500 by the
user agent).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from .message import Request, Response
from .uri import NameAddr, SipUri


def new_tag() -> str:
    return secrets.token_hex(6)


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # From of our requests (a name-addr)
    remote_uri: str  # To of our requests
    remote_target: str  # Request-URI of our requests
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 1
    remote_cseq: int | None = None
    contact: str = ""  # our Contact header value

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_caller(cls, request: Request, response: Response, contact: str) -> Dialog:
        """From our INVITE (or SUBSCRIBE, REFER) and the peer's 1xx/2xx answer with a To tag."""
        remote = NameAddr.parse(response.headers.get("To") or "")
        local = NameAddr.parse(request.headers.get("From") or "")
        target = _contact_uri(response) or NameAddr.parse(request.headers.get("To") or "").uri
        routes = list(reversed(response.headers.get_all("Record-Route")))
        return cls(call_id=request.call_id, local_tag=local.tag or "", remote_tag=remote.tag or "",
                   local_uri=request.headers.get("From") or "", remote_uri=response.headers.get("To") or "",
                   remote_target=target, route_set=routes, local_cseq=request.cseq[0], contact=contact)

    @classmethod
    def as_callee(cls, request: Request, local_tag: str, contact: str) -> Dialog:
        """From the peer's INVITE (or SUBSCRIBE) and the tag we answer with."""
        remote = NameAddr.parse(request.headers.get("From") or "")
        to = request.headers.get("To") or ""
        local_uri = to if ";tag=" in to else f"{to};tag={local_tag}"
        target = _contact_uri(request) or remote.uri
        return cls(call_id=request.call_id, local_tag=local_tag, remote_tag=remote.tag or "",
                   local_uri=local_uri, remote_uri=request.headers.get("From") or "", remote_target=target,
                   route_set=list(request.headers.get_all("Record-Route")), local_cseq=secrets.randbelow(10000) + 1,
                   remote_cseq=request.cseq[0], contact=contact)

    def request(self, method: str, via: str, *, cseq: int | None = None) -> Request:
        """A new request in this dialog (ACK and CANCEL give the CSeq they reuse)."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        uri, routes = self.remote_target, list(self.route_set)
        if routes and ";lr" not in routes[0]:
            # A strict router (RFC 2543): it becomes the Request-URI, the target goes last.
            uri = NameAddr.parse(routes[0]).uri
            routes = routes[1:] + [f"<{self.remote_target}>"]
        request = Request(method=method, uri=uri)
        request.headers.add("Via", via)
        request.headers.add("Max-Forwards", "70")
        for route in routes:
            request.headers.add("Route", route)
        request.headers.add("From", self.local_uri)
        request.headers.add("To", self.remote_uri)
        request.headers.add("Call-ID", self.call_id)
        request.headers.add("CSeq", f"{cseq} {method}")
        if method not in ("ACK", "CANCEL", "BYE") and self.contact:
            request.headers.add("Contact", self.contact)
        return request

    def accepts_remote(self, request: Request) -> bool:
        """Check and take the CSeq of a request from the peer; False when it is out of order."""
        number = request.cseq[0]
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and number < self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def refresh_target(self, message: Request | Response) -> None:
        uri = _contact_uri(message)
        if uri:
            self.remote_target = uri


def _contact_uri(message: Request | Response) -> str | None:
    contacts = message.headers.get_all("Contact")
    if not contacts:
        return None
    try:
        uri = NameAddr.parse(contacts[0]).uri
        SipUri.parse(uri)
    except ValueError:
        return None
    return uri
