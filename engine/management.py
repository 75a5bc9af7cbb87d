"""Privileged scripts (`scripts.privileged`): their view of the scripts and assets, and their writes.

JS cannot ask Python for anything in the middle of a call, so a privileged script's context holds a
view (every script's source and recent log lines, every asset's metadata and content) that reads
answer from at once. It gets the whole view as it starts, before its top level runs, then each change
as it happens, in order (the prelude's `manage`). Log lines are gathered and told every LOG_FLUSH
seconds rather than one call per line.

Writes come back as commands (upsertScript, deleteScript, upsertAsset, deleteAsset), checked in
Python like every command (commands.py; context.py refuses them from any other script). Each runs
as a task of its own, in the order they were made: a write loads a script, and a load talks to
every script, the writer's own context too, so waiting for it inside the writer's apply would wait
on itself. What happened is a line in the writer's log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any

from watchfiles import awatch

from engine.assets import Asset, AssetRefused, AssetStore
from engine.config import Config
from engine.folders import inside, why
from engine.sandbox.commands import Command, DeleteAsset, DeleteScript, PutAsset, PutScript
from engine.sandbox.context import ScriptContext
from engine.sandbox.envelope import Envelope
from engine.scripts import ScriptManager, discover

log = logging.getLogger("engine.management")
LOG_FLUSH = 0.1  # seconds between two deliveries of new log lines to the views
RETRY_SECONDS = 5.0  # a watch of the assets folder that failed starts again after this long
MAX_WAITING_WRITES = 100  # writes of privileged scripts waiting to be applied; more are refused
SOURCES_HELD = 32 << 20  # characters of scripts' sources a view holds; a source past them is `big`
LOG_VIEW_CHARS = 64 << 10  # characters of one script's newest log lines a view holds


class Management:
    def __init__(self, config: Config, scripts: ScriptManager, assets: AssetStore) -> None:
        self.names = frozenset(config.scripts.privileged)
        self.scripts = scripts
        self.assets = assets
        self.max_bytes = config.assets.max_bytes
        self.max_script_bytes = config.limits.max_body_bytes
        self.max_total = config.assets.max_total_bytes
        # What a view may hold (assets as base64, sources, every script's log lines), twice over: the
        # JSON of a change arrives beside what it replaces. A limit, not an allocation.
        self.extra_memory = 2 * (config.assets.max_total_bytes * 4 // 3 + SOURCES_HELD
                                 + LOG_VIEW_CHARS * config.scripts.max_count) + (16 << 20)
        self.log_lines = config.logs.script_lines
        self.poll_seconds = max(config.scripts.debounce_ms, 250) / 1000
        # Privileged contexts alive (starting, serving, retiring): None once their whole view went,
        # else the changes that came meanwhile, to follow it.
        self._views: dict[ScriptContext, list[str] | None] = {}
        self._known: dict[str, Asset] = {}  # the assets as the views have them
        self._sources: dict[str, int] = {}  # characters of each source the views hold (the rest are `big`)
        self._held: dict[str, int] = {}  # bytes of content the views hold, by path (the rest is `big`)
        self._new_lines: dict[str, deque[str]] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._lines_lock = asyncio.Lock()
        self._asset_lock = asyncio.Lock()  # asset writes run one at a time, in order
        self._tasks: set[asyncio.Task[None]] = set()
        self._refused = 0  # writes refused this turn of the loop (told in one line)
        self._rescan_due = False
        self._stop = asyncio.Event()

    def is_privileged(self, name: str) -> bool:
        return name in self.names

    def view_limits(self) -> dict[str, int]:
        """What a privileged context's prelude checks writes with, and keeps its view to."""
        return {"maxScriptBytes": self.max_script_bytes, "maxAssetBytes": self.max_bytes,
                "logViewChars": LOG_VIEW_CHARS}

    # ---- views -----------------------------------------------------------------------------

    async def start_view(self, ctx: ScriptContext) -> None:
        """A privileged context started: send it everything, before its script runs. ScriptError if
        it cannot take it (its memory limit, say)."""
        self._views[ctx] = []
        sources = {n: r.source for n, r in self.scripts.records.items() if r.source is not None}
        sources.update(await asyncio.to_thread(self._unloaded, set(sources)))
        scripts = {name: self._held_source(name, source) for name, source in sorted(sources.items())}
        logs = {n: list(r.logs) for n, r in self.scripts.records.items() if r.logs}
        async with self._asset_lock:
            await self._rescan()  # the views in step with the folder first, so all of them hold the same
            assets = await asyncio.to_thread(self._whole_view)
        # JSON made a piece at a time, each a short hold of the interpreter lock the loop needs too.
        text = await asyncio.to_thread(_pieces, {"reset": True, "scripts": scripts, "logs": logs, "assets": assets})
        try:
            env = await ctx.manage(text)
            if env.error is not None:
                raise env.error
        except BaseException:
            self._views.pop(ctx, None)
            raise
        for change in self._views.get(ctx) or []:  # what changed while the whole view was being made
            self._send(ctx, change)
        self._views[ctx] = None

    def _unloaded(self, known: set[str]) -> dict[str, str]:
        """Scripts in the folder the engine has not loaded yet (at start-up, those after this one). (On a thread.)"""
        out = {}
        for name in discover(self.scripts.folder):
            if name not in known:
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    out[name] = (self.scripts.folder / name).read_bytes().decode("utf-8")
        return out

    def script_changed(self, name: str) -> None:
        """A script loaded, failed, or went: its source (None: gone) to every view."""
        if not self._views:  # nobody to tell (a view starting later is given everything)
            return
        record = self.scripts.records.get(name)
        source = record.source if record is not None else None
        if source is None:
            self._sources.pop(name, None)
        self._push({"scripts": {name: None if source is None else self._held_source(name, source)}})

    def _held_source(self, name: str, source: str) -> str | dict[str, int]:
        """The source as the views hold it: itself while the views' share for sources lasts and it is no
        larger than a write may be (so the JSON of a change, made on the loop, stays small), else `big`."""
        self._sources.pop(name, None)
        if len(source) > self.max_script_bytes or sum(self._sources.values()) + len(source) > SOURCES_HELD:
            return {"big": len(source.encode("utf-8", "surrogatepass"))}
        self._sources[name] = len(source)
        return source

    def log_line(self, name: str, line: str) -> None:
        if not self._views:
            return
        self._new_lines.setdefault(name, deque(maxlen=self.log_lines)).append(line)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(LOG_FLUSH, self._flush_lines)

    def _flush_lines(self) -> None:
        self._flush = None
        lines, self._new_lines = self._new_lines, {}
        if self._views:
            task = asyncio.get_running_loop().create_task(self._send_lines(lines))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _send_lines(self, lines: dict[str, deque[str]]) -> None:
        """New log lines to the views, each script's kept to what a view holds of it, as JSON made on a
        thread (many scripts logging at once make megabytes); one flush after another, in order."""
        async with self._lines_lock:
            newest = {name: _newest(list(d), LOG_VIEW_CHARS) for name, d in lines.items()}
            self._push_text(await asyncio.to_thread(_pieces, {"logs": newest}))

    def _push(self, delta: dict[str, Any]) -> None:
        if self._views:
            self._push_text(json.dumps(delta, ensure_ascii=False))

    def _push_text(self, text: str) -> None:
        for ctx, waiting in list(self._views.items()):
            if ctx.closed:
                del self._views[ctx]
            elif waiting is not None:
                waiting.append(text)
            else:
                self._send(ctx, text)

    def _send(self, ctx: ScriptContext, text: str) -> None:
        try:
            fut = ctx.manage(text)
        except Exception:  # noqa: BLE001 - gone (ScriptGone): nothing to keep current
            self._views.pop(ctx, None)
            return

        def sent(f: asyncio.Future[Envelope]) -> None:
            if not f.cancelled() and f.exception() is None and f.result().error is not None:
                self.scripts.script_line(ctx.name, "error", "its view of the scripts and assets could not be "
                                         f"updated: {f.result().error.describe()}")  # type: ignore[union-attr]
        fut.add_done_callback(sent)

    # ---- assets in the views (the caller holds _asset_lock) --------------------------------

    def _whole_view(self) -> dict[str, Any]:
        """Every asset the views know, as a new view takes it. (On a thread: it reads them.)"""
        out = {}
        for path, asset in sorted(self._known.items()):
            data = self.assets.read(path) if path in self._held else None
            out[path] = self._entry_of(asset, data)
        return out

    def _entry(self, asset: Asset, data: bytes | None = None) -> dict[str, Any]:
        """A changed asset for the views: its content while it fits the limits, else `big`, with the
        content they hold counted. (On a thread, unless `data` is given.)"""
        self._known[asset.path] = asset
        self._held.pop(asset.path, None)
        if asset.size <= self.max_bytes and sum(self._held.values()) + asset.size <= self.max_total:
            if data is None:
                data = self.assets.read(asset.path)
            if data is not None:
                self._held[asset.path] = len(data)
        else:
            data = None
        return self._entry_of(asset, data)

    @staticmethod
    def _entry_of(asset: Asset, data: bytes | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": asset.content_type, "size": asset.size, "modified": int(asset.modified * 1000)}
        if data is None:
            entry["big"] = True
        elif asset.textual and (text := _utf8(data)) is not None:
            entry["text"] = text
        else:
            entry["b64"] = base64.b64encode(data).decode("ascii")
        return entry

    async def rescan(self) -> None:
        """The folder changed by hand: tell the views what differs from what they hold."""
        async with self._asset_lock:
            await self._rescan()

    async def _rescan(self) -> None:
        def diff() -> dict[str, Any]:
            found = self.assets.scan()
            delta: dict[str, Any] = {p: None for p in self._known if p not in found}
            for p in delta:
                self._known.pop(p, None)
                self._held.pop(p, None)
            for path, asset in sorted(found.items()):
                if self._known.get(path) != asset:
                    delta[path] = self._entry(asset)
            return delta

        await self._push_assets(await asyncio.to_thread(diff))

    async def _push_assets(self, delta: dict[str, Any]) -> None:
        if delta and self._views:
            self._push_text(await asyncio.to_thread(_pieces, {"assets": delta}))

    # ---- writes ----------------------------------------------------------------------------

    def apply(self, writer: str, command: Command) -> None:
        """A privileged script's write, run as a task of its own (see the module's note)."""
        if len(self._tasks) >= MAX_WAITING_WRITES:
            self._refuse(writer, command)
            return
        if isinstance(command, PutScript):
            work: Coroutine[Any, Any, None] = self._put_script(writer, command)
        elif isinstance(command, DeleteScript):
            work = self._delete_script(writer, command)
        elif isinstance(command, PutAsset):
            work = self._put_asset(writer, command)
        elif isinstance(command, DeleteAsset):
            work = self._delete_asset(writer, command)
        else:
            return
        self._start(work)

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refuse(self, writer: str, c: Command) -> None:
        """Too many writes wait: this one is dropped, the views put right, and the writer told once
        per turn of the loop how many went (not a line each: a call may make 50,000)."""
        if isinstance(c, (PutScript, DeleteScript)):
            self.script_changed(c.name)
        elif not self._rescan_due:
            self._rescan_due = True
            self._start(self._rescan_later())
        if not self._refused:
            asyncio.get_running_loop().call_soon(self._tell_refused, writer)
        self._refused += 1

    def _tell_refused(self, writer: str) -> None:
        n, self._refused = self._refused, 0
        self.scripts.script_line(writer, "error", f"{n} write{'s' if n > 1 else ''} refused: {MAX_WAITING_WRITES} "
                                 "writes already wait to be applied; write less at once")

    async def _rescan_later(self) -> None:
        """After refused asset writes: the views' assets replaced by what the folder holds (the
        refused paths were never known here, so a rescan alone would not take them back)."""
        self._rescan_due = False
        async with self._asset_lock:
            await self._rescan()
            whole = await asyncio.to_thread(self._whole_view)
            if self._views:
                self._push_text(await asyncio.to_thread(_pieces, {"assetsReset": True, "assets": whole}))

    async def _put_back(self, c: Command) -> None:
        """A write that was refused: the views get what is there, not what the writer hoped for."""
        if isinstance(c, (PutScript, DeleteScript)):
            self.script_changed(c.name)
        elif isinstance(c, (PutAsset, DeleteAsset)):
            async with self._asset_lock:
                self._known.pop(c.path, None)
                await self._rescan()
                if c.path not in self._known:
                    await self._push_assets({c.path: None})

    async def _put_script(self, writer: str, c: PutScript) -> None:
        say = self.scripts.script_line
        problem = "it leads out of the scripts folder (a symbolic link)" if not inside(self.scripts.folder, c.name) \
            else self.scripts.no_room_for(c.name)
        if problem:
            say(writer, "error", f"upsertScript({c.name}) refused: {problem}")
            self.script_changed(c.name)
            return
        try:
            record = await self.scripts.save(c.name, c.source)
        except OSError as e:
            say(writer, "error", f"upsertScript({c.name}) failed: cannot write it ({why(e)})")
            self.script_changed(c.name)  # the views had the source that was not written: put back what is
            return
        if record.latest_failed:
            say(writer, "error", f"upsertScript({c.name}): saved, but it failed to load: {record.last_error}")
        else:
            say(writer, "info", f"upsertScript({c.name}): saved and loaded")

    async def _delete_script(self, writer: str, c: DeleteScript) -> None:
        say = self.scripts.script_line
        try:
            if not inside(self.scripts.folder, c.name):
                say(writer, "error", f"deleteScript({c.name}) refused: it leads out of the scripts folder "
                    "(a symbolic link)")
            elif await self.scripts.delete(c.name):
                say(writer, "info", f"deleteScript({c.name}): deleted and unloaded")
                return
        except OSError as e:
            say(writer, "error", f"deleteScript({c.name}) failed: {why(e)}")
        self.script_changed(c.name)  # the views dropped it: put back what is there

    async def _put_asset(self, writer: str, c: PutAsset) -> None:
        async with self._asset_lock:
            try:
                asset = await asyncio.to_thread(self.assets.write, c.path, c.data, c.content_type)
            except AssetRefused as e:
                self.scripts.script_line(writer, "error", f"upsertAsset({c.path}) refused: {e}")
                refused = True
            else:
                refused = False
                await self._push_assets({c.path: await asyncio.to_thread(self._entry, asset, c.data)})
        if refused:
            await self._put_back(c)

    async def _delete_asset(self, writer: str, c: DeleteAsset) -> None:
        async with self._asset_lock:
            try:
                if await asyncio.to_thread(self.assets.delete, c.path):
                    self.scripts.script_line(writer, "info", f"deleteAsset({c.path}): deleted")
            except AssetRefused as e:
                self.scripts.script_line(writer, "error", f"deleteAsset({c.path}) failed: {e}")
        await self._put_back(c)  # every view gets what the folder holds now

    # ---- lifecycle -------------------------------------------------------------------------

    async def follow(self) -> None:
        """Keep the views' assets current with files changed by hand, until `close`."""
        folder = self.assets.folder
        while not self._stop.is_set():
            try:
                if not folder.is_dir():
                    await self.rescan()  # it went, and its assets with it (no-op if the views have none)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self.poll_seconds)
                    continue
                await self.rescan()  # what changed while nobody watched
                changes_seen = awatch(folder, stop_event=self._stop, rust_timeout=int(self.poll_seconds * 1000),
                                      yield_on_timeout=True)
                async with contextlib.aclosing(changes_seen):
                    async for changes in changes_seen:
                        if changes:
                            await self.rescan()
                        if not folder.is_dir():
                            break
            except FileNotFoundError:
                pass  # it went as the watch started: the next turn waits for it
            except Exception:  # noqa: BLE001 - following must outlive any one failure
                log.exception("following the assets folder %s failed; trying again in %ss", folder, RETRY_SECONDS)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), RETRY_SECONDS)

    async def close(self) -> None:
        self._stop.set()
        if self._flush is not None:
            self._flush.cancel()
        for task in [*self._tasks, *self._flushing]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._flushing, return_exceptions=True)


def _newest(lines: list[str], chars: int) -> list[str]:
    """The newest of `lines` that fit in `chars` characters together (the prelude keeps no more)."""
    total, i = 0, len(lines)
    while i > 0 and total + len(lines[i - 1]) <= chars:
        i -= 1
        total += len(lines[i])
    return lines[i:]


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _pieces(delta: dict[str, dict[str, Any] | bool]) -> str:
    """JSON of a view's change, one entry at a time: json.dumps holds the interpreter lock for as long
    as it runs, and an entry is at most one asset (assets.max_bytes) or one source."""
    parts = []
    for key, value in delta.items():
        if isinstance(value, dict):
            inner = ",".join(json.dumps(k) + ":" + json.dumps(v, ensure_ascii=False) for k, v in value.items())
            parts.append(f"{json.dumps(key)}:{{{inner}}}")
        else:
            parts.append(f"{json.dumps(key)}:{json.dumps(value)}")
    return "{" + ",".join(parts) + "}"
