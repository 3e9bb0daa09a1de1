"""SIP transactions (RFC 3261 §17, with the Accepted states of RFC 6026). No I/O: every input is a
method call with `now`, every output goes through the `send(data, peer)` function given at creation.

Client transactions retransmit over UDP (INVITE: Timer A doubling from T1; non-INVITE: Timer E doubling
up to T2) and give up after 64*T1 (Timers B and F) with `on_timeout`. Server transactions absorb
retransmitted requests by sending the last response again, retransmit a final INVITE response over UDP
until the ACK (Timer G, giving up at Timer H), and keep answering retransmissions for Timer J / I after
the end. Over a reliable transport (TCP, TLS) nothing is retransmitted and the waiting timers are zero,
as §17 says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .message import Request, Response

T1 = 0.5
T2 = 4.0
T4 = 5.0


@dataclass(frozen=True)
class Peer:
    """Where a message goes or came from: transport (udp, tcp, tls), host and port."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


Send = Callable[[bytes, Peer], None]


class ClientTransaction:
    """One request we sent and its responses. `on_response(response)` gets every response the TU must
    see (provisional, the final one, and 2xx retransmissions of an INVITE); `on_timeout()` is called
    when no final response came within 64*T1 (or the transport failed)."""

    def __init__(self, send: Send, request: Request, peer: Peer, now: float,
                 on_response: Callable[[Response], None], on_timeout: Callable[[], None], t1: float = T1):
        self.send_fn = send
        self.request = request
        self.peer = peer
        self.on_response = on_response
        self.on_timeout = on_timeout
        self.t1 = t1
        self.invite = request.method == "INVITE"
        self.state = "calling" if self.invite else "trying"
        self.data = bytes(request)
        self.interval = t1
        self.retransmit_at: float | None = None if peer.reliable else now + t1
        self.timeout_at: float | None = now + 64 * t1
        self.end_at: float | None = None
        self.ack: bytes | None = None
        self.final: Response | None = None
        self.send_fn(self.data, peer)

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"

    def deadline(self) -> float | None:
        times = [t for t in (self.retransmit_at, self.timeout_at, self.end_at) if t is not None]
        return min(times) if times else None

    def receive(self, response: Response, now: float) -> None:
        status = response.status
        if self.state in ("calling", "trying", "proceeding"):
            if status < 200:
                if self.state != "proceeding":
                    self.state = "proceeding"
                    if self.invite:
                        self.retransmit_at = None  # Timer A stops on a provisional response
                    elif self.retransmit_at is not None:
                        self.interval = T2
                self.on_response(response)
                return
            self.final = response
            self.retransmit_at = None
            self.timeout_at = None
            if self.invite and status < 300:
                self.state = "accepted"  # RFC 6026: 2xx retransmissions still reach the TU for 64*T1
                self.end_at = now + 64 * self.t1
            else:
                self.state = "completed"
                if self.invite:
                    self.ack = bytes(self._ack_for(response))
                    self.send_fn(self.ack, self.peer)
                    self.end_at = now + (0 if self.peer.reliable else 32.0)  # Timer D
                else:
                    self.end_at = now + (0 if self.peer.reliable else T4)  # Timer K
            self.on_response(response)
            return
        if self.state == "accepted" and 200 <= status < 300:
            self.on_response(response)  # the TU sends its ACK again
        elif self.state == "completed" and self.invite and status >= 300 and self.ack is not None:
            self.send_fn(self.ack, self.peer)

    def timer(self, now: float) -> None:
        if self.terminated:
            return
        if self.end_at is not None and now >= self.end_at:
            self.state = "terminated"
            return
        if self.timeout_at is not None and now >= self.timeout_at:
            self.state = "terminated"
            self.on_timeout()
            return
        if self.retransmit_at is not None and now >= self.retransmit_at:
            self.send_fn(self.data, self.peer)
            self.interval = self.interval * 2 if self.invite else min(self.interval * 2, T2)
            self.retransmit_at = now + self.interval

    def transport_failed(self) -> None:
        if self.state in ("calling", "trying", "proceeding"):
            self.state = "terminated"
            self.on_timeout()

    def _ack_for(self, response: Response) -> Request:
        """The ACK of a non-2xx final response (§17.1.1.3): same branch, the response's To."""
        ack = Request(method="ACK", uri=self.request.uri)
        ack.headers.add("Via", self.request.headers.get_all("Via")[0])
        for name in ("Route",):
            for value in self.request.headers.get_all(name):
                ack.headers.add(name, value)
        ack.headers.add("Max-Forwards", "70")
        ack.headers.add("From", self.request.headers.get("From") or "")
        ack.headers.add("To", response.headers.get("To") or "")
        ack.headers.add("Call-ID", self.request.call_id)
        ack.headers.add("CSeq", f"{self.request.cseq[0]} ACK")
        return ack


class ServerTransaction:
    """One request we received. The TU answers with `respond(response, now)`; `on_timeout` (optional)
    is told when a final INVITE response was never acknowledged (Timer H)."""

    def __init__(self, send: Send, request: Request, peer: Peer, now: float, t1: float = T1):
        self.send_fn = send
        self.request = request
        self.peer = peer
        self.t1 = t1
        self.invite = request.method == "INVITE"
        self.state = "proceeding" if self.invite else "trying"
        self.last: bytes | None = None
        self.final_status = 0
        self.retransmit_at: float | None = None
        self.interval = t1
        self.timeout_at: float | None = None
        self.end_at: float | None = None
        self.on_timeout: Callable[[], None] | None = None
        self.on_cancel: Callable[[], None] | None = None
        self.acked = False

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"

    @property
    def answered(self) -> bool:
        return self.final_status >= 200

    def deadline(self) -> float | None:
        times = [t for t in (self.retransmit_at, self.timeout_at, self.end_at) if t is not None]
        return min(times) if times else None

    def respond(self, response: Response, now: float) -> None:
        if self.state in ("completed", "confirmed", "terminated", "accepted"):
            return  # one final response per transaction; later ones are a TU bug, not sent
        self.last = bytes(response)
        self.send_fn(self.last, self.peer)
        if response.status < 200:
            if not self.invite:
                self.state = "proceeding"
            return
        self.final_status = response.status
        if self.invite:
            # 2xx (RFC 6026 Accepted) and errors (Completed) are both retransmitted until the ACK.
            self.state = "accepted" if response.status < 300 else "completed"
            if not self.peer.reliable:
                self.retransmit_at = now + self.t1
            self.timeout_at = now + 64 * self.t1  # Timer H (and RFC 6026 Timer L)
        else:
            self.state = "completed"
            self.end_at = now + (0 if self.peer.reliable else 64 * self.t1)  # Timer J

    def receive_retransmission(self, now: float) -> None:
        if self.last is not None and self.state != "confirmed":
            self.send_fn(self.last, self.peer)

    def receive_ack(self, now: float) -> None:
        if self.state in ("completed", "accepted"):
            self.acked = True
            self.retransmit_at = None
            self.timeout_at = None
            self.state = "confirmed"
            self.end_at = now + (0 if self.peer.reliable else T4)  # Timer I

    def timer(self, now: float) -> None:
        if self.terminated:
            return
        if self.end_at is not None and now >= self.end_at:
            self.state = "terminated"
            return
        if self.timeout_at is not None and now >= self.timeout_at:
            self.state = "terminated"
            if self.on_timeout is not None and not self.acked:
                self.on_timeout()
            return
        if self.retransmit_at is not None and now >= self.retransmit_at and self.last is not None:
            self.send_fn(self.last, self.peer)
            self.interval = min(self.interval * 2, T2)
            self.retransmit_at = now + self.interval
