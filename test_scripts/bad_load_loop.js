// Loops forever at top level: the load fails on the time limit.
register("/load-loop", function () { return "never"; });
while (true) {}
