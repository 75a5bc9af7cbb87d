"""One call's result as the prelude hands it back, read as untrusted input.

The prelude returns one string per call: `{o: outcome, c: commands, s: settled Promises, t: next
timer due}` as JSON, or `R<status>\\n<content type>\\n<body>` for a plain response and nothing else.
A script can tamper with the built-ins the prelude uses, so every part is checked here, on the
script's thread, before the event loop sees it; anything that is not what the prelude makes is
`Malformed`, and fails that call alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from engine import rules
from engine.config import LimitsConfig
from engine.errors import ScriptError
from engine.sandbox.commands import Command, Malformed, read_command, size_problem

UNCHANGED: Any = type("Unchanged", (), {"__repr__": lambda self: "UNCHANGED"})()
_MAX_TEXT = 65536  # error messages and stacks: for logs, never needed longer

Outcome = dict[str, Any]


@dataclass(slots=True)
class Envelope:
    """What one dispatch into JS produced, checked."""

    out: Outcome | None = None
    commands: list[Command] = field(default_factory=list)
    settled: list[tuple[int, Outcome | ScriptError]] = field(default_factory=list)
    next_timer: Any = UNCHANGED  # epoch ms, None for no timers, or UNCHANGED
    error: ScriptError | None = None
    deferred: bool = False  # a load's envelope: applied by the caller, only if the load is accepted
    call: bool = False  # a handler's or resolver's: only these may leave a Promise to wait on
    more: int = 0  # pieces of commands still to fetch (a large envelope comes in pieces)
    size: int = 0  # characters it came in, pieces included: what holding it costs, roughly
    job_error: ScriptError | None = None  # a Promise job after the call failed, not the call's own

    @property
    def pending(self) -> int | None:
        """The id of the Promise the call returned, if it did."""
        return self.out.get("p") if self.out else None


def parse_envelope(raw: Any, limits: LimitsConfig) -> Envelope:
    """The prelude's string as an Envelope; Malformed if it is not one."""
    if not isinstance(raw, str) or not raw:
        raise Malformed("the call returned no result")
    if raw[0] == "R":  # the prelude's fast path for a plain response and nothing else
        parts = raw[1:].split("\n", 2)
        if len(parts) != 3 or not parts[0].isascii() or not parts[0].isdigit() or not 200 <= int(parts[0]) <= 599:
            raise Malformed("a malformed plain response")
        _check_size(parts[2], limits, "a response body")
        return Envelope(out={"r": {"s": int(parts[0]), "t": parts[1], "b": parts[2]}})
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise Malformed("the call's result is not JSON") from None
    if not isinstance(data, dict):
        raise Malformed("the call's result is not an object")
    env = Envelope(size=len(raw))
    if data.get("o") is not None:
        env.out = _outcome(data["o"], limits)
    env.commands = _commands(data.get("c", []), 0, limits)
    more = data.get("m", 0)
    if not isinstance(more, int) or isinstance(more, bool) or not 0 <= more <= limits.max_commands_per_call:
        raise Malformed("the count of pieces to come must be a small integer")
    env.more = more
    raw_settled = data.get("s", [])
    if not isinstance(raw_settled, list) or len(raw_settled) > limits.max_commands_per_call:
        raise Malformed("settled Promises must be a list")
    for item in raw_settled:
        if not isinstance(item, dict) or not _is_id(item.get("id")):
            raise Malformed("a settled Promise needs an id")
        env.settled.append((item["id"], _outcome(item.get("o"), limits)))
    if "t" in data:
        due = data["t"]
        if due is not None and (isinstance(due, bool) or not isinstance(due, int | float) or not math.isfinite(due)):
            raise Malformed("the next timer must be a time or null")
        env.next_timer = due
    return env


def read_commands(raw: Any, start: int, limits: LimitsConfig) -> list[Command]:
    """One piece of a large envelope's commands (JSON text of a list); `start` is how many came before."""
    if not isinstance(raw, str):
        raise Malformed("a piece of commands must be JSON text")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise Malformed("a piece of commands is not JSON") from None
    return _commands(data, start, limits)


def _commands(raw: Any, start: int, limits: LimitsConfig) -> list[Command]:
    if not isinstance(raw, list):
        raise Malformed("commands must be a list")
    if start + len(raw) > limits.max_commands_per_call:
        raise Malformed(f"{start + len(raw)} commands in one call; the limit is {limits.max_commands_per_call} "
                        "(limits.max_commands_per_call)")
    return [read_command(c, start + i, limits) for i, c in enumerate(raw)]


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise Malformed(f"{what} must be a string")
    return value[:_MAX_TEXT]


def _check_size(text: str, limits: LimitsConfig, what: str) -> None:
    problem = size_problem(text, limits.max_response_bytes, what, "limits.max_response_bytes")
    if problem:
        raise Malformed(problem)


def _outcome(o: Any, limits: LimitsConfig) -> Outcome:
    """A call's outcome: a response `r`, a pending Promise `p`, an error `e`, a bad value `bad`, a
    resolver's or hook's JSON `j`, a hook's text `t` or refusal `f`, or nothing (undefined)."""
    if not isinstance(o, dict):
        raise Malformed("an outcome must be an object")
    if "r" in o:
        response = _response(o["r"])
        if "b" in response:
            _check_size(response["b"], limits, "a response body")
        return {"r": response}
    if "items" in o:
        return {"items": _step_items(o, limits)}
    if "d" in o:
        if o["d"] != 1 or len(o) != 1:
            raise Malformed("the end of a stream must be {d: 1}")
        return {"d": 1}
    if "x" in o:
        chunk = o["x"]
        if not isinstance(chunk, str) or len(o) != 1:
            raise Malformed("a yielded chunk must be {x: text}")
        if not chunk.isascii() and max(chunk) > "\xff":
            raise Malformed("a yielded chunk's text must hold bytes (code points up to 255)")
        _check_size(chunk, limits, "a yielded chunk")
        return {"x": chunk}
    if "ev" in o or "eid" in o or "rty" in o:
        return _sse_item(o, limits)
    if "p" in o:
        if not _is_id(o["p"]):
            raise Malformed("a Promise id must be a positive integer")
        return {"p": o["p"]}
    if "e" in o:
        e = o["e"]
        if not isinstance(e, dict):
            raise Malformed("an error must be an object")
        out: dict[str, str | int] = {"m": _text(e.get("m"), "an error's message"),
                                     "st": _text(e.get("st", ""), "a stack")}
        status = e.get("s")
        if status is not None:
            if type(status) is not int or not 400 <= status <= 499:
                raise Malformed("an error's status must be an integer from 400 to 499")
            out["s"] = status
        return {"e": out}
    if "bad" in o:
        return {"bad": _text(o["bad"], "bad")}
    if "j" in o:
        if not isinstance(o["j"], str):
            raise Malformed("a resolver's value must be JSON text")
        _check_size(o["j"], limits, "a resolver's value")
        return {"j": o["j"]}
    if "t" in o:
        if not isinstance(o["t"], str):
            raise Malformed("a hook's message must be a string")
        _check_size(o["t"], limits, "a hook's message")
        return {"t": o["t"]}
    if "f" in o:
        if o["f"] != 1 or len(o) != 1:
            raise Malformed("a refusal must be {f: 1}")
        return {"f": 1}
    if o:
        raise Malformed("an outcome with unknown fields")
    return {}


MAX_STEP_ITEMS = 1024


def _step_items(o: dict[str, Any], limits: LimitsConfig) -> list[Outcome]:
    """A streaming step's values: each an end (`d`), a value (`t`, `j`, `x`, with SSE fields), or a
    failure (`e`, `bad`); nothing else, and an end or failure only last."""
    items = o["items"]
    if len(o) != 1 or not isinstance(items, list) or not 1 <= len(items) <= MAX_STEP_ITEMS:
        raise Malformed(f"a step's values must be a list of 1 to {MAX_STEP_ITEMS}")
    out = []
    for i, raw in enumerate(items):
        if not isinstance(raw, dict) or not raw or raw.keys() & {"r", "p", "f", "items"}:
            raise Malformed("a step's value must be {d}, {t}, {j}, {x}, {e} or {bad}")
        item = _outcome(raw, limits)
        if ("d" in item or "e" in item or "bad" in item) and i != len(items) - 1:
            raise Malformed("a stream's end or failure must be its step's last value")
        out.append(item)
    return out


def _sse_item(o: dict[str, Any], limits: LimitsConfig) -> Outcome:
    """A yielded SSE item: its data as `t` or `j`, and the fields it set (event name, id, retry)."""
    out: dict[str, Any] = {}
    if "ev" in o:
        problem = rules.event_problem(o["ev"]) if isinstance(o["ev"], str) else "an event name must be text"
        if problem:
            raise Malformed(problem)
        out["ev"] = o["ev"]
    if "eid" in o:
        eid = o["eid"]
        if not isinstance(eid, str) or len(eid) > 200 or any(c in eid for c in "\r\n\0"):
            raise Malformed("a yielded id must be at most 200 characters, without line breaks")
        out["eid"] = eid
    if "rty" in o:
        if type(o["rty"]) is not int or not 0 <= o["rty"] <= 86_400_000:
            raise Malformed("a yielded retry must be milliseconds from 0 to 86400000")
        out["rty"] = o["rty"]
    data = o.get("j", o.get("t"))
    if not isinstance(data, str) or ("j" in o) == ("t" in o) or len(o) != len(out) + 1:
        raise Malformed("a yielded SSE item must carry its data as j or t, and nothing else")
    _check_size(data, limits, "a yielded value")
    out["j" if "j" in o else "t"] = data
    return out


def _response(r: Any) -> dict[str, Any]:
    if not isinstance(r, dict):
        raise Malformed("a response must be an object")
    status, body, content_type, headers = r.get("s"), r.get("b"), r.get("t"), r.get("h")
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise Malformed("a response status must be an integer from 200 to 599")
    gen = r.get("g")
    if gen is not None:
        if not _is_id(gen) or body is not None:
            raise Malformed("a streaming response is {s, g: <iterator id>} without a body")
        out: dict[str, Any] = {"s": status, "g": gen}
        most = r.get("ms")
        if most is not None:
            if not isinstance(most, (int, float)) or isinstance(most, bool) or not 0 < most <= 604_800:
                raise Malformed("a streaming response's maxSeconds must be from 0 to 604800")
            out["ms"] = float(most)
    elif not isinstance(body, str):
        raise Malformed("a response body must be a string")
    else:
        out = {"s": status, "b": body}
    if content_type is not None:
        out["t"] = _text(content_type, "contentType")
    if headers is not None:
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise Malformed("response headers must be an object of strings")
        too_long = any(len(k) + len(v) > rules.MAX_HEADER_CHARS for k, v in headers.items())
        if len(headers) > rules.MAX_HEADERS or too_long:
            raise Malformed(f"at most {rules.MAX_HEADERS} headers of {rules.MAX_HEADER_CHARS} characters each")
        out["h"] = headers
    return out
