// A syntax error on line 4: the other scripts still load.
register("/never", function () { return "never"; });

let broken = ;
