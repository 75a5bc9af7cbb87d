"""Loading `scripts/`: one record per script, what each owns, atomic swap on (re)load, commands applied.

A script is every `*.js` under the scripts folder (hidden names skipped), named by its path relative
to that folder; they load in sorted order so conflicts resolve the same way every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from engine.broker.base import Broker
from engine.config import Config
from engine.connections import Hooks
from engine.errors import RouteConflict, ScriptError
from engine.folders import write_atomic
from engine.graphql.schema import (
    SUBSCRIPTION_STREAM,
    FieldRegistration,
    FragmentMismatch,
    GraphQLRegistry,
    SchemaProblem,
    read_fragment,
)
from engine.graphql.subscriptions import SubscriptionHub
from engine.outbox import MESSAGES, Outbox
from engine.routes import Route, RouteTable, pattern_key
from engine.sandbox.applier import Steps
from engine.sandbox.commands import (
    MANAGEMENT,
    REGISTRATIONS,
    AddField,
    AddRoute,
    AddStream,
    Command,
    Log,
    Malformed,
)
from engine.sandbox.context import ScriptContext
from engine.sandbox.envelope import Envelope
from engine.streams.registry import StreamRegistry, StreamSpec

log = logging.getLogger("engine.scripts")
_ROUTES_ON_A_THREAD = 1000  # a load with more routes builds the new route lookup tables on a thread
script_log = logging.getLogger("engine.script")
# How the prelude and the tables word a claim another script holds ("... by script a.js").
_CONFLICT = re.compile(r"\b(by|of) scripts? \S+")
HISTORY = 20  # loads each script remembers (the console shows them)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@dataclass
class ScriptRecord:
    """What the engine knows of one script, whether or not it is serving."""

    name: str
    logs: deque[str]
    status: str = "loading"  # "loaded": a version serves; "failed": none does
    last_error: str | None = None
    context: ScriptContext | None = None
    loaded_at: float | None = None  # epoch seconds when the serving version was swapped in
    attempted: str | None = None  # digest of the last source tried, so an unchanged save is skipped
    source: str | None = None  # the last source tried (privileged scripts' getScript)
    conflicted: bool = False  # it failed over something another script owns: retried when claims are freed
    latest_failed: bool = False  # its latest load failed (an older version may still serve): /health degraded
    loads: int = 0  # loads that took, since start
    failures: int = 0  # loads that failed, since start
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY))  # latest loads

    def describe(self) -> dict[str, Any]:
        """As `GET /_engine/scripts` shows it."""
        loaded = None if self.loaded_at is None else datetime.fromtimestamp(self.loaded_at, UTC).isoformat()
        return {"name": self.name, "status": self.status, "loaded_at": loaded, "last_error": self.last_error,
                "latest_failed": self.latest_failed}


def _digest(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _check_command(ctx: ScriptContext, command: Command, streams: StreamRegistry) -> None:
    """What only the engine can check or prepare in a command, run on the script's thread with the
    others, off the event loop: a route is made (its key and shape worked out); a stream is checked
    for overlaps with other scripts' streams (redone on the loop if they changed since); a GraphQL
    fragment is parsed, and the types its JS reported must be the ones its SDL declares. A syntax
    graphql-core rejects fails the registration later, as usual."""
    if isinstance(command, AddStream):
        version = streams.version
        command.checked = (version, streams.overlaps(ctx.name, [command.path]))
    elif isinstance(command, AddRoute):
        command.route = Route(command.method, command.path, ctx.name, ctx, command.handler)
    elif isinstance(command, AddField):
        try:
            command.document = read_fragment(command.kind, command.name, command.sdl, command.types)
        except FragmentMismatch as e:
            raise Malformed(str(e)) from None
        except SchemaProblem:
            pass


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


class ManagementPort(Protocol):
    """What the scripts tell privileged scripts' views, and hand them (management.py)."""

    extra_memory: int  # a privileged context's memory on top of limits.script_memory_mb

    def is_privileged(self, name: str) -> bool: ...
    def view_limits(self) -> dict[str, int]: ...
    async def start_view(self, ctx: ScriptContext) -> None: ...
    def script_changed(self, name: str) -> None: ...
    def log_line(self, name: str, line: str) -> None: ...
    def apply(self, writer: str, command: Command) -> None: ...


class ScriptManager:
    """Owns every script's context and registrations."""

    def __init__(self, config: Config, routes: RouteTable, streams: StreamRegistry, broker: Broker,
                 graphql: GraphQLRegistry, subscriptions: SubscriptionHub,
                 observe: Callable[[str, str, str, float], None] | None = None) -> None:
        self.config = config
        self.folder = config.scripts_dir
        self.routes = routes
        self.streams = streams
        self.graphql = graphql
        self.outbox = Outbox(streams, broker, graphql, subscriptions, self.script_line)
        self._is_leader = lambda: broker.is_leader  # read on scripts' threads, when their timers fire
        self.observe = observe  # each call into a script, as it ends (/metrics)
        self._sharing = True  # off while load_all runs: it shares once at the end
        self.records: dict[str, ScriptRecord] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # retiring versions, conflict retries
        self.management: ManagementPort | None = None  # set by app.py: privileged scripts

    # ---- lifecycle -----------------------------------------------------------------------

    async def load_all(self) -> None:
        """Load every script in order; tell them each other's claims once at the end, not after each."""
        self._sharing = False
        try:
            for name in discover(self.folder):
                await self.load_file(name)
        finally:
            self._sharing = True
        await self._share_claims(None)

    async def load_file(self, name: str, changed_only: bool = False) -> ScriptRecord:
        """Load the file `name`; with `changed_only` (the watcher), skip it if its text is what was
        last tried, so a save that changes nothing, or our own admin write, reloads nothing."""
        async with self._lock(name):
            path = self.folder / name
            try:
                source = path.read_bytes().decode("utf-8")
            except (OSError, UnicodeDecodeError) as e:
                return await self._fail(self._record(name), ScriptError(name, f"cannot read the file: {e}"), None)
            record = self.records.get(name)
            if changed_only and record is not None and record.attempted == _digest(source):
                return record
            return await self._load(name, source)

    async def load(self, name: str, source: str) -> ScriptRecord:
        """Load (or reload) `name` from `source`, as if its file said so."""
        async with self._lock(name):
            return await self._load(name, source)

    async def save(self, name: str, source: str) -> ScriptRecord:
        """Write `source` to the scripts folder (the single source of truth), then load it.
        OSError if the file cannot be written (the caller says why to its client)."""
        async with self._lock(name):
            write_atomic(self.folder / name, source.encode("utf-8"))
            return await self._load(name, source)

    async def delete(self, name: str) -> bool:
        """Remove the file and unload the script; False if there was no such file."""
        async with self._lock(name):
            try:
                (self.folder / name).unlink()
            except FileNotFoundError:
                return False
            await self._unload(name)
            return True

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _load(self, name: str, source: str) -> ScriptRecord:
        """Evaluate `source` in a fresh context; swap it in only if it loads and its claims are free.
        The caller holds the script's lock. However the load ends, a context that is not swapped in
        is closed and its thread joined."""
        record = self._record(name)
        record.attempted = _digest(source)
        record.source = source
        m = self.management
        privileged = m is not None and m.is_privileged(name)
        ctx = ScriptContext(name, self.config.limits, self._apply, self.background_error,
                            functools.partial(_check_command, streams=self.streams), leader=self._is_leader,
                            observe=self.observe, privileged=privileged,
                            extra_memory=m.extra_memory if m is not None and privileged else 0)
        try:
            return await self._load_into(record, ctx, source)
        finally:
            if record.context is not ctx and not ctx.closed:
                await asyncio.shield(ctx.close())  # also when the load itself is cancelled
            if m is not None:
                m.script_changed(name)

    async def _load_into(self, record: ScriptRecord, ctx: ScriptContext, source: str) -> ScriptRecord:
        name = record.name
        try:
            env = await self._evaluate(record, ctx, source)
            self._log_lines(name, env.commands)
            routes = [c.route or Route(c.method, c.path, name, ctx, c.handler)
                      for c in env.commands if isinstance(c, AddRoute)]
            try:
                fields = [self._field(name, ctx, c) for c in env.commands if isinstance(c, AddField)]
            except SchemaProblem as e:
                fields, env.error = [], env.error or ScriptError(name, f"invalid SDL for {e}")
            stream_commands = [c for c in env.commands if isinstance(c, AddStream)]
            streams = [self._stream(ctx, c) for c in stream_commands]
            streams += [StreamSpec(SUBSCRIPTION_STREAM + f.name) for f in fields if f.kind == "subscription"]
            plan = self.routes.plan(name, routes)
            if len(self.routes) + len(routes) > _ROUTES_ON_A_THREAD:  # the new lookup tables, built off the loop
                await asyncio.to_thread(plan.build)
            else:
                plan.build()
            schema_change = await self.graphql.check_off_loop(name, fields) if env.error is None else None
            # From here to the swap, no await: what is checked is what is swapped in.
            if schema_change is not None:
                schema_change = self.graphql.current(schema_change)
                problems = (self._conflicts(name, routes, [s.path for s in streams])
                            + [p for c in stream_commands for p in self._overlaps(name, c)] + schema_change.problems)
                if problems:
                    env.error = ScriptError(name, "; ".join(problems))
        except Exception as e:  # noqa: BLE001 - an engine bug: the script fails, the engine does not
            log.exception("loading %s failed inside the engine", name, extra={"script": name})
            env = Envelope(error=ScriptError(name, f"the engine could not load it ({type(e).__name__})"))
        if env.error is not None:
            return await self._fail(record, env.error, ctx)

        # The swap: nothing below awaits until both tables point at the new version.
        before = self._owned(name) if self._any_conflicted() else set()
        self.routes.replace(name, routes, plan)
        self.streams.replace(name, streams)
        self.graphql.apply(schema_change)  # type: ignore[arg-type] # checked above: no error, so a change
        old, record.context = record.context, ctx
        record.status, record.last_error, record.loaded_at = "loaded", None, time.time()
        record.latest_failed = False
        record.loads += 1
        record.history.append({"at": record.loaded_at, "ok": True})
        ctx.apply(self._publish(name, env.commands))  # messages sent at load time, now that its streams exist
        ctx.activate(env)
        log.info("loaded %s (%s)", name, _count(len(routes), "route") + (
            f", {_count(len(streams), 'stream')}" if streams else "") + (
            f", {_count(len(fields), 'GraphQL field')}" if fields else ""), extra={"script": name})
        if old is not None:
            self._retire(old)
        await self._share_claims(name)
        if before and before - self._owned(name):
            self._retry_conflicted()
        return record

    def _any_conflicted(self) -> bool:
        return any(r.conflicted and r.status == "failed" for r in self.records.values())

    async def _evaluate(self, record: ScriptRecord, ctx: ScriptContext, source: str) -> Envelope:
        """Start the context and run the script's top level; a failure is the envelope's error."""
        try:
            await ctx.start({
                "logs": list(record.logs),
                "logMax": self.config.logs.script_lines,
                "maxMessageBytes": self.config.limits.max_message_bytes,
                "maxResponseBytes": self.config.limits.max_response_bytes,
                "maxCommands": self.config.limits.max_commands_per_call,
                "name": record.name,
                "privileged": ctx.privileged,
                **(self.management.view_limits() if ctx.privileged and self.management is not None else {}),
                **self._claims(),
            }, source.count("\n") + 1)
            if ctx.privileged and self.management is not None:
                await self.management.start_view(ctx)  # before its top level, which may read it
            return await ctx.load(source)
        except ScriptError as e:
            return Envelope(error=e)

    async def unload(self, name: str) -> None:
        """Remove everything the script owned."""
        async with self._lock(name):
            await self._unload(name)

    async def _unload(self, name: str) -> None:
        change = await self.graphql.check_off_loop(name, [])  # the schema without it, built on a thread
        record = self.records.pop(name, None)
        self.routes.replace(name, [])
        self.streams.replace(name, [])
        self.graphql.apply(self.graphql.current(change))
        if record and record.context:
            self._retire(record.context)
        if self.management is not None:
            self.management.script_changed(name)
        log.info("unloaded %s", name, extra={"script": name})
        await self._share_claims(name)
        self._retry_conflicted()

    @property
    def background(self) -> int:
        """Work still going on after a swap: old versions retiring, conflict retries."""
        return len(self._tasks)

    def _owned(self, name: str) -> set[str]:
        """Everything `name` claims, as comparable keys."""
        return ({r.key for r in self.routes.routes(name)}
                | {pattern_key(p) for p, st in self.streams.streams.items() if st.owner == name}
                | {f.key for f in self.graphql.owned(name)})

    def _retry_conflicted(self) -> None:
        """Something was freed: scripts that failed over a conflict get another go, in load order."""
        names = sorted(r.name for r in self.records.values() if r.conflicted and r.status == "failed")
        if names:
            self._background(self._load_files(names))

    async def _load_files(self, names: list[str]) -> None:
        for name in names:
            await self.load_file(name)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _retire(self, ctx: ScriptContext) -> None:
        """Let a replaced version finish what it is doing, then close it, without holding up the swap."""
        self._background(ctx.retire())

    async def close(self) -> None:
        """Dispose of every context (retiring ones too) and join its thread."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        contexts = [r.context for r in self.records.values() if r.context]
        for r in self.records.values():
            self.routes.replace(r.name, [])
            self.streams.replace(r.name, [])
            r.context = None  # the GraphQL schema is left as is: rebuilding it per script here is waste
        await asyncio.gather(*(c.close() for c in contexts))

    def _conflicts(self, name: str, routes: list[Route], streams: list[str]) -> list[str]:
        """Why `name` cannot own these: taken by another script, or a path both a stream and a GET
        route. The cost is in what is asked for, not in what exists."""
        problems = self.routes.conflicts(name, routes) + self.streams.conflicts(name, streams)
        new_streams = {pattern_key(p) for p in streams}
        for r in routes:
            owner = self.streams.owner_of(r.path)
            if r.method == "GET" and (pattern_key(r.path) in new_streams or (owner is not None and owner != name)):
                problems.append(f"GET {r.path} is a stream; a path cannot be both a stream and a GET route")
        new_gets = {pattern_key(r.path) for r in routes if r.method == "GET"}
        for path in streams:
            # Its own GET routes count only as asked for now: its old version's are being replaced.
            key = pattern_key(path)
            owner = name if key in new_gets else self.routes.owner_of("GET", path)
            if owner is not None and (owner != name or key in new_gets):
                problems.append(f"stream {path} is a GET route of script {owner}; "
                                "a path cannot be both a stream and a GET route")
        return problems

    async def _share_claims(self, changed: str | None) -> None:
        """Tell every other script what the scripts now own (for register's and send's checks): one
        JSON text for all of them, each skipping its own entries, so a change costs one pass over
        the tables however many scripts there are."""
        if not self._sharing:
            return
        # The text is made on a thread: for tens of thousands of routes it takes a while.
        everything = await asyncio.to_thread(json.dumps, self._claims())
        for other in list(self.records.values()):
            if other.name != changed and other.context is not None and not other.context.closed:
                # ScriptGone: it was replaced meanwhile, and its successor starts with fresh claims.
                with contextlib.suppress(ScriptError):
                    await other.context.set_claims(everything)

    def _claims(self) -> dict[str, Any]:
        """What every script owns, as the prelude checks it (each script skips its own)."""
        return {"claims": self.routes.claims(None), "streamClaims": self.streams.claims(None),
                **self.graphql.claims(None)}

    @staticmethod
    def _field(name: str, ctx: ScriptContext, c: AddField) -> FieldRegistration:
        return FieldRegistration(c.kind, c.name, c.sdl, name, ctx, c.handler, c.types, c.document)

    def _publish(self, script: str, commands: list[Command]) -> Steps:
        """The messages a load sent, once its streams exist."""
        for c in commands:
            if isinstance(c, MESSAGES):
                yield from self.outbox.apply(script, c)

    # ---- state ---------------------------------------------------------------------------

    def no_room_for(self, name: str) -> str | None:
        """Why a new script `name` may not be created through the engine (None: it may)."""
        limit = self.config.scripts.max_count
        if name in self.records or len(self.records) < limit:
            return None
        return f"there are {len(self.records)} scripts already; the limit is {limit} (scripts.max_count)"

    def failing(self) -> list[str]:
        """Scripts whose latest save did not load (an older version may still serve them)."""
        return sorted(r.name for r in self.records.values() if r.latest_failed)

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
        record.conflicted = bool(_CONFLICT.search(error.message))
        record.latest_failed = True
        record.failures += 1
        record.history.append({"at": time.time(), "ok": False, "error": record.last_error})
        if record.context is None:
            record.status = "failed"
            log.error("failed %s", error.describe(), extra={"script": record.name})
        else:
            log.error("failed to reload %s (the previous version keeps serving)", error.describe(),
                      extra={"script": record.name})
        if error.stack:
            log.debug("%s stack:\n%s", record.name, error.stack)
        line = f"[error] load failed: {error.describe()}"
        record.logs.append(line)
        if self.management is not None:
            self.management.log_line(record.name, line)
        return record

    # ---- commands from JS ----------------------------------------------------------------

    def _apply(self, ctx: ScriptContext, commands: list[Command]) -> Steps:
        """Apply what a handler or timer queued (the sink every context reports to), one command per
        step, so the applier can hand the loop to others between any two."""
        name = ctx.name
        for c in commands:
            try:
                if isinstance(c, Log):
                    self.script_line(name, c.level, c.msg, from_js=True)
                elif isinstance(c, MESSAGES):
                    yield from self.outbox.apply(name, c)
                elif isinstance(c, MANAGEMENT):
                    if self.management is not None and ctx.privileged:  # context.py refused it otherwise
                        self.management.apply(name, c)
                elif isinstance(c, REGISTRATIONS) and not self._is_current(ctx):
                    log.warning("%s: a registration from a replaced version was ignored", name)
                elif isinstance(c, AddStream):
                    self._add_stream(name, self._stream(ctx, c), self._overlaps(name, c))
                elif isinstance(c, AddField):
                    try:
                        yield self._add_field(ctx, self._field(name, ctx, c))  # its schema is built on a thread
                    except SchemaProblem as e:
                        self.script_line(name, "error", f"registerGraphQL refused: invalid SDL for {e}")
                elif isinstance(c, AddRoute):
                    route = c.route or Route(c.method, c.path, name, ctx, c.handler)
                    problems = self._conflicts(name, [route], [])
                    try:
                        if problems:
                            raise RouteConflict("; ".join(problems))
                        self.routes.add(route)
                    except RouteConflict as e:
                        self.script_line(name, "error", f"register refused: {e}")
            except Exception:  # noqa: BLE001 - one bad command must not stop the others
                log.exception("%s: a command could not be applied", name, extra={"script": name})
            yield None

    def _is_current(self, ctx: ScriptContext) -> bool:
        record = self.records.get(ctx.name)
        return record is not None and record.context is ctx

    def _overlaps(self, name: str, c: AddStream) -> list[str]:
        """The overlap check made off the loop, if nothing changed since; else made again here."""
        if c.checked is not None and c.checked[0] == self.streams.version:
            return c.checked[1]  # type: ignore[no-any-return]
        return self.streams.overlaps(name, [c.path])

    def _add_stream(self, name: str, spec: StreamSpec, overlaps: list[str] | None = None) -> None:
        """registerWebStream called after the load (from a handler or timer)."""
        try:
            problems = self._conflicts(name, [], [spec.path]) + (overlaps or [])
            if problems:
                raise RouteConflict("; ".join(problems))
            self.streams.add(name, spec)
        except RouteConflict as e:
            self.script_line(name, "error", f"registerWebStream refused: {e}")

    @staticmethod
    def _stream(ctx: ScriptContext, c: AddStream) -> StreamSpec:
        hooked = c.connect is not None or c.message is not None or c.disconnect is not None
        return StreamSpec(c.path, Hooks(ctx, c.connect, c.message, c.disconnect) if hooked else None, c.auth)

    async def _add_field(self, ctx: ScriptContext, field: FieldRegistration) -> None:
        """registerGraphQL* called after the load (from a handler or timer)."""
        name = field.owner
        change = await self.graphql.check_off_loop(name, [*self.graphql.owned(name), field])
        if not self._is_current(ctx):  # replaced while its schema was being built
            log.warning("%s: a registration from a replaced version was ignored", name)
            return
        change = self.graphql.current(change)
        problems = change.problems
        if field.kind == "subscription":
            problems += self._conflicts(name, [], [SUBSCRIPTION_STREAM + field.name])
        if problems:
            self.script_line(name, "error", f"registerGraphQL refused: {'; '.join(problems)}")
            return
        if field.kind == "subscription":
            self._add_stream(name, StreamSpec(SUBSCRIPTION_STREAM + field.name))
        self.graphql.apply(change)

    def _log_lines(self, name: str, commands: list[Command]) -> None:
        for c in commands:
            if isinstance(c, Log):
                self.script_line(name, c.level, c.msg, from_js=True)

    def script_line(self, name: str, level: str, msg: str, from_js: bool = False) -> None:
        script_log.log(_LEVELS.get(level, logging.INFO), "[%s] %s", name, msg, extra={"script": name})
        record = self.records.get(name)
        if record is not None:
            line = msg if from_js else f"[{level}] {msg}"
            record.logs.append(line)
            if self.management is not None:
                self.management.log_line(name, line)

    def background_error(self, ctx: ScriptContext, error: ScriptError, during: str) -> None:
        self.script_line(ctx.name, "error", f"{during} failed: {error.describe()}")
        if error.stack:
            log.debug("%s stack:\n%s", ctx.name, error.stack)
