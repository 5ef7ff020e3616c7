"""Installs otel_callbacks as Python starts, where ``OTEL_CALLBACKS_INSTALL`` is true.

Python imports the first ``sitecustomize`` on its path at start; an instrumented launcher puts this
directory first on its children's ``PYTHONPATH`` (``launch.py``), a user can do the same by hand.
Any other ``sitecustomize`` further on the path (the environment's, opentelemetry-instrument's) then
runs as it would have. Nothing here may stop the process from starting: a failure is one line on
stderr and the program runs uninstrumented.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def install_if_requested() -> None:
    try:
        from otel_callbacks.config import install_requested

        if install_requested():
            from otel_callbacks.ultralytics.dropin import install

            install()
    except Exception as error:
        print(f"otel_callbacks: not installed in this process: {error}", file=sys.stderr)


def run_next_sitecustomize() -> None:
    """The ``sitecustomize`` that Python would have imported without this directory first."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [path for path in sys.path if os.path.abspath(path or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


if __name__ == "sitecustomize":
    install_if_requested()
    run_next_sitecustomize()
