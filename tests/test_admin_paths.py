"""The admin API's trust boundary on paths: symlinks that lead out of the scripts folder, names an
attacker would try, files the file system refuses. Real server, real files, real symlinks."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, make_config

from engine.errors import HTTPError
from engine.http.admin import script_name

MARK = "7f3c9e-outside"  # in every file outside the folder: it must never show in an answer
SECRET = f"// {MARK}\n"  # valid JS, so the engine's own load of a linked file says nothing about it
OK = "// a script with nothing to serve\n"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        """The engine's JSON error, checked for its shape."""
        assert self.headers.get("content-type", "").startswith("application/json"), self
        error: dict[str, Any] = json.loads(self.body)["error"]
        assert set(error) == {"code", "message", "request_id"}, error
        return error


async def send(client: TestClient, method: str, target: bytes, body: bytes = b"") -> Answer:
    """One request with `target` sent byte for byte (a client library would normalize `%2e%2e` away)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                 % (method.encode(), target, len(body), body))
    raw = await reader.read()  # until the server closes
    writer.close()
    await writer.wait_closed()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return Answer(int(status_line.split(" ")[1]), headers, payload)


async def admin(client: TestClient, method: str, name: str, body: str = "") -> Answer:
    """`name` percent-encoded as a client would send it (raw non-ASCII bytes never reach the engine)."""
    return await send(client, method, b"/_engine/scripts/" + quote(name, safe="/~").encode(), body.encode())


def snapshot(root: Path, skip: Path) -> dict[str, str | bytes]:
    """Everything under `root` but `skip`, links not followed: a file's bytes, a link's target, "dir"."""
    seen: dict[str, str | bytes] = {}
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(top, d) != skip]
        for entry in [*dirs, *files]:
            p = Path(top, entry)
            key = str(p.relative_to(root))
            seen[key] = f"-> {os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir() else p.read_bytes()
    return seen


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the scripts folder, with a file an attacker wants to read or overwrite."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.js").write_text(SECRET)
    (d / "inner.js").write_text(SECRET)
    return d


def assert_refused(answer: Answer) -> None:
    assert answer.status == 400, answer
    error = answer.error()
    assert error["code"] == "bad_name" and "leaves the scripts folder" in error["message"], error
    assert MARK.encode() not in answer.body


async def test_a_symlinked_file_that_leads_out_is_refused(engine_client: MakeClient, scripts_dir: Path,
                                                          outside: Path, tmp_path: Path) -> None:
    (scripts_dir / "evil.js").symlink_to(outside / "secret.js")
    (scripts_dir / "relative.js").symlink_to(Path("..") / "outside" / "secret.js")
    client = await engine_client()
    before = snapshot(tmp_path, scripts_dir)
    for name in ("evil.js", "relative.js"):
        assert_refused(await admin(client, "GET", name))
        assert_refused(await admin(client, "PUT", name, "// overwritten"))
        assert_refused(await admin(client, "DELETE", name))
        assert_refused(await admin(client, "GET", f"{name}/logs"))
        assert_refused(await send(client, "GET", b"/_engine/logs?script=" + name.encode()))
        assert (scripts_dir / name).is_symlink()  # the link is left alone too
    assert snapshot(tmp_path, scripts_dir) == before
    assert (outside / "secret.js").read_text() == SECRET


async def test_a_symlinked_folder_that_leads_out_is_refused(engine_client: MakeClient, scripts_dir: Path,
                                                            outside: Path, tmp_path: Path) -> None:
    (scripts_dir / "linked").symlink_to(outside, target_is_directory=True)
    (scripts_dir / "api").mkdir()
    (scripts_dir / "api" / "up").symlink_to(Path("..") / "..", target_is_directory=True)  # the tmp folder
    client = await engine_client()
    before = snapshot(tmp_path, scripts_dir)
    for name in ("linked/inner.js", "linked/new.js", "linked/new/deeper/x.js", "api/up/outside/inner.js",
                 "api/up/escape.js"):
        assert_refused(await admin(client, "GET", name))
        assert_refused(await admin(client, "PUT", name, "// written through a linked folder"))
        assert_refused(await admin(client, "DELETE", name))
    assert snapshot(tmp_path, scripts_dir) == before  # no new.js, no new/, no escape.js outside
    assert not (scripts_dir / "api" / "up").resolve().joinpath("escape.js").exists()


async def test_a_chain_of_symlinks_is_followed_to_its_end(engine_client: MakeClient, scripts_dir: Path,
                                                          outside: Path, tmp_path: Path) -> None:
    (scripts_dir / "two.js").symlink_to(outside / "secret.js")
    (scripts_dir / "one.js").symlink_to("two.js")  # one -> two (inside) -> outside
    (scripts_dir / "far").symlink_to(outside, target_is_directory=True)
    (scripts_dir / "near").symlink_to("far", target_is_directory=True)  # near -> far (inside) -> outside
    (scripts_dir / "loop.js").symlink_to("loop.js")
    client = await engine_client()
    before = snapshot(tmp_path, scripts_dir)
    for name in ("one.js", "near/inner.js", "near/x.js"):
        for method in ("GET", "PUT", "DELETE"):
            assert_refused(await admin(client, method, name, "// through a chain"))
    # A loop leads nowhere: reading it is a clear 422, never a 500.
    r = await admin(client, "GET", "loop.js")
    assert r.status == 422 and r.error()["code"] == "unreadable" and "loop" in r.error()["message"]
    assert snapshot(tmp_path, scripts_dir) == before


async def test_a_dangling_symlink_that_leads_out_is_refused(engine_client: MakeClient, scripts_dir: Path,
                                                            outside: Path, tmp_path: Path) -> None:
    (scripts_dir / "ghost.js").symlink_to(outside / "missing.js")
    (scripts_dir / "gone").symlink_to(outside / "missing", target_is_directory=True)
    client = await engine_client()
    before = snapshot(tmp_path, scripts_dir)
    for name in ("ghost.js", "gone/x.js"):
        for method in ("GET", "PUT", "DELETE"):
            assert_refused(await admin(client, method, name, "// would be created outside"))
    assert not (outside / "missing.js").exists() and not (outside / "missing").exists()
    assert snapshot(tmp_path, scripts_dir) == before


async def test_symlinks_that_stay_inside_are_fine(engine_client: MakeClient, scripts_dir: Path) -> None:
    (scripts_dir / "api").mkdir()
    (scripts_dir / "alias.js").symlink_to("real.js")
    (scripts_dir / "lib").symlink_to("api", target_is_directory=True)
    (scripts_dir / "later.js").symlink_to("not-yet.js")  # dangling, but inside
    client = await engine_client(extra={"real.js": OK, "api/users.js": OK})
    r = await admin(client, "GET", "alias.js")
    assert r.status == 200 and r.body == OK.encode()
    r = await admin(client, "GET", "lib/users.js")
    assert r.status == 200 and r.body == OK.encode()
    assert (await admin(client, "PUT", "lib/new.js", OK)).status == 201
    assert (scripts_dir / "api" / "new.js").read_text() == OK
    assert (await admin(client, "GET", "later.js")).status == 404
    assert (await admin(client, "PUT", "later.js", OK)).status == 201


async def test_a_scripts_folder_that_is_itself_a_symlink_works(engine_client: MakeClient, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    via = tmp_path / "via"
    via.symlink_to(real, target_is_directory=True)
    client = await engine_client(config=make_config(via))
    assert (await admin(client, "PUT", "x.js", OK)).status == 201
    assert (real / "x.js").read_text() == OK
    r = await admin(client, "GET", "x.js")
    assert r.status == 200 and r.body == OK.encode()
    assert (await admin(client, "DELETE", "x.js")).status == 204 and not (real / "x.js").exists()


async def test_a_script_that_is_not_utf8_is_a_422_to_read(engine_client: MakeClient, scripts_dir: Path) -> None:
    (scripts_dir / "latin.js").write_bytes(b"// caf\xe9\n")
    client = await engine_client()
    r = await admin(client, "GET", "latin.js")
    assert r.status == 422
    error = r.error()
    assert error["code"] == "not_utf8" and "latin.js is not UTF-8 text (byte 0xe9 at offset 6)" in error["message"]
    assert b"Traceback" not in r.body
    assert (await admin(client, "PUT", "latin.js", "// café\n")).status == 200  # the way out
    assert (await admin(client, "GET", "latin.js")).body == "// café\n".encode()


async def test_a_name_that_fits_the_file_system_is_saved(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await engine_client()
    for name in ("x" * 249 + ".js", "y" * 252 + ".js", "é" * 126 + ".js"):  # 252, 255, 255 bytes
        assert (await admin(client, "PUT", name, OK)).status == 201, name
        assert (scripts_dir / name).read_text() == OK
        r = await admin(client, "GET", name)
        assert r.status == 200 and r.body == OK.encode()
        assert (await admin(client, "DELETE", name)).status == 204
    assert list(scripts_dir.iterdir()) == []  # no temp file left behind either


async def test_a_name_too_long_for_the_file_system_is_400(engine_client: MakeClient, scripts_dir: Path) -> None:
    client = await engine_client()
    for method in ("GET", "PUT", "DELETE"):
        r = await admin(client, method, "é" * 127 + ".js", OK)  # 130 characters, 257 bytes
        assert r.status == 400, method
        assert r.error()["code"] == "bad_name" and "257 bytes in UTF-8, over the file system's limit of 255" \
            in r.error()["message"]
        r = await admin(client, method, "a/" * 127 + "b.js", OK)  # short parts, but 258 characters
        assert r.status == 400 and r.error()["code"] == "bad_name", method
    assert list(scripts_dir.iterdir()) == []


async def test_a_write_the_file_system_refuses_is_422(engine_client: MakeClient, scripts_dir: Path,
                                                      tmp_path: Path) -> None:
    (scripts_dir / "dir.js").mkdir()
    client = await engine_client(extra={"hi.js": OK})
    for name, why in (("hi.js/x.js", "a parent of the path is a file, not a folder"),
                      ("hi.js/deeper/x.js", "a parent of the path is a file, not a folder"),
                      ("dir.js", "the path is a folder, not a file")):
        r = await admin(client, "PUT", name, OK)
        assert r.status == 422, name
        error = r.error()
        assert error["code"] == "cannot_write" and error["message"] == f"{name} cannot be written: {why}"
        assert str(tmp_path).encode() not in r.body  # the reason, not the server's paths
        assert (await admin(client, "GET", name)).status == 404  # neither is a script
        assert (await admin(client, "DELETE", name)).status == 404
    assert (scripts_dir / "hi.js").read_text() == OK and (scripts_dir / "dir.js").is_dir()
    assert sorted(p.name for p in scripts_dir.rglob("*")) == ["dir.js", "hi.js"]  # no temp file left
    assert [r["name"] for r in (await (await client.get("/_engine/scripts")).json())["scripts"]] == ["hi.js"]


REFUSED = (400, 400, 400, 400)  # GET, PUT, GET, DELETE
CREATED = (404, 201, 200, 204)
NOT_A_FILE = (404, 422, 404, 404)


@pytest.mark.parametrize(("target", "expected"), [
    (b"%00.js", REFUSED),
    (b"a%00.js", REFUSED),
    (b"a.js%00", REFUSED),
    (b"a\x00.js", REFUSED),  # a raw NUL: aiohttp's parser refuses it before the engine sees it
    (b"%2e%2e/x.js", REFUSED),
    (b"%2e%2e%2fx.js", REFUSED),
    (b"%2E%2E%2F%2E%2E%2Fescape.js", REFUSED),
    (b"a/%2e%2e/%2e%2e/escape.js", REFUSED),
    (b"../escape.js", REFUSED),
    (b"a/../../escape.js", REFUSED),
    (b"./a.js", REFUSED),
    (b"%2e/a.js", REFUSED),
    (b"..%5cescape.js", REFUSED),
    (b"a\\..\\escape.js", REFUSED),
    (b"C:%5cescape.js", REFUSED),
    (b"a.js/", REFUSED),
    (b"a.js%2f", REFUSED),
    (b"a.js/..", REFUSED),
    (b"a.js%2f..", REFUSED),
    (b"a//b.js", REFUSED),
    (b"%2ftmp%2fescape.js", REFUSED),
    (b".hidden.js", REFUSED),
    (b"a/.git/x.js", REFUSED),
    (b"x.JS", REFUSED),
    (b"x.js.txt", REFUSED),
    (b"a" * 300 + b".js", REFUSED),
    (b"%C3%A9" * 127 + b".js", REFUSED),
    (b"\xc3\xa9.js", REFUSED),  # raw non-ASCII: refused by aiohttp's parser
    (b"secret.js", REFUSED),  # links out (set up below)
    (b"out/secret.js", REFUSED),
    (b"out%2fsecret.js", REFUSED),
    (b"out/%2e%2e/escape.js", REFUSED),
    (b"out/new.js", REFUSED),
    (b"hi.js/x.js", NOT_A_FILE),
    (b"dir.js", NOT_A_FILE),
    (b"Hi.js", CREATED),  # differs from hi.js only in case: another file here (Linux)
    (b"HI.JS.js", CREATED),
    (b"%ff.js", CREATED),  # not UTF-8 once decoded: kept as typed, a plain name
    (b"%ed%a0%80.js", CREATED),
    (b"%C3%A9t%C3%A9.js", CREATED),
    (b"%EF%BC%8E%EF%BC%8E%EF%BC%8Fx.js", CREATED),  # fullwidth "../": just characters
    (b"%E2%80%AEsj.x", REFUSED),  # right-to-left override: still has to end in .js
    (b"%E2%80%AEx.js", REFUSED),  # a bidirectional mark: the name would read other than it is
    (b"%252e%252e/x.js", CREATED),  # decoded once: a folder named "%2e%2e"
    (b"a%20b.js", CREATED),
    (b"~/x.js", CREATED),
    (b"x" * 249 + b".js", CREATED),
])
async def test_odd_names_are_never_a_500_and_never_leave_the_folder(
        engine_client: MakeClient, scripts_dir: Path, outside: Path, tmp_path: Path,
        target: bytes, expected: tuple[int, int, int, int]) -> None:
    (scripts_dir / "dir.js").mkdir()
    (scripts_dir / "secret.js").symlink_to(outside / "secret.js")
    (scripts_dir / "out").symlink_to(outside, target_is_directory=True)
    client = await engine_client(extra={"hi.js": OK})
    before = snapshot(tmp_path, scripts_dir)
    neighbours = set(tmp_path.parent.iterdir())
    answers = []
    for method in ("GET", "PUT", "GET", "DELETE"):
        answer = await send(client, method, b"/_engine/scripts/" + target, OK.encode())
        answers.append(answer.status)
        assert MARK.encode() not in answer.body
        if answer.status == 201:  # what was created is where it should be
            made = scripts_dir / json.loads(answer.body)["script"]["name"]
            assert made.read_text() == OK and Path(os.path.realpath(made)).is_relative_to(scripts_dir.resolve())
        if answer.status >= 400 and not answer.headers.get("content-type", "").startswith("text/plain"):
            answer.error()  # the engine's JSON error, unless aiohttp's parser refused the request line
    assert tuple(answers) == expected
    assert snapshot(tmp_path, scripts_dir) == before
    assert set(tmp_path.parent.iterdir()) == neighbours  # nothing climbed out further either
    assert not any(p.name.startswith(".rtengine-") for p in scripts_dir.rglob("*"))


def test_a_name_that_is_not_valid_unicode_is_refused() -> None:
    with pytest.raises(HTTPError) as refused:
        script_name("\ud800.js")  # what a lone surrogate would be, if a client managed to send one
    assert refused.value.status == 400 and refused.value.code == "bad_name"
