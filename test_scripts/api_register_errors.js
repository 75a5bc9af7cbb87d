// register() with bad arguments throws Errors that a script can catch; this one collects them.
const errors = {};
function attempt(label, fn) {
  try { fn(); errors[label] = null; } catch (e) { errors[label] = { name: e.name, message: e.message }; }
}
function ok(req) { return "ok"; }
attempt("no-slash", () => register("nope", ok));
attempt("empty", () => register("", ok));
attempt("missing-path", () => register());
attempt("number-path", () => register(42, ok));
attempt("space", () => register("/a b", ok));
attempt("query", () => register("/a?b=1", ok));
attempt("bad-param", () => register("/a/{b-c}", ok));
attempt("partial-param", () => register("/a/x{b}", ok));
attempt("dup-param", () => register("/a/{b}/{b}", ok));
attempt("mid-star", () => register("/a/*/b", ok));
attempt("reserved-graphql", () => register("/graphql", ok));
attempt("reserved-health", () => register("/health", ok));
attempt("reserved-engine", () => register("/_engine/scripts", ok));
attempt("reserved-metrics", () => register("/metrics", ok));
attempt("bad-method", () => register("/m", ok, "FETCH"));
attempt("number-method", () => register("/m", ok, 7));
attempt("missing-handler", () => register("/h"));
attempt("unknown-handler", () => register("/h", "noSuchFunction"));
attempt("not-a-function", () => register("/h", "errors"));
attempt("bad-handler-type", () => register("/h", 12));
attempt("handler-injection", () => register("/h", "ok; globalThis.pwned = 1"));
attempt("twice", () => { register("/twice", ok); register("/twice", ok); });
attempt("lowercase-method", () => register("/lower", ok, "post"));
register("/register-errors", function () { return { body: errors }; });
