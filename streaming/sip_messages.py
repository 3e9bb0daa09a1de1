"""Instant messages of the SIP gateway (RFC 3428 MESSAGE): the bodies a client's sendMessage becomes and
what an incoming MESSAGE is to a client. No I/O.

- text/plain: the text as it is.
- message/cpim (RFC 3862): From, To, DateTime, and with `isImdnRequired` the IMDN headers of RFC 5438
  (NS: imdn <urn:ietf:params:imdn>, imdn.Message-ID, imdn.Disposition-Notification:
  positive-delivery, negative-delivery) around the client's content.
- multipart/mixed with recipients: a resource list (RFC 5365, application/resource-lists+xml) of the
  `recipients` and the message itself, for a server that exploders it.
- message/imdn+xml: a delivery notification (sendIMDN, and the automatic one for a received message
  that asked for it), in CPIM.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from sip.agent import Account
from sip.message import Request

MAX_BODY = 32_768
IMDN_NS = "urn:ietf:params:imdn"


@dataclass
class OutgoingMessage:
    id: str
    to: str
    body: str
    content_type: str = "text/plain"
    imdn_required: bool = False
    recipients: list[str] = field(default_factory=list)
    imdn_of: str | None = None  # this is a notification about that message id
    imdn_status: str = "delivered"

    @classmethod
    def from_client(cls, obj: dict[str, Any], message_id: str, account: Account) -> OutgoingMessage:
        to = obj.get("to")
        body = obj.get("body")
        if not isinstance(to, str) or not to:
            raise ValueError("sendMessage needs 'to'")
        if not isinstance(body, str):
            raise ValueError("sendMessage needs 'body' as text")
        if len(body.encode()) > MAX_BODY:
            raise ValueError(f"Message body larger than {MAX_BODY} bytes")
        content_type = str(obj.get("contentType") or "text/plain").lower()
        if content_type not in ("text/plain", "message/cpim", "multipart/mixed"):
            raise ValueError(f"Content type {content_type} is not supported "
                             "(text/plain, message/cpim, multipart/mixed)")
        recipients = obj.get("recipients") or []
        if isinstance(recipients, str):
            recipients = [r.strip() for r in recipients.split(",") if r.strip()]
        if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
            raise ValueError("recipients must be a list of addresses")
        return cls(id=message_id, to=to, body=body, content_type=content_type,
                   imdn_required=obj.get("isImdnRequired") is True, recipients=recipients[:32])


def _cpim(account: Account, to: str, content_type: str, content: str, message_id: str,
          imdn_required: bool) -> bytes:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = [f"From: <{account.aor}>", f"To: <{to}>", f"DateTime: {now}"]
    if imdn_required or content_type == "message/imdn+xml":
        lines.append(f"NS: imdn <{IMDN_NS}>")
        lines.append(f"imdn.Message-ID: {message_id}")
    if imdn_required:
        lines.append("imdn.Disposition-Notification: positive-delivery, negative-delivery")
    inner = content.encode()
    head = "\r\n".join(lines) + "\r\n\r\n"
    extra = "Content-Disposition: notification\r\n" if content_type == "message/imdn+xml" else ""
    return (head + f"Content-Type: {content_type}\r\n{extra}Content-Length: {len(inner)}\r\n\r\n").encode() + inner


def build_message_body(message: OutgoingMessage, account: Account) -> tuple[bytes, str]:
    """The MESSAGE body and its Content-Type."""
    if message.imdn_of is not None:
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\r\n<imdn xmlns="{IMDN_NS}">\r\n'
               f"<message-id>{escape(message.imdn_of)}</message-id>\r\n"
               f"<datetime>{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}</datetime>\r\n"
               f"<delivery-notification><status><{escape(message.imdn_status)}/></status>"
               "</delivery-notification>\r\n</imdn>\r\n")
        return _cpim(account, message.to, "message/imdn+xml", xml, secrets.token_hex(8), False), "message/cpim"
    if message.content_type == "message/cpim":
        return _cpim(account, message.to, "text/plain", message.body, message.id, message.imdn_required), \
            "message/cpim"
    if message.content_type == "multipart/mixed":
        boundary = "b" + uuid.uuid4().hex
        entries = "".join(f'<entry uri="{escape(r)}"/>' for r in message.recipients)
        lists = (f'<?xml version="1.0" encoding="UTF-8"?>\r\n<resource-lists '
                 f'xmlns="urn:ietf:params:xml:ns:resource-lists"><list>{entries}</list></resource-lists>\r\n')
        cpim = _cpim(account, message.to, "text/plain", message.body, message.id, message.imdn_required)
        parts = (f"--{boundary}\r\nContent-Type: application/resource-lists+xml\r\n"
                 f"Content-Disposition: recipient-list\r\n\r\n{lists}"
                 f"--{boundary}\r\nContent-Type: message/cpim\r\n\r\n").encode() + cpim + \
            f"\r\n--{boundary}--\r\n".encode()
        return parts, f"multipart/mixed;boundary={boundary}"
    return message.body.encode(), "text/plain"


@dataclass
class IncomingMessage:
    id: str
    sender: str
    recipient: str
    body: str
    content_type: str
    imdn_required: bool = False
    imdn_message_id: str | None = None
    imdn_of: str | None = None  # this message is a notification about that message id
    imdn_status: str | None = None


def _split_cpim(text: str) -> tuple[dict[str, str], str, str]:
    """CPIM headers (lower-case names), the inner Content-Type and the inner content."""
    text = text.replace("\r\n", "\n")
    head, _, rest = text.partition("\n\n")
    headers = {}
    for line in head.split("\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    inner_head, _, content = rest.partition("\n\n")
    inner_type = "text/plain"
    for line in inner_head.split("\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            inner_type = value.strip().split(";")[0].lower()
    return headers, inner_type, content


def parse_incoming_message(request: Request) -> IncomingMessage:
    content_type = (request.headers.get("Content-Type") or "text/plain").split(";")[0].strip().lower()
    text = request.body.decode("utf-8", errors="replace")
    sender = (request.headers.get("From") or "").split(";tag=")[0]
    recipient = (request.headers.get("To") or "").split(";tag=")[0]
    message = IncomingMessage(id=str(uuid.uuid4()), sender=_uri_of(sender), recipient=_uri_of(recipient),
                              body=text, content_type=content_type)
    if content_type in ("text/plain", "text/html", "application/json"):
        return message
    if content_type != "message/cpim":
        raise ValueError(f"unsupported message content type {content_type}")
    headers, inner_type, content = _split_cpim(text)
    message.body = content
    message.content_type = inner_type
    message.imdn_message_id = headers.get("imdn.message-id")
    message.imdn_required = "delivery" in headers.get("imdn.disposition-notification", "")
    if inner_type == "message/imdn+xml":
        found = re.search(r"<message-id>([^<]*)</message-id>", content)
        status = re.search(r"<status>\s*<([a-z\-]+)\s*/>", content)
        message.imdn_of = found.group(1).strip() if found else ""
        message.imdn_status = status.group(1) if status else "delivered"
    return message


def _uri_of(value: str) -> str:
    if "<" in value and ">" in value:
        return value[value.index("<") + 1:value.index(">")]
    return value.strip()
