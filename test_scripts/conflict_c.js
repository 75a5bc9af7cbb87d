// Catches the conflict and serves the reason; /shared/{x} collides with a's /shared/{id}.
let reason = null;
try { register("/shared/{x}", function () { return "from c"; }); } catch (e) { reason = e.message; }
register("/shared", function () { return "c's POST"; }, "POST");
register("/conflict-reason", function () { return { body: { reason: reason } }; });
