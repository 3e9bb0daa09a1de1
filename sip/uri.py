"""SIP URIs (RFC 3261 §19.1), tel URIs (RFC 3966) and name-addr values (From, To, Contact, Refer-To).
No I/O.

`target_uri(text, domain)` turns what a user types as a callee into a SIP URI: a `sip:`/`sips:` URI as
it is, `tel:+123` as `sip:+123@domain;user=phone`, a bare number or user name as `sip:NAME@domain`, and
`name@host` as `sip:name@host`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from .message import parse_hostport, parse_params

_USER_SAFE = "-_.!~*'()&=+$,;?/"
_TEL_RE = re.compile(r"^\+?[0-9*#\-.()A-Fa-f ]{1,64}$")


class UriError(ValueError):
    pass


@dataclass
class SipUri:
    host: str
    user: str | None = None
    port: int | None = None
    scheme: str = "sip"
    password: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips"):
            raise UriError(f"not a sip: or sips: URI: {text[:80]!r}")
        rest, _, headers = rest.partition("?")
        userinfo, at, hostpart = rest.rpartition("@")
        if not at:
            userinfo, hostpart = "", rest
        hostport, _, params = hostpart.partition(";")
        try:
            host, port = parse_hostport(hostport)
        except ValueError as exc:
            raise UriError(f"{exc} in URI {text[:80]!r}") from None
        user: str | None = None
        password: str | None = None
        if at:
            user_raw, pcolon, password_raw = userinfo.partition(":")
            if not user_raw:
                raise UriError(f"empty user part in URI {text[:80]!r}")
            user = unquote(user_raw)
            password = unquote(password_raw) if pcolon else None
        return cls(host=host, user=user, port=port, scheme=scheme, password=password,
                   params=parse_params(params), headers=headers)

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def address_of_record(self) -> str:
        """scheme:user@host, without port or parameters (what a registration is keyed by)."""
        user = f"{quote(self.user, safe=_USER_SAFE)}@" if self.user else ""
        return f"{self.scheme}:{user}{self.host}"

    def __str__(self) -> str:
        user = ""
        if self.user is not None:
            user = quote(self.user, safe=_USER_SAFE)
            if self.password is not None:
                user += ":" + quote(self.password, safe=_USER_SAFE)
            user += "@"
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        headers = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{user}{self.hostport}{params}{headers}"


def target_uri(text: str, domain: str) -> SipUri:
    """A callee or transfer target as a user gives it, made a SIP URI (see the module docstring)."""
    text = text.strip()
    if not text or len(text) > 1024 or any(ord(c) < 32 for c in text) or any(c in text for c in "<>\" "):
        if not (text.lower().startswith("tel:") and _TEL_RE.match(text[4:].split(";")[0])):
            raise UriError(f"not a SIP URI, tel URI or number: {text[:80]!r}")
    lower = text.lower()
    if lower.startswith(("sip:", "sips:")):
        return SipUri.parse(text)
    if lower.startswith("tel:"):
        number, _, _params = text[4:].partition(";")
        digits = "".join(c for c in number if c not in " -.()")
        if not any(c.isdigit() for c in digits) or not _TEL_RE.match(number):
            raise UriError(f"malformed tel URI {text[:80]!r}")
        return SipUri(host=domain, user=digits, params={"user": "phone"})
    if "@" in text:
        return SipUri.parse("sip:" + text)
    if not re.match(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%#]+$", text):
        raise UriError(f"not a SIP URI, tel URI or number: {text[:80]!r}")
    return SipUri(host=domain, user=text)


@dataclass
class NameAddr:
    """`"Display" <uri>;params` or `uri;params` (the params belong to the header, like tag=)."""

    uri: str
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        display: str | None = None
        if "<" in text:
            before, _, rest = text.partition("<")
            uri, close, params = rest.partition(">")
            if not close:
                raise UriError(f"unclosed <...> in {text[:80]!r}")
            display = before.strip()
            if display.startswith('"') and display.endswith('"') and len(display) >= 2:
                display = display[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            display = display or None
        else:
            uri, _, params = text.partition(";")
            params = ";" + params if params else ""
        if not uri.strip():
            raise UriError(f"empty URI in {text[:80]!r}")
        return cls(uri=uri.strip(), display=display, params=parse_params(params))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        display = ""
        if self.display:
            escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"{display}<{self.uri}>{params}"
