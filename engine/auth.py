"""Stream tokens: where a reader's JWT comes from, what makes it valid, what it lets its holder read.

PyJWT does the verifying. What is ours: choosing the key by the token's algorithm (only the ones
configured: HS256 with `auth.jwt_secret`, RS256 or ES256 with `auth.jwt_public_key`; never `none`),
and the `channels` claim, a list of stream paths or patterns the token may read.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from engine import rules
from engine.config import AuthConfig
from engine.errors import ConfigError

MAX_TOKEN = 4096  # characters: a JWT is rarely a tenth of it
MAX_CHANNELS_CLAIM = 100  # entries of a `channels` claim
MIN_SECRET = 32  # bytes: RFC 7518 asks HS256 keys for at least the hash's size
SECRET_PARAMS = ("token", "access_token")  # query parameters that carry tokens: never shown to scripts


class Unauthorized(Exception):
    """No usable token: 401, and the reason for the client."""


class Forbidden(Exception):
    """A valid token that does not cover what was asked for: 403."""


@dataclass(frozen=True)
class Claims:
    values: dict[str, Any]  # the whole payload, as scripts see it (`conn.user`)
    expires: float | None  # epoch seconds (`exp`), when the connection must end


def _public_key(text: str) -> tuple[Any, str] | None:
    """The key and its algorithm from PEM text or the path of a PEM file."""
    if not text:
        return None
    pem = text
    if "-----BEGIN" not in text:
        try:
            pem = Path(text).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config key 'auth.jwt_public_key': not PEM text, and no readable file at {text!r} "
                              f"({e})") from None
    try:
        key = load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError, TypeError) as e:
        raise ConfigError(f"config key 'auth.jwt_public_key': not a PEM public key ({e})") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ConfigError("config key 'auth.jwt_public_key': an RSA key (RS256) or a P-256 EC key (ES256) is needed")


def covers(pattern: str, path: str) -> bool:
    """Does a `channels` entry (a path, or a pattern of `{name}` segments) take in channel `path`?"""
    if pattern == path:
        return True
    want, got = pattern.split("/"), path.split("/")
    if len(want) != len(got):
        return False
    return all(g != "" if w.startswith("{") else w == g for w, g in zip(want, got, strict=True))


class Verifier:
    def __init__(self, config: AuthConfig) -> None:
        secret = config.jwt_secret
        if secret and len(secret.encode()) < MIN_SECRET:
            raise ConfigError(f"config key 'auth.jwt_secret': at least {MIN_SECRET} bytes, or a guessed secret "
                              "forges any token")
        self._keys: dict[str, Any] = {}
        if secret:
            self._keys["HS256"] = secret
        public = _public_key(config.jwt_public_key)
        if public is not None:
            self._keys[public[1]] = public[0]
        self.audience = config.audience or None
        self.issuer = config.issuer or None
        self.cookie = config.cookie

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    def token_from(self, headers: Mapping[str, str], query: Mapping[str, str],
                   cookies: Mapping[str, str]) -> str | None:
        """`Authorization: Bearer`, then `?token=` (EventSource cannot set headers), then the cookie."""
        auth = headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return query.get("token") or cookies.get(self.cookie) or None

    def verify(self, token: str) -> Claims:
        """The token's claims, or Unauthorized saying what is wrong with it."""
        if not self._keys:
            raise Unauthorized("this server accepts no tokens (auth.jwt_secret or auth.jwt_public_key is not set)")
        if len(token) > MAX_TOKEN:
            raise Unauthorized(f"the token is longer than {MAX_TOKEN} characters")
        if not token.isascii():  # a JWT is base64url and dots; anything else is not one (and PyJWT would raise)
            raise Unauthorized("the token is not a JWT")
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise Unauthorized("the token is not a JWT") from None
        key = self._keys.get(alg) if isinstance(alg, str) else None
        if key is None or not isinstance(alg, str):
            accepted = ", ".join(sorted(self._keys))
            raise Unauthorized(f"tokens signed with {str(alg)[:20]!r} are not accepted (only {accepted})")
        try:
            payload = jwt.decode(token, key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                                 options={"verify_aud": self.audience is not None, "require": []})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("the token is not for this audience (auth.audience)") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("the token is not from this issuer (auth.issuer)") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("the token's signature does not verify") from None
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as e:  # PyJWT lets int(exp) errors out
            raise Unauthorized(f"the token is not valid ({str(e)[:100]})") from None
        if not isinstance(payload, dict):
            raise Unauthorized("the token's payload is not an object")
        channels = payload.get("channels")
        if channels is not None and not (
                isinstance(channels, list) and len(channels) <= MAX_CHANNELS_CLAIM
                and all(isinstance(c, str) and not rules.stream_problem(c) for c in channels)):
            raise Unauthorized(f"the token's channels claim must be a list of at most {MAX_CHANNELS_CLAIM} stream "
                               "paths or patterns")
        exp = payload.get("exp")
        # PyJWT checked `exp` as int(exp) would read it (a string of digits too): so it is read here.
        try:
            expires = None if exp is None else float(int(exp))
        except OverflowError:  # past any date a timer can wait for: the token does not expire
            expires = None
        return Claims(payload, expires)

    @staticmethod
    def may_read(claims: Claims, path: str) -> bool:
        channels = claims.values.get("channels")
        return channels is None or any(covers(c, path) for c in channels)

    @staticmethod
    def seconds_left(claims: Claims) -> float | None:
        return None if claims.expires is None else claims.expires - time.time()
