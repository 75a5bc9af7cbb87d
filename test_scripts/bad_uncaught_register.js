// An uncaught register() error fails the load, and the log names the line.
register("/fine-before", function () { return "fine"; });
register("no-leading-slash", function () { return "x"; });
