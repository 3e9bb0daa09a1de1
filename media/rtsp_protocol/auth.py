"""RTSP authentication: Basic and Digest (RFC 2617, MD5), the server's checks and the pieces a client
needs to answer a challenge (media.rtsp_client)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def digest_response(username: str, realm: str, password: str, method: str, uri: str, nonce: str,
                    qop: str | None = None, nc: str | None = None, cnonce: str | None = None) -> str:
    """RFC 2617 section 3.2.2.1, MD5, with or without qop=auth."""
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if qop:
        return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{ha2}")


def parse_auth_params(text: str) -> dict[str, str]:
    """key=value and key="quoted value" pairs, separated by commas (RFC 2617 section 1.2)."""
    params: dict[str, str] = {}
    for match in re.finditer(r'\s*([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]*)\s*,?', text):
        value = match.group(3) if match.group(3) is not None else match.group(2)
        params[match.group(1).lower()] = value.replace('\\"', '"')
    return params


class Authenticator:
    """Basic or Digest against a table of users. Digest nonces are HMACs of a per-server secret and a
    per-connection value, so a nonce only works on the connection it was given to."""

    def __init__(self, mode: str, users: dict[str, str], realm: str = "streaming"):
        if mode not in ("basic", "digest"):
            raise ValueError(f"unknown authentication mode {mode!r}")
        self.mode = mode
        self.users = users
        self.realm = realm
        self._secret = secrets.token_bytes(16)

    def nonce(self, connection: str) -> str:
        return hmac.new(self._secret, connection.encode(), hashlib.sha256).hexdigest()[:32]

    def challenge(self, connection: str) -> str:
        if self.mode == "basic":
            return f'Basic realm="{self.realm}"'
        return f'Digest realm="{self.realm}", nonce="{self.nonce(connection)}", algorithm="MD5"'

    def check(self, authorization: str | None, method: str, connection: str) -> str | None:
        """The user name when the Authorization header is right, else None."""
        if not authorization:
            return None
        scheme, _, rest = authorization.strip().partition(" ")
        if self.mode == "basic" and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(rest.strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            expected = self.users.get(user)
            if expected is not None and hmac.compare_digest(expected.encode(), password.encode()):
                return user
            return None
        if self.mode == "digest" and scheme.lower() == "digest":
            params = parse_auth_params(rest)
            user = params.get("username", "")
            known = self.users.get(user)
            if known is None or params.get("realm") != self.realm or \
                    not hmac.compare_digest(params.get("nonce", ""), self.nonce(connection)):
                return None
            if params.get("algorithm", "MD5").upper() != "MD5":
                return None
            qop = params.get("qop")
            if qop is not None and qop != "auth":
                return None
            expected = digest_response(user, self.realm, known, method, params.get("uri", ""),
                                       params["nonce"], qop, params.get("nc"), params.get("cnonce"))
            if hmac.compare_digest(expected, params.get("response", "").lower()):
                return user
        return None
