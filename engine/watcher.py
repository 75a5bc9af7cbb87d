"""Watching the scripts folder: a file added, changed, deleted or renamed loads, reloads or unloads
its script, so that saving a file is all it takes to change what the server does.

Changes arriving within `scripts.debounce_ms` of each other are handled as one batch. A save that
leaves the text as it was last loaded (or our own admin API write) reloads nothing. A folder that goes
away unloads its scripts; the watcher then waits for it, and loads what it holds when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

from engine.scripts import ScriptManager, discover

log = logging.getLogger("engine.watcher")

# A watch that fails for a reason other than its folder going (out of inotify watches, say) is started
# again after this long: often enough to recover, seldom enough not to flood the log.
RETRY_SECONDS = 5.0


class ScriptWatcher:
    def __init__(self, scripts: ScriptManager, debounce_ms: int) -> None:
        self.scripts = scripts
        self.folder = scripts.folder.resolve()
        self.debounce_ms = debounce_ms
        # How often a missing folder is looked for, and the longest a watch goes without checking its
        # folder is still there (in case the file system never says it went).
        self.poll_seconds = max(debounce_ms, 250) / 1000
        self._stop = asyncio.Event()
        self.batches = 0  # batches applied; tests wait on it
        self.appeared = 0  # times a missing folder appeared and its scripts loaded; tests wait on it
        self.missing = False  # the folder is not there and we wait for it

    def _wanted(self, _change: Change, raw: str) -> bool:
        """Script files, and paths without a suffix (folders, whose renames move scripts); nothing hidden."""
        try:
            rel = Path(raw).relative_to(self.folder)
        except ValueError:
            return False
        if any(part.startswith(".") for part in rel.parts):
            return False
        return rel.suffix == ".js" or rel.suffix == ""

    async def run(self) -> None:
        """Apply changes until `stop`, through the folder going away and coming back. Never dies of
        one bad batch."""
        starting = True
        while not self._stop.is_set():
            if not self.folder.is_dir():
                if not starting:  # at start-up, app.py's warning about the missing folder says it all
                    log.warning("scripts folder %s is gone: its scripts unload; waiting for it to come back",
                                self.folder)
                await self._guarded(self.sync(), "could not unload the scripts of the missing folder")
                if not await self._appear():
                    return
                log.info("scripts folder %s appeared: loading its scripts, watching it again", self.folder)
                await self._guarded(self.sync(), "could not load the scripts of the folder")
                self.appeared += 1
            starting = False
            try:
                await self._watch()
            except FileNotFoundError:
                pass  # it went between our look and the watch starting: the next turn waits for it
            except Exception:  # noqa: BLE001 - the watcher must outlive any one failure
                log.exception("watching %s failed; trying again in %ss", self.folder, RETRY_SECONDS)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), RETRY_SECONDS)

    async def _watch(self) -> None:
        """Apply batches until `stop`, or until the folder is deleted or renamed away. A watch stays on
        the folder it started on: on Linux it follows that folder when it is renamed (reporting its
        files under the old path) and sees nothing of a new folder made in its place, so it ends here
        and `run` starts another on whatever the path holds next."""
        gone = (Change.deleted, str(self.folder))
        caught_up = False
        # yield_on_timeout: an empty batch every poll_seconds, to check the folder without an event.
        changes_seen = awatch(self.folder, watch_filter=self._wanted, step=self.debounce_ms,
                              debounce=self.debounce_ms * 10, stop_event=self._stop,
                              rust_timeout=int(self.poll_seconds * 1000), yield_on_timeout=True)
        async with contextlib.aclosing(changes_seen):
            async for changes in changes_seen:
                if changes:
                    await self._guarded(self.apply({raw for _, raw in changes}), "could not apply script changes")
                    self.batches += 1
                if not caught_up:
                    # The first yield proves the watch is up: a file written after the last look at
                    # the folder but before then (a folder copied in, file by file) is on disk now.
                    caught_up = True
                    await self._guarded(self.catch_up(), "could not load the scripts of the folder")
                if gone in changes or not self.folder.is_dir():
                    return

    async def _appear(self) -> bool:
        """Wait for the missing folder; False if stopped first.

        Polling, not a watch on the nearest existing parent: one stat per interval costs nothing,
        does not care how many levels are missing or what happens to the parents meanwhile, and works
        where a file system sends no events; a parent watch would either be recursive (over unrelated
        files, maybe a whole home folder) or need re-arming level by level."""
        self.missing = True
        try:
            while not self.folder.is_dir():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.poll_seconds)
                    return False
            return True
        finally:
            self.missing = False

    def stop(self) -> None:
        self._stop.set()

    async def _guarded(self, work: Coroutine[Any, Any, None], failure: str) -> None:
        try:
            await work
        except Exception:  # noqa: BLE001 - the watcher must outlive any one failure
            log.exception(failure)

    async def apply(self, paths: set[str]) -> None:
        names = set()
        rescan = False
        for raw in paths:
            rel = Path(raw).relative_to(self.folder).as_posix()
            if rel.endswith(".js"):
                names.add(rel)
            else:
                rescan = True  # a folder came or went: compare what is on disk with what is loaded
        on_disk = set(discover(self.folder))
        if rescan:
            names |= on_disk ^ set(self.scripts.records)
        # Unloads first: a rename then frees the old name's paths before the new name claims them.
        for name in sorted(names - on_disk):
            if name in self.scripts.records:
                await self.scripts.unload(name)
        for name in sorted(names & on_disk):
            await self.scripts.load_file(name, changed_only=True)

    async def sync(self) -> None:
        """Make what is loaded match the folder: scripts without a file unload (all of them, when the
        folder is gone), every file loads in order unless its text is what was last tried."""
        on_disk = discover(self.folder)
        for name in sorted(set(self.scripts.records) - set(on_disk)):
            await self.scripts.unload(name)
        for name in on_disk:
            await self.scripts.load_file(name, changed_only=True)

    async def catch_up(self) -> None:
        """Load what changed on disk since the last look; unload nothing (a script loaded through
        `ScriptManager.load` has no file, and the watch reports deletions from here on)."""
        for name in discover(self.folder):
            await self.scripts.load_file(name, changed_only=True)
