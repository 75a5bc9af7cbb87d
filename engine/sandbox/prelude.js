// The JS half of the host API, evaluated in every script context before the script itself.
// JS cannot call Python while a time limit is set, so each host function validates its arguments,
// throws an Error a script can catch, and queues a command; the engine drains the queue after every
// call (see context.py). Everything returned to Python is one JSON string (lone surrogates escaped).
(function (hostNamesJSON, sdl) {
  "use strict";
  const g = globalThis;
  const HOST_NAMES = JSON.parse(hostNamesJSON);
  const MAX_LOG_LINE = 16384;
  const MIN_INTERVAL_MS = 4;
  const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"];
  const RESERVED = [/^\/graphql/, /^\/health$/, /^\/health\//, /^\/metrics$/, /^\/metrics\//, /^\/_engine(\/|$)/];
  // Leading stack frames of these names are the host's, not the script's: hidden from its errors.
  const HOST_FRAMES = new Set(HOST_NAMES.map((n) => n.split(".").pop()).concat(["hostError", "checkPath", "checkPathText", "checkReserved", "messageText", "messageOptions", "addTimer", "registerGraphQL", "resolveHandler", "checkNotSubscription"]));
  const GRAPHQL_NAME = /^[_A-Za-z][_0-9A-Za-z]*$/;
  const SUBSCRIPTION_STREAMS = "/graphql/subscription/";

  let commands = [];
  let settled = [];
  const handlers = [];
  const timers = new Map();
  let timerSeq = 0;
  let callSeq = 0;
  let timersDirty = true;
  let runningTimer = 0;
  let logLines = [];
  let logMax = 500;
  let claims = {}; // "GET /a/{}" -> script that owns it (other scripts only)
  let streamClaims = {}; // "/events" -> script that owns it (other scripts only)
  let gqlFields = {}; // "Query.hello" -> script that owns it (other scripts only)
  let gqlTypes = {}; // "User" -> {kind, text, owner}: types other scripts declare
  let maxMessageBytes = 1048576;
  const ownFields = new Set();
  const ownTypes = {}; // "User" -> {kind, text}: types this script declared
  const ownRoutes = new Set();
  const ownStreams = new Set();
  const hasOwn = Object.prototype.hasOwnProperty;

  function hostError(message) {
    const e = new Error(message);
    const lines = String(e.stack || "").split("\n");
    let i = 0;
    while (i < lines.length && HOST_FRAMES.has((/^\s*at (\S+) \(/.exec(lines[i]) || [])[1])) i++;
    e.stack = lines.slice(i).join("\n");
    return e;
  }

  // The dispatcher's own frames (handle, fire, Function.prototype.apply) end every stack: drop them.
  function cleanStack(stack) {
    const lines = String(stack || "").split("\n").filter((l) => l.trim() !== "");
    while (lines.length && /^\s*at (handle|resolve|fire|apply) \((<input>:\d+(:\d+)?|native)\)$/.test(lines[lines.length - 1])) lines.pop();
    return lines.join("\n");
  }

  function describe(v) {
    if (v === undefined) return "undefined";
    if (v === null) return "null";
    if (typeof v === "string") return JSON.stringify(v.length > 60 ? v.slice(0, 60) + "..." : v);
    if (typeof v === "function") return "a function";
    if (Array.isArray(v)) return "an array";
    if (typeof v === "object") return "an object";
    return typeof v + " " + String(v);
  }

  function format(v) {
    if (typeof v === "string") return v;
    if (v instanceof Error) return v.stack ? v.name + ": " + v.message + "\n" + cleanStack(v.stack) : String(v);
    if (typeof v === "object" && v !== null) {
      try { return JSON.stringify(v); } catch (e) { /* cyclic or BigInt inside */ }
    }
    try { return String(v); } catch (e) { return "[unprintable]"; }
  }

  function log(level, args) {
    let text = Array.prototype.map.call(args, format).join(" ");
    if (text.length > MAX_LOG_LINE) text = text.slice(0, MAX_LOG_LINE) + "... (truncated)";
    logLines.push(text);
    if (logLines.length > logMax) logLines.splice(0, logLines.length - logMax);
    commands.push({ op: "log", level: level, msg: text });
  }

  // The rules every path follows, routes and streams alike.
  function checkPathText(fn, path, maxLength) {
    if (typeof path !== "string" || path.length === 0) throw hostError(fn + ": path must be a non-empty string starting with '/', got " + describe(path));
    if (path[0] !== "/") throw hostError(fn + ": path must start with '/', got " + describe(path));
    if (path.length > maxLength) throw hostError(fn + ": path is longer than " + maxLength + " characters");
    if (/[\s\x00-\x1f\x7f?#]/.test(path)) throw hostError(fn + ": path must not contain whitespace, control characters, '?' or '#', got " + describe(path));
  }

  function checkReserved(fn, path) {
    for (const re of RESERVED) {
      if (re.test(path)) throw hostError(fn + ": " + path + " is reserved by the engine (/graphql*, /health, /metrics, /_engine/*)");
    }
  }

  function checkPath(fn, path) {
    checkPathText(fn, path, 1024);
    checkReserved(fn, path);
    const segments = path.split("/").slice(1);
    const names = new Set();
    const key = [];
    segments.forEach((seg, i) => {
      const last = i === segments.length - 1;
      if (seg === "" && !last) throw hostError(fn + ": path has an empty segment ('//'): " + path);
      if (seg === "*") {
        if (!last) throw hostError(fn + ": '*' may only be the last segment: " + path);
        key.push("*");
      } else if (seg.includes("{") || seg.includes("}")) {
        const m = /^\{([A-Za-z_][A-Za-z0-9_]*)\}$/.exec(seg);
        if (!m) throw hostError(fn + ": a parameter must be a whole segment like {name}, got '" + seg + "' in " + path);
        if (names.has(m[1])) throw hostError(fn + ": parameter {" + m[1] + "} appears twice in " + path);
        names.add(m[1]);
        key.push("{}");
      } else if (seg.includes("*")) {
        throw hostError(fn + ": '*' must be a whole last segment ('/prefix/*'), got '" + seg + "' in " + path);
      } else {
        key.push(seg);
      }
    });
    return "/" + key.join("/");
  }

  function resolveHandler(handler, where, fnName, what) {
    if (typeof handler === "function") return handler;
    if (handler === undefined || handler === null) throw hostError(fnName + ": missing " + what + " for " + where);
    if (typeof handler !== "string") throw hostError(fnName + ": " + what + " for " + where + " must be a function or the name of one, got " + describe(handler));
    if (!/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(handler)) throw hostError(fnName + ": " + what + " name " + describe(handler) + " is not a valid function name");
    let fn;
    try { fn = (0, eval)(handler); } catch (e) { fn = undefined; } // finds let/const/function globals
    if (typeof fn !== "function") throw hostError(fnName + ": " + what + " '" + handler + "' for " + where + " is not a function defined in this script");
    return fn;
  }

  function register(path, handler, method) {
    if (method === undefined) method = "GET";
    if (typeof method !== "string" || METHODS.indexOf(method.toUpperCase()) < 0) {
      throw hostError("register: method must be one of " + METHODS.join(", ") + ", got " + describe(method));
    }
    method = method.toUpperCase();
    const key = method + " " + checkPath("register", path);
    const where = method + " " + path;
    const fn = resolveHandler(handler, where, "register", "handler");
    if (ownRoutes.has(key)) throw hostError("register: " + where + " is already registered by this script");
    if (method === "GET" && (ownStreams.has(path) || hasOwn.call(streamClaims, path))) {
      throw hostError("register: " + path + " is a stream" + (ownStreams.has(path) ? "" : " of script " + streamClaims[path]) + "; a path cannot be both a stream and a GET route");
    }
    if (hasOwn.call(claims, key)) throw hostError("register: " + where + " is already registered by script " + claims[key]);
    ownRoutes.add(key);
    handlers.push(fn);
    commands.push({ op: "route", method: method, path: path, handler: handlers.length - 1 });
  }

  function registerWebStream(path, options) {
    checkPathText("registerWebStream", path, 200);
    if (options !== undefined && (options === null || typeof options !== "object")) {
      throw hostError("registerWebStream: options must be an object, got " + describe(options));
    }
    checkReserved("registerWebStream", path);
    if (ownStreams.has(path)) return;
    if (hasOwn.call(streamClaims, path)) throw hostError("registerWebStream: " + path + " is already registered by script " + streamClaims[path]);
    const getKey = "GET " + path;
    if (ownRoutes.has(getKey) || hasOwn.call(claims, getKey)) {
      throw hostError("registerWebStream: " + path + " is a GET route" + (ownRoutes.has(getKey) ? "" : " of script " + claims[getKey]) + "; a path cannot be both a stream and a GET route");
    }
    ownStreams.add(path);
    commands.push({ op: "stream", path: path });
  }

  // registerGraphQLQuery/Mutation/Subscription: the fragment is read and checked here (sdl.js), so a
  // bad one throws at the call; graphql-core checks the merged schema again when the load is applied.
  function registerGraphQL(fnName, kind, name, typeDefs, resolver) {
    if (typeof name !== "string" || !GRAPHQL_NAME.test(name) || name.startsWith("__")) {
      throw hostError(fnName + ": name must be a GraphQL name (letters, digits and _, not starting with a digit or __), got " + describe(name));
    }
    const root = kind === "query" ? "Query" : kind === "mutation" ? "Mutation" : "Subscription";
    const key = root + "." + name;
    if (typeof typeDefs !== "string") throw hostError(fnName + ": sdl must be a string such as \"type " + root + " { " + name + ": String }\", got " + describe(typeDefs));
    const fn = resolveHandler(resolver, key, fnName, "resolver");
    if (ownFields.has(key)) throw hostError(fnName + ": " + key + " is already registered by this script");
    if (hasOwn.call(gqlFields, key)) throw hostError(fnName + ": " + key + " is already registered by script " + gqlFields[key]);
    const lookup = (t) => (hasOwn.call(ownTypes, t) ? ownTypes[t] : hasOwn.call(gqlTypes, t) ? gqlTypes[t] : undefined);
    let types;
    try { types = sdl.readFragment(typeDefs, kind, name, lookup); } catch (e) { throw hostError(fnName + ": invalid SDL for " + key + ": " + e.message); }
    for (const t of Object.keys(types)) ownTypes[t] = types[t];
    ownFields.add(key);
    handlers.push(fn);
    commands.push({ op: "gql", kind: kind, name: name, sdl: typeDefs, handler: handlers.length - 1, types: types });
  }

  function sendSubscriptionMessage(name, data) {
    if (typeof name !== "string" || !(ownFields.has("Subscription." + name) || hasOwn.call(gqlFields, "Subscription." + name))) {
      throw hostError("sendSubscriptionMessage: no GraphQL subscription named " + describe(name) + " is registered");
    }
    commands.push({ op: "gqlsend", name: name, data: messageText("sendSubscriptionMessage", data), json: typeof data !== "string" });
  }

  function checkNotSubscription(fn, path) {
    if (path.startsWith(SUBSCRIPTION_STREAMS)) throw hostError(fn + ": " + path + " is a GraphQL subscription's stream; send to it with sendSubscriptionMessage");
  }

  function utf8Length(s) {
    let n = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
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
      try { text = JSON.stringify(data); } catch (e) { throw hostError(fn + ": the message could not be serialized to JSON: " + e.message); }
      if (text === undefined) throw hostError(fn + ": the message must be a string or a JSON value, got " + describe(data));
    }
    // Most strings are decided by their length alone; only the rest are measured in UTF-8 bytes.
    if (text.length * 3 > maxMessageBytes) {
      const bytes = text.length > maxMessageBytes ? text.length : utf8Length(text);
      if (bytes > maxMessageBytes) throw hostError(fn + ": the message is at least " + bytes + " bytes; the limit is " + maxMessageBytes + " (limits.max_message_bytes)");
    }
    return text;
  }

  function knownStream(path) { return ownStreams.has(path) || hasOwn.call(streamClaims, path); }

  function messageOptions(fn, options, cmd) {
    if (options === undefined || options === null) return cmd;
    if (typeof options !== "object") throw hostError(fn + ": options must be an object, got " + describe(options));
    if (options.event !== undefined) {
      if (typeof options.event !== "string" || options.event.length === 0 || /[\r\n]/.test(options.event)) {
        throw hostError(fn + ": options.event must be a non-empty string without line breaks, got " + describe(options.event));
      }
      cmd.event = options.event;
    }
    return cmd;
  }

  function sendStreamMessage(data, options) {
    const cmd = messageOptions("sendStreamMessage", options, { op: "send", data: messageText("sendStreamMessage", data) });
    if (options !== undefined && options !== null && options.path !== undefined) {
      const paths = typeof options.path === "string" ? [options.path] : options.path;
      if (!Array.isArray(paths) || paths.some((p) => typeof p !== "string")) {
        throw hostError("sendStreamMessage: options.path must be a string or a list of strings, got " + describe(options.path));
      }
      for (const p of paths) checkNotSubscription("sendStreamMessage", p);
      for (const p of paths) if (!knownStream(p)) throw hostError("sendStreamMessage: no stream is registered at " + describe(p));
      cmd.paths = paths;
    }
    commands.push(cmd);
  }

  function sendStreamMessageToPath(path, data, options) {
    checkPathText("sendStreamMessageToPath", path, 200);
    checkNotSubscription("sendStreamMessageToPath", path);
    if (!knownStream(path)) throw hostError("sendStreamMessageToPath: no stream is registered at " + describe(path));
    const cmd = messageOptions("sendStreamMessageToPath", options, { op: "send", data: messageText("sendStreamMessageToPath", data), paths: [path] });
    commands.push(cmd);
  }

  function addTimer(fn, ms, args, repeat) {
    const name = repeat ? "setInterval" : "setTimeout";
    if (typeof fn !== "function") throw hostError(name + ": the callback must be a function, got " + describe(fn));
    ms = Number(ms);
    if (!(ms >= 0)) ms = 0;
    if (repeat && ms < MIN_INTERVAL_MS) ms = MIN_INTERVAL_MS;
    const id = ++timerSeq;
    timers.set(id, { fn: fn, args: args, due: Date.now() + ms, every: repeat ? ms : 0 });
    timersDirty = true;
    return id;
  }

  function clearTimer(id) {
    if (timers.delete(Number(id))) timersDirty = true;
  }

  const api = {
    register: register,
    registerWebStream: registerWebStream,
    sendStreamMessage: sendStreamMessage,
    sendStreamMessageToPath: sendStreamMessageToPath,
    registerGraphQLQuery: function registerGraphQLQuery(name, sdl, resolver) { registerGraphQL("registerGraphQLQuery", "query", name, sdl, resolver); },
    registerGraphQLMutation: function registerGraphQLMutation(name, sdl, resolver) { registerGraphQL("registerGraphQLMutation", "mutation", name, sdl, resolver); },
    registerGraphQLSubscription: function registerGraphQLSubscription(name, sdl, resolver) { registerGraphQL("registerGraphQLSubscription", "subscription", name, sdl, resolver); },
    sendSubscriptionMessage: sendSubscriptionMessage,
    writeLog: function writeLog(message) { log("info", [message]); },
    listLogs: function listLogs() { return logLines.slice(); },
    "console.log": function log_(...a) { log("info", a); },
    "console.info": function info(...a) { log("info", a); },
    "console.debug": function debug(...a) { log("debug", a); },
    "console.warn": function warn(...a) { log("warning", a); },
    "console.error": function error(...a) { log("error", a); },
    setTimeout: function setTimeout(fn, ms, ...args) { return addTimer(fn, ms, args, false); },
    setInterval: function setInterval(fn, ms, ...args) { return addTimer(fn, ms, args, true); },
    clearTimeout: function clearTimeout(id) { clearTimer(id); },
    clearInterval: function clearInterval(id) { clearTimer(id); },
  };

  const declared = new Set(HOST_NAMES);
  for (const name of Object.keys(api)) {
    if (!declared.has(name)) throw new Error("prelude defines " + name + ", which host_api.py does not declare");
  }
  for (const name of HOST_NAMES) {
    if (typeof api[name] !== "function") throw new Error("host_api.py declares " + name + ", which the prelude does not define");
    const parts = name.split(".");
    let target = g;
    for (const p of parts.slice(0, -1)) {
      if (typeof target[p] !== "object" || target[p] === null) target[p] = {};
      target = target[p];
    }
    Object.defineProperty(target, parts[parts.length - 1], { value: api[name], writable: true, configurable: true, enumerable: false });
  }

  // ---- what the engine calls -------------------------------------------------------------

  function errorInfo(e) {
    // Text only: context.py decides what it means (a bare null is how QuickJS reports running out of
    // memory when it cannot even build the error) and trims the dispatcher's frames.
    if (e === null) return { m: "null", st: "" };
    if (e instanceof Error) return { m: e.name + ": " + e.message, st: String(e.stack || "") };
    let text;
    try { text = typeof e === "string" ? e : JSON.stringify(e); } catch (x) { text = undefined; }
    if (text === undefined) { try { text = String(e); } catch (x) { text = "[unprintable value]"; } }
    return { m: "uncaught " + text, st: "" };
  }

  // A handler's return value, checked and turned into {s, b, t, h}, or {bad: why}.
  function response(v) {
    if (typeof v === "string") return { r: { s: 200, b: v, t: "text/plain; charset=utf-8" } };
    if (v === undefined) return { bad: "the handler returned nothing; return a string or {status, body}" };
    if (v === null || typeof v !== "object" || Array.isArray(v)) {
      return { bad: "the handler returned " + describe(v) + "; return a string or {status, body}" };
    }
    let status = v.status === undefined ? 200 : v.status;
    if (typeof status === "string" && /^[0-9]{3}$/.test(status)) status = Number(status);
    if (!Number.isInteger(status) || status < 200 || status > 599) {
      return { bad: "status must be an integer from 200 to 599, got " + describe(v.status) };
    }
    const out = { s: status, b: "" };
    const body = v.body;
    if (typeof body === "string") {
      out.b = body;
    } else if (body !== undefined && body !== null) {
      if (typeof body !== "object") return { bad: "body must be a string, an object or an array, got " + describe(body) };
      try { out.b = JSON.stringify(body); } catch (e) { return { bad: "body could not be serialized to JSON: " + e.message }; }
      if (out.b === undefined) return { bad: "body could not be serialized to JSON" };
      out.t = "application/json";
    }
    if (v.contentType !== undefined) {
      if (typeof v.contentType !== "string") return { bad: "contentType must be a string, got " + describe(v.contentType) };
      out.t = v.contentType;
    }
    if (v.headers !== undefined && v.headers !== null) {
      if (typeof v.headers !== "object" || Array.isArray(v.headers)) return { bad: "headers must be an object of strings, got " + describe(v.headers) };
      const h = {};
      for (const k of Object.keys(v.headers)) {
        const hv = v.headers[k];
        if (typeof hv !== "string" && typeof hv !== "number" && typeof hv !== "boolean") {
          return { bad: "header " + k + " must be a string, got " + describe(hv) };
        }
        h[k] = String(hv);
      }
      out.h = h;
    }
    return { r: out };
  }

  function put(obj, key, value) {
    if (key === "__proto__") Object.defineProperty(obj, key, { value: value, enumerable: true, writable: true, configurable: true });
    else obj[key] = value;
  }

  function decodeComponent(s) {
    s = s.replace(/\+/g, " ");
    try { return decodeURIComponent(s); } catch (e) { return s; }
  }

  // "a=1&b=&a=2" -> {a: "1", b: ""}: the first value of a repeated name wins.
  function parseQuery(qs) {
    const out = {};
    if (!qs) return out;
    for (const part of qs.split("&")) {
      if (!part) continue;
      const eq = part.indexOf("=");
      const key = decodeComponent(eq < 0 ? part : part.slice(0, eq));
      if (!Object.prototype.hasOwnProperty.call(out, key)) put(out, key, eq < 0 ? "" : decodeComponent(part.slice(eq + 1)));
    }
    return out;
  }

  // "Name\nvalue\nName2\nvalue2" -> lower-case names; repeated names joined with ", ".
  function parseHeaders(blob) {
    const out = {};
    if (!blob) return out;
    const parts = blob.split("\n");
    for (let i = 0; i + 1 < parts.length; i += 2) {
      const name = parts[i].toLowerCase();
      if (Object.prototype.hasOwnProperty.call(out, name)) out[name] += ", " + parts[i + 1];
      else put(out, name, parts[i + 1]);
    }
    return out;
  }

  function nextDue() {
    let due = null;
    for (const t of timers.values()) if (due === null || t.due < due) due = t.due;
    return due;
  }

  // Strings reach Python as C strings: NUL would cut them, lone surrogates would not decode.
  const UNSAFE_FOR_FAST_PATH = /[\0\ud800-\udfff]/;

  function envelope(out) {
    // The common case, a plain response and nothing else, skips JSON (JSON.stringify is the
    // slowest step of a call): "R<status>\n<content type>\n<body>".
    if (out !== null && out.r !== undefined && !commands.length && !settled.length && !timersDirty) {
      const r = out.r;
      if (r.h === undefined && r.t !== undefined && r.t.indexOf("\n") < 0 && !UNSAFE_FOR_FAST_PATH.test(r.b)) {
        return ["R" + r.s, r.t, r.b].join("\n"); // join, not +: the binding cannot take a rope string
      }
    }
    const env = { o: out };
    if (commands.length) { env.c = commands; commands = []; }
    if (settled.length) { env.s = settled; settled = []; }
    if (timersDirty) { env.t = nextDue(); timersDirty = false; }
    return JSON.stringify(env);
  }

  // A resolver's value as JSON text ({j}), none for undefined, or why it cannot be sent ({bad}).
  function resolved(v) {
    let text;
    try { text = JSON.stringify(v); } catch (e) { return { bad: "the resolver's value could not be serialized to JSON: " + e.message }; }
    return text === undefined ? {} : { j: text };
  }

  // A call's result as the engine takes it: `check(v)` now, or {p: id} and `check` once a Promise settles.
  function outcome(v, check) {
    if (v !== null && typeof v === "object" && typeof v.then === "function") {
      const id = ++callSeq;
      const [ok, fail] = settle(id, check);
      Promise.resolve(v).then(ok, fail);
      return { p: id };
    }
    return check(v);
  }

  function settle(id, check) {
    return [
      (v) => { settled.push({ id: id, o: check(v) }); },
      (e) => { settled.push({ id: id, o: { e: errorInfo(e) } }); },
    ];
  }

  const rt = {
    setup: function (optionsJSON) {
      const o = JSON.parse(optionsJSON);
      claims = o.claims || {};
      streamClaims = o.streamClaims || {};
      gqlFields = o.gqlFields || {};
      gqlTypes = o.gqlTypes || {};
      maxMessageBytes = o.maxMessageBytes || maxMessageBytes;
      logMax = o.logMax || logMax;
      logLines = (o.logs || []).slice(-logMax);
      return envelope(null);
    },
    // Other scripts' claims changed (one loaded or went away): keep register() checks current.
    setClaims: function (claimsJSON) {
      const o = JSON.parse(claimsJSON);
      claims = o.claims;
      streamClaims = o.streamClaims;
      gqlFields = o.gqlFields;
      gqlTypes = o.gqlTypes;
      return envelope(null);
    },
    drain: function (reason) {
      if (runningTimer && reason === "timeout") {
        const t = timers.get(runningTimer);
        if (t && t.every) {
          timers.delete(runningTimer);
          timersDirty = true;
          log("error", ["setInterval " + runningTimer + " was cleared: its callback ran past the time limit"]);
        }
      }
      runningTimer = 0;
      return envelope(null);
    },
    // The request arrives in raw pieces: splitting headers and the query here, in JS, keeps that
    // work off the GIL that the event loop needs.
    // Strings reach JS as C strings, so a path or body holding NUL comes JSON-encoded (flags 1, 2).
    handle: function (index, method, path, rawQuery, headerBlob, body, paramsJSON, formJSON, flags) {
      let out;
      try {
        if (flags & 1) path = JSON.parse(path);
        if (flags & 2) body = JSON.parse(body);
        const req = {
          method: method,
          path: path,
          query: parseQuery(rawQuery),
          form: formJSON ? JSON.parse(formJSON) : {},
          headers: parseHeaders(headerBlob),
          body: body,
          params: paramsJSON ? JSON.parse(paramsJSON) : {},
        };
        if (flags & 4) { try { req.json = JSON.parse(body); } catch (e) { /* not JSON: req.json stays undefined */ } }
        out = outcome(handlers[index](req), response);
      } catch (e) {
        out = { e: errorInfo(e) };
      }
      return envelope(out);
    },
    // This version was replaced: its intervals stop now. One-shot timers still fire, so requests
    // already waiting on them finish on this version before the context closes.
    retire: function () {
      for (const [id, t] of timers) if (t.every) timers.delete(id);
      timersDirty = true;
      return envelope(null);
    },
    // A GraphQL resolver: (args, context) from JSON; its value comes back as JSON text.
    resolve: function (index, argsJSON, contextJSON) {
      let out;
      try {
        out = outcome(handlers[index](JSON.parse(argsJSON), JSON.parse(contextJSON)), resolved);
      } catch (e) {
        out = { e: errorInfo(e) };
      }
      return envelope(out);
    },
    fire: function () {
      const now = Date.now();
      const due = [];
      for (const [id, t] of timers) if (t.due <= now) due.push([id, t]);
      due.sort((a, b) => a[1].due - b[1].due || a[0] - b[0]);
      for (const [id, t] of due) {
        if (!timers.has(id)) continue; // cleared by an earlier callback
        if (t.every) {
          t.due += t.every;
          if (t.due <= now) t.due = now + t.every;
        } else {
          timers.delete(id);
        }
        timersDirty = true;
        runningTimer = id;
        try { t.fn.apply(undefined, t.args); } catch (e) { log("error", ["timer " + id + " threw:", e]); }
        runningTimer = 0;
      }
      return envelope(null);
    },
  };
  Object.defineProperty(g, "__rt", { value: rt, writable: false, configurable: false, enumerable: false });
})
