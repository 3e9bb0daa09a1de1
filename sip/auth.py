"""HTTP Digest authentication for a SIP client (RFC 3261 §22, RFC 2617, RFC 8760 for SHA-256). No I/O.

`DigestClient` answers 401 (WWW-Authenticate -> Authorization) and 407 (Proxy-Authenticate ->
Proxy-Authorization) challenges with MD5 or SHA-256, with qop=auth (nc and cnonce) when the server
offers it, and without qop for old servers. It counts nonce uses so a REGISTER refresh can reuse the
last challenge (nc increments), and a second challenge with the same nonce that is not `stale` means the
password is wrong.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from .message import Request, Response

ALGORITHMS = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


class AuthError(ValueError):
    pass


def parse_challenge(value: str) -> dict[str, str]:
    """`Digest realm="x", nonce="y", qop="auth,auth-int", algorithm=MD5` -> lower-case keys."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise AuthError(f"not a Digest challenge: {value[:60]!r}")
    params: dict[str, str] = {}
    i = 0
    text = rest
    while i < len(text):
        while i < len(text) and text[i] in " ,\t":
            i += 1
        eq = text.find("=", i)
        if eq < 0:
            break
        key = text[i:eq].strip().lower()
        i = eq + 1
        if i < len(text) and text[i] == '"':
            j = i + 1
            value_chars = []
            while j < len(text) and text[j] != '"':
                if text[j] == "\\" and j + 1 < len(text):
                    j += 1
                value_chars.append(text[j])
                j += 1
            params[key] = "".join(value_chars)
            i = j + 1
        else:
            j = text.find(",", i)
            j = len(text) if j < 0 else j
            params[key] = text[i:j].strip()
            i = j
    if "nonce" not in params or "realm" not in params:
        raise AuthError("Digest challenge without realm or nonce")
    return params


def digest(algorithm: str, username: str, realm: str, password: str, method: str, uri: str, nonce: str,
           qop: str | None, nc: str, cnonce: str) -> str:
    h = ALGORITHMS[algorithm]

    def hx(text: str) -> str:
        return h(text.encode()).hexdigest()

    ha1 = hx(f"{username}:{realm}:{password}")
    ha2 = hx(f"{method}:{uri}")
    if qop:
        return hx(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return hx(f"{ha1}:{nonce}:{ha2}")


@dataclass
class _Challenge:
    header: str  # Authorization or Proxy-Authorization
    params: dict[str, str]
    nc: int = 0


@dataclass
class DigestClient:
    username: str
    password: str
    _challenges: dict[str, _Challenge] = field(default_factory=dict)  # by realm

    def challenged(self, response: Response, retry: bool = False) -> bool:
        """Take the challenges of a 401/407. False when they cannot be answered: an unsupported
        algorithm, or (`retry`: this request already carried our answer) the same nonce again without
        stale=true, which means the credentials were refused."""
        usable = False
        for header, answer in (("WWW-Authenticate", "Authorization"), ("Proxy-Authenticate", "Proxy-Authorization")):
            for value in response.headers.get_all(header):
                try:
                    params = parse_challenge(value)
                except AuthError:
                    continue
                algorithm = params.get("algorithm", "MD5").upper()
                if algorithm not in ALGORITHMS:
                    continue
                qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
                if qops and "auth" not in qops:
                    continue
                old = self._challenges.get(params["realm"])
                if retry and old is not None and old.params.get("nonce") == params["nonce"] \
                        and params.get("stale", "").lower() != "true":
                    return False
                if old is not None and old.params.get("algorithm", "MD5").upper() == "SHA-256" \
                        and algorithm == "MD5" and old.params.get("nonce") == params["nonce"]:
                    continue  # prefer the stronger of two offers for one nonce
                self._challenges[params["realm"]] = _Challenge(answer, params)
                usable = True
        return usable

    def authorize(self, request: Request) -> None:
        """Add the credentials for every challenge taken so far (replacing older ones)."""
        request.headers.remove("Authorization")
        request.headers.remove("Proxy-Authorization")
        for challenge in self._challenges.values():
            request.headers.add(challenge.header, self._answer(challenge, request.method, request.uri))

    def _answer(self, challenge: _Challenge, method: str, uri: str) -> str:
        p = challenge.params
        algorithm = p.get("algorithm", "MD5").upper()
        qops = [q.strip() for q in p.get("qop", "").split(",") if q.strip()]
        qop = "auth" if "auth" in qops else None
        challenge.nc += 1
        nc = f"{challenge.nc:08x}"
        cnonce = secrets.token_hex(8)
        response = digest(algorithm, self.username, p["realm"], self.password, method, uri, p["nonce"],
                          qop, nc, cnonce)
        parts = [f'username="{self.username}"', f'realm="{p["realm"]}"', f'nonce="{p["nonce"]}"',
                 f'uri="{uri}"', f'response="{response}"', f"algorithm={algorithm}"]
        if qop:
            parts += [f"qop={qop}", f"nc={nc}", f'cnonce="{cnonce}"']
        if "opaque" in p:
            parts.append(f'opaque="{p["opaque"]}"')
        return "Digest " + ", ".join(parts)
