"""restClientConfig: how each hook method is called for one session (WCS semantics). No I/O.

The backend's 200 answer to `connect` may carry `restClientConfig`, an object keyed by method name:
    {"publishStream": {"restExclude": "custom", "clientExclude": "", "restOnError": "FAIL",
                       "restPolicy": "OVERWRITE", "restOverwrite": "name,record"}}
- restExclude: fields left out of the body sent to the backend.
- clientExclude: fields left out of what the client is sent for that method.
- restOnError: LOG (log and go on) or FAIL (the operation fails) when the backend cannot be asked:
  connection refused, timeout, or an answer that is not JSON.
- restPolicy: NOTIFY (the answer's fields are ignored), OVERWRITE (the fields named in restOverwrite
  are taken from the answer), DISABLE (the method is not called at all).
A non-200 answer is a refusal and refuses a direct invocation whatever restOnError says.

Defaults follow WCS (NOTIFY, nothing excluded) except restOnError: a method that asks the backend for a
decision (connect, direct and incoming invocations) fails closed (FAIL) when the backend cannot be
asked, because a backend that is down must not let everyone in; events default to LOG.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

log = logging.getLogger(__name__)


class HookKind(Enum):
    CONNECT = "connect"  # decides the session; its answer may carry restClientConfig
    DIRECT = "direct"  # a client asks; the backend decides before the server acts
    EVENT = "event"  # the server reports what happened; nobody waits for the answer
    INCOMING = "incoming"  # something arrives for the client from outside; the backend decides


METHOD_KINDS: dict[str, HookKind] = {
    "connect": HookKind.CONNECT,
    "publishStream": HookKind.DIRECT,
    "unPublishStream": HookKind.DIRECT,
    "playStream": HookKind.DIRECT,
    "stopStream": HookKind.DIRECT,
    "playHLS": HookKind.DIRECT,
    "playRTSP": HookKind.DIRECT,
    "sendStreamEvent": HookKind.DIRECT,
    "sendData": HookKind.DIRECT,
    "sendBugReport": HookKind.DIRECT,
    "snapshot": HookKind.DIRECT,
    "call": HookKind.DIRECT,
    "OnDataEvent": HookKind.INCOMING,
    "ConnectionStatusEvent": HookKind.EVENT,
    "StreamStatusEvent": HookKind.EVENT,
    "StreamKeepAliveEvent": HookKind.EVENT,
    "StreamEvent": HookKind.EVENT,
    "DataStatusEvent": HookKind.EVENT,
    "BugReportStatusEvent": HookKind.EVENT,
    "RecordingStatusEvent": HookKind.EVENT,
    "CallStatusEvent": HookKind.EVENT,
    "ErrorEvent": HookKind.EVENT,
    "sessionDebug": HookKind.DIRECT,
    "SessionDebugStatusEvent": HookKind.EVENT,
    # the SIP gateway (streaming/sip_service.py); its events default to EVENT
    **{m: HookKind.DIRECT for m in ("answer", "hangup", "hold", "unhold", "transfer", "sendDTMF", "sendMessage",
                                    "sendIMDN", "subscribe", "sendXcapRequest")},
    "OnCallEvent": HookKind.INCOMING,
    "OnMessageEvent": HookKind.INCOMING,
}

ON_ERROR_VALUES = ("LOG", "FAIL")
POLICY_VALUES = ("NOTIFY", "OVERWRITE", "DISABLE")


def kind_of(method: str) -> HookKind:
    return METHOD_KINDS.get(method, HookKind.EVENT)


def _field_list(value: Any) -> frozenset[str]:
    if value is None or value == "":
        return frozenset()
    if isinstance(value, str):
        return frozenset(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(v.strip() for v in value if v.strip())
    raise ValueError("must be a comma separated string of field names")


@dataclass(frozen=True)
class MethodConfig:
    rest_exclude: frozenset[str] = frozenset()
    client_exclude: frozenset[str] = frozenset()
    on_error: str = "LOG"
    policy: str = "NOTIFY"
    overwrite: frozenset[str] = frozenset()

    @property
    def fails_on_error(self) -> bool:
        return self.on_error == "FAIL"

    def body_for_rest(self, body: Mapping[str, Any], protected: Iterable[str] = ()) -> dict[str, Any]:
        """The hook body without restExclude fields; `protected` (the context fields) always stay."""
        keep = set(protected)
        return {k: v for k, v in body.items() if k not in self.rest_exclude or k in keep}

    def for_client(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if k not in self.client_exclude}

    def merge_answer(self, original: Mapping[str, Any], answer: Any,
                     protected: Iterable[str] = ()) -> dict[str, Any]:
        """The data the server goes on with: under OVERWRITE, restOverwrite fields from the answer."""
        merged = dict(original)
        if self.policy != "OVERWRITE" or not isinstance(answer, Mapping):
            return merged
        locked = set(protected)
        for key in self.overwrite:
            if key in answer and key not in locked:
                merged[key] = answer[key]
        return merged


def default_method_config(method: str) -> MethodConfig:
    if kind_of(method) is HookKind.EVENT:
        return MethodConfig(on_error="LOG")
    return MethodConfig(on_error="FAIL")


@dataclass(frozen=True)
class RestClientConfig:
    methods: Mapping[str, MethodConfig] = field(default_factory=dict)

    def for_method(self, method: str) -> MethodConfig:
        found = self.methods.get(method)
        return found if found is not None else default_method_config(method)

    @classmethod
    def parse(cls, doc: Any) -> tuple[RestClientConfig, list[str]]:
        """Parse a backend's restClientConfig. Bad entries are skipped; the list says why."""
        problems: list[str] = []
        if doc is None:
            return cls(), problems
        if not isinstance(doc, Mapping):
            return cls(), ["restClientConfig is not an object; ignored"]
        methods: dict[str, MethodConfig] = {}
        for method, body in doc.items():
            if not isinstance(body, Mapping):
                problems.append(f"restClientConfig.{method} is not an object; ignored")
                continue
            base = default_method_config(str(method))
            try:
                on_error = str(body.get("restOnError", base.on_error) or base.on_error).upper()
                policy = str(body.get("restPolicy", base.policy) or base.policy).upper()
                if on_error not in ON_ERROR_VALUES:
                    raise ValueError(f"restOnError must be one of {', '.join(ON_ERROR_VALUES)}")
                if policy not in POLICY_VALUES:
                    raise ValueError(f"restPolicy must be one of {', '.join(POLICY_VALUES)}")
                methods[str(method)] = MethodConfig(
                    rest_exclude=_field_list(body.get("restExclude")),
                    client_exclude=_field_list(body.get("clientExclude")),
                    on_error=on_error,
                    policy=policy,
                    overwrite=_field_list(body.get("restOverwrite")),
                )
            except ValueError as exc:
                problems.append(f"restClientConfig.{method}: {exc}; ignored")
        return cls(methods), problems
