"""Sweeps as traces: ``model.tune()`` (Ultralytics' Tuner) and MultiTrainer (a list of datasets).

``Tuner.__call__`` is a ``tune`` root (task, model, data, iterations, the search space's keys). An
iteration starts where ``Tuner._mutate`` is called (its hyperparameters) and ends where the next one
starts or the sweep ends; Ultralytics 8.4's ``Tuner._result_record`` gives it its fitness, the task's
main metric and the datasets that failed (ERROR; the sweep goes on, as Ultralytics' does). 8.3's has
no such record: its training's exit status (through the ``subprocess`` its module calls) and its row
of ``tune_results.csv`` say the same. The root names the best iteration, by attributes and not by
a span link: Jaeger makes a link a FOLLOWS_FROM reference, and its UI takes a root's first reference
for its parent, which would hang the root under its own iteration.
``MultiTrainer.train`` is a ``multitrain`` span with each dataset's training under it. The trainings
run in ``yolo train`` subprocesses, which join the trace and are instrumented through ``launch.py``.
"""

from __future__ import annotations

import functools
import inspect
import math
import subprocess
import threading
from collections.abc import Callable
from contextvars import ContextVar
from types import SimpleNamespace
from typing import Any

from opentelemetry import trace

from .. import semconv as sc
from ..telemetry.failures import attempt, contained
from ..tracing.results import run_attributes
from . import launch

_lock = threading.Lock()
_originals: dict[tuple[Any, str], Any] = {}  # (class or module, name) -> Ultralytics' own, while installed
_current: ContextVar[_Sweep | None] = ContextVar("otel_callbacks_sweep", default=None)  # in Tuner.__call__


def hyperparameters(values: dict[str, Any]) -> dict[str, Any]:
    """Scalar hyperparameters as span attributes (``ultralytics.hyp.lr0``); others are left out."""
    return {
        sc.HYPERPARAMETER_PREFIX + key: value
        for key, value in values.items()
        if isinstance(key, str) and isinstance(value, (bool, int, float, str))
    }


def task_metric(task: Any) -> str | None:
    """The task's main metric (``metrics/mAP50-95(B)`` for detect), as Ultralytics names it."""
    try:
        from ultralytics.cfg import TASK2METRIC

        return TASK2METRIC[task]
    except (ImportError, KeyError, TypeError):
        return None


def main_metric(task: Any, per_dataset: dict[str, Any]) -> dict[str, float]:
    """The task's main metric, averaged over the datasets that have it."""
    key = task_metric(task)
    if key is None:
        return {}
    values = [float(m[key]) for m in per_dataset.values() if isinstance(m, dict) and key in m]
    return {sc.result_attribute(key): sum(values) / len(values)} if values else {}


class _Sweep:
    """One Tuner call: its root, the open iteration, and the best iteration so far."""

    def __init__(self, tuner: Any, iterations: int) -> None:
        self.tuner = tuner
        self.done = _results_so_far(tuner)  # a resumed sweep goes on from there
        space = getattr(tuner, "space", None) or {}
        attributes = {
            **run_attributes(tuner),
            sc.ATTR_TUNE_ITERATIONS: iterations,
            sc.ATTR_TUNE_SPACE: [str(key) for key in space],
            sc.ATTR_TUNE_METRIC: "fitness",
        }
        attributes.pop(sc.RUN_ATTRIBUTES["epochs"], None)  # each iteration's, on its training
        self.root = launch.start(sc.PHASE_TUNE, attributes)
        self.iteration: launch.Launch | None = None
        self.failure: str | None = None
        self.result: dict[str, Any] = {}
        self.best: tuple[float, int] | None = None  # fitness, iteration

    def start_iteration(self, hyp: dict[str, Any]) -> None:
        self.end_iteration()
        self.done += 1
        attributes = {sc.ATTR_TUNE_ITERATION: self.done, **hyperparameters(hyp)}
        self.iteration = launch.start(sc.PHASE_ITERATION, attributes)
        self.failure, self.result = None, {}

    def record(self, record: dict[str, Any]) -> None:
        """8.4's result record of the open iteration: fitness, metrics, failed datasets."""
        datasets = record.get("datasets") or {}
        fitness = record.get("fitness")
        self.result = main_metric(getattr(self.tuner.args, "task", None), datasets)
        if isinstance(fitness, (int, float)):
            self.result[sc.result_attribute("fitness")] = float(fitness)
        failed = [str(name) for name in record.get("failed_datasets") or ()]
        if failed:
            self.failure = f"training failed on {', '.join(failed)}"
            self.result[sc.ATTR_FAILED_DATASETS] = failed

    def end_iteration(self, error: BaseException | None = None) -> None:
        iteration, self.iteration = self.iteration, None
        if iteration is None:
            return
        if not hasattr(self.tuner, "_result_record") and self.failure is None:  # 8.3
            self.result = _csv_fitness(self.tuner, self.done)
        fitness = self.result.get(sc.result_attribute("fitness"))
        ok = self.failure is None and error is None and fitness is not None and not math.isnan(fitness)
        if ok and (self.best is None or fitness > self.best[0]):  # the first of equals, as Ultralytics
            self.best = (fitness, self.done)
        iteration.end(error, self.failure, self.result)

    def end(self, error: BaseException | None) -> None:
        self.end_iteration(error)
        if self.root is None:
            return
        attributes: dict[str, Any] = {}
        if self.best is not None:
            fitness, number = self.best
            attributes = {sc.ATTR_TUNE_BEST_ITERATION: number, sc.ATTR_TUNE_BEST_FITNESS: fitness}
        self.root.end(error, None, attributes)


def _results_so_far(tuner: Any) -> int:
    """Iterations a previous call of this sweep recorded (Ultralytics resumes after them)."""
    try:
        if hasattr(tuner, "_load_local_results"):  # 8.4: NDJSON
            return len(tuner._load_local_results())
        csv = getattr(tuner, "tune_csv", None)  # 8.3: a CSV with a header line
        return max(0, len(csv.read_text().splitlines()) - 1) if csv is not None and csv.exists() else 0
    except Exception:
        return 0


def _csv_fitness(tuner: Any, row: int) -> dict[str, float]:
    """8.3's fitness of iteration ``row`` (from 1, resumed ones counted): its row of the CSV, if
    written (a sweep that raised may have ended before it). None with MongoDB, whose CSV is rewritten
    from every worker's results: row N need not be this one's."""
    if getattr(tuner, "mongodb", None):
        return {}
    try:
        rows = tuner.tune_csv.read_text().splitlines()[1:]
        return (
            {sc.result_attribute("fitness"): float(rows[row - 1].split(",")[0])} if len(rows) >= row else {}
        )
    except (AttributeError, OSError, ValueError):
        return {}


class _TunerSubprocess:
    """What 8.3's Tuner module sees as ``subprocess``: it trains each iteration with
    ``subprocess.run(cmd, check=True)`` and only logs a failure, so the failure is told to the open
    iteration here. Everything else is the real module."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return subprocess.run(*args, **kwargs)
        except subprocess.CalledProcessError as error:
            sweep = _current.get()
            if sweep is not None and sweep.iteration is not None:
                sweep.failure = f"training failed: exit status {error.returncode}"
            raise


def _sweep_of(tuner: Any) -> _Sweep | None:
    sweep = _current.get()
    return sweep if sweep is not None and sweep.tuner is tuner else None


def _tuner_call(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        sweep = None
        with contained():
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            sweep = _Sweep(self, int(bound.arguments.get("iterations") or 0))
        if sweep is None:
            return original(self, *args, **kwargs)
        token = _current.set(sweep)
        try:
            result = original(self, *args, **kwargs)
        except BaseException as error:
            attempt(sweep.end, error)
            raise
        finally:
            _current.reset(token)
        attempt(sweep.end, None)
        return result

    return __call__


def _tuner_mutate(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _mutate(self: Any, *args: Any, **kwargs: Any) -> Any:
        sweep = _sweep_of(self)
        if sweep is not None:
            attempt(sweep.end_iteration)
        hyp = original(self, *args, **kwargs)
        if sweep is not None:
            attempt(sweep.start_iteration, hyp if isinstance(hyp, dict) else {})
        return hyp

    return _mutate


def _tuner_result_record(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _result_record(self: Any, *args: Any, **kwargs: Any) -> Any:
        record = original(self, *args, **kwargs)
        sweep = _sweep_of(self)
        if sweep is not None and isinstance(record, dict):
            attempt(sweep.record, record)
        return record

    return _result_record


def _multitrainer_train(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def train(self: Any) -> Any:
        run = attempt(_start_multitrain, self)
        if run is None:
            return original(self)
        try:
            with trace.use_span(run.span, end_on_exit=False):
                metrics = original(self)
        except BaseException as error:
            attempt(run.end, error)
            raise
        with contained():
            failed = [str(name) for name, value in (metrics or {}).items() if not value]
            failure = f"training failed on {len(failed)} of {len(metrics)} datasets" if failed else None
            run.end(None, failure, {sc.ATTR_FAILED_DATASETS: failed} if failed else None)
        return metrics

    return train


def _start_multitrain(multitrainer: Any) -> launch.Launch | None:
    args = getattr(multitrainer, "args", None) or {}
    datasets = [str(d).replace("\\", "/").rsplit("/", 1)[-1] for d in args.get("data") or ()]
    attributes = run_attributes(SimpleNamespace(args=SimpleNamespace(**args)))
    attributes[sc.ATTR_DATASETS] = datasets
    attributes.pop(sc.RUN_ATTRIBUTES["data"], None)
    # CLI subprocesses (trainer None) need the switch; Python trainers run here, under the span.
    return launch.start(sc.PHASE_MULTITRAIN, attributes, install=multitrainer.trainer is None)


_PATCHES = {
    ("ultralytics.engine.tuner", "Tuner"): {
        "__call__": _tuner_call,
        "_mutate": _tuner_mutate,
        "_result_record": _tuner_result_record,
    },
    ("ultralytics.engine.trainer", "MultiTrainer"): {"train": _multitrainer_train},
}


def install() -> None:
    import importlib

    with _lock:
        if _originals:
            return
        for (module, name), methods in _PATCHES.items():
            cls = getattr(importlib.import_module(module), name, None)  # MultiTrainer: 8.4 only
            for method, wrap in methods.items():
                original = getattr(cls, method, None) if cls is not None else None
                if original is not None:  # _result_record: 8.4 only
                    _originals[cls, method] = original
                    setattr(cls, method, wrap(original))
        tuner = importlib.import_module("ultralytics.engine.tuner")
        if getattr(tuner, "subprocess", None) is subprocess:  # 8.3's trains through it; 8.4's has none
            _originals[tuner, "subprocess"] = subprocess
            tuner.subprocess = _TunerSubprocess()


def uninstall() -> None:
    with _lock:
        for (cls, method), original in _originals.items():
            setattr(cls, method, original)
        _originals.clear()
