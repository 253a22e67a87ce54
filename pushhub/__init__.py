"""pushhub: a real-time notification and presence server."""

__version__ = "0.1.0"
