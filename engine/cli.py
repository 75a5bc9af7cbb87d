"""`python -m engine`: flags, then environment, then config file; logging; serve."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from engine import __version__
from engine.app import serve
from engine.config import Config, ConfigError, load_config, settings
from engine.errors import BrokerUnavailable


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = "\n".join(f"  {s.env_var:<44} {s.key}" for s in settings())
    p = argparse.ArgumentParser(
        prog="python -m engine", description="rtengine: a scriptable real-time engine",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every setting (see config.yaml for each one's default and meaning) also comes from its "
               "environment variable;\nflags win over the environment, which wins over the config file:\n" + env)
    p.add_argument("--version", action="version", version=f"rtengine {__version__}")
    p.add_argument("--config", help="config file (default: config.yaml in the working directory, if present)")
    p.add_argument("--host", help="address to listen on (server.host)")
    p.add_argument("--port", help="TCP port (server.port)")
    p.add_argument("--scripts", help="folder of .js scripts (scripts.dir)")
    p.add_argument("--workers", help="processes serving the port together, on the Redis broker (server.workers)")
    p.add_argument("--broker-url", help="redis://host:port to share channels with other processes (broker.url)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="server log level (logs.level)")
    p.add_argument("--no-watch", action="store_true", help="load scripts once; do not follow their files "
                   "(scripts.watch false)")
    return p.parse_args(argv)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """`server.loop`: uvloop takes a third or more off every request's cost on the event loop."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {"server.host": args.host, "server.port": args.port, "scripts.dir": args.scripts,
                 "server.workers": args.workers, "broker.url": args.broker_url, "logs.level": args.log_level,
                 "scripts.watch": False if args.no_watch else None}
    config_file = Path(args.config) if args.config else (Path("config.yaml") if Path("config.yaml").is_file()
                                                         else None)
    try:
        config = load_config(Path(args.config) if args.config else None, os.environ, overrides)
    except ConfigError as e:
        print(f"rtengine: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.logs.level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # its "1 change detected" per save is noise
    if config.server.workers > 1:
        if not config.server.port:
            print("rtengine: server.workers needs a fixed server.port: the processes share it", file=sys.stderr)
            return 2
        return run_workers(config.server.workers, lambda: serve_one(config, config_file))
    return serve_one(config, config_file)


def serve_one(config: Config, config_file: Path | None = None) -> int:
    def banner(url: str) -> None:
        log = logging.getLogger("engine")
        log.info("rtengine %s · config: %s · scripts: %s", __version__,
                 config_file.resolve() if config_file else "defaults (no config.yaml)", config.scripts_dir.resolve())
        log.info("open %s/ · console %s/_engine/ · GraphQL %s/graphql · health %s/health · metrics %s/metrics",
                 url, url, url, url, url)

    try:
        with asyncio.Runner(loop_factory=loop_factory(config.server.loop)) as runner:
            runner.run(serve(config, banner))
    except BrokerUnavailable as e:
        logging.getLogger("engine").error("cannot start: %s", e)
        return 1
    except OSError as e:
        logging.getLogger("engine").error("cannot serve on %s:%s: %s",
                                          config.server.host, config.server.port, e.strerror or e)
        return 1
    return 0


def run_workers(n: int, work: Callable[[], int]) -> int:
    """Fork `n` processes that each serve (on one port, SO_REUSEPORT); pass SIGINT/SIGTERM on to them
    and wait. Forked before any thread or loop exists, so each child starts clean. A worker that
    exits early is not replaced: the exit status says so (the first non-zero one)."""
    children = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = work()
            finally:
                os._exit(code)
        children.append(pid)

    def forward(sig: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(code)
        if code and not status:
            status = code if code > 0 else 1
    return status
