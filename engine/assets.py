"""`assets/`: static files served at their paths, which privileged scripts list, read, write and delete.

The folder is the single source of truth, as `scripts/` is for scripts: a file put there by hand is
served and listed like one written through `upsertAsset`. An asset's path is its file's path under the
folder (`/img/logo.png` is `assets/img/logo.png`); nothing hidden is an asset, so the content types
given to `upsertAsset` that differ from the guess from the name live in the hidden `.types.json`.

Every method here touches the disk: callers run them on a thread (`asyncio.to_thread`), never on the
event loop. Writes and deletes hold one lock, so the limits they check hold when they write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from engine import rules
from engine.config import AssetsConfig
from engine.folders import inside, why, write_atomic

log = logging.getLogger("engine.assets")
TYPES_FILE = ".types.json"
_TEXTUAL = ("application/json", "application/javascript", "application/xml", "image/svg+xml",
            "application/manifest+json")


class AssetRefused(Exception):
    """A write the limits or the folder refuse; the message says why, for the script's log."""


@dataclass(frozen=True, slots=True)
class Asset:
    path: str  # "/img/logo.png"
    size: int
    content_type: str
    modified: float  # epoch seconds

    @property
    def textual(self) -> bool:
        """Scripts get it as a string (else as bytes)."""
        media = self.content_type.split(";", 1)[0].strip().lower()
        return media.startswith("text/") or media in _TEXTUAL


_COMPRESSED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz",
               "br": "application/x-brotli", "compress": "application/x-compress"}


def guess_type(path: str) -> str:
    guessed, encoding = mimetypes.guess_type(path, strict=False)
    if encoding:  # `x.txt.gz` is gzip data, not text
        return _COMPRESSED.get(encoding, "application/octet-stream")
    guessed = guessed or "application/octet-stream"
    if guessed.startswith("text/") or guessed in _TEXTUAL:
        return f"{guessed}; charset=utf-8"
    return guessed


class AssetStore:
    def __init__(self, folder: Path, config: AssetsConfig) -> None:
        self.folder = folder
        self.config = config
        self._lock = threading.RLock()  # a write scans, and a scan may prune the types file

    # ---- reading ---------------------------------------------------------------------------

    def find(self, path: str) -> tuple[Path, Asset] | None:
        """The file to serve at `path` and what it is, or None: not an asset path, no such file, or a
        file whose real place (symbolic links followed) is outside the folder."""
        if rules.asset_path_problem(path) is not None or not inside(self.folder, path[1:]):
            return None
        file = self.folder / path[1:]
        try:
            st = file.stat()
        except (OSError, ValueError):
            return None
        if not file.is_file():
            return None
        return file, Asset(path, st.st_size, self._types().get(path) or guess_type(path), st.st_mtime)

    def scan(self) -> dict[str, Asset]:
        """Every asset, by path. Files whose names are no asset path (hidden, spaces, ...) are skipped,
        as are symbolic links that lead out of the folder. A type remembered for a file that is gone
        is forgotten (a new file there gets the type its name suggests)."""
        out: dict[str, Asset] = {}
        if not self.folder.is_dir():
            return out
        types = self._types()
        root = os.path.realpath(self.folder)
        pending = [(root, "")]
        while pending:
            folder, prefix = pending.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                path = f"{prefix}/{entry.name}"
                if entry.name.startswith(".") or rules.asset_path_problem(path) is not None:
                    continue
                try:
                    if entry.is_symlink() and not inside(Path(root), path[1:]):
                        continue
                    if entry.is_dir():
                        pending.append((entry.path, path))
                    elif entry.is_file():
                        st = entry.stat()
                        out[path] = Asset(path, st.st_size, types.get(path) or guess_type(path), st.st_mtime)
                except OSError:
                    continue  # gone meanwhile, or a dangling link
        if any(p not in out for p in types):
            with self._lock, contextlib.suppress(OSError):  # a read-only folder keeps its types file as it is
                self._forget_types([p for p in types if p not in out])
        return out

    def read(self, path: str) -> bytes | None:
        found = self.find(path)
        if found is None:
            return None
        try:
            return found[0].read_bytes()
        except OSError:
            return None

    # ---- writing ---------------------------------------------------------------------------

    def write(self, path: str, data: bytes, content_type: str | None) -> Asset:
        """Create or replace an asset; AssetRefused when a limit or the folder says no."""
        problem = rules.asset_path_problem(path) or (content_type and rules.content_type_problem(content_type))
        if problem:
            raise AssetRefused(problem)
        if len(data) > self.config.max_bytes:
            raise AssetRefused(f"{path} would be {len(data)} bytes; the limit is {self.config.max_bytes} "
                               "(assets.max_bytes)")
        with self._lock:
            if not inside(self.folder, path[1:]):
                raise AssetRefused(f"{path} leads out of the assets folder (through a symbolic link)")
            existing = self.scan()
            old = existing.pop(path, None)
            if old is None and len(existing) + 1 > self.config.max_count:
                raise AssetRefused(f"there are {len(existing)} assets already; the limit is {self.config.max_count} "
                                   "(assets.max_count)")
            total = sum(a.size for a in existing.values()) + len(data)
            if total > self.config.max_total_bytes:
                raise AssetRefused(f"the assets would take {total} bytes; the limit is "
                                   f"{self.config.max_total_bytes} (assets.max_total_bytes)")
            try:
                write_atomic(self.folder / path[1:], data)
                self._set_type(path, content_type if content_type != guess_type(path) else None)
            except OSError as e:
                raise AssetRefused(f"{path} cannot be written: {why(e)}") from None
        found = self.find(path)
        if found is None:  # deleted by hand in the instant since: say so rather than invent it
            raise AssetRefused(f"{path} was removed as it was written")
        return found[1]

    def delete(self, path: str) -> bool:
        """Remove an asset; False if there was none."""
        if rules.asset_path_problem(path) is not None:
            return False
        with self._lock:
            if not inside(self.folder, path[1:]):
                return False
            try:
                (self.folder / path[1:]).unlink()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return False
            except OSError as e:
                raise AssetRefused(f"{path} cannot be deleted: {why(e)}") from None
            self._set_type(path, None)
            return True

    # ---- content types given to upsertAsset ------------------------------------------------

    def _types(self) -> dict[str, str]:
        try:
            raw = json.loads((self.folder / TYPES_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("%s/%s cannot be read (%s): assets are served with the types their names suggest",
                        self.folder, TYPES_FILE, e)
            return {}
        if not isinstance(raw, dict):
            return {}
        return {k: v for k, v in raw.items()
                if isinstance(k, str) and isinstance(v, str) and rules.content_type_problem(v) is None}

    def _forget_types(self, paths: list[str]) -> None:
        """The caller holds the lock."""
        types = self._types()
        if any(p in types for p in paths):
            for p in paths:
                types.pop(p, None)
            write_atomic(self.folder / TYPES_FILE, json.dumps(types, indent=1, sort_keys=True).encode("utf-8"))

    def _set_type(self, path: str, content_type: str | None) -> None:
        """Remember a type that differs from the guess (None: forget it). The caller holds the lock."""
        types = self._types()
        if types.get(path) == content_type or (content_type is None and path not in types):
            return
        if content_type is None:
            del types[path]
        else:
            types[path] = content_type
        write_atomic(self.folder / TYPES_FILE, json.dumps(types, indent=1, sort_keys=True).encode("utf-8"))
