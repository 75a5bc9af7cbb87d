"""rtengine: a scriptable real-time engine."""

__version__ = "0.1.0"
