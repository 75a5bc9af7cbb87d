"""The boundary reader: every envelope a tampered prelude could hand back is refused, with the reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.config import LimitsConfig
from engine.sandbox.commands import AddField, AddRoute, AddStream, Log, Malformed, Send, SendSubscription
from engine.sandbox.envelope import UNCHANGED, parse_envelope, read_commands

LIMITS = LimitsConfig(max_message_bytes=1000, max_commands_per_call=10)


def env(**parts: Any) -> str:
    return json.dumps(parts)


def test_what_the_prelude_makes_is_read_into_typed_commands() -> None:
    e = parse_envelope(env(o={"r": {"s": 201, "b": "hi", "t": "text/plain", "h": {"X-A": "1"}}}, c=[
        {"op": "log", "level": "info", "msg": "hello"},
        {"op": "route", "method": "GET", "path": "/a/{id}/*", "handler": 0},
        {"op": "stream", "path": "/s"},
        {"op": "send", "data": "x", "event": "tick.v1:a-b", "paths": ["/s", "/s", "/t"]},
        {"op": "gql", "kind": "query", "name": "hello", "sdl": "type Query { hello: String }", "handler": 1,
         "types": {}},
        {"op": "gqlsend", "name": "hello", "data": "{}", "json": True},
    ], s=[{"id": 3, "o": {"j": "1"}}], t=1234.5), LIMITS)
    assert e.out == {"r": {"s": 201, "b": "hi", "t": "text/plain", "h": {"X-A": "1"}}}
    assert e.commands == [
        Log("info", "hello"), AddRoute("GET", "/a/{id}/*", 0), AddStream("/s"),
        Send("x", "tick.v1:a-b", ("/s", "/t")),  # each stream once
        AddField("query", "hello", "type Query { hello: String }", 1, {}), SendSubscription("hello", "{}", True),
    ]
    assert e.settled == [(3, {"j": "1"})] and e.next_timer == 1234.5
    assert parse_envelope(env(o=None), LIMITS).next_timer is UNCHANGED
    fast = parse_envelope("R204\ntext/plain\nline one\nline two", LIMITS)
    assert fast.out == {"r": {"s": 204, "t": "text/plain", "b": "line one\nline two"}}


FORGED: dict[str, tuple[Any, str]] = {
    "not a string": (None, "returned no result"),
    "empty": ("", "returned no result"),
    "not JSON": ("not json", "not JSON"),
    "nested too deep": ("[" * 100000, "not JSON"),
    "not an object": ("[1, 2]", "not an object"),
    "fast path status": ("R999\ntext/plain\nx", "malformed plain response"),
    "fast path digits": ("R²00\ntext/plain\nx", "malformed plain response"),
    "fast path short": ("R200", "malformed plain response"),
    "commands not a list": (env(c={"op": "log"}), "commands must be a list"),
    "too many commands": (env(c=[{"op": "log", "level": "info", "msg": "x"}] * 11),
                          "11 commands in one call; the limit is 10"),
    "command not an object": (env(c=["send"]), "command 0 is not an object"),
    "unknown op": (env(c=[{"op": "exec", "cmd": "rm"}]), "unknown command"),
    "stream on /health": (env(c=[{"op": "stream", "path": "/health"}]), "/health is reserved"),
    "stream on /graphql": (env(c=[{"op": "stream", "path": "/graphql"}]), "is reserved"),
    "stream on /_engine": (env(c=[{"op": "stream", "path": "/_engine/logs"}]), "is reserved"),
    "stream on /metrics": (env(c=[{"op": "stream", "path": "/metrics"}]), "is reserved"),
    "route on /_engine": (env(c=[{"op": "route", "method": "GET", "path": "/_engine/x", "handler": 0}]),
                          "is reserved"),
    "route with a newline": (env(c=[{"op": "route", "method": "GET", "path": "/a\nb", "handler": 0}]),
                             "must not contain whitespace"),
    "route method": (env(c=[{"op": "route", "method": "CONNECT", "path": "/a", "handler": 0}]),
                     "method must be one of"),
    "route handler": (env(c=[{"op": "route", "method": "GET", "path": "/a", "handler": "0"}]),
                      "handler must be a handler index"),
    "route bad segment": (env(c=[{"op": "route", "method": "GET", "path": "/a/*/b", "handler": 0}]),
                          "'*' may only be the last segment"),
    "stream path too long": (env(c=[{"op": "stream", "path": "/" + "a" * 200}]), "longer than 200"),
    "message too large": (env(c=[{"op": "send", "data": "x" * 1001}]), "the limit is 1000"),
    "message too large in UTF-8": (env(c=[{"op": "send", "data": "é" * 501}]), "at least 1002 bytes"),
    "message not text": (env(c=[{"op": "send", "data": {"a": 1}}]), "data must be a string"),
    "event injection": (env(c=[{"op": "send", "data": "x", "event": "a\nid: 7-7\nevent: reset\ndata: fake"}]),
                        "event name must be"),
    "event too long": (env(c=[{"op": "send", "data": "x", "event": "e" * 65}]), "event name must be"),
    "event 8 MiB": (env(c=[{"op": "send", "data": "x", "event": "e" * (8 << 20)}]), "event name must be"),
    "event empty": (env(c=[{"op": "send", "data": "x", "event": ""}]), "event name must be"),
    "json flag on text that is not JSON": (env(c=[{"op": "send", "data": '1,"id":"7-7"', "json": True}]),
                                           "data is not JSON, yet json is true"),
    "json flag not a bool": (env(c=[{"op": "send", "data": "1", "json": 1}]), "json must be true or false"),
    "event the engine's own": (env(c=[{"op": "send", "data": "x", "event": "reset"}]), "is the engine's own"),
    "event the engine's own, to one": (env(c=[{"op": "sendto", "id": "0123abcd.AAAAAAAAAAAAAAAA",
                                       "data": "x", "event": "connected"}]), "is the engine's own"),
    "send to a subscription's stream": (env(c=[{"op": "send", "data": "x", "paths": ["/graphql/subscription/a"]}]),
                                        "is reserved by the engine; it cannot be sent to"),
    "send paths not a list": (env(c=[{"op": "send", "data": "x", "paths": "/s"}]), "paths must be a list"),
    "gql kind": (env(c=[{"op": "gql", "kind": "schema", "name": "a", "sdl": "", "handler": 0, "types": {}}]),
                 "kind must be"),
    "gql name": (env(c=[{"op": "gql", "kind": "query", "name": "__schema", "sdl": "", "handler": 0,
                         "types": {}}]), "a GraphQL name must be"),
    "gql sdl too long": (env(c=[{"op": "gql", "kind": "query", "name": "a", "sdl": " " * 70000, "handler": 0,
                                 "types": {}}]), "sdl is longer than"),
    "gql types": (env(c=[{"op": "gql", "kind": "query", "name": "a", "sdl": "", "handler": 0,
                          "types": {"User": "type User"}}]), "types.User must be {kind, text}"),
    "gqlsend too large": (env(c=[{"op": "gqlsend", "name": "a", "data": "x" * 1001, "json": False}]),
                          "the limit is 1000"),
    "gqlsend json flag": (env(c=[{"op": "gqlsend", "name": "a", "data": "x", "json": "yes"}]),
                          "json must be true or false"),
    "log level": (env(c=[{"op": "log", "level": "critical", "msg": "x"}]), "level must be one of"),
    "status": (env(o={"r": {"s": 700, "b": ""}}), "status must be an integer from 200 to 599"),
    "status bool": (env(o={"r": {"s": True, "b": ""}}), "status must be an integer"),
    "body": (env(o={"r": {"s": 200, "b": 5}}), "body must be a string"),
    "headers": (env(o={"r": {"s": 200, "b": "", "h": {"X": 1}}}), "headers must be an object of strings"),
    "promise id": (env(o={"p": -1}), "Promise id must be a positive integer"),
    "outcome fields": (env(o={"zz": 1}), "unknown fields"),
    "stream response with a body": (env(o={"r": {"s": 200, "g": 1, "b": "x"}}), "without a body"),
    "stream response id": (env(o={"r": {"s": 200, "g": -1}}), "without a body"),
    "stream maxSeconds": (env(o={"r": {"s": 200, "g": 1, "ms": 1e9}}), "maxSeconds must be from 0 to 604800"),
    "step items not a list": (env(o={"items": "x"}), "a step's values must be a list"),
    "step items too many": (env(o={"items": [{"t": "x"}] * 1025}), "a step's values must be a list"),
    "step item nested response": (env(o={"items": [{"r": {"s": 200, "b": ""}}]}), "must be {d}, {t}"),
    "step end not last": (env(o={"items": [{"d": 1}, {"t": "x"}]}), "must be its step's last value"),
    "step bytes above 255": (env(o={"items": [{"x": "\u0100"}]}), "code points up to 255"),
    "step sse event name": (env(o={"items": [{"ev": "a\nid: 7", "t": "x"}]}), "event name must be"),
    "step sse engine event": (env(o={"items": [{"ev": "reset", "t": "x"}]}), "is the engine's own"),
    "step sse id line break": (env(o={"items": [{"eid": "1\ndata: x", "t": "x"}]}), "without line breaks"),
    "step sse retry": (env(o={"items": [{"rty": -5, "t": "x"}]}), "retry must be milliseconds"),
    "step sse data twice": (env(o={"items": [{"ev": "a", "t": "x", "j": "1"}]}), "its data as j or t"),
    "error status": (env(o={"e": {"m": "x", "st": "", "s": 500}}), "status must be an integer from 400 to 499"),
    "settled id": (env(s=[{"o": {}}]), "settled Promise needs an id"),
    "timer": (env(t="soon"), "next timer must be a time or null"),
    "timer infinite": ('{"t": 1e999}', "next timer must be a time or null"),
    "pieces count": (env(m=-1), "count of pieces to come"),
    "pieces count huge": (env(m=10**9), "count of pieces to come"),
}


@pytest.mark.parametrize("name", list(FORGED))
def test_forged_envelopes_are_refused_with_the_reason(name: str) -> None:
    raw, reason = FORGED[name]
    with pytest.raises(Malformed) as info:
        parse_envelope(raw, LIMITS)
    assert reason in str(info.value)


def test_long_log_lines_and_texts_are_cut() -> None:
    e = parse_envelope(env(c=[{"op": "log", "level": "error", "msg": "x" * 100000}],
                           o={"e": {"m": "y" * 100000, "st": ""}}), LIMITS)
    msg = e.commands[0].msg  # type: ignore[union-attr]
    assert len(msg) < 17000 and msg.endswith("... (truncated)")
    assert len(e.out["e"]["m"]) == 65536  # type: ignore[index]


def test_a_large_envelope_comes_in_pieces_each_checked_and_counted() -> None:
    e = parse_envelope(env(o=None, c=[{"op": "log", "level": "info", "msg": "a"}], m=2), LIMITS)
    assert e.more == 2 and len(e.commands) == 1
    piece = json.dumps([{"op": "stream", "path": "/s"}] * 4)
    assert read_commands(piece, 1, LIMITS) == [AddStream("/s")] * 4
    with pytest.raises(Malformed, match="command 5 \\(stream\\): /health is reserved"):
        read_commands(json.dumps([{"op": "stream", "path": "/s"}, {"op": "stream", "path": "/health"}]), 4, LIMITS)
    with pytest.raises(Malformed, match="11 commands in one call; the limit is 10"):
        read_commands(piece, 7, LIMITS)  # the pieces together count toward the cap
    with pytest.raises(Malformed, match="not JSON"):
        read_commands("[", 0, LIMITS)


def test_response_bodies_and_resolver_values_are_bounded() -> None:
    limits = LimitsConfig(max_response_bytes=100)
    assert parse_envelope("R200\ntext/plain\n" + "x" * 100, limits).out is not None
    for raw in ("R200\ntext/plain\n" + "x" * 101, env(o={"r": {"s": 200, "b": "é" * 51}}),
                env(o={"j": json.dumps("x" * 200)}), env(s=[{"id": 1, "o": {"r": {"s": 200, "b": "x" * 101}}}])):
        with pytest.raises(Malformed, match=r"the limit is 100 \(limits.max_response_bytes\)"):
            parse_envelope(raw, limits)
