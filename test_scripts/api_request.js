// Echoes the whole req object, for every method, on plain, parameter and prefix paths.
function echo(req) { return { body: req }; }
for (const m of ["GET", "POST", "PUT", "PATCH", "DELETE"]) {
  register("/echo", echo, m);
}
register("/users/{id}/posts/{post}", echo);
register("/files/*", echo);
register("/users/me", function () { return "me"; });
register("/users/me", function () { return "posted to me"; }, "POST");
