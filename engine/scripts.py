"""Loading `scripts/`: one record per script, what each owns, atomic swap on (re)load, commands applied.

A script is every `*.js` under the scripts folder (hidden names skipped), named by its path relative
to that folder; they load in sorted order so conflicts resolve the same way every time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from engine.config import Config
from engine.errors import RouteConflict, ScriptError
from engine.routes import Route, RouteTable
from engine.sandbox.context import Commands, Envelope, ScriptContext

log = logging.getLogger("engine.scripts")
script_log = logging.getLogger("engine.script")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@dataclass
class ScriptRecord:
    """What the engine knows of one script, whether or not it is serving."""

    name: str
    logs: deque[str]
    status: str = "loading"  # "loaded": a version serves; "failed": none does
    loaded_at: float | None = None
    last_error: str | None = None
    context: ScriptContext | None = None


def discover(folder: Path) -> list[str]:
    """Script names under `folder`, sorted: the load order."""
    if not folder.is_dir():
        return []
    names = []
    for p in folder.rglob("*.js"):
        rel = p.relative_to(folder)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            names.append(rel.as_posix())
    return sorted(names)


class ScriptManager:
    """Owns every script's context and registrations."""

    def __init__(self, config: Config, routes: RouteTable) -> None:
        self.config = config
        self.folder = config.scripts_dir
        self.routes = routes
        self.records: dict[str, ScriptRecord] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # ---- lifecycle -----------------------------------------------------------------------

    async def load_all(self) -> None:
        for name in discover(self.folder):
            await self.load_file(name)

    async def load_file(self, name: str) -> ScriptRecord:
        path = self.folder / name
        try:
            source = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            return await self._fail(self._record(name), ScriptError(name, f"cannot read the file: {e}"), None)
        return await self.load(name, source)

    async def load(self, name: str, source: str) -> ScriptRecord:
        """Evaluate `source` in a fresh context; swap it in only if it loads and its claims are free."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            record = self._record(name)
            ctx = ScriptContext(name, self.config.limits, self._apply, self._background_error)
            env: Envelope
            try:
                await ctx.start(list(record.logs), self.config.logs.script_lines, self.routes.claims(name))
                env = await ctx.load(source)
            except ScriptError as e:
                env = Envelope(error=e)
            self._log_lines(name, env.commands)
            routes = [
                Route(c["method"], c["path"], name, ctx, c["handler"]) for c in env.commands if c["op"] == "route"
            ]
            if env.error is None:
                try:
                    self.routes.replace(name, routes)
                except RouteConflict as e:
                    env.error = ScriptError(name, str(e))
            if env.error is not None:
                return await self._fail(record, env.error, ctx)

            old, record.context = record.context, ctx
            record.status, record.loaded_at, record.last_error = "loaded", time.time(), None
            ctx.activate(env)
            log.info("loaded %s (%d route%s)", name, len(routes), "" if len(routes) == 1 else "s")
            if old is not None:
                await old.close()
            return record

    async def unload(self, name: str) -> None:
        """Remove everything the script owned."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            record = self.records.pop(name, None)
            self.routes.replace(name, [])
            if record and record.context:
                await record.context.close()
            log.info("unloaded %s", name)

    async def close(self) -> None:
        """Dispose of every context and join its thread."""
        contexts = [r.context for r in self.records.values() if r.context]
        for r in self.records.values():
            self.routes.replace(r.name, [])
            r.context = None
        await asyncio.gather(*(c.close() for c in contexts))

    # ---- state ---------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        loaded = sum(1 for r in self.records.values() if r.status == "loaded")
        failed = sum(1 for r in self.records.values() if r.status == "failed")
        return {"loaded": loaded, "failed": failed}

    def _record(self, name: str) -> ScriptRecord:
        record = self.records.get(name)
        if record is None:
            record = ScriptRecord(name, deque(maxlen=self.config.logs.script_lines))
            self.records[name] = record
        return record

    async def _fail(self, record: ScriptRecord, error: ScriptError, ctx: ScriptContext | None) -> ScriptRecord:
        if ctx is not None:
            await ctx.close()
        record.last_error = error.describe()
        if record.context is None:
            record.status = "failed"
            log.error("failed %s", error.describe())
        else:
            log.error("failed to reload %s (the previous version keeps serving)", error.describe())
        if error.stack:
            log.debug("%s stack:\n%s", record.name, error.stack)
        record.logs.append(f"[error] load failed: {error.describe()}")
        return record

    # ---- commands from JS ----------------------------------------------------------------

    def _apply(self, ctx: ScriptContext, commands: Commands) -> None:
        """Apply what a handler or timer queued (the sink every context reports to)."""
        self._log_lines(ctx.name, commands)
        record = self.records.get(ctx.name)
        current = record is not None and record.context is ctx
        for c in commands:
            if c["op"] == "route":
                if not current:
                    log.warning("%s: register() from a replaced version ignored", ctx.name)
                    continue
                route = Route(c["method"], c["path"], ctx.name, ctx, c["handler"])
                try:
                    self.routes.add(route)
                except RouteConflict as e:
                    self._script_line(ctx.name, "error", f"register refused: {e}")

    def _log_lines(self, name: str, commands: Commands) -> None:
        for c in commands:
            if c["op"] == "log":
                self._script_line(name, c["level"], c["msg"], from_js=True)

    def _script_line(self, name: str, level: str, msg: str, from_js: bool = False) -> None:
        script_log.log(_LEVELS.get(level, logging.INFO), "[%s] %s", name, msg)
        record = self.records.get(name)
        if record is not None:
            record.logs.append(msg if from_js else f"[{level}] {msg}")

    def _background_error(self, ctx: ScriptContext, error: ScriptError, during: str) -> None:
        self._script_line(ctx.name, "error", f"{during} failed: {error.describe()}")
        if error.stack:
            log.debug("%s stack:\n%s", ctx.name, error.stack)
