"""Watching the scripts folder: a file added, changed, deleted or renamed loads, reloads or unloads
its script, so that saving a file is all it takes to change what the server does.

Changes arriving within `scripts.debounce_ms` of each other are handled as one batch. A save that
leaves the text as it was last loaded (or our own admin API write) reloads nothing.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from watchfiles import Change, awatch

from engine.scripts import ScriptManager, discover

log = logging.getLogger("engine.watcher")


class ScriptWatcher:
    def __init__(self, scripts: ScriptManager, debounce_ms: int) -> None:
        self.scripts = scripts
        self.folder = scripts.folder.resolve()
        self.debounce_ms = debounce_ms
        self._stop = asyncio.Event()
        self.batches = 0  # batches applied; tests wait on it

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
        """Apply changes until `stop`. Never dies of one bad batch."""
        if not self.folder.is_dir():
            log.warning("not watching %s: it does not exist", self.folder)
            return
        async for changes in awatch(self.folder, watch_filter=self._wanted, step=self.debounce_ms,
                                    debounce=self.debounce_ms * 10, stop_event=self._stop):
            try:
                await self.apply({raw for _, raw in changes})
            except Exception:  # noqa: BLE001 - the watcher must outlive any one failure
                log.exception("could not apply script changes")
            self.batches += 1

    def stop(self) -> None:
        self._stop.set()

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
