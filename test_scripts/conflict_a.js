register("/shared", function () { return "from a"; });
register("/shared/{id}", function () { return "from a"; });
