"""Applications on top of the package: the command line, the demo, and ``send`` (replay)."""
