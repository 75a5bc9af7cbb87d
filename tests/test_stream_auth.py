"""JWT on streams: a token from a header, the query or a cookie; every way a token can be wrong gets a
401 (or a 403 for a token that does not cover the channel) before any event; `conn.user` carries the
claims; a token's `exp` ends its connection."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, make_config, wait_for
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sse_client import SSEReader

from engine.auth import Verifier
from engine.config import AuthConfig
from engine.errors import ConfigError
from engine.http.keys import SCRIPTS, STREAMS

SECRET = "s3cret-that-is-long-enough-for-hs256!!"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def pem(key: Any) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def token(claims: dict[str, Any] | None = None, key: Any = SECRET, alg: str = "HS256", **extra: Any) -> str:
    payload = {"sub": "alice", "aud": "rtengine-tests", "iss": "rtengine", "exp": int(time.time()) + 600,
               **(claims or {}), **extra}
    return jwt.encode(payload, key, algorithm=alg)


async def engine(engine_client: MakeClient, scripts_dir: Path, **auth: Any) -> TestClient:
    config = make_config(scripts_dir)
    config = replace(config, auth=replace(AuthConfig(jwt_secret=SECRET), **auth))
    return await engine_client("channels.js", config=config)


async def refused(client: TestClient, path: str, status: int, fragment: str, **kwargs: Any) -> dict[str, Any]:
    resp = await client.get(path, **kwargs)
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert fragment in body["error"]["message"], body
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="rtengine", error="invalid_token"')
    assert not client.app[STREAMS].connections
    return body  # type: ignore[no-any-return]


async def test_a_stream_that_needs_a_token_refuses_a_reader_without_one(engine_client: MakeClient, scripts_dir) -> None:
    client = await engine(engine_client, scripts_dir)
    body = await refused(client, "/inbox/alice", 401, "this stream needs a token")
    assert body["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda: token(exp=int(time.time()) - 10), "has expired"),
    (lambda: token(aud="someone-else"), "not for this audience"),
    (lambda: token(iss="mallory"), "not from this issuer"),
    (lambda: token(key="another-secret-that-is-long-enough!!"), "signature does not verify"),
    (lambda: jwt.encode({"sub": "alice"}, None, algorithm="none"), "'none' are not accepted"),
    (lambda: token(key=RSA_KEY, alg="RS256"), "'RS256' are not accepted"),
    (lambda: "not.a.jwt", "not a JWT"),
    (lambda: "x" * 5000, "longer than 4096"),
    (lambda: token(nbf=int(time.time()) + 600), "not valid"),
    (lambda: token(exp="tomorrow"), "not valid"),
    (lambda: token(exp=[1]), "not valid"),  # PyJWT's int(exp) raises TypeError, not its own error
    (lambda: _signed('{"sub": "a", "exp": Infinity}'), "not valid"),  # and OverflowError here
    (lambda: token(channels="/inbox/alice"), "channels claim must be a list"),
    (lambda: token(channels=["/inbox/{user}/*"]), "channels claim must be a list"),
    (lambda: _forged_header(), "not accepted"),
])
async def test_every_bad_token_is_a_401_before_any_event(engine_client: MakeClient, scripts_dir, make: Any,
                                                         fragment: str) -> None:
    client = await engine(engine_client, scripts_dir, audience="rtengine-tests", issuer="rtengine")
    bad = make()
    await refused(client, "/inbox/alice", 401, fragment, headers={"Authorization": f"Bearer {bad}"})
    # the same token by the query and the cookie: the same answer
    await refused(client, "/inbox/alice", 401, fragment, params={"token": bad})


def _signed(payload: str, secret: str = SECRET) -> str:
    """A token with exactly this payload text, HS256-signed by hand (PyJWT would refuse a PEM as
    the secret, as it should, and cannot write Infinity)."""
    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    head = part(b'{"alg":"HS256","typ":"JWT"}') + "." + part(payload.encode())
    return head + "." + part(hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest())


def _forged_header() -> str:
    """A token asking for an algorithm that is not configured (HS512), with a junk signature."""
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS512", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps({"sub": "x"}).encode()).rstrip(b"=").decode()
    return f"{header}.{body}.c2ln"


async def test_a_valid_token_reaches_the_hooks_as_conn_user(engine_client: MakeClient, scripts_dir) -> None:
    client = await engine(engine_client, scripts_dir, audience="rtengine-tests", issuer="rtengine")
    good = token(aud="rtengine-tests", iss="rtengine", role="admin")
    for kwargs in ({"headers": {"Authorization": f"Bearer {good}"}}, {"params": {"token": good, "x": "1"}},
                   {"cookies": {"token": good}}):
        resp = await client.get("/me", **kwargs)  # type: ignore[arg-type]
        assert resp.status == 200, await resp.text()
        reader = SSEReader(resp)
        assert (await reader.next()).event == "connected"
        first = json.loads((await reader.next()).data)
        assert first["user"]["sub"] == "alice" and first["user"]["role"] == "admin"
        assert "token" not in first["query"]  # a script sees the claims, never the token
        resp.close()
    # a stream that needs no token still takes one for conn.user; a bad one is refused there too
    resp = await client.get("/rooms/red", headers={"Authorization": f"Bearer {good}"})
    assert resp.status == 200
    resp.close()
    await refused(client, "/rooms/red", 401, "signature", headers={"Authorization": f"Bearer {good}x"})


async def test_the_channels_claim_limits_what_a_token_reads(engine_client: MakeClient, scripts_dir) -> None:
    client = await engine(engine_client, scripts_dir)
    mine = token(channels=["/inbox/alice", "/rooms/{room}"])
    resp = await client.get("/inbox/alice", headers={"Authorization": f"Bearer {mine}"})
    assert resp.status == 200
    resp.close()
    body = await refused(client, "/inbox/bob", 403, "does not cover /inbox/bob",
                         headers={"Authorization": f"Bearer {mine}"})
    assert body["error"]["code"] == "forbidden"
    await refused(client, "/me", 403, "does not cover /me", headers={"Authorization": f"Bearer {mine}"})


@pytest.mark.parametrize("key", [RSA_KEY, EC_KEY])
async def test_public_key_tokens(engine_client: MakeClient, scripts_dir, tmp_path: Path, key: Any) -> None:
    alg = "RS256" if key is RSA_KEY else "ES256"
    key_file = tmp_path / "key.pem"
    key_file.write_text(pem(key))
    for public in (str(key_file), pem(key)):  # a path, or the PEM text itself
        client = await engine(engine_client, scripts_dir, jwt_public_key=public)
        resp = await client.get("/inbox/alice", params={"token": token(key=key, alg=alg)})
        assert resp.status == 200, await resp.text()
        resp.close()
        # signed by another key of the same kind: refused
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048) if alg == "RS256" else \
            ec.generate_private_key(ec.SECP256R1())
        await refused(client, "/inbox/alice", 401, "signature", params={"token": token(key=other, alg=alg)})
        # HS256 signed with the public key's text as the secret: the algorithm-confusion attack. HS256
        # checks against its own secret here, and where no secret is set it is not accepted at all.
        await refused(client, "/inbox/alice", 401, "signature", params={"token": _signed('{"sub": "x"}', pem(key))})
    client = await engine(engine_client, scripts_dir, jwt_secret="", jwt_public_key=pem(key))
    await refused(client, "/inbox/alice", 401, f"'HS256' are not accepted (only {alg})",
                  params={"token": _signed('{"sub": "x"}', pem(key))})


def test_bad_auth_settings_stop_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="auth.jwt_secret': at least 32 bytes"):
        Verifier(AuthConfig(jwt_secret="short"))
    with pytest.raises(ConfigError, match="no readable file"):
        Verifier(AuthConfig(jwt_public_key=str(tmp_path / "missing.pem")))
    (tmp_path / "junk.pem").write_text("-----BEGIN PUBLIC KEY-----\njunk\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        Verifier(AuthConfig(jwt_public_key=str(tmp_path / "junk.pem")))
    small_curve = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ConfigError, match="P-256"):
        Verifier(AuthConfig(jwt_public_key=pem(small_curve)))


async def test_no_keys_configured_means_no_token_is_valid(engine_client: MakeClient) -> None:
    client = await engine_client("channels.js")
    await refused(client, "/inbox/alice", 401, "accepts no tokens", params={"token": token()})


@pytest.mark.parametrize("as_text", [False, True])  # PyJWT takes "exp": "1767225600" too: so must the timer
async def test_an_expiring_token_ends_its_connection_at_exp(engine_client: MakeClient, scripts_dir,
                                                           as_text: bool) -> None:
    client = await engine(engine_client, scripts_dir)
    at = int(time.time()) + 2
    soon = token(exp=str(at) if as_text else at)
    resp = await client.get("/me", headers={"Authorization": f"Bearer {soon}"})
    assert resp.status == 200
    reader = SSEReader(resp)
    assert (await reader.next()).event == "connected"
    await reader.next()  # the greeting
    close = await reader.next(timeout=5)
    assert close.event == "close" and json.loads(close.data) == {"reason": "the token expired"}
    assert await reader.ended()
    await wait_for(lambda: not client.app[STREAMS].connections, what="the connection to go")
    logs = await (await client.get("/ch/seen")).json()
    assert [d["reason"] for d in logs["disconnects"]] == ["the token expired"]


async def test_a_reload_that_makes_a_stream_need_a_token_ends_its_readers_without_one(
    engine_client: MakeClient, scripts_dir,
) -> None:
    before = """
registerWebStream("/open/{id}", { onConnect() { return undefined; } });
registerWebStream("/plain");
register("/say", () => { sendStreamMessageToPath("/open/1", "after"); return "ok"; });
"""
    config = replace(make_config(scripts_dir), auth=AuthConfig(jwt_secret=SECRET))
    client = await engine_client(config=config, extra={"gate.js": before})
    anonymous = SSEReader(await client.get("/open/1"))
    plain = SSEReader(await client.get("/plain"))
    alice = SSEReader(await client.get("/open/1", headers={"Authorization": f"Bearer {token()}"}))
    for reader in (anonymous, alice):
        assert (await reader.next()).event == "connected"
    record = await client.app[SCRIPTS].save("gate.js", before.replace("{ onConnect", '{ auth: "required", onConnect')
                                            .replace('registerWebStream("/plain")',
                                                     'registerWebStream("/plain", { auth: "required" })'))
    assert record.status == "loaded", record.last_error
    for reader in (anonymous, plain):
        close = await reader.next()
        assert close.event == "close" and json.loads(close.data) == {"reason": "the stream now needs a token"}
        assert await reader.ended()
    await client.get("/say")
    assert (await alice.next()).data == "after"  # a reader that came with a token reads on
    assert len(client.app[STREAMS].connections) == 1
    resp = await client.get("/open/1")
    assert resp.status == 401


async def test_a_token_that_expires_past_any_date_is_one_that_does_not_expire(engine_client: MakeClient,
                                                                             scripts_dir) -> None:
    client = await engine(engine_client, scripts_dir)
    resp = await client.get("/me", headers={"Authorization": f"Bearer {token(exp=10**400)}"})
    assert resp.status == 200
    resp.close()
