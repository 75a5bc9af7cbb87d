"""Files inside a folder the engine owns (scripts/, assets/): containment through symbolic links, and
writes a reader never sees half done."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def inside(folder: Path, relative: str) -> bool:
    """Does `folder / relative` stay inside `folder`, every symbolic link on the way followed?

    A name can be clean and still lead out: a symlinked file, a symlinked folder on the way (which a
    write would create through), a chain of them, a dangling one. Following every link that exists
    (realpath, not strict, so a new file's missing parents are fine) and comparing with the folder,
    itself resolved, catches them all. Links that stay inside are fine.
    """
    root = Path(os.path.realpath(folder))
    target = Path(os.path.realpath(folder / relative))
    return root in target.parents  # the folder itself is no file of it either


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a hidden temp file beside it (watchers skip it, and its short
    name fits wherever the target's does), then rename: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".rtengine-{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there if something failed
