"""cnm: the Container Network Model in Python."""

__version__ = "0.1.0"
