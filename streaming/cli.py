"""The `streaming` command: `streaming serve` runs the server, `streaming app ...` manages applications."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import config as config_module
from . import logs
from .apps import REST_METHODS, AppRegistry, RegistryError
from .config import Config, ConfigError

if TYPE_CHECKING:
    from .server import Server


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streaming", description="Media streaming server.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server",
                                description="Run the server. Every flag also has a TOML key "
                                "(--ws-port = [ws] port) and an environment variable.")
    config_module.add_arguments(serve)

    app = commands.add_parser("app", help="manage applications (appKey -> backend URL, REST methods)",
                              description="Manage the applications registry in the data folder.")
    app.add_argument("--config", metavar="FILE", help="TOML configuration file (for its data folder)")
    app.add_argument("--data-dir", dest="server.data_dir", metavar="DIR", help="data folder")
    verbs = app.add_subparsers(dest="verb", required=True, metavar="VERB")

    add = verbs.add_parser("add", help="add an application (WCS: add app NAME KEY URL)")
    add.add_argument("name")
    add.add_argument("app_key", metavar="key")
    add.add_argument("url", help="backend REST URL; hooks are POSTed to URL/METHOD")
    add.add_argument("--secret", help="HMAC secret: every hook body is signed with it")
    add.add_argument("--method", action="append", dest="methods", metavar="METHOD",
                     help="enable only these REST methods (repeatable; default: all)")

    for name in ("list", "show"):
        verbs.add_parser(name, help="list applications (WCS: show apps)")

    update = verbs.add_parser("update", help="change an application")
    update.add_argument("app_key", metavar="key")
    update.add_argument("--name")
    update.add_argument("--url")
    update.add_argument("--secret")
    update.add_argument("--no-secret", action="store_true", help="stop signing hook bodies")

    remove = verbs.add_parser("remove", help="remove an application")
    remove.add_argument("app_key", metavar="key")

    add_method = verbs.add_parser("add-method", help="enable REST methods (WCS: add app-rest-method)")
    add_method.add_argument("app_key", metavar="key")
    add_method.add_argument("methods", nargs="+", metavar="METHOD")

    remove_method = verbs.add_parser("remove-method", help="disable REST methods")
    remove_method.add_argument("app_key", metavar="key")
    remove_method.add_argument("methods", nargs="+", metavar="METHOD")

    methods = verbs.add_parser("methods", help="list an application's enabled REST methods "
                                               f"(known: {', '.join(REST_METHODS)})")
    methods.add_argument("app_key", metavar="key")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = config_module.load(args)
        if args.command == "serve":
            return _serve(config)
        return _app_command(config, args)
    except (ConfigError, RegistryError) as exc:
        print(f"streaming: {exc}", file=sys.stderr)
        return 2


def _app_command(config: Config, args: argparse.Namespace) -> int:
    registry = AppRegistry(config.database_path)
    try:
        verb = args.verb
        if verb == "add":
            app = registry.add(args.name, args.app_key, args.url, args.secret, args.methods)
            print(f"added {app.name} ({app.app_key}) -> {app.url}")
        elif verb in ("list", "show"):
            apps = registry.list()
            if not apps:
                print("no applications (defaultApp is created when the server first starts)")
            for app in apps:
                signed = " signed" if app.secret else ""
                print(f"{app.name}\t{app.app_key}\t{app.url}\t{len(app.methods)} methods{signed}")
        elif verb == "update":
            app = registry.update(args.app_key, name=args.name, url=args.url, secret=args.secret,
                                  clear_secret=args.no_secret)
            print(f"updated {app.name} ({app.app_key}) -> {app.url}")
        elif verb == "remove":
            registry.remove(args.app_key)
            print(f"removed {args.app_key}")
        elif verb == "add-method":
            app = registry.add_methods(args.app_key, args.methods)
            print(f"{app.app_key}: {', '.join(sorted(app.methods))}")
        elif verb == "remove-method":
            app = registry.remove_methods(args.app_key, args.methods)
            print(f"{app.app_key}: {', '.join(sorted(app.methods)) or '(no methods)'}")
        elif verb == "methods":
            found = registry.get(args.app_key)
            if found is None:
                raise RegistryError(f"no application with key {args.app_key!r}")
            for method in REST_METHODS:
                if method in found.methods:
                    print(method)
        return 0
    finally:
        registry.close()


def _serve(config: Config) -> int:
    logs.configure(config["server.log_level"], config["server.log_format"])  # text or JSON lines (streaming/logs.py)
    from media.native import NativeCoreMissing

    from .server import Server

    try:
        server = Server(config)
    except NativeCoreMissing as exc:
        print(f"streaming: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(server))
    except OSError as exc:  # a port in use, an address we cannot bind
        print(f"streaming: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 2


async def _run(server: Server) -> int:
    log = logging.getLogger("streaming")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("media core: %s", server.media_core)
    urls = await server.start()
    log.info("node %s, data in %s", server.config.node_id, server.config.data_dir.resolve())
    for name, url in urls.items():
        log.info("listening: %s %s", name, url)
    # One machine-readable line on stdout for scripts and tests that start the server.
    print("ready " + json.dumps(urls), flush=True)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
