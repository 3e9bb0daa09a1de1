"""One SIP call (an INVITE dialog) of a user agent, either way: the signalling only, SDP in and out as text.

Outgoing: `start(target, sdp)` sends the INVITE (re-sent with credentials on 401/407), reports 100, 180,
183 (with early media SDP) and the final answer, ACKs a 2xx (again for each retransmission), and
`hangup()` CANCELs before the answer or sends BYE after it.
Incoming: the agent hands over the INVITE; `ring()` sends 180, `accept(sdp)` 200 (retransmitted until the
ACK), `reject(status)` 486/603.
Both: re-INVITE either way (`reinvite(sdp)`; the peer's is answered by `listener.reoffer`), BYE,
INFO (DTMF), REFER (`refer(target)`, with its NOTIFY sipfrag followed; the peer's REFER is told to
`listener.referred`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .dialog import Dialog, new_tag
from .message import Message, Request, Response, response_to
from .stack import SipTimeout
from .transaction import Peer, ServerTransaction
from .uri import NameAddr, SipUri

if TYPE_CHECKING:
    from .agent import UserAgent

log = logging.getLogger(__name__)


class CallListener:
    """What a call tells its owner. Every method has a do-nothing default."""

    def progress(self, status: str, message: Message) -> None:
        """TRYING, RING, SESSION_PROGRESS (early media SDP in the message), ESTABLISHED."""

    def answered_sdp(self, sdp: str) -> None:
        """The peer's SDP answer to our offer (183 or 2xx, or the ACK of a late offer)."""

    def ended(self, status: str, info: str, message: Message | None) -> None:
        """FINISH, BUSY or FAILED, once."""

    def reoffer(self, request: Request) -> str:
        """The peer's re-INVITE: return the SDP answer; raise ValueError to refuse it (488)."""
        raise ValueError("re-INVITE not supported")

    def info(self, request: Request) -> None:
        """INFO from the peer (DTMF relay)."""

    def referred(self, target: str, request: Request) -> bool:
        """The peer asks us to call `target` (REFER); True to accept (202)."""
        return False

    def transfer_progress(self, status: str, message: Message) -> None:
        """Our REFER: ACCEPTED, TRYING, COMPLETED, FAILED."""


class SipCall:
    def __init__(self, agent: UserAgent, listener: CallListener, *, incoming: Request | None = None,
                 tx: ServerTransaction | None = None, peer: Peer | None = None):
        self.agent = agent
        self.stack = agent.stack
        self.listener = listener
        self.dialog: Dialog | None = None
        self.state = "new"  # new, calling, early, established, ending, ended
        self.invite: Request | None = incoming
        self.invite_tx = tx
        self.peer = peer
        self.local_tag = new_tag()
        self._cancel_wanted = False
        self._got_provisional = False
        self._ack: Request | None = None
        self._answer_task: asyncio.Task[None] | None = None
        self._pending_reinvite = False
        if incoming is not None and tx is not None:
            self.dialog = Dialog.as_callee(incoming, self.local_tag, agent.contact)
            agent.add_dialog(incoming.call_id, self.local_tag, self)
            tx.on_cancel = self._cancelled
            tx.on_timeout = self._ack_timed_out

    @property
    def call_id(self) -> str:
        return self.invite.call_id if self.invite is not None else ""

    @property
    def ended(self) -> bool:
        return self.state == "ended"

    # -- outgoing --------------------------------------------------------------------------------

    async def start(self, target: SipUri, sdp: str, extra_headers: list[tuple[str, str]] | None = None,
                    display_name: str | None = None) -> None:
        agent = self.agent
        invite = agent.new_request("INVITE", str(target), f"<{target}>", tag=self.local_tag)
        if display_name:
            invite.headers.set("From", f"{NameAddr(str(agent.account.aor), display_name)};tag={self.local_tag}")
        for name, value in extra_headers or []:
            invite.headers.add(name, value)
        invite.headers.add("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REFER, MESSAGE, NOTIFY, UPDATE")
        invite.headers.add("Content-Type", "application/sdp")
        invite.body = sdp.encode()
        self.invite = invite
        self.state = "calling"
        agent.add_dialog(invite.call_id, self.local_tag, self)
        try:
            self.peer = await agent.peer_for()
            response = await agent.send(invite, self.peer, on_provisional=self._provisional,
                                        on_late_2xx=self._late_2xx, on_resend=self._resent)
        except (SipTimeout, OSError) as exc:
            self._end("FAILED", f"Failed by request timeout: {exc}", None)
            return
        if 200 <= response.status < 300:
            self.dialog = Dialog.as_caller(self.invite, response, agent.contact)
            self._send_ack(response)
            if self._cancel_wanted or self.state in ("ending", "ended"):
                # the answer crossed our CANCEL: the call exists now, so it is ended with BYE
                await self._bye()
                self._end("FINISH", "Normal call clearing", response)
                return
            self.state = "established"
            if response.body:
                self.listener.answered_sdp(response.body.decode("utf-8", errors="replace"))
            self.listener.progress("ESTABLISHED", response)
            return
        if self._cancel_wanted and response.status == 487:
            self._end("FINISH", "Normal call clearing", response)
        elif response.status in (486, 600):
            self._end("BUSY", f"{response.status} {response.reason}", response)
        else:
            self._end("FAILED", f"{response.status} {response.reason}", response)

    def _resent(self, request: Request) -> None:
        self.invite = request

    def _provisional(self, response: Response) -> None:
        self._got_provisional = True
        if self._cancel_wanted and self.state == "calling":
            self.agent.spawn(self._send_cancel())
            return
        if response.status == 100:
            self.listener.progress("TRYING", response)
            return
        if response.body and response.status == 183:
            self.listener.answered_sdp(response.body.decode("utf-8", errors="replace"))
            self.listener.progress("SESSION_PROGRESS", response)
        else:
            self.listener.progress("RING", response)

    def _late_2xx(self, response: Response) -> None:
        self._send_ack(response)

    def _send_ack(self, response: Response) -> None:
        assert self.invite is not None
        dialog = self.dialog or Dialog.as_caller(self.invite, response, self.agent.contact)
        ack = dialog.request("ACK", self.stack.via(self.agent.transport), cseq=self.invite.cseq[0])
        for name, value in self.invite.headers:
            if name in ("Authorization", "Proxy-Authorization"):
                ack.headers.add(name, value)
        self.agent.spawn(self._send_ack_to(ack, dialog))

    async def _send_ack_to(self, ack: Request, dialog: Dialog) -> None:
        peer = await self.agent.peer_for(dialog)
        self.stack.send_stateless(ack, peer)

    async def _send_cancel(self) -> None:
        assert self.invite is not None and self.peer is not None
        cancel = Request(method="CANCEL", uri=self.invite.uri)
        cancel.headers.add("Via", self.invite.headers.get_all("Via")[0])
        cancel.headers.add("Max-Forwards", "70")
        for route in self.invite.headers.get_all("Route"):
            cancel.headers.add("Route", route)
        for name in ("From", "To", "Call-ID"):
            cancel.headers.add(name, self.invite.headers.get(name) or "")
        cancel.headers.add("CSeq", f"{self.invite.cseq[0]} CANCEL")
        try:
            await self.stack.transact(cancel, self.peer)
        except SipTimeout:
            self._end("FINISH", "Normal call clearing", None)

    # -- incoming --------------------------------------------------------------------------------

    def ring(self) -> None:
        if self.invite_tx is not None and not self.invite_tx.answered:
            self.stack.respond(self.invite_tx, self._answer(180))

    def accept(self, sdp: str) -> None:
        if self.invite_tx is None or self.invite_tx.answered or self.ended:
            return
        answer = self._answer(200)
        answer.headers.add("Contact", self.agent.contact)
        answer.headers.add("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REFER, MESSAGE, NOTIFY, UPDATE")
        answer.headers.add("Content-Type", "application/sdp")
        answer.body = sdp.encode()
        self.state = "accepted"
        self.stack.respond(self.invite_tx, answer)

    def reject(self, status: int = 486) -> None:
        if self.invite_tx is not None and not self.invite_tx.answered:
            response = self._answer(status)
            self.stack.respond(self.invite_tx, response)
            self._end("BUSY" if status in (486, 600) else "FINISH", f"{status} {response.reason}", response)

    def _answer(self, status: int) -> Response:
        assert self.invite is not None
        response = response_to(self.invite, status, None, self.local_tag)
        return response

    def _cancelled(self) -> None:
        if self.invite_tx is not None and not self.invite_tx.answered:
            self.stack.respond(self.invite_tx, self._answer(487))
        self._end("FINISH", "Cancelled by the caller", self.invite)

    def _ack_timed_out(self) -> None:
        if self.state == "accepted":
            self.agent.spawn(self._bye())
            self._end("FAILED", "Failed by request timeout: no ACK", None)

    # -- in the dialog ---------------------------------------------------------------------------

    def handle_request(self, request: Request, tx: ServerTransaction | None, peer: Peer) -> None:
        method = request.method
        if method == "ACK":
            if self.state == "accepted":
                self.state = "established"
                if request.body and self.invite is not None and not self.invite.body:
                    self.listener.answered_sdp(request.body.decode("utf-8", errors="replace"))
                self.listener.progress("ESTABLISHED", request)
            return
        if tx is None:
            return
        if self.dialog is not None and not self.dialog.accepts_remote(request):
            self.stack.respond(tx, response_to(request, 500, "CSeq out of order"))
            return
        if method == "BYE":
            self.stack.respond(tx, response_to(request, 200))
            self._end("FINISH", "Normal call clearing", request)
        elif method in ("INVITE", "UPDATE"):
            self._reinvited(request, tx)
        elif method == "INFO":
            self.stack.respond(tx, response_to(request, 200))
            self.listener.info(request)
        elif method == "REFER":
            self._referred(request, tx)
        elif method == "NOTIFY":
            self.stack.respond(tx, response_to(request, 200))
            self._refer_notify(request)
        elif method == "MESSAGE":
            status = self.agent.listener.incoming_message(request)
            self.stack.respond(tx, response_to(request, status))
        else:
            self.stack.respond(tx, response_to(request, 405))

    def _reinvited(self, request: Request, tx: ServerTransaction) -> None:
        if self.state not in ("established",) or self.dialog is None:
            self.stack.respond(tx, response_to(request, 491 if self._pending_reinvite else 488))
            return
        self.dialog.refresh_target(request)
        try:
            sdp = self.listener.reoffer(request)
        except ValueError as exc:
            log.info("re-INVITE refused: %s", exc)
            self.stack.respond(tx, response_to(request, 488))
            return
        answer = response_to(request, 200)
        answer.headers.add("Contact", self.agent.contact)
        if sdp:
            answer.headers.add("Content-Type", "application/sdp")
            answer.body = sdp.encode()
        self.stack.respond(tx, answer)

    async def reinvite(self, sdp: str) -> Response | None:
        """Our re-INVITE (hold, unhold): the peer's final response, or None when it did not answer."""
        if self.dialog is None or self.state != "established" or self._pending_reinvite:
            return None
        self._pending_reinvite = True
        try:
            request = self.dialog.request("INVITE", self.stack.via(self.agent.transport))
            request.headers.add("Content-Type", "application/sdp")
            request.body = sdp.encode()
            peer = await self.agent.peer_for(self.dialog)

            def resent(again: Request) -> None:
                assert self.dialog is not None
                self.dialog.local_cseq = again.cseq[0]

            response = await self.agent.send(request, peer, on_late_2xx=self._late_reinvite_2xx(request),
                                             on_resend=resent)
            if 200 <= response.status < 300:
                self.dialog.refresh_target(response)
                ack = self.dialog.request("ACK", self.stack.via(self.agent.transport), cseq=response.cseq[0])
                self.stack.send_stateless(ack, peer)
            return response
        except (SipTimeout, OSError):
            return None
        finally:
            self._pending_reinvite = False

    def _late_reinvite_2xx(self, request: Request) -> Callable[[Response], None]:
        def again(response: Response) -> None:
            if self.dialog is not None:
                ack = self.dialog.request("ACK", self.stack.via(self.agent.transport), cseq=response.cseq[0])
                self.agent.spawn(self._send_ack_to(ack, self.dialog))
        return again

    async def request(self, method: str, body: bytes = b"", content_type: str | None = None,
                      headers: list[tuple[str, str]] | None = None) -> Response | None:
        """A request in this dialog (INFO, MESSAGE, REFER ...): its final response, or None on timeout."""
        if self.dialog is None:
            return None
        request = self.dialog.request(method, self.stack.via(self.agent.transport))
        for name, value in headers or []:
            request.headers.add(name, value)
        if content_type:
            request.headers.add("Content-Type", content_type)
        request.body = body
        try:
            peer = await self.agent.peer_for(self.dialog)

            def resent(again: Request) -> None:
                assert self.dialog is not None
                self.dialog.local_cseq = again.cseq[0]
            return await self.agent.send(request, peer, on_resend=resent)
        except (SipTimeout, OSError):
            return None

    async def refer(self, target: str) -> None:
        """Blind transfer: REFER to `target`; the NOTIFY sipfrag that follow report how it goes."""
        self._refer_done = False
        response = await self.request("REFER", headers=[("Refer-To", f"<{target}>"),
                                                        ("Referred-By", f"<{self.agent.account.aor}>")])
        if response is None:
            self.listener.transfer_progress("FAILED", Request(method="REFER"))
        elif 200 <= response.status < 300:
            self.listener.transfer_progress("ACCEPTED", response)
        else:
            self.listener.transfer_progress("FAILED", response)

    def _refer_notify(self, request: Request) -> None:
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != "refer":
            return
        frag = request.body.decode("utf-8", errors="replace").strip().split("\r\n")[0].split("\n")[0]
        parts = frag.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            return
        status = int(parts[1])
        if status < 200:
            self.listener.transfer_progress("TRYING", request)
        elif status < 300:
            self.listener.transfer_progress("COMPLETED", request)
        else:
            self.listener.transfer_progress("FAILED", request)

    def _referred(self, request: Request, tx: ServerTransaction) -> None:
        refer_to = request.headers.get("Refer-To")
        if not refer_to:
            self.stack.respond(tx, response_to(request, 400, "Missing Refer-To"))
            return
        try:
            target = NameAddr.parse(refer_to).uri
        except ValueError:
            self.stack.respond(tx, response_to(request, 400, "Bad Refer-To"))
            return
        if not self.listener.referred(target, request):
            self.stack.respond(tx, response_to(request, 603))
            return
        self.stack.respond(tx, response_to(request, 202))
        self.agent.spawn(self.notify_refer(100, "Trying", active=True))

    async def notify_refer(self, status: int, reason: str, active: bool = False) -> None:
        """Tell the peer that referred us how the new call goes (RFC 3515 §2.4.4)."""
        state = "active;expires=60" if active else "terminated;reason=noresource"
        await self.request("NOTIFY", f"SIP/2.0 {status} {reason}\r\n".encode(), "message/sipfrag;version=2.0",
                           headers=[("Event", "refer"), ("Subscription-State", state)])

    async def hangup(self) -> None:
        """End the call whatever its state: CANCEL, 486/603, or BYE."""
        if self.ended or self.state == "ending":
            return
        if self.state == "calling":
            self._cancel_wanted = True
            if self._got_provisional:
                await self._send_cancel()
            return
        if self.invite_tx is not None and not self.invite_tx.answered:
            self.reject(603)
            return
        self.state = "ending"
        await self._bye()
        self._end("FINISH", "Normal call clearing", None)

    async def _bye(self) -> None:
        if self.dialog is None:
            return
        bye = self.dialog.request("BYE", self.stack.via(self.agent.transport))
        try:
            peer = await self.agent.peer_for(self.dialog)
            await asyncio.wait_for(self.agent.send(bye, peer), 40)
        except (SipTimeout, OSError, TimeoutError):
            pass

    def _end(self, status: str, info: str, message: Message | None) -> None:
        if self.state == "ended":
            return
        self.state = "ended"
        if self.invite is not None:
            loop = asyncio.get_running_loop()
            call_id, tag = self.invite.call_id, self.local_tag
            # Keep answering the dialog's stragglers (BYE retransmissions) for a while, then forget it.
            loop.call_later(32.0, lambda: self.agent.remove_dialog(call_id, tag))
        self.listener.ended(status, info, message)
