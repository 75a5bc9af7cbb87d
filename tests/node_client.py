"""A real npm client run by node for a test: its JSON lines read one at a time, with a timeout."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any


class NodeClient:
    """`async with NodeClient(script, *args) as node: await node.line()`; node is killed if it is
    still running at the end (a test that failed half-way)."""

    def __init__(self, script: Path, *args: str) -> None:
        self.script, self.args = script, args
        self.lines: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> NodeClient:
        self.proc = await asyncio.create_subprocess_exec("node", str(self.script), *self.args,
                                                         stdout=asyncio.subprocess.PIPE,
                                                         env={**os.environ, "NODE_NO_WARNINGS": "1"})
        return self

    async def line(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), 10)
        assert raw, f"node ended early after {self.lines}"
        self.lines.append(json.loads(raw))
        return self.lines[-1]

    async def exit_code(self) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), 10)

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
