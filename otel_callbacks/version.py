"""The package version: also the instrumentation scope version of its tracer and meter."""

__version__ = "0.1.0"
