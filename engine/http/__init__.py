"""The HTTP face of the engine: request and response mapping, errors, the route dispatcher."""
