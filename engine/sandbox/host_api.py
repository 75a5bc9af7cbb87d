"""The declared table of JS globals a script sees; `prelude.js` must define exactly these.

JS cannot call Python while a time limit is set, so each global is a JS shim (in `prelude.js`) that
validates its arguments, throws a JS Error on bad input and queues a command for the engine. The
prelude refuses to start if its functions and this table disagree, and a test checks the README
documents every row.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostFunction:
    name: str  # a global name, or "console.log" for a method of a global object
    signature: str
    doc: str


HOST_API: tuple[HostFunction, ...] = (
    HostFunction("register", "register(path, handler, method = 'GET')",
                 "serve `method path` with `handler` (a function or the name of one)"),
    HostFunction("registerWebStream", "registerWebStream(path, options?)",
                 "serve `GET path` as a stream; a pattern (`/rooms/{room}`) has a channel per concrete path; "
                 "options: `onConnect`, `onMessage`, `onDisconnect`, `auth: \"required\"`"),
    HostFunction("sendStreamMessage", "sendStreamMessage(data, options?)",
                 "send to every stream (`options.path`: one or a list; `options.event`: the SSE event)"),
    HostFunction("sendStreamMessageToPath", "sendStreamMessageToPath(path, data, options?)",
                 "send to one channel (a plain stream's path, or a concrete path of a pattern); unknown: throws"),
    HostFunction("sendToConnection", "sendToConnection(id, data, options?)",
                 "send to one connection only (`conn.id`; `options.event`); not kept in any history"),
    HostFunction("closeConnection", "closeConnection(id, reason?)",
                 "end one connection, with a `close` event saying why"),
    HostFunction("registerGraphQLQuery", "registerGraphQLQuery(name, sdl, resolver)",
                 "add the field `name` to the schema's `Query`; `resolver(args, context)` returns its value"),
    HostFunction("registerGraphQLMutation", "registerGraphQLMutation(name, sdl, resolver)",
                 "add the field `name` to the schema's `Mutation`"),
    HostFunction("registerGraphQLSubscription", "registerGraphQLSubscription(name, sdl, resolver)",
                 "add the field `name` to `Subscription` and the stream `/graphql/subscription/name`"),
    HostFunction("sendSubscriptionMessage", "sendSubscriptionMessage(name, data)",
                 "deliver `data` to every subscriber of `name` (and its stream)"),
    HostFunction("writeLog", "writeLog(message)", "write a line to the server log and this script's log"),
    HostFunction("listLogs", "listLogs()", "this script's recent log lines, oldest first"),
    HostFunction("console.log", "console.log(...values)", "log at info level"),
    HostFunction("console.info", "console.info(...values)", "log at info level"),
    HostFunction("console.debug", "console.debug(...values)", "log at debug level"),
    HostFunction("console.warn", "console.warn(...values)", "log at warning level"),
    HostFunction("console.error", "console.error(...values)", "log at error level"),
    HostFunction("setTimeout", "setTimeout(fn, ms = 0, ...args)", "run `fn` once after `ms`; returns an id"),
    HostFunction("setInterval", "setInterval(fn, ms, ...args)",
                 "run `fn` every `ms` (at least 4); returns an id"),
    HostFunction("setLocalTimeout", "setLocalTimeout(fn, ms = 0, ...args)",
                 "as setTimeout, on every engine process (a top-level setTimeout runs on one of them)"),
    HostFunction("setLocalInterval", "setLocalInterval(fn, ms, ...args)",
                 "as setInterval, on every engine process (a top-level setInterval runs on one of them)"),
    HostFunction("clearTimeout", "clearTimeout(id)", "cancel a timer"),
    HostFunction("clearInterval", "clearInterval(id)", "cancel a timer"),
    # Privileged scripts only (scripts.privileged); any other script gets an Error saying so.
    HostFunction("listScripts", "listScripts()", "privileged: every script's name, sorted"),
    HostFunction("getScript", "getScript(name)", "privileged: a script's source (what its file holds), or null"),
    HostFunction("upsertScript", "upsertScript(name, source)",
                 "privileged: write `scripts/name` and load it, after this call (its result in listLogsForUri)"),
    HostFunction("deleteScript", "deleteScript(name)",
                 "privileged: delete the script's file and unload it; whether it existed"),
    HostFunction("listLogsForUri", "listLogsForUri(name)", "privileged: a script's recent log lines, oldest first"),
    HostFunction("listAssets", "listAssets()", "privileged: every asset's path, sorted"),
    HostFunction("fetchAsset", "fetchAsset(path)",
                 "privileged: `{path, contentType, size, modified, content}` (a string for text, a Uint8Array "
                 "otherwise), or null"),
    HostFunction("upsertAsset", "upsertAsset(path, content, contentType?)",
                 "privileged: write an asset (a string or bytes), served at `path`; the type is guessed from the "
                 "name when not given"),
    HostFunction("deleteAsset", "deleteAsset(path)", "privileged: delete an asset; whether it existed"),
)

HOST_NAMES: tuple[str, ...] = tuple(f.name for f in HOST_API)
