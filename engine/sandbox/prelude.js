// The JS half of the host API, evaluated in every script context before the script itself.
// JS cannot call Python while a time limit is set, so each host function validates its arguments,
// throws an Error a script can catch, and queues a command; the engine drains the queue after every
// call (see context.py). Everything returned to Python is one JSON string (lone surrogates escaped).
//
// A script may replace any built-in (JSON.stringify, Array.prototype.push, Object.prototype.toJSON,
// RegExp.prototype.exec, ...). So the prelude captures the built-ins it uses before any script code
// runs, keeps its own records on null prototypes, and reads every script value once. That keeps a
// script from changing how its own commands are built; the engine still checks every command in
// Python (envelope.py), which is the real boundary: these checks are for good error messages.
(function (configJSON, sdl) {
  "use strict";
  // ---- built-ins, captured now ------------------------------------------------------------
  const g = globalThis;
  const call = Function.prototype.call;
  const uncurry = (fn) => call.bind(fn);
  const stringify = JSON.stringify;
  const parseJSON = JSON.parse;
  const keys = Object.keys;
  const defineProperty = Object.defineProperty;
  const setPrototypeOf = Object.setPrototypeOf;
  const isArray = Array.isArray;
  const isInteger = Number.isInteger;
  const toNumber = Number;
  const toText = String;
  const now = Date.now;
  const ErrorCtor = Error;
  const RegExpCtor = RegExp;
  const PromiseCtor = Promise;
  const Uint8ArrayCtor = Uint8Array;
  const ArrayBufferCtor = ArrayBuffer;
  const fromCharCode = String.fromCharCode;
  const subarray = uncurry(Uint8Array.prototype.subarray);
  const toBase64 = uncurry(Uint8Array.prototype.toBase64);
  const fromBase64 = Uint8Array.fromBase64;
  const encodeURIComponentNative = encodeURIComponent;
  const unescapeNative = unescape;
  const evalGlobal = g.eval;
  const hasOwn = uncurry(Object.prototype.hasOwnProperty);
  const reExec = uncurry(RegExp.prototype.exec);
  const strSlice = uncurry(String.prototype.slice);
  const strIndexOf = uncurry(String.prototype.indexOf);
  const isWellFormed = uncurry(String.prototype.isWellFormed);
  const strStartsWith = uncurry(String.prototype.startsWith);
  const strEndsWith = uncurry(String.prototype.endsWith);
  const toUpper = uncurry(String.prototype.toUpperCase);
  const toLower = uncurry(String.prototype.toLowerCase);
  const charCodeAt = uncurry(String.prototype.charCodeAt);
  const arrJoin = uncurry(Array.prototype.join);
  const arrSlice = uncurry(Array.prototype.slice);
  const arrSort = uncurry(Array.prototype.sort);
  const promiseResolve = uncurry(Promise.resolve);
  const promiseThen = uncurry(Promise.prototype.then);
  const fnApply = uncurry(Function.prototype.apply);

  // QuickJS-NG's V8-style Error.prepareStackTrace hands out the functions on the stack
  // (CallSite.getFunction), the prelude's included: it is switched off for good, before any script.
  defineProperty(ErrorCtor, "prepareStackTrace", { value: undefined, writable: false, configurable: false });

  // Records and lists of the prelude's own: no prototype, so nothing a script adds to
  // Object.prototype or Array.prototype (getters, setters, toJSON) reaches them.
  const rec = (o) => setPrototypeOf(o, null);
  const list = () => setPrototypeOf([], null);
  const add = (l, v) => { l[l.length] = v; };
  const test = (re, s) => reExec(re, s) !== null;

  // "a/b/c" split on a one-character separator, without String.prototype.split (which a script
  // can redirect through Symbol.split).
  function splitOn(s, sep) {
    const out = list();
    let start = 0;
    for (;;) {
      const i = strIndexOf(s, sep, start);
      if (i < 0) { add(out, strSlice(s, start)); return out; }
      add(out, strSlice(s, start, i));
      start = i + 1;
    }
  }

  const CONFIG = parseJSON(configJSON);
  const HOST_NAMES = list();
  for (let i = 0; i < CONFIG.hostNames.length; i++) add(HOST_NAMES, CONFIG.hostNames[i]);
  const RULES = CONFIG.rules;
  const METHODS = list();
  for (let i = 0; i < RULES.methods.length; i++) add(METHODS, RULES.methods[i]);
  const RESERVED = list();
  for (let i = 0; i < RULES.reserved.length; i++) add(RESERVED, new RegExpCtor(RULES.reserved[i]));
  const BAD_PATH = new RegExpCtor(RULES.badPathChars);
  const EVENT_NAME = new RegExpCtor(RULES.eventName);
  const GRAPHQL_NAME = new RegExpCtor(RULES.graphqlName);
  const MAX_LOG_LINE = RULES.maxLogLine;
  const SUBSCRIPTION_STREAMS = RULES.engineStreams + "subscription/";
  const MIN_INTERVAL_MS = 4;
  // The names of the host functions' JS functions (filled in below): a stack frame of one of them is
  // where the script called the host, and everything above it is the prelude's own, hidden from
  // the errors the script sees.
  const API_FRAMES = rec({});

  let commands = list();
  let settled = list();
  const handlers = list();
  const timers = rec({}); // id -> {fn, args, due, every, owner}
  let timerSeq = 0;
  // A streaming response's generator owns the timers it sets while the engine steps it (and those
  // their callbacks set): when its client leaves, they settle at once (see `stop`), so a generator
  // sleeping between items reaches its return() now, not when the sleep would have ended.
  // (A stopped generator that sleeps in a loop without reaching a yield gets its sleeps back after
  // MAX_WAKES early wakes, rather than spinning its script's thread.)
  let stepping = 0; // the response whose code runs now: > 0 streaming, < 0 stopped (-id), 0 none
  // Timers set by the script's own top level (and by what those timers run) are the cluster's:
  // with several engine processes, only the elected one runs their callbacks (see `fire`), so a
  // ticker publishes once, not once per process. Timers set while serving a request, a hook or a
  // GraphQL resolver are this process's own (`local`), as are setLocalTimeout/setLocalInterval's.
  let local = false; // does the code running now serve something of this process's?
  const PARKED_MS = 1000;
  let wakes = 0; // early wakes the running stopped response had so far
  const MAX_WAKES = 100;
  const owned = rec({}); // iterator id -> {timer id: true}
  let firing = list(); // the due timers `fire` works through, over several calls when it must
  let firingNext = 0;
  let firingAt = 0;
  let callSeq = 0;
  let timersDirty = true;
  let runningTimer = 0;
  let logLines = list();
  let logMax = 500;
  let claims = rec({}); // "GET /a/{}" -> script that owns it (other scripts only)
  let streamClaims = rec({}); // "/events", "/rooms/{room}" -> script that owns it (other scripts only)
  let streamKeys = rec({}); // "/rooms/{}" -> {owner, path}: every stream, this script's too (owner null)
  let streamPatterns = list(); // the patterns among them, as segment lists ({} for a parameter)
  let gqlFields = rec({}); // "Query.hello" -> script that owns it (other scripts only)
  let gqlTypes = rec({}); // "User" -> {kind, text, owner}: types other scripts declare
  let maxMessageBytes = 1048576;
  let maxResponseBytes = 8388608;
  let maxCommands = 50000;
  const ownFields = rec({});
  const ownTypes = rec({}); // "User" -> {kind, text}: types this script declared
  const ownRoutes = rec({});
  const ownStreams = rec({}); // path as registered -> its key

  function hostError(message) {
    const e = new ErrorCtor(message);
    const lines = splitOn(toText(e.stack || ""), "\n");
    for (let i = 0; i < lines.length; i++) {
      const m = reExec(/^\s*at (\S+) \(/, lines[i]);
      if (m !== null && API_FRAMES[m[1]]) {
        defineProperty(e, "stack", { value: arrJoin(arrSlice(lines, i + 1), "\n"), writable: true, configurable: true });
        break;
      }
    }
    return e;
  }

  // Every command goes through here: the per-call cap, and a list no script can reach. The engine's
  // own notes (a timer that threw) are let through past the cap: one per timer at most.
  function queue(fn, cmd, own) {
    if (commands.length >= maxCommands && !own) {
      throw hostError(fn + ": this call has already made " + maxCommands + " host calls (limits.max_commands_per_call)");
    }
    add(commands, rec(cmd));
  }

  // The dispatcher's own frames (handle, fire, Function.prototype.apply) end every stack: drop them.
  function cleanStack(stack) {
    const lines = list();
    const all = splitOn(toText(stack || ""), "\n");
    for (let i = 0; i < all.length; i++) if (test(/\S/, all[i])) add(lines, all[i]);
    while (lines.length && test(/^\s*at (handle|resolve|fire|apply) \((<input>:\d+(:\d+)?|native)\)$/, lines[lines.length - 1])) lines.length--;
    return arrJoin(lines, "\n");
  }

  function describe(v) {
    if (v === undefined) return "undefined";
    if (v === null) return "null";
    if (typeof v === "string") return stringify(v.length > 60 ? strSlice(v, 0, 60) + "..." : v);
    if (typeof v === "function") return "a function";
    if (isArray(v)) return "an array";
    if (typeof v === "object") return "an object";
    return typeof v + " " + toText(v);
  }

  function format(v) {
    if (typeof v === "string") return v;
    try {
      if (v instanceof ErrorCtor) return v.stack ? v.name + ": " + v.message + "\n" + cleanStack(v.stack) : toText(v);
      if (typeof v === "object" && v !== null) {
        try { return stringify(v); } catch (e) { /* cyclic or BigInt inside */ }
      }
      return toText(v);
    } catch (e) {
      return "[unprintable]";
    }
  }

  function log(fn, level, args, own) {
    let text;
    if (args.length === 1 && typeof args[0] === "string") {
      text = args[0];
    } else {
      const parts = list();
      for (let i = 0; i < args.length; i++) add(parts, format(args[i]));
      text = arrJoin(parts, " ");
    }
    if (text.length > MAX_LOG_LINE) text = strSlice(text, 0, MAX_LOG_LINE) + "... (truncated)";
    queue(fn, { op: "log", level: level, msg: text }, own);
    add(logLines, text);
    if (logLines.length > 2 * logMax) logLines = tail(logLines, logMax); // trimmed now and then, not per line
  }

  function tail(l, n) {
    return setPrototypeOf(arrSlice(l, l.length > n ? l.length - n : 0), null);
  }

  // The rules every path follows, routes and streams alike.
  function checkPathText(fn, path, maxLength) {
    if (typeof path !== "string" || path.length === 0) throw hostError(fn + ": path must be a non-empty string starting with '/', got " + describe(path));
    if (path[0] !== "/") throw hostError(fn + ": path must start with '/', got " + describe(path));
    if (path.length > maxLength) throw hostError(fn + ": path is longer than " + maxLength + " characters");
    if (test(BAD_PATH, path)) throw hostError(fn + ": path must not contain whitespace, control characters, '?', '#' or '\\', got " + describe(path));
  }

  function checkReserved(fn, path) {
    for (let i = 0; i < RESERVED.length; i++) {
      if (test(RESERVED[i], path)) throw hostError(fn + ": " + path + " is reserved by the engine (" + RULES.reservedText + ")");
    }
  }

  function checkPath(fn, path, maxLength) {
    checkPathText(fn, path, maxLength);
    checkReserved(fn, path);
    const segments = splitOn(strSlice(path, 1), "/");
    const names = rec({});
    const key = list();
    for (let i = 0; i < segments.length; i++) {
      const seg = segments[i];
      const last = i === segments.length - 1;
      if (seg === "" && !last) throw hostError(fn + ": path has an empty segment ('//'): " + path);
      if (seg === "*") {
        if (!last) throw hostError(fn + ": '*' may only be the last segment: " + path);
        add(key, "*");
      } else if (strIndexOf(seg, "{") >= 0 || strIndexOf(seg, "}") >= 0) {
        const m = reExec(/^\{([A-Za-z_][A-Za-z0-9_]*)\}$/, seg);
        if (m === null) throw hostError(fn + ": a parameter must be a whole segment like {name}, got '" + seg + "' in " + path);
        if (names[m[1]]) throw hostError(fn + ": parameter {" + m[1] + "} appears twice in " + path);
        names[m[1]] = true;
        add(key, "{}");
      } else if (strIndexOf(seg, "*") >= 0) {
        throw hostError(fn + ": '*' must be a whole last segment ('/prefix/*'), got '" + seg + "' in " + path);
      } else {
        add(key, seg);
      }
    }
    return "/" + arrJoin(key, "/");
  }

  function resolveHandler(handler, where, fnName, what) {
    if (typeof handler === "function") return handler;
    if (handler === undefined || handler === null) throw hostError(fnName + ": missing " + what + " for " + where);
    if (typeof handler !== "string") throw hostError(fnName + ": " + what + " for " + where + " must be a function or the name of one, got " + describe(handler));
    if (!test(/^[A-Za-z_$][A-Za-z0-9_$]*$/, handler)) throw hostError(fnName + ": " + what + " name " + describe(handler) + " is not a valid function name");
    let fn;
    try { fn = (0, evalGlobal)(handler); } catch (e) { fn = undefined; } // finds let/const/function globals
    if (typeof fn !== "function") throw hostError(fnName + ": " + what + " '" + handler + "' for " + where + " is not a function defined in this script");
    return fn;
  }

  function register(path, handler, method) {
    if (method === undefined) method = "GET";
    if (typeof method !== "string" || !isMethod(toUpper(method))) {
      throw hostError("register: method must be one of " + arrJoin(METHODS, ", ") + ", got " + describe(method));
    }
    method = toUpper(method);
    const shape = checkPath("register", path, RULES.routePathMax);
    const key = method + " " + shape;
    const where = method + " " + path;
    const fn = resolveHandler(handler, where, "register", "handler");
    if (ownRoutes[key]) throw hostError("register: " + where + " is already registered by this script");
    const stream = streamKeys[shape];
    if (method === "GET" && stream !== undefined) {
      throw hostError("register: " + path + " is a stream" + (stream.owner === null ? "" : " of script " + stream.owner) + "; a path cannot be both a stream and a GET route");
    }
    if (claims[key] !== undefined) throw hostError("register: " + where + " is already registered by script " + claims[key]);
    queue("register", { op: "route", method: method, path: path, handler: handlers.length });
    ownRoutes[key] = true;
    add(handlers, fn);
  }

  function isMethod(m) {
    for (let i = 0; i < METHODS.length; i++) if (METHODS[i] === m) return true;
    return false;
  }

  // registerWebStream(path, {onConnect, onMessage, onDisconnect, auth}): options read once.
  function registerWebStream(path, options) {
    const fn = "registerWebStream";
    if (options !== undefined && (options === null || typeof options !== "object")) {
      throw hostError(fn + ": options must be an object, got " + describe(options));
    }
    const shape = checkPath(fn, path, RULES.streamPathMax);
    if (strEndsWith(path, "/*")) throw hostError(fn + ": a stream path cannot end in '/*' (a pattern takes {name} segments): " + path);
    if (strIndexOf(path, "%") >= 0) throw hostError(fn + ": a stream path must not contain '%' (give it as it reads, not encoded): " + path);
    const cmd = rec({ op: "stream", path: path, connect: -1, message: -1, disconnect: -1, auth: false });
    const fns = list();
    let given = false;
    if (options !== undefined) {
      const hooks = [["onConnect", "connect"], ["onMessage", "message"], ["onDisconnect", "disconnect"]];
      for (let i = 0; i < hooks.length; i++) {
        const h = options[hooks[i][0]];
        if (h === undefined || h === null) continue;
        add(fns, rec({ slot: hooks[i][1], fn: resolveHandler(h, path, fn, "options." + hooks[i][0]) }));
        given = true;
      }
      const auth = options.auth;
      if (auth !== undefined && auth !== null) {
        if (auth !== "required") throw hostError(fn + ": options.auth must be \"required\" or left out, got " + describe(auth));
        cmd.auth = true;
        given = true;
      }
    }
    if (ownStreams[path] !== undefined) {
      if (given) throw hostError(fn + ": " + path + " is already registered by this script; give its options in the first call");
      return;
    }
    const taken = streamKeys[shape];
    if (taken !== undefined) {
      throw hostError(fn + ": " + path + " is already registered by " + (taken.owner === null ? "this script" : "script " + taken.owner) + (taken.path === path ? "" : " (as " + taken.path + ")"));
    }
    const getKey = "GET " + shape;
    if (ownRoutes[getKey] || claims[getKey] !== undefined) {
      throw hostError(fn + ": " + path + " is a GET route" + (ownRoutes[getKey] ? "" : " of script " + claims[getKey]) + "; a path cannot be both a stream and a GET route");
    }
    for (let i = 0; i < fns.length; i++) {
      cmd[fns[i].slot] = handlers.length;
      add(handlers, fns[i].fn);
    }
    queue(fn, cmd);
    ownStreams[path] = shape;
    addStreamKey(shape, path, null);
  }

  function addStreamKey(shape, path, owner) {
    streamKeys[shape] = rec({ owner: owner, path: path });
    if (strIndexOf(shape, "{}") >= 0) add(streamPatterns, splitOn(strSlice(shape, 1), "/"));
  }

  // Every stream key, this script's and the others', after the others' claims changed.
  function rebuildStreamKeys() {
    streamKeys = rec({});
    streamPatterns = list();
    const mine = keys(ownStreams);
    for (let i = 0; i < mine.length; i++) addStreamKey(ownStreams[mine[i]], mine[i], null);
    const theirs = keys(streamClaims);
    for (let i = 0; i < theirs.length; i++) addStreamKey(shapeOf(theirs[i]), theirs[i], streamClaims[theirs[i]]);
  }

  function shapeOf(path) {
    const segments = splitOn(strSlice(path, 1), "/");
    for (let i = 0; i < segments.length; i++) if (segments[i][0] === "{") segments[i] = "{}";
    return "/" + arrJoin(segments, "/");
  }

  // registerGraphQLQuery/Mutation/Subscription: the fragment is read and checked here (sdl.js), so a
  // bad one throws at the call; graphql-core checks the merged schema again when the load is applied.
  function registerGraphQL(fnName, kind, name, typeDefs, resolver) {
    if (typeof name !== "string" || name.length > RULES.graphqlNameMax || !test(GRAPHQL_NAME, name) || strStartsWith(name, "__")) {
      throw hostError(fnName + ": name must be a GraphQL name (letters, digits and _, not starting with a digit or __), got " + describe(name));
    }
    const root = kind === "query" ? "Query" : kind === "mutation" ? "Mutation" : "Subscription";
    const key = root + "." + name;
    if (typeof typeDefs !== "string") throw hostError(fnName + ": sdl must be a string such as \"type " + root + " { " + name + ": String }\", got " + describe(typeDefs));
    if (typeDefs.length > RULES.maxSdlChars) throw hostError(fnName + ": sdl is longer than " + RULES.maxSdlChars + " characters");
    const fn = resolveHandler(resolver, key, fnName, "resolver");
    if (ownFields[key]) throw hostError(fnName + ": " + key + " is already registered by this script");
    if (gqlFields[key] !== undefined) throw hostError(fnName + ": " + key + " is already registered by script " + gqlFields[key]);
    const lookup = (t) => (ownTypes[t] !== undefined ? ownTypes[t] : gqlTypes[t]);
    let read;
    try { read = sdl.readFragment(typeDefs, kind, name, lookup); } catch (e) { throw hostError(fnName + ": invalid SDL for " + key + ": " + e.message); }
    const types = rec({});
    const names = keys(read);
    for (let i = 0; i < names.length; i++) types[names[i]] = rec({ kind: toText(read[names[i]].kind), text: toText(read[names[i]].text) });
    queue(fnName, { op: "gql", kind: kind, name: name, sdl: typeDefs, handler: handlers.length, types: types });
    for (let i = 0; i < names.length; i++) ownTypes[names[i]] = types[names[i]];
    ownFields[key] = true;
    add(handlers, fn);
  }

  function sendSubscriptionMessage(name, data) {
    if (typeof name !== "string" || !(ownFields["Subscription." + name] || gqlFields["Subscription." + name] !== undefined)) {
      throw hostError("sendSubscriptionMessage: no GraphQL subscription named " + describe(name) + " is registered");
    }
    const text = messageText("sendSubscriptionMessage", data);
    queue("sendSubscriptionMessage", { op: "gqlsend", name: name, data: text, json: typeof data !== "string" });
  }

  function checkNotSubscription(fn, path) {
    if (strStartsWith(path, SUBSCRIPTION_STREAMS)) throw hostError(fn + ": " + path + " is a GraphQL subscription's stream; send to it with sendSubscriptionMessage");
  }

  const NON_ASCII = /[^\x00-\x7f]/;

  function utf8Length(s) {
    if (!test(NON_ASCII, s)) return s.length; // most messages: one native scan
    let n = 0;
    for (let i = 0; i < s.length; i++) {
      const c = charCodeAt(s, i);
      if (c < 0x80) n += 1;
      else if (c < 0x800) n += 2;
      else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) { n += 4; i++; }
      else n += 3;
    }
    return n;
  }

  // The message as the text that goes on the wire: strings verbatim, other JSON values serialized.
  function messageText(fn, data) {
    let text = data;
    if (typeof data !== "string") {
      try { text = stringify(data); } catch (e) { throw hostError(fn + ": the message could not be serialized to JSON: " + e.message); }
      if (typeof text !== "string") throw hostError(fn + ": the message must be a string or a JSON value, got " + describe(data));
    }
    const bytes = oversize(text, maxMessageBytes);
    if (bytes) throw hostError(fn + ": the message is at least " + bytes + " bytes; the limit is " + maxMessageBytes + " (limits.max_message_bytes)");
    return text;
  }

  // 0 if `text` fits in `max` UTF-8 bytes, else (at least) its size. Most strings are decided by
  // their length alone; only the rest are measured.
  function oversize(text, max) {
    if (text.length * 3 <= max) return 0;
    const bytes = text.length > max ? text.length : utf8Length(text);
    return bytes > max ? bytes : 0;
  }

  // A path a send may name: a stream as registered (a pattern: all of its channels), or a concrete
  // channel path of one (made on the send if need be).
  function knownStream(path) {
    if (ownStreams[path] !== undefined || streamClaims[path] !== undefined) return true;
    return isChannel(path);
  }

  const NOT_IN_CHANNEL = /[%{}*]/;

  function isChannel(path) {
    if (test(NOT_IN_CHANNEL, path) || strIndexOf(path, "//") >= 0) return false;
    if (streamKeys[path] !== undefined) return true;
    const parts = splitOn(strSlice(path, 1), "/");
    for (let i = 0; i < streamPatterns.length; i++) {
      const p = streamPatterns[i];
      if (p.length !== parts.length) continue;
      let ok = true;
      for (let j = 0; j < p.length && ok; j++) ok = p[j] === "{}" ? parts[j] !== "" : p[j] === parts[j];
      if (ok) return true;
    }
    return false;
  }

  // options, read once into plain values (a getter cannot change them after they were checked).
  function readOptions(fn, options) {
    const out = rec({ event: undefined, path: undefined });
    if (options === undefined || options === null) return out;
    if (typeof options !== "object") throw hostError(fn + ": options must be an object, got " + describe(options));
    const event = options.event;
    const path = options.path;
    if (event !== undefined) {
      if (typeof event !== "string" || !test(EVENT_NAME, event)) {
        throw hostError(fn + ": options.event must be a name of 1 to 64 letters, digits, _ . : or -, got " + describe(event));
      }
      for (let i = 0; i < RULES.engineEvents.length; i++) {
        if (event === RULES.engineEvents[i]) throw hostError(fn + ": options.event " + describe(event) + " is the engine's own (" + arrJoin(RULES.engineEvents, ", ") + "): a client could not tell them apart");
      }
      out.event = event;
    }
    if (path !== undefined) {
      const paths = list();
      if (typeof path === "string") {
        add(paths, path);
      } else if (isArray(path)) {
        const n = path.length;
        for (let i = 0; i < n; i++) add(paths, path[i]);
      }
      if (!(typeof path === "string" || isArray(path)) || !allStrings(paths)) {
        throw hostError(fn + ": options.path must be a string or a list of strings, got " + describe(path));
      }
      out.path = paths;
    }
    return out;
  }

  function allStrings(l) {
    for (let i = 0; i < l.length; i++) if (typeof l[i] !== "string") return false;
    return true;
  }

  function sendStreamMessage(data, options) {
    const cmd = rec({ op: "send", data: messageText("sendStreamMessage", data) });
    if (typeof data !== "string") cmd.json = true;
    const o = readOptions("sendStreamMessage", options);
    if (o.event !== undefined) cmd.event = o.event;
    if (o.path !== undefined) {
      for (let i = 0; i < o.path.length; i++) checkNotSubscription("sendStreamMessage", o.path[i]);
      for (let i = 0; i < o.path.length; i++) if (!knownStream(o.path[i])) throw hostError("sendStreamMessage: no stream is registered at " + describe(o.path[i]));
      cmd.paths = o.path;
    }
    queue("sendStreamMessage", cmd);
  }

  function sendStreamMessageToPath(path, data, options) {
    checkPathText("sendStreamMessageToPath", path, RULES.streamPathMax);
    checkNotSubscription("sendStreamMessageToPath", path);
    if (test(NOT_IN_CHANNEL, path)) {
      throw hostError("sendStreamMessageToPath: give one channel's path (like /rooms/general), not a pattern or an encoded path, got " + describe(path) + "; sendStreamMessage(data, {path: pattern}) reaches every channel of a pattern");
    }
    if (!isChannel(path)) throw hostError("sendStreamMessageToPath: no stream is registered at " + describe(path));
    const cmd = rec({ op: "send", data: messageText("sendStreamMessageToPath", data), paths: list() });
    if (typeof data !== "string") cmd.json = true;
    const o = readOptions("sendStreamMessageToPath", options);
    add(cmd.paths, path);
    if (o.event !== undefined) cmd.event = o.event;
    queue("sendStreamMessageToPath", cmd);
  }

  const CONNECTION_ID = new RegExpCtor(RULES.connectionId);

  function checkConnectionId(fn, id) {
    if (typeof id !== "string" || !test(CONNECTION_ID, id)) throw hostError(fn + ": the id must be a connection's id (conn.id), got " + describe(id));
  }

  function sendToConnection(id, data, options) {
    checkConnectionId("sendToConnection", id);
    const cmd = rec({ op: "sendto", id: id, data: messageText("sendToConnection", data) });
    if (typeof data !== "string") cmd.json = true;
    const o = readOptions("sendToConnection", options);
    if (o.path !== undefined) throw hostError("sendToConnection: options.path does not apply: the message goes to one connection");
    if (o.event !== undefined) cmd.event = o.event;
    queue("sendToConnection", cmd);
  }

  function closeConnection(id, reason) {
    checkConnectionId("closeConnection", id);
    if (reason === undefined || reason === null) reason = "closed by the server";
    if (typeof reason !== "string") throw hostError("closeConnection: the reason must be a string, got " + describe(reason));
    if (reason.length > RULES.maxReason) throw hostError("closeConnection: the reason is longer than " + RULES.maxReason + " characters");
    queue("closeConnection", { op: "close", id: id, reason: reason });
  }

  function addTimer(fn, ms, args, repeat, here) {
    const name = (here ? "setLocal" : "set") + (repeat ? "Interval" : "Timeout");
    if (typeof fn !== "function") throw hostError(name + ": the callback must be a function, got " + describe(fn));
    ms = toNumber(ms);
    if (!(ms >= 0)) ms = 0;
    if (repeat && ms < MIN_INTERVAL_MS) ms = MIN_INTERVAL_MS;
    const id = ++timerSeq;
    if (stepping < 0 && wakes < MAX_WAKES) { // a response whose client left: a sleep ends at once, an interval never starts
      if (!repeat) timers[id] = rec({ fn: fn, args: args, due: now(), every: 0, owner: stepping, wakes: wakes + 1, local: true });
      timersDirty = true;
      return id;
    }
    const owner = stepping > 0 && iters[stepping] !== undefined ? stepping : 0;
    timers[id] = rec({ fn: fn, args: args, due: now() + ms, every: repeat ? ms : 0, owner: owner, wakes: 0,
                       local: here || local });
    if (owner) {
      if (owned[owner] === undefined) owned[owner] = rec({});
      owned[owner][id] = true;
    }
    timersDirty = true;
    return id;
  }

  function deleteTimer(id) {
    const t = timers[id];
    if (t.owner > 0 && owned[t.owner] !== undefined) delete owned[t.owner][id];
    delete timers[id];
    timersDirty = true;
  }

  function clearTimer(id) {
    const n = toNumber(id);
    if (timers[n] !== undefined) deleteTimer(n);
  }

  // The stopped response's timers: one-shot ones are due now, intervals end. What the woken code
  // sets is settled the same way (owner -iter, see addTimer), until the generator reaches its return().
  function settleOwned(iter) {
    const mine = owned[iter];
    if (mine === undefined) return;
    delete owned[iter];
    const ids = keys(mine);
    const t0 = now();
    for (let i = 0; i < ids.length; i++) {
      const t = timers[ids[i]];
      if (t === undefined) continue;
      if (t.every) {
        delete timers[ids[i]];
      } else {
        t.owner = -iter;
        if (t.due > t0) t.due = t0;
      }
    }
    timersDirty = true;
  }

  // it.next() with the timers it sets owned by the response `id`.
  function nextOf(id, it) {
    const outer = stepping;
    stepping = id;
    try { return it.next(); } finally { stepping = outer; }
  }

  // ---- privileged scripts: scripts and assets --------------------------------------------
  // JS cannot ask Python for anything mid-call, so a privileged script holds a view of the scripts
  // (names, sources, log lines) and assets (metadata, contents) that the engine keeps current
  // (`manage`, see management.py); reads answer from it at once. Writes update it, so the same call
  // reads them back, and queue a command the engine checks and applies after the call.
  let privileged = false;
  let maxScriptBytes = 1048576;
  let maxAssetBytes = 4194304;
  let logViewChars = 65536;
  const CONTENT_TYPE = new RegExpCtor(RULES.contentType);
  let managed = rec({ scripts: rec({}), logs: rec({}), assets: rec({}) });

  function needPrivilege(fn) {
    if (!privileged) {
      throw hostError(fn + ": only privileged scripts may manage scripts and assets; list " + myName + " in scripts.privileged (config.yaml) to allow it");
    }
  }

  const BAD_NAME = new RegExpCtor(RULES.badNameChars);
  const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?:^|[^\ud800-\udbff])[\udc00-\udfff]/;

  // What the file system takes as a name's parts (as rules.py's _parts_problem): not empty, `.`,
  // `..` or hidden, valid Unicode, and at most MAX_PART_BYTES in UTF-8 each.
  function badParts(parts) {
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i];
      if (part === "" || part === "." || part === ".." || part[0] === ".") return true;
      if (test(LONE_SURROGATE, part) || utf8Length(part) > RULES.maxPartBytes) return true;
    }
    return false;
  }

  function checkScriptName(fn, name) {
    if (typeof name !== "string" || name.length === 0 || name.length > RULES.maxName || !strEndsWith(name, ".js")
        || name[0] === "/" || test(BAD_NAME, name) || badParts(splitOn(name, "/"))) {
      throw hostError(fn + ": " + describe(name) + " is not a script name: a relative path ending in .js, inside the scripts folder (no '..', nothing hidden, no control characters, line breaks or bidirectional marks, parts of at most " + RULES.maxPartBytes + " bytes)");
    }
  }

  function checkAssetPath(fn, path) {
    checkPathText(fn, path, RULES.maxName);
    for (let i = 0; i < RESERVED.length; i++) {
      if (test(RESERVED[i], path)) throw hostError(fn + ": " + path + " is reserved by the engine (" + RULES.reservedText + ")");
    }
    if (strIndexOf(path, "%") >= 0) throw hostError(fn + ": give the asset path as it reads, not %-encoded, got " + describe(path));
    if (badParts(splitOn(strSlice(path, 1), "/"))) throw hostError(fn + ": " + describe(path) + " is not an asset path (like /img/logo.png): no empty, '.' or '..' part, nothing hidden, valid Unicode, parts of at most " + RULES.maxPartBytes + " bytes");
  }

  // UTF-8 bytes of `s` by native code (a loop over millions of characters would use the call's CPU
  // time); -1 when it holds a lone surrogate, which UTF-8 cannot carry.
  function utf8Size(s) {
    try { return unescapeNative(encodeURIComponentNative(s)).length; } catch (e) { return -1; }
  }

  function sortedKeys(o) {
    return arrSort(arrSlice(keys(o)));
  }

  // UTF-8 bytes of text a write carries (at least `max` + 1 when over it, without measuring all of
  // it); a lone surrogate, which UTF-8 cannot carry, throws.
  function textBytes(fn, what, text, max) {
    const size = text.length > max ? text.length : utf8Size(text);
    if (size < 0) throw hostError(fn + ": the " + what + " holds a lone surrogate, which UTF-8 cannot carry");
    return size;
  }

  // deleteScript and deleteAsset: the view forgets it now, the engine deletes it after the call.
  function forget(fn, check, view, op, field, key) {
    needPrivilege(fn);
    check(fn, key);
    const existed = managed[view][key] !== undefined;
    const cmd = rec({ op: op });
    cmd[field] = key;
    queue(fn, cmd);
    delete managed[view][key];
    return existed;
  }

  function upsertScript(name, source) {
    needPrivilege("upsertScript");
    checkScriptName("upsertScript", name);
    if (typeof source !== "string") throw hostError("upsertScript: the source must be a string, got " + describe(source));
    const size = textBytes("upsertScript", "source", source, maxScriptBytes);
    if (size > maxScriptBytes) throw hostError("upsertScript: the source is at least " + size + " bytes; the limit is " + maxScriptBytes + " (limits.max_body_bytes)");
    queue("upsertScript", { op: "putscript", name: name, source: source });
    managed.scripts[name] = source;
  }

  function deleteScript(name) { return forget("deleteScript", checkScriptName, "scripts", "delscript", "name", name); }

  function fetchAsset(path) {
    needPrivilege("fetchAsset");
    checkAssetPath("fetchAsset", path);
    const a = managed.assets[path];
    if (a === undefined) return null;
    if (a.big) throw hostError("fetchAsset: " + path + " is " + a.size + " bytes, over assets.max_bytes or past assets.max_total_bytes: it is served at its path, but not held for scripts");
    return { path: path, contentType: a.type, size: a.size, modified: a.modified,
             content: a.text !== undefined ? a.text : fromBase64(a.b64) };
  }

  function upsertAsset(path, content, contentType) {
    needPrivilege("upsertAsset");
    checkAssetPath("upsertAsset", path);
    const cmd = rec({ op: "putasset", path: path });
    const entry = rec({ type: null, size: 0, modified: now() });
    if (typeof content === "string") {
      entry.size = textBytes("upsertAsset", "content", content, maxAssetBytes);
      cmd.text = entry.text = content;
    } else if (content instanceof Uint8ArrayCtor || content instanceof ArrayBufferCtor) {
      const bytes = content instanceof ArrayBufferCtor ? new Uint8ArrayCtor(content) : content;
      entry.size = bytes.length;
      if (entry.size <= maxAssetBytes) cmd.b64 = entry.b64 = toBase64(bytes);
    } else {
      throw hostError("upsertAsset: the content must be a string, a Uint8Array or an ArrayBuffer, got " + describe(content));
    }
    if (entry.size > maxAssetBytes) throw hostError("upsertAsset: the content is " + entry.size + " bytes; the limit is " + maxAssetBytes + " (assets.max_bytes)");
    if (contentType !== undefined && contentType !== null) {
      if (typeof contentType !== "string" || contentType.length > RULES.maxContentType || !test(CONTENT_TYPE, contentType)) {
        throw hostError("upsertAsset: the content type must be a media type like text/css or image/png, got " + describe(contentType));
      }
      cmd.type = entry.type = contentType;
    } // else null here until the engine says which type it guessed
    queue("upsertAsset", cmd);
    managed.assets[path] = entry;
  }

  function deleteAsset(path) { return forget("deleteAsset", checkAssetPath, "assets", "delasset", "path", path); }

  // What changed, from the engine: {reset?, assetsReset?, scripts: {name: source | {big: size} | null},
  // logs: {name: [new lines]}, assets: {path: {type, size, modified, text | b64 | big} | null}}. A
  // script's lines are kept to logViewChars characters (the newest), so the view stays in its memory.
  function trimLog(lines) {
    let total = 0;
    let i = lines.length;
    while (i > 0 && total + lines[i - 1].length <= logViewChars) total += lines[--i].length;
    return i > 0 ? tail(lines, lines.length - i) : lines;
  }

  function manage(delta) {
    if (delta.reset) managed = rec({ scripts: rec({}), logs: rec({}), assets: rec({}) });
    if (delta.assetsReset) managed.assets = rec({});
    const parts = ["scripts", "assets"];
    for (let p = 0; p < parts.length; p++) {
      const into = managed[parts[p]];
      const from = delta[parts[p]] || {};
      const names = keys(from);
      for (let i = 0; i < names.length; i++) {
        const v = from[names[i]];
        if (v === null) { delete into[names[i]]; if (p === 0) delete managed.logs[names[i]]; }
        else into[names[i]] = p === 0 ? v : rec(v);
      }
    }
    const logs = delta.logs || {};
    const names = keys(logs);
    for (let i = 0; i < names.length; i++) {
      const lines = managed.logs[names[i]] || list();
      for (let j = 0; j < logs[names[i]].length; j++) add(lines, logs[names[i]][j]);
      managed.logs[names[i]] = trimLog(tail(lines, logMax));
    }
  }

  const api = rec({
    register: register,
    registerWebStream: registerWebStream,
    sendStreamMessage: sendStreamMessage,
    sendStreamMessageToPath: sendStreamMessageToPath,
    sendToConnection: sendToConnection,
    closeConnection: closeConnection,
    registerGraphQLQuery: function registerGraphQLQuery(name, sdl, resolver) { registerGraphQL("registerGraphQLQuery", "query", name, sdl, resolver); },
    registerGraphQLMutation: function registerGraphQLMutation(name, sdl, resolver) { registerGraphQL("registerGraphQLMutation", "mutation", name, sdl, resolver); },
    registerGraphQLSubscription: function registerGraphQLSubscription(name, sdl, resolver) { registerGraphQL("registerGraphQLSubscription", "subscription", name, sdl, resolver); },
    sendSubscriptionMessage: sendSubscriptionMessage,
    writeLog: function writeLog(message) { log("writeLog", "info", [message]); },
    listLogs: function listLogs() { return arrSlice(logLines, logLines.length > logMax ? logLines.length - logMax : 0); }, // a plain array
    "console.log": function log_(...a) { log("console.log", "info", a); },
    "console.info": function info(...a) { log("console.info", "info", a); },
    "console.debug": function debug(...a) { log("console.debug", "debug", a); },
    "console.warn": function warn(...a) { log("console.warn", "warning", a); },
    "console.error": function error(...a) { log("console.error", "error", a); },
    setTimeout: function setTimeout(fn, ms, ...args) { return addTimer(fn, ms, args, false, false); },
    setInterval: function setInterval(fn, ms, ...args) { return addTimer(fn, ms, args, true, false); },
    setLocalTimeout: function setLocalTimeout(fn, ms, ...args) { return addTimer(fn, ms, args, false, true); },
    setLocalInterval: function setLocalInterval(fn, ms, ...args) { return addTimer(fn, ms, args, true, true); },
    clearTimeout: function clearTimeout(id) { clearTimer(id); },
    clearInterval: function clearInterval(id) { clearTimer(id); },
    listScripts: function listScripts() { needPrivilege("listScripts"); return sortedKeys(managed.scripts); },
    getScript: function getScript(name) {
      needPrivilege("getScript");
      checkScriptName("getScript", name);
      const source = managed.scripts[name];
      if (source === undefined) return null;
      if (typeof source !== "string") throw hostError("getScript: " + name + " is " + source.big + " bytes, past what the view holds of scripts' sources; read it through the admin API (GET /_engine/scripts/" + name + ")");
      return source;
    },
    upsertScript: upsertScript,
    deleteScript: deleteScript,
    listLogsForUri: function listLogsForUri(name) {
      needPrivilege("listLogsForUri");
      checkScriptName("listLogsForUri", name);
      return arrSlice(managed.logs[name] || list()); // a plain array
    },
    listAssets: function listAssets() { needPrivilege("listAssets"); return sortedKeys(managed.assets); },
    fetchAsset: fetchAsset,
    upsertAsset: upsertAsset,
    deleteAsset: deleteAsset,
  });

  const declared = rec({});
  for (let i = 0; i < HOST_NAMES.length; i++) declared[HOST_NAMES[i]] = true;
  const defined = keys(api);
  for (let i = 0; i < defined.length; i++) {
    if (!declared[defined[i]]) throw new ErrorCtor("prelude defines " + defined[i] + ", which host_api.py does not declare");
  }
  for (let i = 0; i < HOST_NAMES.length; i++) {
    const name = HOST_NAMES[i];
    if (typeof api[name] !== "function") throw new ErrorCtor("host_api.py declares " + name + ", which the prelude does not define");
    const parts = splitOn(name, ".");
    let target = g;
    for (let j = 0; j < parts.length - 1; j++) {
      if (typeof target[parts[j]] !== "object" || target[parts[j]] === null) target[parts[j]] = {};
      target = target[parts[j]];
    }
    defineProperty(target, parts[parts.length - 1], { value: api[name], writable: true, configurable: true, enumerable: false });
    API_FRAMES[api[name].name] = true;
  }

  // ---- what the engine calls -------------------------------------------------------------

  function errorInfo(e) {
    // Text only: context.py decides what it means (a bare null is how QuickJS reports running out of
    // memory when it cannot even build the error) and trims the dispatcher's frames. A script's
    // error object may have getters that throw: read it defensively.
    if (e === null) return rec({ m: "null", st: "" });
    try {
      if (e instanceof ErrorCtor) {
        const info = rec({ m: toText(e.name) + ": " + toText(e.message), st: toText(e.stack || "") });
        const status = e.status;  // onConnect's refusal may name its status (404 for what does not exist)
        if (typeof status === "number" && status >= 400 && status <= 499 && status === (status | 0)) info.s = status;
        return info;
      }
    } catch (x) { /* fall through to the generic text */ }
    let text;
    try { text = typeof e === "string" ? e : stringify(e); } catch (x) { text = undefined; }
    if (typeof text !== "string") { try { text = toText(e); } catch (x) { text = "[unprintable value]"; } }
    return rec({ m: "uncaught " + text, st: "" });
  }

  // A handler's return value, checked and turned into {s, b, t, h}, or {bad: why}. Each field of
  // the script's object is read once.
  // Streaming responses: a handler's iterator (a generator, sync or async) waits here, by id, for
  // the engine to ask for its next value (`step`) or to end it (`stop`).
  const iters = rec({});
  let iterSeq = 0;
  let iterCount = 0;
  const MAX_ITERS = 10000; // open streaming responses per script: the engine bounds them before this

  function isIterator(v) {
    return v !== null && typeof v === "object" && !isArray(v) && typeof v.next === "function";
  }

  function streamed(it, out) {
    out.it = it; // registered by `sized`, once the whole response is known good
    return out;
  }

  function dropIter(id) {
    if (iters[id] !== undefined) { delete iters[id]; iterCount--; }
    delete pendingNext[id];
    delete owned[id]; // what it set and left running is nobody's now (`stop` settles them first)
  }

  // A step takes as many values as are ready (up to `max` values or `budget` characters), so a
  // fast generator costs one call per batch, not one per value. A next() not settled within a few
  // microtask turns waits here for the following step: what is ready goes out now.
  const pendingNext = rec({});

  function isThenable(v) { return v !== null && typeof v === "object" && typeof v.then === "function"; }

  // The iterator is finished: it ended, or threw. A value it gave that cannot be sent (`bad`) ends the
  // response too, but the iterator lives on until the engine's `stop` runs its return().
  function ended(v) { return v.d !== undefined || v.e !== undefined; }
  function last(v) { return ended(v) || v.bad !== undefined; }

  function itemSize(v) { return v.t !== undefined ? v.t.length : v.j !== undefined ? v.j.length : v.x !== undefined ? v.x.length : 16; }

  function pull(id, it, check, max, budget) {
    const items = list();
    let size = 0;
    for (;;) {
      let r = pendingNext[id];
      if (r !== undefined) {
        delete pendingNext[id];
      } else {
        try { r = nextOf(id, it); } catch (e) { add(items, rec({ e: errorInfo(e) })); dropIter(id); return items; }
      }
      if (isThenable(r)) return pullAsync(id, it, check, max, budget, items, size, r);
      const v = check(r);
      add(items, v);
      size += itemSize(v);
      if (ended(v)) { dropIter(id); return items; }
      if (last(v) || items.length >= max || size >= budget) return items;
    }
  }

  async function pullAsync(id, it, check, max, budget, items, size, p) {
    for (;;) {
      let x;
      try { x = await p; } catch (e) { add(items, rec({ e: errorInfo(e) })); dropIter(id); return items; }
      const v = check(x);
      add(items, v);
      size += itemSize(v);
      if (ended(v)) { dropIter(id); return items; }
      if (last(v) || items.length >= max || size >= budget) return items;
      try { p = nextOf(id, it); } catch (e) { add(items, rec({ e: errorInfo(e) })); dropIter(id); return items; }
      if (!isThenable(p)) p = promiseResolve(PromiseCtor, p);
      let settled = false;
      promiseThen(p, () => { settled = true; }, () => { settled = true; });
      for (let turn = 0; turn < 8 && !settled; turn++) await undefined;
      if (!settled) { pendingNext[id] = p; return items; }
    }
  }

  // One step's value as the engine writes it: text, bytes (as a latin-1 string) or JSON; with `sse`,
  // an object naming `event`, `id`, `data` or `retry` sets those fields.
  function stepValue(sse) {
    return function (r) {
      if (r === null || typeof r !== "object") return rec({ bad: "the iterator's next() gave " + describe(r) + ", not {value, done}" });
      if (r.done) return rec({ d: 1 });
      let v = r.value;
      const out = rec({});
      if (sse && v !== null && typeof v === "object" && !isArray(v) &&
          (v.event !== undefined || v.id !== undefined || v.data !== undefined || v.retry !== undefined)) {
        if (v.event !== undefined) {
          if (typeof v.event !== "string" || !test(EVENT_NAME, v.event)) return rec({ bad: "a yielded event must be a name of 1 to 64 letters, digits, _ . : or -, got " + describe(v.event) });
          out.ev = v.event;
        }
        if (v.id !== undefined) {
          if ((typeof v.id !== "string" && typeof v.id !== "number") || test(/[\r\n\0]/, String(v.id)) || String(v.id).length > 200) return rec({ bad: "a yielded id must be a string or number of at most 200 characters, without line breaks" });
          out.eid = String(v.id);
        }
        if (v.retry !== undefined) {
          if (!isInteger(v.retry) || v.retry < 0 || v.retry > 86400000) return rec({ bad: "a yielded retry must be milliseconds, from 0 to 86400000" });
          out.rty = v.retry;
        }
        v = v.data === undefined ? "" : v.data;
      }
      if (typeof v === "string") { out.t = v; return sizedValue(out, v); }
      if (v instanceof Uint8ArrayCtor || v instanceof ArrayBufferCtor) {
        const bytes = v instanceof ArrayBufferCtor ? new Uint8ArrayCtor(v) : v;
        if (bytes.length > maxMessageBytes) return rec({ bad: "a yielded chunk of " + bytes.length + " bytes; the limit is " + maxMessageBytes + " (limits.max_message_bytes)" });
        const parts = list();
        for (let i = 0; i < bytes.length; i += 4096) add(parts, fnApply(fromCharCode, null, subarray(bytes, i, i + 4096)));
        out.x = arrJoin(parts, "");
        return out;
      }
      let text;
      try { text = stringify(v); } catch (e) { return rec({ bad: "a yielded value could not be serialized to JSON: " + e.message }); }
      if (typeof text !== "string") return rec({ bad: "the generator yielded " + describe(v) + "; yield a string, bytes or a JSON value" });
      out.j = text;
      return sizedValue(out, text);
    };
  }

  function sizedValue(out, text) {
    const size = oversize(text, maxMessageBytes);
    if (size) return rec({ bad: "a yielded value is at least " + size + " bytes; the limit is " + maxMessageBytes + " (limits.max_message_bytes)" });
    return out;
  }

  function response(v) {
    if (typeof v === "string") return sized(rec({ s: 200, b: v, t: "text/plain; charset=utf-8" }));
    if (isIterator(v)) return sized(streamed(v, rec({ s: 200 })));
    if (v === undefined) return rec({ bad: "the handler returned nothing; return a string or {status, body}" });
    if (v === null || typeof v !== "object" || isArray(v)) {
      return rec({ bad: "the handler returned " + describe(v) + "; return a string or {status, body}" });
    }
    const rawStatus = v.status;
    const body = v.body;
    const contentType = v.contentType;
    const headers = v.headers;
    let status = rawStatus === undefined ? 200 : rawStatus;
    if (typeof status === "string" && test(/^[0-9]{3}$/, status)) status = toNumber(status);
    if (!isInteger(status) || status < 200 || status > 599) {
      return rec({ bad: "status must be an integer from 200 to 599, got " + describe(rawStatus) });
    }
    const out = rec({ s: status, b: "" });
    if (typeof body === "string") {
      out.b = body;
    } else if (isIterator(body)) {
      delete out.b;
      streamed(body, out);
      if (v.maxSeconds !== undefined) { // opting into a longer (or shorter) life than limits.stream_response_seconds
        if (typeof v.maxSeconds !== "number" || !(v.maxSeconds > 0 && v.maxSeconds <= 604800)) {
          return rec({ bad: "maxSeconds must be a number of seconds from 0 to 604800, got " + describe(v.maxSeconds) });
        }
        out.ms = v.maxSeconds;
      }
    } else if (body !== undefined && body !== null) {
      if (typeof body !== "object") return rec({ bad: "body must be a string, an object or an array, got " + describe(body) });
      let text;
      try { text = stringify(body); } catch (e) { return rec({ bad: "body could not be serialized to JSON: " + e.message }); }
      if (typeof text !== "string") return rec({ bad: "body could not be serialized to JSON" });
      out.b = text;
      out.t = "application/json";
    }

    if (contentType !== undefined) {
      if (typeof contentType !== "string") return rec({ bad: "contentType must be a string, got " + describe(contentType) });
      out.t = contentType;
    }
    if (headers !== undefined && headers !== null) {
      if (typeof headers !== "object" || isArray(headers)) return rec({ bad: "headers must be an object of strings, got " + describe(headers) });
      const h = rec({});
      const names = keys(headers);
      if (names.length > RULES.maxHeaders) return rec({ bad: "more than " + RULES.maxHeaders + " headers" });
      for (let i = 0; i < names.length; i++) {
        const k = names[i];
        const hv = headers[k];
        if (typeof hv !== "string" && typeof hv !== "number" && typeof hv !== "boolean") {
          return rec({ bad: "header " + k + " must be a string, got " + describe(hv) });
        }
        h[k] = toText(hv);
        if (k.length + h[k].length > RULES.maxHeaderChars) {
          return rec({ bad: "header " + strSlice(k, 0, 60) + " is longer than " + RULES.maxHeaderChars + " characters" });
        }
      }
      out.h = h;
    }
    return sized(out);
  }

  function sized(out) {
    if (out.it !== undefined) {
      if (iterCount >= MAX_ITERS) return rec({ bad: "this script has " + MAX_ITERS + " streaming responses open" });
      const id = ++iterSeq;
      iters[id] = out.it;
      iterCount++;
      delete out.it;
      out.g = id;
      return rec({ r: out });
    }
    const size = oversize(out.b, maxResponseBytes);
    if (size) return rec({ bad: "the body is at least " + size + " bytes; the limit is " + maxResponseBytes + " (limits.max_response_bytes)" });
    return rec({ r: out });
  }

  function put(obj, key, value) {
    if (key === "__proto__") defineProperty(obj, key, { value: value, enumerable: true, writable: true, configurable: true });
    else obj[key] = value;
  }

  function decodeComponent(s) {
    const parts = splitOn(s, "+");
    s = arrJoin(parts, " ");
    try { return decodeURIComponent(s); } catch (e) { return s; }
  }

  // "a=1&b=&a=2" -> {a: "1", b: ""}: the first value of a repeated name wins.
  function parseQuery(qs) {
    const out = {};
    if (!qs) return out;
    const parts = splitOn(qs, "&");
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i];
      if (!part) continue;
      const eq = strIndexOf(part, "=");
      const key = decodeComponent(eq < 0 ? part : strSlice(part, 0, eq));
      if (!hasOwn(out, key)) put(out, key, eq < 0 ? "" : decodeComponent(strSlice(part, eq + 1)));
    }
    return out;
  }

  // "Name\nvalue\nName2\nvalue2" -> lower-case names; repeated names joined with ", ".
  function parseHeaders(blob) {
    const out = {};
    if (!blob) return out;
    const parts = splitOn(blob, "\n");
    for (let i = 0; i + 1 < parts.length; i += 2) {
      const name = toLower(parts[i]);
      if (hasOwn(out, name)) out[name] += ", " + parts[i + 1];
      else put(out, name, parts[i + 1]);
    }
    return out;
  }

  // "Name: value\r\n" lines, as the lean route protocol read them (names are tokens, values have no
  // controls: checked before they came here); values trimmed of spaces and tabs, as HTTP says.
  function parseRawHeaders(block) {
    const out = {};
    let start = 0;
    for (;;) {
      const end = strIndexOf(block, "\r\n", start);
      if (end < 0) return out;
      const colon = strIndexOf(block, ":", start);
      let a = colon + 1;
      let b = end;
      while (a < b && (charCodeAt(block, a) === 32 || charCodeAt(block, a) === 9)) a++;
      while (b > a && (charCodeAt(block, b - 1) === 32 || charCodeAt(block, b - 1) === 9)) b--;
      const name = toLower(strSlice(block, start, colon));
      const value = strSlice(block, a, b);
      if (hasOwn(out, name)) out[name] += ", " + value;
      else put(out, name, value);
      start = end + 2;
    }
  }

  function nextDue() {
    let due = null;
    const ids = keys(timers);
    for (let i = 0; i < ids.length; i++) {
      const t = timers[ids[i]];
      if (due === null || t.due < due) due = t.due;
    }
    return due;
  }

  // Strings reach Python as C strings: NUL would cut them, lone surrogates would not decode.
  // (Native checks: a RegExp exec costs more than the rest of a plain request's JS.)
  const fitsFastPath = (t) => strIndexOf(t, "\0") < 0 && isWellFormed(t);

  function envelope(out) {
    // The common case, a plain response and nothing else, skips JSON (JSON.stringify is the
    // slowest step of a call): "R<status>\n<content type>\n<body>".
    if (out !== null && out.r !== undefined && !commands.length && !settled.length && !timersDirty) {
      const r = out.r;
      if (r.h === undefined && r.g === undefined && r.t !== undefined && strIndexOf(r.t, "\n") < 0 && fitsFastPath(r.b) &&
          fitsFastPath(r.t)) {
        const parts = list();
        add(parts, "R" + r.s);
        add(parts, r.t);
        add(parts, r.b);
        return arrJoin(parts, "\n"); // join, not +: the binding cannot take a rope string
      }
    }
    const env = rec({ o: out });
    if (commands.length) { env.c = commands; commands = list(); }
    if (settled.length) { env.s = settled; settled = list(); }
    if (timersDirty) { env.t = nextDue(); timersDirty = false; }
    const text = stringify(env);
    if (text.length <= CHUNK || env.c === undefined) return text;
    // Too large to read back in one piece (Python parses JSON holding the GIL, which the event loop
    // needs): the commands follow in pieces of about CHUNK characters, fetched with `more`.
    pieces = chunks(env.c);
    env.c = list();
    env.m = pieces.length;
    return stringify(env);
  }

  const CHUNK = 1 << 20;
  let pieces = list();

  function chunks(cmds) {
    const out = list();
    let part = list(), size = 0;
    for (let i = 0; i < cmds.length; i++) {
      const one = stringify(cmds[i]);
      if (size + one.length > CHUNK && part.length) {
        add(out, wrap(part));
        part = list();
        size = 0;
      }
      add(part, one);
      size += one.length + 1;
    }
    if (part.length) add(out, wrap(part));
    return out;
  }

  function wrap(part) {
    const parts = list();
    add(parts, "[");
    add(parts, arrJoin(part, ","));
    add(parts, "]");
    return arrJoin(parts, ""); // join, not +: the binding cannot take a rope string
  }

  // A resolver's value as JSON text ({j}), none for undefined, or why it cannot be sent ({bad}).
  function resolved(v) {
    let text;
    try { text = stringify(v); } catch (e) { return rec({ bad: "the resolver's value could not be serialized to JSON: " + e.message }); }
    if (typeof text !== "string") return rec({});
    const size = oversize(text, maxResponseBytes);
    if (size) return rec({ bad: "the resolver's value is at least " + size + " bytes as JSON; the limit is " + maxResponseBytes + " (limits.max_response_bytes)" });
    return rec({ j: text });
  }

  // What a connection hook returned: nothing, false (onConnect: refused), or a message (onConnect's
  // first event for its reader, onMessage's reply), as text the way sends make it.
  function hooked(v) {
    if (v === undefined) return rec({});
    if (v === false) return rec({ f: 1 });
    let text = v;
    if (typeof v !== "string") {
      try { text = stringify(v); } catch (e) { return rec({ bad: "the hook's value could not be serialized to JSON: " + e.message }); }
      if (typeof text !== "string") return rec({ bad: "the hook returned " + describe(v) + "; return a string or a JSON value" });
    }
    const size = oversize(text, maxMessageBytes);
    if (size) return rec({ bad: "the hook's value is at least " + size + " bytes; the limit is " + maxMessageBytes + " (limits.max_message_bytes)" });
    return typeof v === "string" ? rec({ t: text }) : rec({ j: text });
  }

  // A call's result as the engine takes it: `check(v)` now, or {p: id} and `check` once a Promise settles.
  function outcome(v, check) {
    if (v !== null && typeof v === "object" && typeof v.then === "function") {
      const id = ++callSeq;
      promiseThen(promiseResolve(PromiseCtor, v),
        (x) => { add(settled, rec({ id: id, o: check(x) })); },
        (e) => { add(settled, rec({ id: id, o: rec({ e: errorInfo(e) }) })); });
      return rec({ p: id });
    }
    return check(v);
  }

  let myName = null;

  // Claims from the engine, copied onto null prototypes (so lookups see only what was sent), less
  // this script's own: the engine sends every script the same text.
  function othersClaims(o) {
    const out = rec({});
    if (o === null || typeof o !== "object") return out;
    const names = keys(o);
    for (let i = 0; i < names.length; i++) {
      const v = o[names[i]];
      if (v !== null && typeof v === "object") {
        if (v.owner !== myName) out[names[i]] = rec({ kind: v.kind, text: v.text, owner: v.owner });
      } else if (v !== myName) {
        out[names[i]] = v;
      }
    }
    return out;
  }

  function takeClaims(o) {
    claims = othersClaims(o.claims);
    streamClaims = othersClaims(o.streamClaims);
    rebuildStreamKeys();
    gqlFields = othersClaims(o.gqlFields);
    gqlTypes = othersClaims(o.gqlTypes);
  }

  const rt = {
    setup: function (optionsJSON) {
      const o = parseJSON(optionsJSON);
      myName = o.name;
      takeClaims(o);
      if (o.maxMessageBytes) maxMessageBytes = o.maxMessageBytes;
      if (o.maxResponseBytes) maxResponseBytes = o.maxResponseBytes;
      if (o.maxCommands) maxCommands = o.maxCommands;
      if (o.logMax) logMax = o.logMax;
      if (o.privileged) privileged = true;
      if (o.maxScriptBytes) maxScriptBytes = o.maxScriptBytes;
      if (o.maxAssetBytes) maxAssetBytes = o.maxAssetBytes;
      if (o.logViewChars) logViewChars = o.logViewChars;
      logLines = list();
      const logs = o.logs || [];
      for (let i = 0; i < logs.length; i++) add(logLines, logs[i]);
      logLines = tail(logLines, logMax);
      return envelope(null);
    },
    // Other scripts' claims changed (one loaded or went away): keep register() checks current.
    setClaims: function (claimsJSON) {
      takeClaims(parseJSON(claimsJSON));
      return envelope(null);
    },
    // Privileged scripts: what changed among the scripts and assets (see `manage` above).
    manage: function (deltaJSON) {
      manage(parseJSON(deltaJSON));
      return envelope(null);
    },
    // The next piece of the last envelope's commands (see `envelope`).
    more: function () {
      if (!pieces.length) return "[]";
      const piece = pieces[0];
      pieces = arrSlice(pieces, 1);
      return piece;
    },
    drain: function (reason) {
      if (runningTimer && reason === "timeout") {
        const t = timers[runningTimer];
        if (t !== undefined && t.every) {
          deleteTimer(runningTimer);
          log("setInterval", "error", ["setInterval " + runningTimer + " was cleared: its callback ran past the time limit"], true);
        }
      }
      runningTimer = 0;
      stepping = 0; // left set by `fire` for the jobs after it, or by a call the time limit cut short
      wakes = 0;
      return envelope(null);
    },
    // The request arrives in raw pieces: splitting headers and the query here, in JS, keeps that
    // work off the GIL that the event loop needs.
    // Strings reach JS as C strings, so a path or body holding NUL comes JSON-encoded (flags 1, 2).
    // Flags 8: the headers are the head's own lines ("Name: value\r\n"...), split here, off the GIL.
    handle: function (index, method, path, rawQuery, headerBlob, body, paramsJSON, formJSON, flags) {
      local = true; // and the Promise jobs after it
      let out;
      try {
        if (flags & 1) path = parseJSON(path);
        if (flags & 2) body = parseJSON(body);
        const req = {
          method: method,
          path: path,
          query: parseQuery(rawQuery),
          form: formJSON ? parseJSON(formJSON) : {},
          headers: flags & 8 ? parseRawHeaders(headerBlob) : parseHeaders(headerBlob),
          body: body,
          params: paramsJSON ? parseJSON(paramsJSON) : {},
        };
        if (flags & 4) { try { req.json = parseJSON(body); } catch (e) { /* not JSON: req.json stays undefined */ } }
        out = outcome(handlers[index](req), response);
      } catch (e) {
        out = rec({ e: errorInfo(e) });
      }
      return envelope(out);
    },
    // This version was replaced: its intervals stop now. One-shot timers still fire, so requests
    // already waiting on them finish on this version before the context closes.
    retire: function () {
      const ids = keys(timers);
      for (let i = 0; i < ids.length; i++) if (timers[ids[i]].every) deleteTimer(ids[i]);
      timersDirty = true;
      return envelope(null);
    },
    // A connection hook: (conn, data or reason), both from JSON (conn's query as its raw text, parsed here).
    // parse 1: the argument is a client's message, given parsed if it is JSON and as text if not.
    hook: function (index, connJSON, argJSON, parse) {
      local = true; // and the Promise jobs after it
      let out;
      try {
        const c = parseJSON(connJSON);
        const conn = { id: c.id, path: c.path, params: c.params, query: parseQuery(c.query), transport: c.transport, user: c.user };
        let arg = parseJSON(argJSON);
        if (parse === 1) { try { arg = parseJSON(arg); } catch (e) { /* not JSON: the text itself */ } }
        out = outcome(handlers[index](conn, arg), hooked);
      } catch (e) {
        out = rec({ e: errorInfo(e) });
      }
      return envelope(out);
    },
    // A streaming response's next value (sse 1: fields from {event, id, data, retry}).
    step: function (id, sse, max, budget) {
      local = true; // and the Promise jobs after it
      let out;
      const it = iters[id];
      try {
        if (it === undefined) throw new ErrorCtor("no streaming response " + id);
        out = outcome(pull(id, it, stepValue(sse === 1), max, budget), (items) => rec({ items: items }));
      } catch (e) {
        out = rec({ e: errorInfo(e) });
      }
      if (out.e) dropIter(id);
      return envelope(out);
    },
    // The client left, or the response ended early: the iterator's return() runs its `finally`.
    stop: function (id) {
      local = true; // and the Promise jobs after it
      let out = rec({});
      const it = iters[id];
      settleOwned(id);
      dropIter(id);
      try {
        // Not waited for: an async generator parked on an await runs its return() (and `finally`)
        // only once that await settles, and nothing of the engine should wait that long with it.
        if (it !== undefined && typeof it.return === "function") {
          const r = it.return();
          if (isThenable(r)) promiseThen(r, () => {}, (e) => { log("return()", "error", ["a streaming response's return() threw:", e], true); });
        }
      } catch (e) {
        out = rec({ e: errorInfo(e) });
      }
      return envelope(out);
    },
    // A GraphQL resolver: (args, context) from JSON; its value comes back as JSON text.
    resolve: function (index, argsJSON, contextJSON) {
      local = true; // and the Promise jobs after it
      let out;
      try {
        out = outcome(handlers[index](parseJSON(argsJSON), parseJSON(contextJSON)), resolved);
      } catch (e) {
        out = rec({ e: errorInfo(e) });
      }
      return envelope(out);
    },
    // `leader`: whether this process runs the cluster's timers (one process of many; 1 alone).
    fire: function (leader) {
      if (firingNext >= firing.length) {
        firingAt = now();
        firing = list();
        firingNext = 0;
        const ids = keys(timers);
        for (let i = 0; i < ids.length; i++) {
          const t = timers[ids[i]];
          if (t.due <= firingAt) add(firing, rec({ id: toNumber(ids[i]), t: t }));
        }
        arrSort(firing, (a, b) => a.t.due - b.t.due || a.id - b.id);
      }
      const t0 = firingAt;
      while (firingNext < firing.length) {
        const id = firing[firingNext].id;
        const t = firing[firingNext].t;
        firingNext++;
        if (timers[id] !== t) continue; // cleared by an earlier callback
        if (!t.local && !leader) {
          // The cluster's: the elected process runs it. Here an interval skips its turn and a
          // one-shot waits (looked at again every PARKED_MS), so if this process is elected later
          // (the other went away), what the script's top level started goes on here.
          t.due = t.every ? (t.due + t.every > t0 ? t.due + t.every : t0 + t.every) : t0 + PARKED_MS;
          timersDirty = true;
          continue;
        }
        if (t.every) {
          t.due += t.every;
          if (t.due <= t0) t.due = t0 + t.every;
        } else {
          deleteTimer(id);
        }
        timersDirty = true;
        runningTimer = id;
        const owner = t.owner < 0 || (t.owner > 0 && iters[t.owner] !== undefined) ? t.owner : 0;
        stepping = owner;
        wakes = t.wakes;
        local = t.local;
        try { fnApply(t.fn, undefined, t.args); } catch (e) { log("setTimeout", "error", ["timer " + id + " threw:", e], true); }
        runningTimer = 0;
        // A response's timer: what it wakes (its generator's continuation, in the Promise jobs the
        // engine runs right after this call, before `drain` resets `stepping`) is the response's
        // too. The rest of `firing` waits for the next call, which the engine makes at once.
        if (owner !== 0) return envelope(null);
      }
      firing = list();
      firingNext = 0;
      stepping = 0;
      return envelope(null);
    },
  };
  // Python's one way in: `dispatch(name, ...)` calls rt[name]. It is returned, never a global, so no
  // script can call the dispatcher (or change its limits) itself; and it is one function, so starting
  // a context costs one crossing of the interpreter lock for it (under load each one waits for the
  // busy event loop to let go), not one per entry point.
  return function (name, a, b, c, d, e, f, h, i, j) { return rt[name](a, b, c, d, e, f, h, i, j); };
})
