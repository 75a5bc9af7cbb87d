// Loads after conflict_a.js (sorted by name): its claim on /shared must fail with a.js named.
register("/b-only", function () { return "b"; });
register("/shared", function () { return "from b"; });
