// The JS side of bench/http_bench.py: the same bytes as bench/plain_server.py.
register("/bench", function (req) { return "Hello, bench!\n"; });
