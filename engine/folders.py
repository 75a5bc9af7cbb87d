"""Files inside a folder the engine owns (scripts/, assets/): containment through symbolic links, and
writes a reader never sees half done."""

from __future__ import annotations

import errno
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


# Why a file could not be read, written or deleted, as a client or a script's log is told it (an
# OSError's own text names the server's absolute paths).
_REASONS = {
    errno.ENOTDIR: "a parent of the path is a file, not a folder",
    errno.EEXIST: "a parent of the path is a file, not a folder",  # mkdir(parents=True) over a file
    errno.EISDIR: "the path is a folder, not a file",
    errno.ENAMETOOLONG: "the name is too long for the file system",
    errno.ELOOP: "the path goes through a loop of symbolic links",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the folder is on a read-only file system",
    errno.ENOSPC: "no space left on the device",
}


def why(e: OSError) -> str:
    """What went wrong with a file, in words: the reason only, never the server's paths."""
    return _REASONS.get(e.errno or 0) or (e.strerror or type(e).__name__).lower()
