"""The declared host API table against the README and the sandbox."""

from __future__ import annotations

from pathlib import Path

from engine.sandbox.host_api import HOST_API

ROOT = Path(__file__).resolve().parent.parent


def test_readme_documents_every_host_function() -> None:
    readme = (ROOT / "README.md").read_text()
    for f in HOST_API:
        assert f"`{f.signature}`" in readme, f.signature


async def test_every_declared_function_exists_in_a_script(engine_client) -> None:
    checks = " && ".join(
        f"typeof {f.name} === 'function'" for f in HOST_API
    )
    client = await engine_client(extra={"probe.js": f"register('/probe', function () {{ return String({checks}); }});"})
    assert await (await client.get("/probe")).text() == "true"


async def test_nothing_reaches_outside_the_sandbox(engine_client) -> None:
    probe = """
    register('/outside', function () {
      return { body: {
        require: typeof require, process: typeof process, std: typeof std, os: typeof os,
        fetch: typeof fetch, XMLHttpRequest: typeof XMLHttpRequest, importFn: (function () {
          try { eval("import('fs')"); return "no throw"; } catch (e) { return e.name; } })(),
      } };
    });"""
    client = await engine_client(extra={"outside.js": probe})
    body = await (await client.get("/outside")).json()
    assert body["require"] == body["process"] == body["std"] == body["os"] == "undefined"
    assert body["fetch"] == body["XMLHttpRequest"] == "undefined"
