"""Server configuration: one schema, read from a TOML file, environment variables and command-line flags.

Precedence, lowest to highest: built-in defaults, the TOML file, STREAMING_* environment variables, flags.
Every setting has one dotted name (`ws.port`) that maps to a TOML key (`[ws] port = 8080`), an
environment variable (`STREAMING_WS_PORT`) and a flag (`--ws-port`). A bad value is a ConfigError whose
message says which setting, which value and where it came from, so the CLI prints one line.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import DEFAULT_TEMPLATE, TEMPLATE_FIELDS, NameTemplate


class ConfigError(ValueError):
    pass


def _port(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a port number")
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValueError("must be a port number 0..65535") from None
    if not 0 <= port <= 65535:
        raise ValueError("must be a port number 0..65535")
    return port


def _positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number") from None
    if not number > 0:
        raise ValueError("must be greater than 0")
    return number


def _positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError("must be a whole number") from None
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _address(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("must be an IP address")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError("must be an IP address (like 127.0.0.1 or ::1)") from None
    return text


def _bind_address(value: Any) -> str:
    text = str(value).strip()
    if text in ("", "*"):
        return "0.0.0.0"
    return _address(text)


def _address_list(value: Any) -> list[str]:
    if isinstance(value, str):
        items = [part for part in value.replace(",", " ").split() if part]
    elif isinstance(value, list | tuple):
        items = [str(part) for part in value]
    else:
        raise ValueError("must be a list of IP addresses")
    return [_address(item) for item in items]


def _optional_address(value: Any) -> str | None:
    if value in (None, ""):
        return None
    return _address(value)


def _text(value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError("must be text")
    return str(value)


def _node_id(value: Any) -> str:
    text = _text(value).strip()
    if not text or len(text) > 128 or not all(c.isalnum() or c in "-_.@" for c in text):
        raise ValueError("must be 1..128 characters of letters, digits, '-', '_', '.', '@'")
    return text


def _path(value: Any) -> Path:
    text = _text(value)
    if not text or "\x00" in text:
        raise ValueError("must be a file system path")
    return Path(text).expanduser()


def _optional_path(value: Any) -> Path | None:
    if value in (None, ""):
        return None
    return _path(value)


def _log_level(value: Any) -> str:
    text = _text(value).upper()
    if text not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be one of debug, info, warning, error")
    return text


def _choice(value: Any, choices: tuple[str, ...]) -> str:
    text = _text(value).upper()
    if text not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}")
    return text


def _users(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        items = [f"{k}:{v}" for k, v in value.items()]
    elif isinstance(value, str):
        items = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list | tuple):
        items = [str(part) for part in value]
    else:
        raise ValueError("must be user:password entries")
    users: dict[str, str] = {}
    for item in items:
        user, sep, password = item.partition(":")
        if not sep or not user or any(c in user for c in ' "\\,') or not password:
            raise ValueError("must be user:password entries (a user name without spaces, quotes or commas)")
        users[user] = password
    return users


def _allowed_hosts(value: Any) -> list[str]:
    from .rtsp_pull.allow import HostPolicy  # the rule lives with the pulls; checked here at load time

    if isinstance(value, str):
        items = [part.strip() for part in value.replace(",", " ").split() if part.strip()]
    elif isinstance(value, list | tuple):
        items = [str(part).strip() for part in value]
    else:
        raise ValueError("must be host names, addresses or networks")
    HostPolicy.parse(items)
    return items


def _token(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if any(c.isspace() for c in text) or len(text) < 16:
        raise ValueError("must be at least 16 characters without spaces (e.g. `openssl rand -hex 32`)")
    return text


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _non_negative_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number") from None
    if not number >= 0:
        raise ValueError("must be 0 or more")
    return number


@dataclass(frozen=True)
class Setting:
    name: str  # dotted: section.key
    default: Any
    parse: Callable[[Any], Any]
    help: str
    repeatable: bool = False  # a flag that may be given several times (a list)
    is_flag: bool = False  # a boolean flag without a value
    flag_name: str | None = None  # when the derived --section-key reads badly

    @property
    def env(self) -> str:
        return "STREAMING_" + self.name.replace(".", "_").upper()

    @property
    def flag(self) -> str:
        if self.flag_name:
            return self.flag_name
        section, key = self.name.split(".", 1)
        if section == "server":
            return "--" + key.replace("_", "-")
        return "--" + f"{section}-{key}".replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("server.node_id", None, _node_id, "node id reported in hooks and getUserData (default: host name)"),
    Setting("server.data_dir", "data", _path, "folder for all state: database, records, segments, reports"),
    Setting("server.bind", "0.0.0.0", _bind_address, "address every listener binds to"),
    Setting("server.log_level", "info", _log_level, "debug, info, warning or error"),
    Setting("server.log_format", "text", lambda v: _choice(v, ("TEXT", "JSON")).lower(),
            "text, or json: one JSON object a line (time, level, logger, message, session and stream ids)"),
    Setting("server.python_core", False, _bool, "run the slow Python twin of the media core on purpose",
            is_flag=True),
    Setting("ws.port", 8080, _port, "WebSocket port of the client protocol (0: any free port)"),
    Setting("ws.wss_port", 8443, _port, "secure WebSocket port, used when a certificate is given",
            flag_name="--wss-port"),
    Setting("ws.cert", None, _optional_path, "PEM certificate (chain) for wss", flag_name="--cert"),
    Setting("ws.key", None, _optional_path, "PEM private key for wss", flag_name="--key"),
    Setting("ws.max_message_bytes", 1_048_576, _positive_int,
            "largest client message handled; larger ones get a fail answer"),
    Setting("ws.ping_interval", 5.0, _positive_float, "seconds between the server's pings"),
    Setting("ws.ping_probes", 10, _positive_int, "silent ping intervals before a session is closed"),
    Setting("ws.keepalive_grace", 30.0, _positive_float,
            "seconds a keepAlive session waits for its client to reconnect"),
    Setting("rest.port", 8081, _port, "REST API, embedded backend and demo pages (0: any free port)"),
    Setting("rest.token", None, _token,
            "bearer token the REST API (/rest-api/..., /metrics) asks for; required, or rest.users, when "
            "not bound to loopback"),
    Setting("rest.users", {}, _users, "REST API Basic users as user:password, separated by commas (or a TOML list)"),
    Setting("rest.metrics_auth", True, _bool,
            "/metrics asks for the REST API's credentials too; false: open to whoever reaches the port"),
    Setting("hls.port", 8082, _port, "HLS port: http://host:PORT/{name}/{name}.m3u8 (0: any free port)"),
    Setting("hls.mode", "hls", lambda v: _choice(v, ("HLS", "LLHLS")).lower(),
            "hls: MPEG-TS segments; llhls: low-latency HLS with fMP4 parts and blocking playlist reload"),
    Setting("hls.start", "on_demand", lambda v: _choice(v, ("ON_DEMAND", "ALWAYS")).lower(),
            "on_demand: a stream's HLS starts at its first request; always: when it is published"),
    Setting("hls.segment_duration", 2.0, _positive_float, "target seconds per segment (cut at keyframes)"),
    Setting("hls.window", 6, _positive_int, "segments listed in the sliding-window playlist"),
    Setting("hls.part_duration", 0.5, _positive_float, "llhls: target seconds per partial segment"),
    Setting("hls.idle_timeout", 30.0, _positive_float,
            "seconds without requests before an on-demand HLS output stops and its files are deleted"),
    Setting("hls.ready_timeout", 10.0, _positive_float,
            "seconds a first playlist request waits for the first segment before a 503"),
    Setting("hls.app_key", "defaultApp", _text, "application whose backend authorizes HLS (playHLS hook)"),
    Setting("hls.auth_cache", 30.0, _positive_float,
            "seconds a playHLS answer holds for the same stream and token"),
    Setting("whip.app_key", "defaultApp", _text,
            "application whose backend authorizes WHIP and WHEP (publishStream / playStream hooks)"),
    Setting("rtsp.port", 554, _port, "RTSP port: rtsp://host:PORT/{name} (0: any free port)"),
    Setting("rtsp.udp_port", 0, _port,
            "RTSP server's UDP port for RTP (RTCP on the next one); 0: any free even port and the next"),
    Setting("rtsp.session_timeout", 60.0, _positive_float,
            "seconds without a request, RTCP or data from an RTSP client before its session ends"),
    Setting("rtsp.tcp_buffer", 256 * 1024, _positive_int,
            "bytes an RTSP client over TCP may have waiting, in the kernel and again in the server, before its "
            "packets are dropped (more rides out a slow moment, less keeps its latency down)"),
    Setting("rtsp.app_key", "defaultApp", _text, "application whose backend authorizes RTSP (playRTSP hook)"),
    Setting("rtsp.auth", "none", lambda v: _choice(v, ("NONE", "BASIC", "DIGEST")).lower(),
            "RTSP authentication of viewers: none, basic or digest (users from rtsp.users)"),
    Setting("rtsp.users", {}, _users, "RTSP users as user:password, separated by commas (or a TOML list)"),
    Setting("rtsp.pull_transport", "tcp", lambda v: _choice(v, ("TCP", "UDP")).lower(),
            "how pulled cameras send media: tcp (interleaved on the RTSP connection) or udp"),
    Setting("rtsp.pull_keep", False, _bool,
            "keep pulling a camera after its last viewer left (REST startup pulls are always kept)"),
    Setting("rtsp.pull_timeout", 10.0, _positive_float,
            "seconds without media from a pulled camera before it counts as dropped and is reconnected"),
    Setting("rtsp.pull_connect_timeout", 10.0, _positive_float,
            "seconds to connect to a camera and get it playing before the pull fails"),
    Setting("rtsp.pull_retry_max", 30.0, _positive_float,
            "longest wait between reconnects to a dropped camera (the wait doubles from 1 s)"),
    Setting("rtsp.pull_max", 100, _positive_int, "cameras pulled at once"),
    Setting("rtsp.pull_allowed_hosts", [], _allowed_hosts,
            "hosts that may be pulled: names (*.example.com for subdomains), addresses, networks (CIDR); "
            "separated by commas or a TOML list (default: any host)"),
    Setting("rtmp.enabled", True, _bool, "accept RTMP publishers (ffmpeg, OBS) on rtmp.port"),
    Setting("rtmp.port", 1935, _port, "RTMP ingest port: rtmp://host:PORT/{app}/{stream key} (0: any free port)"),
    Setting("rtmp.app_key", "defaultApp", _text,
            "application whose backend authorizes RTMP publishers (publishStream hook)"),
    Setting("rtmp.timeout", 10.0, _positive_float,
            "seconds without data from an RTMP publisher (or to finish its handshake) before it is dropped"),
    Setting("rtmp.max_message_bytes", 8 * 1024 * 1024, _positive_int,
            "largest RTMP message a publisher may send (a video frame); larger ones close its connection"),
    Setting("rtmp.push_prefix", "rtmp_", lambda v: str(v),
            "put before the stream name when a push's rtmpUrl is not a full URL (WCS: rtmp_)"),
    Setting("rtmp.push_timeout", 10.0, _positive_float,
            "seconds an RTMP server a stream is pushed to has to connect, accept the publish or take data"),
    Setting("transcoding.enabled", True, _bool,
            "transcode for viewers that need another codec or size; off: they fail with "
            "'Transcoding required, but disabled'"),
    Setting("transcoding.preset", "veryfast", lambda v: _choice(v, (
        "ULTRAFAST", "SUPERFAST", "VERYFAST", "FASTER", "FAST", "MEDIUM")).lower(), "libx264 preset"),
    Setting("transcoding.keyframe_interval", 2.0, _positive_float, "seconds between keyframes of encoded video"),
    Setting("record.dir", None, _optional_path, "folder for records (default: DATA_DIR/records)"),
    Setting("record.template", DEFAULT_TEMPLATE, lambda v: NameTemplate.parse(_text(v)).text,
            "record file name, without extension; fields: " + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)),
    Setting("record.fragment_duration", 1.0, _positive_float,
            "seconds of media per file fragment: a crash loses at most the fragment in progress"),
    Setting("record.keyframe_interval", 4.0, _non_negative_float,
            "seconds between keyframes asked of a recorded publisher, so the file can be seeked (0: never)"),
    Setting("ice.address", [], _address_list,
            "address to gather ICE candidates on; repeatable (default: every non-loopback address)",
            repeatable=True),
    Setting("ice.public_address", None, _optional_address, "address announced in candidates (1:1 NAT)"),
    Setting("webrtc.max_bitrate", 2_500_000, _positive_int,
            "bits per second a publisher is told it may send (REMB)"),
    Setting("webrtc.connect_timeout", 20.0, _positive_float,
            "seconds for ICE and DTLS to connect before a stream fails"),
    Setting("webrtc.activity_timeout", 10.0, _positive_float,
            "seconds without RTP from a publisher, or RTCP from a viewer, before its stream ends"),
    Setting("hooks.timeout", 5.0, _positive_float, "seconds a backend has to answer a hook"),
    Setting("hooks.connect_on_error", "FAIL", lambda v: _choice(v, ("FAIL", "LOG")),
            "connect when the backend cannot be asked: FAIL refuses the session, LOG lets it in"),
    Setting("hooks.max_connections", 100, _positive_int, "concurrent HTTP connections to backends"),
    Setting("hooks.keepalive_interval", 60.0, _positive_float,
            "seconds between StreamKeepAliveEvent hooks of each publishing and playing stream"),
    Setting("data.max_payload_bytes", 65536, _positive_int,
            "largest data payload as JSON: sendData, stream data events, /rest-api/data/send"),
    Setting("server.reports_dir", None, _optional_path, "folder for bug reports (default: DATA_DIR/reports)"),
    Setting("capture.seconds", 5.0, _positive_float,
            "seconds of a session's RTP/RTCP captured for a no_media bug report (pcap beside the report)"),
    Setting("capture.max_bytes", 8 * 1024 * 1024, _positive_int,
            "largest capture file (a no_media bug report's, a sessionDebug's): packets beyond it are left out"),
    Setting("sip.bind", None, _optional_address, "address the SIP gateway listens on (default: server.bind)"),
    Setting("sip.udp_port", 5060, _port, "SIP over UDP (0: any free port)"),
    Setting("sip.tcp_port", 5060, _port, "SIP over TCP (0: any free port)"),
    Setting("sip.tls_port", 5061, _port, "SIP over TLS, used when sip.cert and sip.key are given"),
    Setting("sip.cert", None, _optional_path, "PEM certificate (chain) for SIP over TLS"),
    Setting("sip.key", None, _optional_path, "PEM private key for SIP over TLS"),
    Setting("sip.public_address", None, _optional_address,
            "address announced in Via, Contact and SDP instead of the bound one (1:1 NAT)"),
    Setting("sip.invite_rate", 20.0, _positive_float,
            "new INVITEs per second the gateway takes; beyond it they get 503 with Retry-After"),
    Setting("sip.register_expires", 3600, _positive_int, "seconds a SIP registration asks for (refreshed before)"),
    Setting("sip.xcap_url", "", _text, "base URL of the XCAP server for sendXcapRequest (empty: none)"),
    Setting("sip.rtp_port_min", 20000, _port, "lowest RTP port of the SIP calls' media"),
    Setting("sip.rtp_port_max", 20999, _port, "highest RTP port of the SIP calls' media"),
    Setting("sip.rtp_timeout", 30.0, _positive_float,
            "seconds without RTP from a SIP peer (not on hold) before its call ends FAILED"),
    Setting("web.websdk_dir", None, _optional_path,
            "folder of the @flashphoner/websdk package served at /websdk/ (default: ./node_modules/...)"),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


@dataclass
class Config:
    values: dict[str, Any] = field(default_factory=dict)
    config_file: Path | None = None

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def node_id(self) -> str:
        return str(self.values["server.node_id"])

    @property
    def data_dir(self) -> Path:
        return Path(self.values["server.data_dir"])

    @property
    def database_path(self) -> Path:
        return self.data_dir / "streaming.sqlite3"


def _apply(values: dict[str, Any], setting: Setting, raw: Any, origin: str) -> None:
    try:
        values[setting.name] = setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{setting.name} {exc} (got {raw!r} from {origin})") from None


def _flatten_toml(doc: Mapping[str, Any], origin: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, body in doc.items():
        if not isinstance(body, Mapping):
            # Top-level keys belong to [server].
            flat[f"server.{section}"] = body
            continue
        for key, value in body.items():
            flat[f"{section}.{key}"] = value
    unknown = sorted(name for name in flat if name not in BY_NAME)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r} in {origin}")
    return flat


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    for setting in SETTINGS:
        env_note = f" [env {setting.env}]"
        if setting.is_flag:
            parser.add_argument(setting.flag, dest=setting.name, action="store_const", const=True,
                                default=None, help=setting.help + env_note)
        elif setting.repeatable:
            parser.add_argument(setting.flag, dest=setting.name, action="append", default=None,
                                metavar="ADDR", help=setting.help + env_note)
        else:
            metavar = setting.name.split(".")[-1].upper()
            parser.add_argument(setting.flag, dest=setting.name, default=None, metavar=metavar,
                                help=f"{setting.help} (default: {setting.default}){env_note}")


def load(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults < TOML file < environment < flags."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.default is not None:
            _apply(values, setting, setting.default, "the defaults")
        else:
            values[setting.name] = None

    config_file = getattr(args, "config", None) or environ.get("STREAMING_CONFIG")
    path: Path | None = None
    if config_file:
        path = Path(config_file).expanduser()
        try:
            with path.open("rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for name, raw in _flatten_toml(doc, str(path)).items():
            _apply(values, BY_NAME[name], raw, str(path))

    for setting in SETTINGS:
        if setting.env in environ:
            _apply(values, setting, environ[setting.env], f"${setting.env}")

    if args is not None:
        for setting in SETTINGS:
            raw = getattr(args, setting.name, None)
            if raw is not None:
                _apply(values, setting, raw, setting.flag)

    if values["server.node_id"] is None:
        values["server.node_id"] = _default_node_id()
    if (values["ws.cert"] is None) != (values["ws.key"] is None):
        raise ConfigError("ws.cert and ws.key go together: give both for wss, or neither")
    for name in ("ws.cert", "ws.key"):
        if values[name] is not None and not Path(values[name]).is_file():
            raise ConfigError(f"{name} file {values[name]} does not exist")
    if not 1024 <= values["sip.rtp_port_min"] < values["sip.rtp_port_max"]:
        raise ConfigError(f"sip.rtp_port_min {values['sip.rtp_port_min']} must be at least 1024 and below "
                          f"sip.rtp_port_max {values['sip.rtp_port_max']}")
    if (values["sip.cert"] is None) != (values["sip.key"] is None):
        raise ConfigError("sip.cert and sip.key go together: give both for SIP over TLS, or neither")
    if values["rtsp.auth"] != "none" and not values["rtsp.users"]:
        raise ConfigError(f"rtsp.auth is {values['rtsp.auth']} but rtsp.users is empty: no one could play "
                          "over RTSP; give users as user:password, or set rtsp.auth to none")
    return Config(values=values, config_file=path)


def _default_node_id() -> str:
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "-_.") or "node"
    return f"{host[:64]}-{uuid.getnode() & 0xFFFFFF:06x}"
