// A well-behaved neighbour: it must keep answering while other scripts misbehave.
register("/other", function () { return "other is fine"; });
