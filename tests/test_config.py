"""Configuration: defaults, TOML file, environment and flags, and one-line errors."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from streaming import config as config_module
from streaming.config import ConfigError
from tests.support.server import REPO


def parse(argv: list[str], environ: dict[str, str] | None = None) -> config_module.Config:
    parser = argparse.ArgumentParser()
    config_module.add_arguments(parser)
    return config_module.load(parser.parse_args(argv), environ or {})


def test_wcs_default_ports() -> None:
    cfg = parse([])
    assert (cfg["ws.port"], cfg["ws.wss_port"], cfg["rest.port"], cfg["hls.port"], cfg["rtsp.port"]) == (
        8080, 8443, 8081, 8082, 554)
    assert cfg["ice.address"] == []
    assert cfg.node_id


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    toml = tmp_path / "server.toml"
    toml.write_text('node_id = "from-file"\n[ws]\nport = 9000\nping_interval = 2.5\n'
                    '[rest]\nport = 9001\n[ice]\naddress = ["10.0.0.1"]\n')
    cfg = parse(["--config", str(toml)])
    assert (cfg.node_id, cfg["ws.port"], cfg["rest.port"], cfg["ws.ping_interval"]) == ("from-file", 9000, 9001, 2.5)
    assert cfg["ice.address"] == ["10.0.0.1"]
    cfg = parse(["--config", str(toml)], {"STREAMING_WS_PORT": "9100", "STREAMING_ICE_ADDRESS": "127.0.0.1 ::1"})
    assert cfg["ws.port"] == 9100
    assert cfg["ice.address"] == ["127.0.0.1", "::1"]
    cfg = parse(["--config", str(toml), "--ws-port", "9200", "--ice-address", "127.0.0.2",
                 "--ice-address", "127.0.0.3"], {"STREAMING_WS_PORT": "9100"})
    assert cfg["ws.port"] == 9200
    assert cfg["ice.address"] == ["127.0.0.2", "127.0.0.3"]


@pytest.mark.parametrize("argv, environ, message", [
    (["--ws-port", "http"], {}, "ws.port must be a port number 0..65535 (got 'http' from --ws-port)"),
    (["--rest-port", "70000"], {}, "rest.port must be a port number"),
    ([], {"STREAMING_HOOKS_TIMEOUT": "-1"}, "hooks.timeout must be greater than 0 (got '-1' from "
                                            "$STREAMING_HOOKS_TIMEOUT)"),
    (["--ice-address", "localhost"], {}, "ice.address must be an IP address"),
    (["--node-id", "a b"], {}, "server.node_id must be"),
    (["--log-level", "loud"], {}, "server.log_level must be one of"),
    (["--cert", "/nonexistent.pem"], {}, "ws.cert and ws.key go together"),
])
def test_bad_values_name_setting_value_and_origin(argv: list[str], environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(argv, environ)
    assert message in str(err.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        parse(["--config", str(tmp_path / "missing.toml")])
    bad = tmp_path / "bad.toml"
    bad.write_text("[ws\nport=1")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        parse(["--config", str(bad)])
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[ws]\nprot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'ws.prot'"):
        parse(["--config", str(unknown)])


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streaming", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=30)


def test_help_lists_every_flag() -> None:
    out = run("serve", "--help").stdout
    for setting in config_module.SETTINGS:
        assert setting.flag in out, setting.flag
    for flag in ("--config", "--data-dir", "--ice-address"):
        assert flag in out


def test_cli_prints_one_line_on_bad_config(tmp_path: Path) -> None:
    done = run("serve", "--data-dir", str(tmp_path), "--ws-port", "-5")
    assert done.returncode == 2
    assert done.stderr == "streaming: ws.port must be a port number 0..65535 (got '-5' from --ws-port)\n"


def test_cli_reports_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("serve", "--data-dir", str(tmp_path), "--bind", "127.0.0.1", "--ws-port", str(port),
                   "--rest-port", "0")
    assert done.returncode == 2
    assert "cannot listen" in done.stderr
    assert "Traceback" not in done.stderr
