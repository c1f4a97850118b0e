"""faceprov: face cloaking, face-swap recovery and cloak provenance."""

__version__ = "0.1.0"
