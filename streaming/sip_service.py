"""The SIP gateway's WebSDK face: a client session that connects with sip* fields gets a SIP user agent
(sip/agent.py) that registers for it, and the call messages of the client protocol drive SIP calls.

Client messages (src/flashphoner-core.js): call, answer, hangup, hold, unhold, sendDtmf, transfer,
sendMessage, sendIMDN, subscribe, sendXcapRequest. Each is first a direct invocation of the backend hook
of the same name (sendDtmf's hook is sendDTMF), which may refuse it (the call or operation then fails
with the backend's reason) or, under restPolicy OVERWRITE, change its fields.

What the client is sent (the names the WebSDK dispatches on): `registered`; `setRemoteSDP [callId,
sdp]`; call statuses in `notifyTryingResponse` (TRYING), `ring` (RING, SESSION_PROGRESS), `talk`
(ESTABLISHED), `hold` (HOLD), `finish` (FINISH, BUSY, FAILED); `notifyIncomingCall`;
`notifyTransferEvent`; `notifyMessage`; `notifySubscription`; `notifyXcapResponse`. Every status object
carries `sipStatus`, `info` and `sipMessageRaw`, and the same object goes to the backend as the event
(RegistrationStatusEvent, CallStatusEvent, TransferStatusEvent, MessageStatusEvent, OnMessageEvent,
SubscriptionStatusEvent, XcapStatusEvent).

The media of a call is `media.sip_media.CallMedia`: the browser's WebRTC leg bridged to the SIP leg's RTP.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from sip.agent import Account, UserAgent
from sip.call import CallListener, SipCall
from sip.message import Message, Request, Response
from sip.stack import SipStack, StackSettings
from sip.subscription import Subscription
from sip.transaction import Peer, ServerTransaction
from sip.uri import NameAddr, SipUri, UriError, target_uri

from . import protocol
from .hooks import HookClient
from .protocol import ProtocolError
from .session import Session
from .sip_messages import OutgoingMessage, build_message_body, parse_incoming_message

log = logging.getLogger(__name__)

CALL_MESSAGE = {"TRYING": "notifyTryingResponse", "RING": "ring", "SESSION_PROGRESS": "ring",
                "ESTABLISHED": "talk", "HOLD": "hold", "FINISH": "finish", "BUSY": "finish", "FAILED": "finish"}
ENDED = ("FINISH", "BUSY", "FAILED")
DTMF_TYPES = ("RFC2833", "INFO", "INFO_RELAY")
NO_SIP = "SIP is not configured for this session: connect with sipLogin and sipDomain"
MAX_CALLS = 8  # per session
SHUTDOWN_GRACE = 3.0  # seconds the server's stop waits for the un-REGISTERs and BYEs of its phones


@dataclass(frozen=True)
class SipSettings:
    stack: StackSettings
    register_expires: int = 3600
    xcap_url: str = ""
    rtp_address: str = "127.0.0.1"
    rtp_public_address: str | None = None
    rtp_port_min: int = 20000
    rtp_port_max: int = 20999
    rtp_timeout: float = 30.0

    @classmethod
    def from_config(cls, config: Any) -> SipSettings:
        bind = config["sip.bind"] or config["server.bind"]
        stack = StackSettings(bind=bind, udp_port=config["sip.udp_port"], tcp_port=config["sip.tcp_port"],
                              tls_port=config["sip.tls_port"] if config["sip.cert"] else None,
                              cert=str(config["sip.cert"]) if config["sip.cert"] else None,
                              key=str(config["sip.key"]) if config["sip.key"] else None,
                              public_address=config["sip.public_address"], invite_rate=config["sip.invite_rate"])
        rtp = bind if bind not in ("0.0.0.0", "::") else "127.0.0.1"
        return cls(stack=stack, register_expires=config["sip.register_expires"], xcap_url=config["sip.xcap_url"],
                   rtp_address=rtp, rtp_public_address=config["sip.public_address"],
                   rtp_port_min=config["sip.rtp_port_min"], rtp_port_max=config["sip.rtp_port_max"],
                   rtp_timeout=config["sip.rtp_timeout"])


def account_from(data: dict[str, Any], expires: int) -> Account | None:
    """The SIP account of a session's connect fields, or None when it has none (no SIP at all)."""
    login, domain = data.get("sipLogin"), data.get("sipDomain")
    if not isinstance(login, str) or not login or not isinstance(domain, str) or not domain:
        return None

    def text(key: str) -> str:
        value = data.get(key)
        return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""

    port_text = text("sipPort")
    port = int(port_text) if port_text.isdigit() and 0 < int(port_text) < 65536 else 5060
    proxy = text("sipOutboundProxy") or text("sipProxy")
    transport = "udp"
    if ";transport=" in proxy.lower():
        transport = proxy.lower().split(";transport=", 1)[1].split(";")[0] or "udp"
    required = data.get("sipRegisterRequired")
    return Account(login=login, domain=domain, password=text("sipPassword"), auth_name=text("sipAuthenticationName"),
                   display_name=text("sipVisibleName"), outbound_proxy=proxy, port=port,
                   contact_params=text("sipContactParams"), register_required=required in (True, "true", "True"),
                   transport=transport if transport in ("udp", "tcp", "tls") else "udp", expires=expires)


class Gateway:
    """Everything SIP of one client session: its user agent, calls, messages and subscriptions."""

    def __init__(self, service: SipService, session: Session, account: Account):
        self.service = service
        self.session = session
        self.account = account
        self.agent = UserAgent(service.stack, account, self)
        self.calls: dict[str, CallLeg] = {}
        self.subscriptions: dict[str, Subscription] = {}

    # -- AgentListener ---------------------------------------------------------------------------

    def registration_changed(self, status: str, info: str, message: Message | None) -> None:
        body = {"status": status, "info": info, **_sip_fields(message), "sipLogin": self.account.login,
                "sipDomain": self.account.domain}
        self.session.report("RegistrationStatusEvent", body)
        if status == "REGISTERED":
            frame = _client_frame(self.session, "registered", "RegistrationStatusEvent", body)
            self.service.spawn(self.session.send(frame))
        elif status == "FAILED":
            self.service.spawn(self.session.send(protocol.fail(f"SIP registration failed: {info}",
                                                               "RegistrationStatusEvent")))

    def incoming_invite(self, request: Request, tx: ServerTransaction, peer: Peer) -> None:
        self.service.spawn(self.service.incoming_call(self, request, tx, peer))

    def incoming_message(self, request: Request) -> int:
        return self.service.incoming_message(self, request)

    def incoming_notify(self, request: Request) -> None:
        pass

    async def close(self, reason: str) -> None:
        for leg in list(self.calls.values()):
            await leg.hangup(reason)
        for sub in list(self.subscriptions.values()):
            await sub.terminate()
        await self.agent.close()


@dataclass
class CallLeg(CallListener):
    """One call of a client: its WebSDK face (statuses, SDP) and its SIP call and media."""

    service: SipService
    gateway: Gateway
    id: str
    incoming: bool
    caller: str
    callee: str
    visible_name: str
    has_video: bool = False
    status: str = "PENDING"
    sip: SipCall | None = None
    media: Any = None
    held_by_us: bool = False
    held_by_peer: bool = False
    custom: Any = None
    invite: Request | None = None
    pending_ack_sdp: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The client's in-call requests (re-INVITE, INFO) go out one at a time, in the order they came.
    requests_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def session(self) -> Session:
        return self.gateway.session

    def describe(self, status: str, info: str | None, message: Message | None) -> dict[str, Any]:
        obj: dict[str, Any] = {"callId": self.id, "status": status, "incoming": self.incoming,
                               "caller": self.caller, "callee": self.callee, "visibleName": self.visible_name,
                               "hasVideo": self.has_video, "hasAudio": True, "mediaProvider": "WebRTC",
                               "isMsrp": False, **_sip_fields(message)}
        if info:
            obj["info"] = info
        if self.custom is not None:
            obj["custom"] = self.custom
        if self.media is not None and hasattr(self.media, "stream_names"):
            obj["streams"] = list(self.media.stream_names)
        return obj

    def set_status(self, status: str, info: str | None = None, message: Message | None = None) -> None:
        if self.status in ENDED:
            return
        self.status = status
        obj = self.describe(status, info, message)
        self.service.spawn(self.session.send(_client_frame(self.session, CALL_MESSAGE[status], "CallStatusEvent", obj)))
        self.session.report("CallStatusEvent", obj)
        log.info("call %s %s%s", self.id, status, f" ({info})" if info else "")
        if status in ENDED:
            self.gateway.calls.pop(self.id, None)
            if self.media is not None:
                self.service.spawn(self.media.close())

    # -- CallListener ----------------------------------------------------------------------------

    def progress(self, status: str, message: Message) -> None:
        if status == "ESTABLISHED" and self.pending_ack_sdp is not None and self.media is not None:
            self._take_answer(self.pending_ack_sdp)
        self.set_status(status, _reason(message), message)

    def answered_sdp(self, sdp: str) -> None:
        if self.media is None:
            return
        self._take_answer(sdp)

    def _take_answer(self, sdp: str) -> None:
        try:
            self.media.sip_answered(sdp)
        except ValueError as exc:
            log.info("call %s: the peer's SDP answer is unusable: %s", self.id, exc)
            self.service.spawn(self.hangup(f"No common codecs: {exc}"))

    def ended(self, status: str, info: str, message: Message | None) -> None:
        self.set_status(status, info, message)

    def reoffer(self, request: Request) -> str:
        if self.media is None:
            raise ValueError("no media")
        sdp = self.media.sip_answer(request.body.decode("utf-8", errors="replace"),
                                    "sendonly" if self.held_by_us else "sendrecv") if request.body \
            else self.media.sip_offer("sendonly" if self.held_by_us else "sendrecv")
        direction = getattr(self.media, "remote_direction", "sendrecv")
        held = direction in ("sendonly", "inactive")
        if held != self.held_by_peer:
            self.held_by_peer = held
            self.set_status("HOLD" if held or self.held_by_us else "ESTABLISHED", _reason(request), request)
        return str(sdp)

    def info(self, request: Request) -> None:
        digits = parse_dtmf_info(request)
        if digits:
            self.dtmf_received(digits, "INFO")

    def dtmf_received(self, digits: str, kind: str) -> None:
        obj = {"callId": self.id, "dtmf": digits, "type": kind}
        self.service.spawn(self.session.send(_client_frame(self.session, "notifyDTMF", "DTMFEvent", obj)))
        self.session.report("DTMFEvent", obj)

    def referred(self, target: str, request: Request) -> bool:
        if self.media is None or self.status not in ("ESTABLISHED", "HOLD"):
            return False
        self.service.spawn(self.service.follow_refer(self, target, request))
        return True

    def transfer_progress(self, status: str, message: Message, ours: bool = True) -> None:
        """How a transfer goes: ours (we sent REFER) or the peer's (`ours` False: we were referred)."""
        obj = {"callId": self.id, "status": status, "incoming": self.incoming, **_sip_fields(message)}
        frame = _client_frame(self.session, "notifyTransferEvent", "TransferStatusEvent", obj)
        self.service.spawn(self.session.send(frame))
        self.session.report("TransferStatusEvent", obj)
        if ours and status == "COMPLETED" and self.sip is not None and not self.sip.ended:
            # The transferee reached the target (NOTIFY 200): our part of the call is over (RFC 5589 §6.1).
            self.service.spawn(self.hangup("Transferred"))

    async def hangup(self, info: str = "Normal call clearing") -> None:
        if self.sip is not None and not self.sip.ended:
            await self.sip.hangup()
        if self.status not in ENDED:
            self.set_status("FINISH", info)


class SipService:
    def __init__(self, settings: SipSettings, hooks: HookClient, media_factory: Callable[..., Any] | None):
        self.settings = settings
        self.hooks = hooks
        self.media_factory = media_factory  # CallMedia(call_id=, has_video=, on_dtmf=, on_timeout=)
        self.stack = SipStack(settings.stack)
        self.gateways: dict[str, Gateway] = {}
        self.started = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> dict[str, int]:
        try:
            await self.stack.start()
        except OSError as exc:
            log.warning("SIP is off: cannot listen on %s (%s); set sip.udp_port / sip.tcp_port",
                        self.settings.stack.bind, exc)
            return {}
        self.started = True
        return {f"sip_{t}": p for t, (_h, p) in self.stack.transport.local.items()}

    async def shutdown(self) -> None:
        """Every phone hangs up and un-registers at once; registrars and peers that do not answer within
        SHUTDOWN_GRACE do not hold up the server's stop."""
        closing = [asyncio.ensure_future(g.close("Server shutdown")) for g in list(self.gateways.values())]
        if closing:
            _done, pending = await asyncio.wait(closing, timeout=SHUTDOWN_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("SIP shutdown: %d phones did not finish hanging up or un-registering within %g s",
                            len(pending), SHUTDOWN_GRACE)
        if self.started:
            await self.stack.close()
        if self._http is not None:
            await self._http.close()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def handlers(self) -> dict[str, Any]:
        return {"call": self.call, "answer": self.answer, "hangup": self.hangup, "hold": self.hold,
                "unhold": self.unhold, "sendDtmf": self.send_dtmf, "transfer": self.transfer,
                "sendMessage": self.send_message, "sendIMDN": self.send_imdn, "subscribe": self.subscribe,
                "sendXcapRequest": self.send_xcap_request}

    def describe(self) -> dict[str, Any]:
        return {"listening": {t: p for t, (_h, p) in self.stack.transport.local.items()} if self.started else {},
                "sessions": len(self.gateways),
                "calls": sum(len(g.calls) for g in self.gateways.values()),
                "registered": sum(1 for g in self.gateways.values() if g.agent.registered),
                **self.stack.endpoint.stats}

    # -- sessions --------------------------------------------------------------------------------

    async def session_established(self, session: Session) -> None:
        account = account_from(session.client_data, self.settings.register_expires)
        if account is None or session.id in self.gateways:
            return
        if not self.started:
            await session.send(protocol.fail("SIP is not available on this server", "RegistrationStatusEvent"))
            return
        gateway = Gateway(self, session, account)
        self.gateways[session.id] = gateway
        if account.register_required:
            self.spawn(gateway.agent.register())

    async def session_closed(self, session: Session, reason: str) -> None:
        gateway = self.gateways.pop(session.id, None)
        if gateway is not None:
            await gateway.close(reason)

    def _gateway(self, session: Session, message: str, call_id: str | None = None) -> Gateway:
        gateway = self.gateways.get(session.id)
        if gateway is None:
            raise ProtocolError(NO_SIP, message, call_id)
        return gateway

    async def _ask(self, session: Session, method: str, body: dict[str, Any]) -> tuple[bool, dict[str, Any], str]:
        result = await self.hooks.call(session.app, method, {**body, **session.context},
                                       session.rest_config.for_method(method))
        return result.allowed, result.data, result.reason or "Restricted access"

    def _new_media(self, leg: CallLeg) -> Any:
        if self.media_factory is None:
            raise ValueError("SIP media bridge is not available on this server")
        return self.media_factory(call_id=leg.id, has_video=leg.has_video,
                                  on_dtmf=lambda digit: leg.dtmf_received(digit, "RFC2833"),
                                  on_timeout=lambda: self.spawn(leg.hangup("Failed by RTP activity")))

    # -- outgoing calls --------------------------------------------------------------------------

    async def call(self, session: Session, obj: dict[str, Any]) -> None:
        call_id = protocol.require_str(obj, "callId", "call", max_length=128)
        assert call_id is not None
        gateway = self._gateway(session, "call", call_id)
        callee = protocol.require_str(obj, "callee", "call", max_length=1024) or ""
        sdp = protocol.require_str(obj, "sdp", "call", max_length=65536) or ""
        leg = CallLeg(self, gateway, call_id, incoming=False, caller=gateway.account.login, callee=callee,
                      visible_name=str(obj.get("visibleName") or gateway.account.display_name or gateway.account.login),
                      has_video=obj.get("hasVideo") is True, custom=obj.get("custom"))
        if call_id in gateway.calls:
            raise ProtocolError(f"callId {call_id!r} is already in use", "call", call_id)
        if len(gateway.calls) >= MAX_CALLS:
            leg.set_status("FAILED", f"Too many calls in this session (the limit is {MAX_CALLS})")
            return
        gateway.calls[call_id] = leg
        allowed, data, reason = await self._ask(session, "call", {k: v for k, v in obj.items() if k != "sdp"}
                                                | {"callId": call_id})
        if not allowed:
            leg.set_status("FAILED", reason)
            return
        callee = str(data.get("callee", callee))
        leg.callee = callee
        try:
            target = target_uri(callee, gateway.account.domain)
        except UriError as exc:
            leg.set_status("FAILED", str(exc))
            return
        try:
            leg.media = self._new_media(leg)
            answer = await leg.media.browser_answer(sdp)
            offer = leg.media.sip_offer()
        except ValueError as exc:
            leg.set_status("FAILED", str(exc))
            return
        if leg.status in ENDED:
            return
        await session.send(protocol.frame("setRemoteSDP", call_id, answer))
        headers = invite_headers(obj.get("inviteParameters")) + invite_headers(obj.get("sipHeaders"))
        leg.sip = SipCall(gateway.agent, leg)
        # In a task of its own: the session's next messages (hangup: CANCEL) must not wait for the answer.
        self.spawn(leg.sip.start(target, offer, headers, display_name=leg.visible_name))

    # -- incoming calls --------------------------------------------------------------------------

    async def incoming_call(self, gateway: Gateway, request: Request, tx: ServerTransaction, peer: Peer) -> None:
        session = gateway.session
        caller = NameAddr.parse(request.headers.get("From") or "")
        try:
            caller_uri = SipUri.parse(caller.uri)
            caller_name = caller_uri.user or caller_uri.host
        except UriError:
            caller_name = caller.uri
        call_id = str(uuid.uuid4())
        leg = CallLeg(self, gateway, call_id, incoming=True, caller=caller_name, callee=gateway.account.login,
                      visible_name=caller.display or caller_name, has_video=b"m=video" in request.body,
                      invite=request)
        sip_call = SipCall(gateway.agent, leg, incoming=request, tx=tx, peer=peer)
        leg.sip = sip_call
        if len(gateway.calls) >= MAX_CALLS:
            sip_call.reject(486)
            return
        gateway.calls[call_id] = leg
        allowed, _data, reason = await self._ask(session, "OnCallEvent", leg.describe("RING", None, request))
        if not allowed:
            sip_call.reject(603)
            log.info("incoming call to %s refused by the backend: %s", gateway.account.login, reason)
            return
        try:
            leg.media = self._new_media(leg)
            browser_offer = await leg.media.browser_offer()
        except (ValueError, AttributeError) as exc:
            log.info("incoming call to %s: no media: %s", gateway.account.login, exc)
            sip_call.reject(488)
            return
        if sip_call.ended:
            return
        sip_call.ring()
        leg.status = "RING"
        await session.send(protocol.frame("setRemoteSDP", call_id, browser_offer))
        obj = leg.describe("RING", None, request)
        await session.send(_client_frame(session, "notifyIncomingCall", "CallStatusEvent", obj))
        # The WebSDK makes the call NEW; the RING status makes it RING, which `hangup` can decline.
        await session.send(_client_frame(session, "ring", "CallStatusEvent", obj))
        session.report("CallStatusEvent", obj)

    async def answer(self, session: Session, obj: dict[str, Any]) -> None:
        leg = self._leg(session, obj, "answer")
        sdp = protocol.require_str(obj, "sdp", "answer", max_length=65536) or ""
        if not leg.incoming or leg.sip is None or leg.invite is None or leg.status in ENDED:
            raise ProtocolError("Only a ringing incoming call can be answered", "answer", leg.id)
        allowed, _data, reason = await self._ask(session, "answer", {"callId": leg.id})
        if not allowed:
            leg.sip.reject(603)
            leg.set_status("FAILED", reason)
            return
        try:
            await leg.media.browser_answered(sdp)
            offer = leg.invite.body.decode("utf-8", errors="replace")
            if offer.strip():
                sip_sdp = leg.media.sip_answer(offer)
            else:  # a late offer: ours goes in the 200, the answer comes in the ACK
                sip_sdp = leg.media.sip_offer()
                leg.pending_ack_sdp = ""
            leg.sip.accept(sip_sdp)
        except ValueError as exc:
            leg.sip.reject(488)
            leg.set_status("FAILED", str(exc))

    # -- in a call -------------------------------------------------------------------------------

    def _leg(self, session: Session, obj: dict[str, Any], message: str) -> CallLeg:
        call_id = protocol.require_str(obj, "callId", message, max_length=128)
        assert call_id is not None
        gateway = self._gateway(session, message, call_id)
        leg = gateway.calls.get(call_id)
        if leg is None:
            raise ProtocolError(f"Call {call_id!r} not found", message, call_id)
        return leg

    async def hangup(self, session: Session, obj: dict[str, Any]) -> None:
        leg = self._leg(session, obj, "hangup")
        allowed, _data, reason = await self._ask(session, "hangup", {"callId": leg.id})
        if not allowed:
            raise ProtocolError(reason, "hangup", leg.id)
        await leg.hangup()

    async def hold(self, session: Session, obj: dict[str, Any]) -> None:
        await self._hold(session, obj, "hold", True)

    async def unhold(self, session: Session, obj: dict[str, Any]) -> None:
        await self._hold(session, obj, "unhold", False)

    async def _hold(self, session: Session, obj: dict[str, Any], message: str, hold: bool) -> None:
        leg = self._leg(session, obj, message)
        if leg.status not in ("ESTABLISHED", "HOLD") or leg.sip is None:
            raise ProtocolError(f"Call {leg.id} is not established", message, leg.id)
        allowed, _data, reason = await self._ask(session, message, {"callId": leg.id})
        if not allowed:
            raise ProtocolError(reason, message, leg.id)
        self.spawn(self._reinvite(session, leg, message, hold))

    async def _reinvite(self, session: Session, leg: CallLeg, message: str, hold: bool) -> None:
        assert leg.sip is not None
        async with leg.requests_lock:
            response = await leg.sip.reinvite(leg.media.sip_offer("sendonly" if hold else "sendrecv"))
        if response is None or not 200 <= response.status < 300:
            shown = f"{response.status} {response.reason}" if response is not None else "no answer"
            await session.send(protocol.fail(f"{message} failed: {shown}", message, leg.id))
            return
        if response.body:
            leg.answered_sdp(response.body.decode("utf-8", errors="replace"))
        leg.held_by_us = hold
        leg.set_status("HOLD" if hold or leg.held_by_peer else "ESTABLISHED", _reason(response), response)

    async def send_dtmf(self, session: Session, obj: dict[str, Any]) -> None:
        leg = self._leg(session, obj, "sendDtmf")
        digits = str(obj.get("dtmf", ""))
        kind = str(obj.get("type") or "RFC2833").upper()
        if not digits or len(digits) > 64 or any(c not in "0123456789*#ABCDabcd" for c in digits):
            raise ProtocolError("DTMF must be 1..64 of 0-9 * # A-D", "sendDtmf", leg.id)
        if kind not in DTMF_TYPES:
            raise ProtocolError(f"DTMF type must be one of {', '.join(DTMF_TYPES)}", "sendDtmf", leg.id)
        if leg.status not in ("ESTABLISHED", "HOLD") or leg.sip is None:
            raise ProtocolError(f"Call {leg.id} is not established", "sendDtmf", leg.id)
        allowed, _data, reason = await self._ask(session, "sendDTMF", {"callId": leg.id, "dtmf": digits, "type": kind})
        if not allowed:
            raise ProtocolError(reason, "sendDtmf", leg.id)
        if kind == "RFC2833":
            leg.media.send_dtmf(digits)
            return
        self.spawn(self._dtmf_by_info(session, leg, digits, kind))

    async def _dtmf_by_info(self, session: Session, leg: CallLeg, digits: str, kind: str) -> None:
        async with leg.requests_lock:
            await self._info_digits(session, leg, digits, kind)

    async def _info_digits(self, session: Session, leg: CallLeg, digits: str, kind: str) -> None:
        assert leg.sip is not None
        for digit in digits:
            if kind == "INFO":
                body, content_type = f"Signal={digit}\r\nDuration=160\r\n".encode(), "application/dtmf-relay"
            else:
                body, content_type = digit.encode(), "application/dtmf"
            response = await leg.sip.request("INFO", body, content_type)
            if response is None or not 200 <= response.status < 300:
                await session.send(protocol.fail(f"DTMF {digit} by INFO was not accepted", "sendDtmf", leg.id))
                return

    async def transfer(self, session: Session, obj: dict[str, Any]) -> None:
        leg = self._leg(session, obj, "transfer")
        target_text = protocol.require_str(obj, "target", "transfer", max_length=1024) or ""
        if leg.status not in ("ESTABLISHED", "HOLD") or leg.sip is None:
            raise ProtocolError(f"Call {leg.id} is not established", "transfer", leg.id)
        allowed, data, reason = await self._ask(session, "transfer", {"callId": leg.id, "target": target_text})
        if not allowed:
            leg.transfer_progress("FAILED", Request(method="REFER"))
            return
        try:
            target = target_uri(str(data.get("target", target_text)), leg.gateway.account.domain)
        except UriError as exc:
            raise ProtocolError(str(exc), "transfer", leg.id) from None
        self.spawn(leg.sip.refer(str(target)))

    async def follow_refer(self, leg: CallLeg, target: str, request: Request) -> None:
        """The peer transferred us (REFER): call `target` with the same media, then leave the old dialog."""
        old = leg.sip
        assert old is not None
        relay = _ReferredCall(leg)
        new = SipCall(leg.gateway.agent, relay)
        relay.call = new
        try:
            uri = SipUri.parse(target)
        except UriError:
            await old.notify_refer(400, "Bad Refer-To")
            return
        await new.start(uri, leg.media.sip_offer())
        if new.state == "established":
            await old.notify_refer(200, "OK")
            leg.sip = new
            old.listener = CallListener()  # the old dialog's end is not the call's end
            await old.hangup()
            leg.transfer_progress("COMPLETED", request, ours=False)
        else:
            await old.notify_refer(503, "Service Unavailable")
            leg.transfer_progress("FAILED", request, ours=False)

    # -- messages --------------------------------------------------------------------------------

    async def send_message(self, session: Session, obj: dict[str, Any]) -> None:
        gateway = self._gateway(session, "sendMessage")
        message_id = str(obj.get("id") or uuid.uuid4())
        try:
            outgoing = OutgoingMessage.from_client(obj, message_id, gateway.account)
        except ValueError as exc:
            await self._message_status(session, message_id, "FAILED", str(exc), None)
            return
        allowed, _data, reason = await self._ask(session, "sendMessage", dict(obj) | {"id": message_id})
        if not allowed:
            await self._message_status(session, message_id, "FAILED", reason, None)
            return
        self.spawn(self._send_sip_message(gateway, outgoing))

    async def _send_sip_message(self, gateway: Gateway, outgoing: OutgoingMessage) -> None:
        session = gateway.session
        try:
            target = target_uri(outgoing.to, gateway.account.domain)
        except UriError as exc:
            await self._message_status(session, outgoing.id, "FAILED", str(exc), None)
            return
        body, content_type = build_message_body(outgoing, gateway.account)
        request = gateway.agent.new_request("MESSAGE", str(target), f"<{target}>")
        request.headers.remove("Contact")
        request.headers.add("Content-Type", content_type)
        request.body = body
        try:
            response = await gateway.agent.send(request)
        except Exception as exc:
            await self._message_status(session, outgoing.id, "FAILED", f"no answer: {exc}", None)
            return
        status = "ACCEPTED" if 200 <= response.status < 300 else "FAILED"
        await self._message_status(session, outgoing.id, status, f"{response.status} {response.reason}", response)

    async def _message_status(self, session: Session, message_id: str, status: str, info: str,
                              message: Message | None, extra: dict[str, Any] | None = None) -> None:
        obj = {"id": message_id, "status": status, "info": info, **_sip_fields(message), **(extra or {})}
        session.report("MessageStatusEvent", obj)
        await session.send(_client_frame(session, "notifyMessage", "MessageStatusEvent", obj))

    def incoming_message(self, gateway: Gateway, request: Request) -> int:
        try:
            incoming = parse_incoming_message(request)
        except ValueError as exc:
            log.info("MESSAGE to %s refused: %s", gateway.account.login, exc)
            return 415
        session = gateway.session
        if incoming.imdn_of is not None:
            # A delivery notification about a message this client sent.
            status = "IMDN_DELIVERED" if incoming.imdn_status == "delivered" else "IMDN_FAILED"
            self.spawn(self._message_status(session, incoming.imdn_of, status, incoming.imdn_status or "", request))
            return 200
        obj = {"id": incoming.id, "status": "RECEIVED", "from": incoming.sender, "to": incoming.recipient,
               "body": incoming.body, "contentType": incoming.content_type, "isImdnRequired": incoming.imdn_required,
               **_sip_fields(request)}
        self.spawn(self._deliver_message(gateway, obj, incoming))
        return 200

    async def _deliver_message(self, gateway: Gateway, obj: dict[str, Any], incoming: Any) -> None:
        session = gateway.session
        allowed, data, _reason = await self._ask(session, "OnMessageEvent", obj)
        if not allowed:
            return
        await session.send(protocol.frame("notifyMessage", session.rest_config.for_method("OnMessageEvent")
                                          .for_client(data)))
        session.report("MessageStatusEvent", {"id": obj["id"], "status": "RECEIVED"})
        if incoming.imdn_required and incoming.imdn_message_id:
            await self._send_imdn(gateway, incoming.sender, incoming.imdn_message_id, "delivered")
            await self._message_status(session, obj["id"], "IMDN_NOTIFICATION_SENT", "delivered", None)

    async def send_imdn(self, session: Session, obj: dict[str, Any]) -> None:
        gateway = self._gateway(session, "sendIMDN")
        to = protocol.require_str(obj, "to", "sendIMDN", max_length=1024) or ""
        message_id = protocol.require_str(obj, "messageId", "sendIMDN", max_length=256, optional=True) \
            or str(obj.get("id") or "")
        disposition = str(obj.get("status") or obj.get("disposition") or "delivered").lower()
        allowed, _data, reason = await self._ask(session, "sendIMDN", dict(obj))
        if not allowed:
            await self._message_status(session, message_id, "FAILED", reason, None)
            return
        await self._send_imdn(gateway, to, message_id, disposition)
        await self._message_status(session, message_id, "IMDN_NOTIFICATION_SENT", disposition, None)

    async def _send_imdn(self, gateway: Gateway, to: str, message_id: str, disposition: str) -> None:
        outgoing = OutgoingMessage(id=str(uuid.uuid4()), to=to, body="", content_type="message/imdn+xml",
                                   imdn_of=message_id, imdn_status=disposition)
        await self._send_sip_message(gateway, outgoing)

    # -- subscriptions and XCAP ------------------------------------------------------------------

    async def subscribe(self, session: Session, obj: dict[str, Any]) -> None:
        gateway = self._gateway(session, "subscribe")
        sub_id = str(obj.get("id") or uuid.uuid4())
        allowed, _data, reason = await self._ask(session, "subscribe", dict(obj) | {"id": sub_id})
        if not allowed:
            await self.subscription_status(gateway, sub_id, "Terminated", reason, None)
            return
        if obj.get("terminate") is True or obj.get("expires") in (0, "0"):
            sub = gateway.subscriptions.get(sub_id)
            if sub is not None:
                await sub.terminate()
            return
        event = str(obj.get("event") or "reg")
        expires = obj.get("expires")
        expires_s = int(expires) if isinstance(expires, int | str) and str(expires).isdigit() else 3600
        to = str(obj.get("to") or gateway.account.aor)
        try:
            target = target_uri(to, gateway.account.domain)
        except UriError as exc:
            await self.subscription_status(gateway, sub_id, "Terminated", str(exc), None)
            return

        def on_status(status: str, info: str, message: Message | None) -> None:
            self.spawn(self.subscription_status(gateway, sub_id, status, info, message))

        sub = Subscription(sub_id, gateway.agent, target, event, expires_s, on_status)
        gateway.subscriptions[sub_id] = sub
        self.spawn(sub.start())

    async def subscription_status(self, gateway: Gateway, sub_id: str, status: str, info: str,
                                  message: Message | None) -> None:
        obj: dict[str, Any] = {"id": sub_id, "status": status, "info": info, **_sip_fields(message)}
        if isinstance(message, Request) and message.method == "NOTIFY":
            obj["requestBody"] = message.body.decode("utf-8", errors="replace")
            obj["contentType"] = message.headers.get("Content-Type") or ""
        if status == "Terminated":
            gateway.subscriptions.pop(sub_id, None)
        gateway.session.report("SubscriptionStatusEvent", obj)
        await gateway.session.send(_client_frame(gateway.session, "notifySubscription", "SubscriptionStatusEvent",
                                                 obj))

    async def send_xcap_request(self, session: Session, obj: dict[str, Any]) -> None:
        self._gateway(session, "sendXcapRequest")
        request_id = str(obj.get("id") or uuid.uuid4())
        base = self.settings.xcap_url.rstrip("/")
        url = str(obj.get("url") or "")
        if not base:
            await self._xcap_status(session, request_id, "FAILED", "XCAP is not configured (sip.xcap_url)", None, "")
            return
        if url.startswith(("http://", "https://")) and not url.startswith(base):
            await self._xcap_status(session, request_id, "FAILED", "The URL is not on the configured XCAP server",
                                    None, "")
            return
        full = url if url.startswith(("http://", "https://")) else base + "/" + url.lstrip("/")
        allowed, _data, reason = await self._ask(session, "sendXcapRequest", dict(obj) | {"id": request_id})
        if not allowed:
            await self._xcap_status(session, request_id, "FAILED", reason, None, "")
            return
        method = str(obj.get("method") or "GET").upper()
        if method not in ("GET", "PUT", "DELETE"):
            await self._xcap_status(session, request_id, "FAILED", f"XCAP method {method} is not supported", None, "")
            return
        self.spawn(self._xcap(session, request_id, method, full, obj))

    async def _xcap(self, session: Session, request_id: str, method: str, full: str, obj: dict[str, Any]) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        try:
            async with self._http.request(method, full, data=obj.get("body"), timeout=aiohttp.ClientTimeout(total=10),
                                          headers={"Content-Type": str(obj["contentType"])}
                                          if obj.get("contentType") else None) as resp:
                text = (await resp.content.read(1_048_576)).decode("utf-8", errors="replace")
                status = "ACCEPTED" if 200 <= resp.status < 300 else "FAILED"
                await self._xcap_status(session, request_id, status, f"{resp.status} {resp.reason}", resp.status, text)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await self._xcap_status(session, request_id, "FAILED", f"XCAP server unreachable: {exc}", None, "")

    async def _xcap_status(self, session: Session, request_id: str, status: str, info: str, http_status: int | None,
                           body: str) -> None:
        obj: dict[str, Any] = {"id": request_id, "status": status, "info": info, "responseBody": body}
        if http_status is not None:
            obj["httpStatus"] = http_status
        session.report("XcapStatusEvent", obj)
        await session.send(_client_frame(session, "notifyXcapResponse", "XcapStatusEvent", obj))


class _ReferredCall(CallListener):
    """The new call made for a REFER: its SDP answer goes to the media of the call it replaces."""

    def __init__(self, leg: CallLeg):
        self.leg = leg
        self.call: SipCall | None = None

    def answered_sdp(self, sdp: str) -> None:
        self.leg.answered_sdp(sdp)

    def ended(self, status: str, info: str, message: Message | None) -> None:
        if self.leg.sip is self.call:
            self.leg.ended(status, info, message)

    def reoffer(self, request: Request) -> str:
        return self.leg.reoffer(request)

    def info(self, request: Request) -> None:
        self.leg.info(request)


def invite_headers(value: Any) -> list[tuple[str, str]]:
    """inviteParameters / sipHeaders of a call: {name: value} or ["Name: value"], as extra INVITE headers."""
    out: list[tuple[str, str]] = []
    items: list[tuple[str, str]] = []
    if isinstance(value, dict):
        items = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, list):
        for entry in value:
            if isinstance(entry, str) and ":" in entry:
                name, _, val = entry.partition(":")
                items.append((name.strip(), val.strip()))
    for name, val in items[:32]:
        if name and all(c.isalnum() or c in "-_." for c in name) and "\r" not in val and "\n" not in val \
                and len(val) <= 1024 and name.lower() not in ("via", "call-id", "cseq", "from", "to", "content-length"):
            out.append((name, val))
    return out


def parse_dtmf_info(request: Request) -> str:
    content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    text = request.body.decode("utf-8", errors="replace").strip()
    if content_type == "application/dtmf-relay":
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip().lower() == "signal":
                value = value.strip()
                return {"10": "*", "11": "#"}.get(value, value)[:1]
        return ""
    if content_type == "application/dtmf":
        return text[:1]
    return ""


def _client_frame(session: Session, message: str, method: str, obj: dict[str, Any]) -> str:
    """A frame for the client, without the fields restClientConfig's clientExclude of `method` names."""
    return protocol.frame(message, session.rest_config.for_method(method).for_client(obj))


def _sip_fields(message: Message | None) -> dict[str, Any]:
    if message is None:
        return {}
    out: dict[str, Any] = {"sipMessageRaw": message.text()[:16384]}
    if isinstance(message, Response):
        out["sipStatus"] = message.status
    return out


def _reason(message: Message | None) -> str | None:
    if isinstance(message, Response):
        return f"{message.status} {message.reason}"
    if isinstance(message, Request):
        return message.method
    return None



def media_factory(core: Any, transcoders: Any, registry: Any, settings: SipSettings) -> Callable[..., Any] | None:
    """How the service makes a call's media: media.sip_media.CallMedia on this server's routing core, or
    None when this build has no media bridge (calls then fail with a clear reason)."""
    try:
        from media.sip_media import CallMedia, SipMediaSettings
    except ImportError:
        log.warning("SIP calls have no media: media.sip_media is not available")
        return None
    media_settings = SipMediaSettings(rtp_address=settings.rtp_address, public_address=settings.rtp_public_address,
                                      port_min=settings.rtp_port_min, port_max=settings.rtp_port_max,
                                      rtp_timeout=settings.rtp_timeout)

    def make(*, call_id: str, has_video: bool, on_dtmf: Callable[[str], None], on_timeout: Callable[[], None]) -> Any:
        return CallMedia(core, transcoders, media_settings, call_id=call_id, has_video=has_video,
                         claim=registry.claim, release=registry.release, on_dtmf=on_dtmf, on_timeout=on_timeout)

    return make
