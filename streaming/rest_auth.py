"""Who may use the management REST API: a bearer token or HTTP Basic users from the configuration.

The REST API can end any session and make the server connect to any URL, so it is never open to a
network by accident:

- credentials configured (`rest.token`, `rest.users`): every `/rest-api/...` request (and `/metrics`
  while `rest.metrics_auth` is on) must carry `Authorization: Bearer <token>` or Basic with one of the
  users, else 401 with `WWW-Authenticate` naming the schemes that would work;
- no credentials and the server bound to a loopback address: open (a developer's machine, the tests);
- no credentials and bound to any other address: locked. Those requests get 403 saying what to set, and
  the server warns loudly at startup.

Secrets are compared with hmac.compare_digest, against every configured user, so the time taken tells
nothing about how much of a guess was right or whether a user exists. The echo backend, the demo pages,
the WebSDK bundle, `/health` and record downloads stay open, as they always were.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger(__name__)

REST_PREFIX = "/rest-api/"
METRICS_PATH = "/metrics"
REALM = "streaming"

def is_loopback(bind: str) -> bool:
    """Whether listeners on `bind` can only be reached from this machine."""
    try:
        return ipaddress.ip_address(bind.strip("[]")).is_loopback
    except ValueError:
        return bind == "localhost"


@dataclass(frozen=True)
class RestAuth:
    """The REST API's access rule. `check(header)` is pure: None when allowed, else why not."""

    token: str | None = None
    users: Mapping[str, str] = field(default_factory=dict)
    loopback: bool = True  # bound to loopback only
    protect_metrics: bool = True

    @classmethod
    def from_config(cls, config: Any) -> RestAuth:
        return cls(token=config["rest.token"] or None, users=dict(config["rest.users"] or {}),
                   loopback=is_loopback(config["server.bind"]), protect_metrics=bool(config["rest.metrics_auth"]))

    @property
    def configured(self) -> bool:
        return bool(self.token or self.users)

    @property
    def mode(self) -> str:
        """"credentials", "open" (loopback without credentials) or "locked" (elsewhere without)."""
        if self.configured:
            return "credentials"
        return "open" if self.loopback else "locked"

    def protects(self, path: str) -> bool:
        if path.startswith(REST_PREFIX) or path == REST_PREFIX.rstrip("/"):
            return True
        return self.protect_metrics and path == METRICS_PATH

    def challenges(self) -> list[str]:
        """The WWW-Authenticate values of a 401: the schemes that are configured."""
        out = []
        if self.token:
            out.append(f'Bearer realm="{REALM}"')
        if self.users:
            out.append(f'Basic realm="{REALM}", charset="UTF-8"')
        return out

    def check(self, authorization: str | None) -> str | None:
        """None when a request with this Authorization header may pass; else the reason it may not."""
        if not self.configured:
            return None if self.loopback else "locked"
        if not authorization:
            return "Authentication required"
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        scheme = scheme.lower()
        if scheme == "bearer" and self.token:
            if hmac.compare_digest(value.encode(), self.token.encode()):
                return None
            return "Invalid credentials"
        if scheme == "basic" and self.users:
            try:
                user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return "Malformed Basic credentials"
            if not sep:
                return "Malformed Basic credentials"
            matched = False
            for known_user, known_password in self.users.items():
                # Every entry is compared, whatever matched before, so the time does not say which.
                same_user = hmac.compare_digest(user.encode(), known_user.encode())
                same_password = hmac.compare_digest(password.encode(), known_password.encode())
                matched |= same_user & same_password
            return None if matched else "Invalid credentials"
        return "Unsupported authentication scheme: use " + " or ".join(
            c.split(" ", 1)[0] for c in self.challenges())

    def startup_warning(self, bind: str) -> str | None:
        """The loud message for a server that cannot lock its REST API down as asked, else None."""
        if self.mode != "locked":
            return None
        return (f"!!! The REST API is LOCKED: the server listens on {bind}, which is not loopback, and no "
                "credentials are set. Every /rest-api/ request"
                + (" and /metrics" if self.protect_metrics else "")
                + " is refused (403) until you set rest.token (a bearer token) or rest.users (Basic "
                "user:password), or bind to 127.0.0.1.")


def _json_error(status: int, info: str, headers: Mapping[str, str] | None = None,
                challenges: list[str] | None = None) -> web.Response:
    response = web.Response(status=status, text=json.dumps({"status": status, "info": info}),
                            content_type="application/json", headers=headers)
    for challenge in challenges or []:
        response.headers.add("WWW-Authenticate", challenge)
    return response


def middleware(auth: RestAuth, bind: str) -> Middleware:
    """The aiohttp middleware that applies `auth` to the REST port."""

    @web.middleware
    async def rest_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The matched route's pattern as well as the path: whatever spelling reached a /rest-api/
        # handler, it is protected.
        resource = request.match_info.route.resource
        canonical = resource.canonical if resource is not None else ""
        if not (auth.protects(request.path) or auth.protects(canonical)):
            return await handler(request)
        if request.method == "OPTIONS":
            return await handler(request)  # CORS preflights carry no credentials by design
        problem = auth.check(request.headers.get("Authorization"))
        if problem is None:
            return await handler(request)
        if problem == "locked":
            return _json_error(403, f"The REST API is locked: the server listens on {bind} (not loopback) "
                                    "and no credentials are configured; set rest.token or rest.users")
        log.info("REST %s %s from %s refused: %s", request.method, request.path, request.remote, problem)
        return _json_error(401, problem, challenges=auth.challenges())

    return rest_auth


def protect(app: web.Application, config: Any) -> RestAuth:
    """Put the access rule of `config` on the REST application (before it starts) and say how it stands."""
    auth = RestAuth.from_config(config)
    bind = config["server.bind"]
    app.middlewares.append(middleware(auth, bind))
    warning = auth.startup_warning(bind)
    if warning is not None:
        log.warning(warning)
    elif auth.mode == "open":
        log.info("REST API open to loopback clients (bound to %s, no credentials set)", bind)
    else:
        log.info("REST API requires %s", " or ".join(c.split(" ", 1)[0] for c in auth.challenges()))
    return auth
