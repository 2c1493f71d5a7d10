"""imaging-hub: check at the clinic, diagnose at the hub."""

__version__ = "0.1.0"
