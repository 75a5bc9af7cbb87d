// Throws at top level: nothing it registered may serve.
register("/half-loaded", function () { return "must not serve"; });

function explode() {
  throw new Error("exploded while loading");
}
explode();
