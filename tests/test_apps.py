"""The applications registry (SQLite on disk) and the `streaming app` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streaming.apps import REST_METHODS, AppRegistry, RegistryError
from tests.support.server import REPO


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streaming", "app", "--data-dir", str(data_dir), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=30)


def test_registry_round_trip(tmp_path: Path) -> None:
    reg = AppRegistry(tmp_path / "db.sqlite3")
    app = reg.add("shop", "shopKey", "http://127.0.0.1:9/hooks/", secret="s3", methods=["connect"])
    assert app.url == "http://127.0.0.1:9/hooks"
    assert app.methods == {"connect"}
    assert app.calls("connect") and not app.calls("publishStream")
    reg.add_methods("shopKey", ["publishStream", "connect"])
    assert reg.get("shopKey").methods == {"connect", "publishStream"}  # type: ignore[union-attr]
    reg.remove_methods("shopKey", ["connect"])
    assert reg.get("shopKey").methods == {"publishStream"}  # type: ignore[union-attr]
    reg.update("shopKey", url="https://backend.example/x", clear_secret=True)
    assert reg.get("shopKey").secret is None  # type: ignore[union-attr]
    reg.close()
    # It is on disk: a second handle sees it.
    again = AppRegistry(tmp_path / "db.sqlite3")
    assert [a.app_key for a in again.list()] == ["shopKey"]
    again.remove("shopKey")
    assert again.get("shopKey") is None


@pytest.mark.parametrize("call, message", [
    (lambda r: r.add("a b", "k", "http://h"), "application name must be"),
    (lambda r: r.add("n", "k/..", "http://h"), "appKey must be"),
    (lambda r: r.add("n", "k", "ftp://h"), "backend URL must be http"),
    (lambda r: r.add("n", "k", "http://h", methods=["fly"]), "unknown REST method 'fly'"),
    (lambda r: r.remove("missing"), "no application with key 'missing'"),
])
def test_registry_rejects_bad_input(tmp_path: Path, call, message: str) -> None:  # type: ignore[no-untyped-def]
    reg = AppRegistry(tmp_path / "db.sqlite3")
    with pytest.raises(RegistryError, match=message):
        call(reg)


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    reg = AppRegistry(tmp_path / "db.sqlite3")
    reg.add("one", "k1", "http://h")
    with pytest.raises(RegistryError, match="exists"):
        reg.add("two", "k1", "http://h")
    with pytest.raises(RegistryError, match="exists"):
        reg.add("one", "k2", "http://h")


def test_cli_manages_applications(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "add", "shop", "shopKey", "http://127.0.0.1:9000/rest", "--method", "connect")
    assert done.returncode == 0, done.stderr
    listed = run_cli(tmp_path, "show")
    assert "shopKey\thttp://127.0.0.1:9000/rest\t1 methods" in listed.stdout
    assert run_cli(tmp_path, "add-method", "shopKey", "publishStream", "playStream").returncode == 0
    assert run_cli(tmp_path, "methods", "shopKey").stdout.split() == ["connect", "publishStream", "playStream"]
    assert run_cli(tmp_path, "remove-method", "shopKey", "connect").returncode == 0
    assert run_cli(tmp_path, "update", "shopKey", "--secret", "xyz").returncode == 0
    assert "signed" in run_cli(tmp_path, "list").stdout
    assert run_cli(tmp_path, "remove", "shopKey").returncode == 0
    assert "shopKey" not in run_cli(tmp_path, "list").stdout


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "add", "shop", "shopKey", "not-a-url")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "backend URL must be http" in done.stderr
    missing = run_cli(tmp_path, "methods", "nope")
    assert missing.returncode == 2 and "no application with key 'nope'" in missing.stderr


def test_all_methods_enabled_by_default(tmp_path: Path) -> None:
    reg = AppRegistry(tmp_path / "db.sqlite3")
    assert reg.add("n", "k", "http://h").methods == set(REST_METHODS)
