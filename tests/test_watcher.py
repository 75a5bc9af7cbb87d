"""The watcher through a scripts folder that goes away, comes back, or is not there at start-up."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, make_config, wait_for

from engine.http.keys import SCRIPTS, WATCHER


def save(folder: Path, name: str, source: str) -> None:
    (folder / name).write_text(source, encoding="utf-8")


async def serves(client: TestClient, path: str, expected: str) -> None:
    async def check() -> bool:
        r = await client.get(path)
        return f"{r.status} {await r.text()}" == expected
    await wait_for(check, what=f"{path} to answer {expected!r}")


def logged(caplog: pytest.LogCaptureFixture, level: int, *words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == level and all(w in r.getMessage() for w in words)]


def delete(folder: Path) -> None:
    shutil.rmtree(folder)


def rename_away(folder: Path) -> None:
    os.rename(folder, folder.with_name("elsewhere"))


@pytest.mark.parametrize("remove", [delete, rename_away])
async def test_a_folder_that_goes_unloads_its_scripts_and_loads_them_when_it_returns(
    engine_client: MakeClient, scripts_dir: Path, caplog: pytest.LogCaptureFixture,
    remove: Callable[[Path], None],
) -> None:
    caplog.set_level(logging.INFO, logger="engine")
    save(scripts_dir, "a.js", 'register("/a", () => "a");')
    client = await engine_client()
    watcher = client.app[WATCHER]
    await serves(client, "/a", "200 a")

    remove(scripts_dir)
    await wait_for(lambda: watcher.missing, what="the watcher to wait for the folder")
    assert (await client.get("/a")).status == 404
    assert client.app[SCRIPTS].records == {}
    assert len(logged(caplog, logging.WARNING, str(scripts_dir.resolve()), "gone", "waiting")) == 1

    scripts_dir.mkdir()
    save(scripts_dir, "b.js", 'register("/b", () => "one");')
    await serves(client, "/b", "200 one")
    assert logged(caplog, logging.INFO, str(scripts_dir.resolve()), "watching it again")
    save(scripts_dir, "b.js", 'register("/b", () => "two");')  # watching really resumed
    await serves(client, "/b", "200 two")
    assert set(client.app[SCRIPTS].records) == {"b.js"}
    assert (await client.get("/a")).status == 404


async def test_a_folder_replaced_at_once_is_watched_anew(engine_client: MakeClient, scripts_dir: Path) -> None:
    save(scripts_dir, "a.js", 'register("/a", () => "a");')
    client = await engine_client()
    shutil.rmtree(scripts_dir)  # and a new folder in its place before the watcher looks (same inode, often)
    scripts_dir.mkdir()
    save(scripts_dir, "b.js", 'register("/b", () => "one");')
    await serves(client, "/b", "200 one")
    await wait_for(lambda: set(client.app[SCRIPTS].records) == {"b.js"}, what="a.js to unload")
    save(scripts_dir, "b.js", 'register("/b", () => "two");')  # the watch is on the new folder
    await serves(client, "/b", "200 two")


async def test_a_folder_missing_at_start_loads_once_created(engine_client: MakeClient, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "not" / "yet"  # two levels missing
    client = await engine_client(config=make_config(folder))
    watcher = client.app[WATCHER]
    await wait_for(lambda: watcher.missing, what="the watcher to wait for the folder")
    warnings = logged(caplog, logging.WARNING, str(folder))
    assert len(warnings) == 1 and "does not exist" in warnings[0] and "once it is created" in warnings[0]

    folder.mkdir(parents=True)
    save(folder, "a.js", 'register("/a", () => "one");')
    await serves(client, "/a", "200 one")
    assert watcher.appeared == 1
    save(folder, "a.js", 'register("/a", () => "two");')
    await serves(client, "/a", "200 two")


async def test_shutdown_while_waiting_for_the_folder_is_prompt(engine_client: MakeClient, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    client = await engine_client(config=make_config(tmp_path / "missing"))
    watcher = client.app[WATCHER]
    await wait_for(lambda: watcher.missing, what="the watcher to wait for the folder")
    started = time.monotonic()
    await client.close()  # the app's shutdown: stops the watcher and waits up to 2 s for it
    assert time.monotonic() - started < 1.0
    assert not logged(caplog, logging.WARNING, "did not stop in time")
