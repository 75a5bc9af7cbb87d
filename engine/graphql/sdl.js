// A GraphQL SDL reader that runs inside each script's context, so that registerGraphQL* can throw at
// once, with the reason, for a fragment that is not valid (JS cannot call Python during a call).
// It reads the type-system subset scripts may use (type, interface, input, enum, scalar, union,
// `extend type` of a root type, descriptions, directives, default values) and checks what one
// fragment can be checked for: syntax, the one root field it must declare, references to unknown
// types and types used in the wrong position. graphql-core checks the merged schema again on load.
(function () {
  "use strict";
  const PUNCT = "!$&()[]{}:=@|";
  // Null-prototype tables: a type named "toString" or "constructor" must not find Object.prototype's.
  const table = (o) => Object.setPrototypeOf(o, null);
  const BUILTIN = table({ String: 1, Int: 1, Float: 1, Boolean: 1, ID: 1 });
  const ROOTS = table({ Query: 1, Mutation: 1, Subscription: 1 });
  const OUTPUT = table({ scalar: 1, enum: 1, type: 1, interface: 1, union: 1 });
  const INPUT = table({ scalar: 1, enum: 1, input: 1 });
  const KIND_WORDS = { type: "an object type", input: "an input type", interface: "an interface", union: "a union", enum: "an enum", scalar: "a scalar", root: "a root type" };
  const NAME_START = /[_A-Za-z]/;
  const NAME_CHAR = /[_0-9A-Za-z]/;
  const NUMBER = /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;

  function fail(at, message) {
    throw new Error(message + " (line " + at.line + ", column " + at.col + ")");
  }

  function lex(src) {
    const toks = [];
    let i = 0, line = 1, lineStart = 0;
    const n = src.length;
    const here = () => ({ line: line, col: i - lineStart + 1 });
    const push = (k, v, at) => toks.push({ k: k, v: v, line: at.line, col: at.col });
    while (i < n) {
      const c = src[i];
      if (c === " " || c === "\t" || c === "," || c === "\ufeff") { i++; continue; }
      if (c === "\n" || c === "\r") {
        i += c === "\r" && src[i + 1] === "\n" ? 2 : 1;
        line++;
        lineStart = i;
        continue;
      }
      if (c === "#") { while (i < n && src[i] !== "\n" && src[i] !== "\r") i++; continue; }
      const at = here();
      if (c === ".") {
        if (src.startsWith("...", i)) { push("P", "...", at); i += 3; continue; }
        fail(at, "Syntax Error: Unexpected \".\"");
      }
      if (PUNCT.indexOf(c) >= 0) { push("P", c, at); i++; continue; }
      if (NAME_START.test(c)) {
        let j = i + 1;
        while (j < n && NAME_CHAR.test(src[j])) j++;
        push("N", src.slice(i, j), at);
        i = j;
        continue;
      }
      if (c === "-" || (c >= "0" && c <= "9")) {
        NUMBER.lastIndex = i;
        const m = NUMBER.exec(src);
        if (!m) fail(at, "Syntax Error: Invalid number");
        const end = i + m[0].length;
        if (end < n && (NAME_CHAR.test(src[end]) || src[end] === ".")) fail(at, "Syntax Error: Invalid number");
        push("V", m[0], at);
        i = end;
        continue;
      }
      if (c === '"') {
        if (src.startsWith('"""', i)) {
          let j = i + 3;
          for (;;) {
            if (j >= n) fail(at, "Syntax Error: Unterminated string");
            if (src.startsWith('\\"""', j)) { j += 4; continue; }
            if (src.startsWith('"""', j)) break;
            if (src[j] === "\n" || (src[j] === "\r" && src[j + 1] !== "\n")) { line++; lineStart = j + 1; }
            j++;
          }
          push("S", src.slice(i, j + 3), at);
          i = j + 3;
          continue;
        }
        let j = i + 1;
        for (;;) {
          if (j >= n || src[j] === "\n" || src[j] === "\r") fail(at, "Syntax Error: Unterminated string");
          if (src[j] === '"') break;
          if (src[j] === "\\") {
            if (!/^(["\\/bfnrt]|u[0-9a-fA-F]{4})/.test(src.slice(j + 1, j + 6))) fail(at, "Syntax Error: Invalid escape sequence in a string");
            j += src[j + 1] === "u" ? 6 : 2;
            continue;
          }
          j++;
        }
        push("S", src.slice(i, j + 1), at);
        i = j + 1;
        continue;
      }
      fail(at, "Syntax Error: Unexpected character " + JSON.stringify(c));
    }
    toks.push({ k: "EOF", v: "<EOF>", line: line, col: i - lineStart + 1 });
    return toks;
  }

  function show(t) { return t.k === "EOF" ? "<EOF>" : t.k === "S" ? "a string" : '"' + t.v + '"'; }

  // The definitions of one fragment: [{kind, name, extend, text, fields, members, interfaces, at}].
  function parse(src) {
    const t = lex(src);
    let p = 0;
    const isP = (v) => t[p].k === "P" && t[p].v === v;
    const isN = (v) => t[p].k === "N" && t[p].v === v;
    const skipP = (v) => (isP(v) ? (p++, true) : false);
    function expectP(v) { if (!isP(v)) fail(t[p], "Syntax Error: Expected \"" + v + "\", found " + show(t[p])); p++; }
    function name() { if (t[p].k !== "N") fail(t[p], "Syntax Error: Expected Name, found " + show(t[p])); return t[p++]; }
    function description() { if (t[p].k === "S") p++; }
    function typeRef() {
      if (skipP("[")) { const inner = typeRef(); expectP("]"); skipP("!"); return inner; }
      const n = name();
      skipP("!");
      return n;
    }
    function value() {
      const tok = t[p];
      if (skipP("[")) { while (!skipP("]")) value(); return; }
      if (skipP("{")) { while (!skipP("}")) { name(); expectP(":"); value(); } return; }
      if (isP("$")) fail(tok, "Syntax Error: Unexpected variable in a constant value");
      if (tok.k === "N" || tok.k === "V" || tok.k === "S") { p++; return; }
      fail(tok, "Syntax Error: Unexpected " + show(tok));
    }
    function directives() {
      while (skipP("@")) {
        name();
        if (skipP("(")) { do { name(); expectP(":"); value(); } while (!skipP(")")); }
      }
    }
    function inputValues(close) {
      const out = [];
      do {
        description();
        const n = name();
        expectP(":");
        out.push({ name: n.v, type: typeRef(), input: true });
        if (skipP("=")) value();
        directives();
      } while (!skipP(close));
      return out;
    }
    function fields() {
      const out = [];
      expectP("{");
      do {
        description();
        const n = name();
        const args = skipP("(") ? inputValues(")") : [];
        expectP(":");
        out.push({ name: n.v, at: n, type: typeRef(), args: args });
        directives();
      } while (!skipP("}"));
      return out;
    }
    const defs = [];
    while (t[p].k !== "EOF") {
      const start = p;
      description();
      const kw = name();
      const def = { kind: kw.v, extend: false, fields: [], members: [], interfaces: [], at: kw };
      if (kw.v === "extend") {
        def.extend = true;
        def.kind = name().v;
        if (def.kind !== "type") fail(kw, "only the root types (Query, Mutation, Subscription) can be extended here");
      }
      if (kw.v === "schema" || kw.v === "directive") {
        fail(kw, "\"" + kw.v + "\" definitions are not supported in script SDL; declare types and root fields only");
      }
      if (!(def.kind in OUTPUT) && def.kind !== "input") {
        fail(kw, "Syntax Error: Expected a type definition (type, input, enum, interface, union, scalar), found " + show(kw));
      }
      const n = name();
      def.name = n.v;
      def.nameAt = n;
      if ((def.kind === "type" || def.kind === "interface") && t[p].k === "N" && t[p].v === "implements") {
        p++;
        skipP("&");
        do def.interfaces.push(name()); while (skipP("&"));
      }
      directives();
      if (def.kind === "type" || def.kind === "interface") def.fields = fields();
      else if (def.kind === "input") { expectP("{"); def.fields = inputValues("}"); }
      else if (def.kind === "enum") {
        expectP("{");
        do {
          description();
          const v = name();
          if (v.v === "true" || v.v === "false" || v.v === "null") fail(v, "enum value " + v.v + " is reserved");
          directives();
        } while (!skipP("}"));
      } else if (def.kind === "union") {
        expectP("=");
        skipP("|");
        do def.members.push(name()); while (skipP("|"));
      }
      def.text = t.slice(start, p).map((x) => x.v).join(" ");
      defs.push(def);
    }
    return defs;
  }

  // Check one registration's fragment. `kind` is query/mutation/subscription; `lookup(name)` gives a
  // type this script declared in an earlier fragment ({kind, text}) or another script's ({kind,
  // text, owner}). Returns the non-root types the fragment declares: {name: {kind, text}}.
  function readFragment(src, kind, field, lookup) {
    const root = kind[0].toUpperCase() + kind.slice(1);
    const defs = parse(String(src));
    const local = table({});
    const rootFields = [];
    for (const d of defs) {
      if (d.name.startsWith("__")) fail(d.nameAt, "names starting with \"__\" are reserved for introspection");
      if (d.name in BUILTIN) fail(d.nameAt, d.name + " is a built-in type and cannot be redefined");
      if (d.name in ROOTS) {
        if (d.kind !== "type") fail(d.nameAt, d.name + " is a root type; declare it as \"type " + d.name + " { ... }\"");
        if (d.name !== root) fail(d.nameAt, "a " + kind + " declares its field in type " + root + ", not " + d.name + " (use registerGraphQL" + d.name + " for that)");
        if (d.interfaces.length) fail(d.nameAt, "root type " + root + " cannot implement interfaces here");
        rootFields.push(...d.fields);
        continue;
      }
      if (d.extend) fail(d.at, "only the root types (Query, Mutation, Subscription) can be extended here");
      if (local[d.name] && local[d.name].text !== d.text) fail(d.nameAt, "type " + d.name + " is declared twice in this fragment");
      local[d.name] = d;
    }
    const rootField = rootFields.find((f) => f.name === field);
    if (!rootField) {
      throw new Error("the SDL must declare the field " + field + " in type " + root + ", as in \"type " + root + " { " + field + ": String }\"" + (rootFields.length ? " (it declares " + rootFields.map((f) => f.name).join(", ") + ")" : ""));
    }
    for (const f of rootFields) {
      if (f !== rootField) fail(f.at, "this fragment registers " + root + "." + field + " and may declare no other " + root + " field (found " + f.name + "); register each field on its own");
    }
    const out = table({});
    for (const name of Object.keys(local)) {
      const d = local[name];
      const known = lookup(name);
      if (known && known.text !== d.text) {
        throw new Error("type " + name + " is already declared differently " + (known.owner ? "by script " + known.owner : "in this script") + "; a type shared by several fragments must be declared the same way in each");
      }
      out[name] = table({ kind: d.kind, text: d.text });
    }
    function kindOf(tok) {
      if (tok.v in BUILTIN) return "scalar";
      if (tok.v in ROOTS) return "root";
      if (local[tok.v]) return local[tok.v].kind;
      const known = lookup(tok.v);
      if (known && !known.owner) return known.kind;
      fail(tok, "unknown type " + tok.v + (known ? " (script " + known.owner + " declares it; declare it in this script too)" : ""));
    }
    function use(tok, allowed, where) {
      const k = kindOf(tok);
      if (!allowed[k]) fail(tok, where + " must be " + (allowed === INPUT ? "an input type (scalar, enum or input)" : "an output type (not an input)") + ", but " + tok.v + " is " + KIND_WORDS[k]);
    }
    const checkField = (owner, f) => {
      use(f.type, OUTPUT, owner + "." + f.name);
      for (const a of f.args) use(a.type, INPUT, "argument " + a.name + " of " + owner + "." + f.name);
    };
    checkField(root, rootField);
    for (const name of Object.keys(local)) {
      const d = local[name];
      if (d.kind === "input") for (const f of d.fields) use(f.type, INPUT, name + "." + f.name);
      else for (const f of d.fields) checkField(name, f);
      for (const m of d.members) if (kindOf(m) !== "type") fail(m, "union " + name + " may only contain object types, but " + m.v + " is not one");
      for (const i of d.interfaces) if (kindOf(i) !== "interface") fail(i, name + " can only implement interfaces, but " + i.v + " is not one");
    }
    return out;
  }

  return { readFragment: readFragment };
})()
