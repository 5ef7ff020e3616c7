"""Ray Tune sweeps (``model.tune(use_ray=True)``) as one trace.

``run_ray_tune`` is a ``tune`` root in the driver. Ultralytics hands its trial function to
``tune.with_resources``; while the sweep runs, that call wraps it, so in the Ray worker each trial is
a ``trial`` span under the root holding the trial's training: its id, its config, the metrics it
last reported and how it ended (completed; stopped, which is how Ray's scheduler ends a trial early:
``SystemExit`` raised in ``tune.report``; failed). The root's context travels inside the pickled trial
function; telemetry settings reach workers in their environment (a local cluster inherits the
driver's; a multi-node one through ``ray.init(runtime_env=ray_runtime_env())``). A worker's resource
carries the trial id, so its metrics do without a per-series label. The training is instrumented by
the model's callbacks dict that Ray ships to the worker (as in DDP).
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from .. import semconv as sc
from ..telemetry import providers
from ..telemetry.failures import attempt
from ..telemetry.propagation import environment_context, inject_environment
from ..tracing.outcomes import crash_message
from . import boundaries, launch
from .sweeps import hyperparameters, task_metric

_lock = threading.Lock()
_original: list[Any] = []  # ultralytics.utils.tuner.run_ray_tune while installed
_FLUSH_S = 1.0  # at most; usually milliseconds, before Ray stops the worker (SIGTERM, SIGKILL 200 ms on)


def ray_runtime_env(env: dict[str, str] | None = None) -> dict[str, Any]:
    """A Ray ``runtime_env`` that gives every worker this process's OpenTelemetry settings (the
    ``OTEL_*`` variables): what a multi-node cluster needs for its trials to report like the driver."""
    env = dict(os.environ) if env is None else env
    return {"env_vars": {k: v for k, v in env.items() if k.startswith("OTEL_")}}


def _scalars(metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, dict):
        return {}
    return {
        sc.result_attribute(key): float(value)
        for key, value in metrics.items()
        if isinstance(key, str) and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def run_trial(trainable: Callable[[Any], Any], config: Any, carrier: dict[str, str], epochs: int) -> Any:
    """In the worker: Ultralytics' trial function inside a ``trial`` span, child of the sweep's root.

    Ray ends a trial by raising ``SystemExit`` in ``tune.report``, also at the scheduler's ``max_t``
    (Ultralytics sets it to the planned ``epochs``): a trial that reported its last epoch completed."""
    from ray import tune

    trial_id = str(tune.get_context().get_trial_id() or "")
    _set_resource_trial_id(trial_id)
    boundaries.install()  # a crash that leaves BaseTrainer.train ends its run (8.3 fires no teardown)
    tel = providers.ensure_configured()
    if not tel.enabled:
        return trainable(config)
    numbers = {k: v for k, v in dict(config).items() if isinstance(v, (int, float))}
    attributes = {sc.ATTR_PHASE: sc.PHASE_TRIAL, sc.ATTR_TRIAL_ID: trial_id, **hyperparameters(numbers)}
    span = tel.tracer.start_span(sc.PHASE_TRIAL, context=environment_context(carrier), attributes=attributes)
    tel.announce(span)
    reported: dict[str, Any] = {}
    report = tune.report

    def recording_report(metrics: Any, *args: Any, **kwargs: Any) -> Any:
        reported.clear()
        reported.update(_scalars(metrics))
        return report(metrics, *args, **kwargs)

    tune.report = recording_report  # Ultralytics' raytune callback looks it up at each call

    def end(status: str, error: BaseException | None = None) -> None:
        if not span.is_recording():  # ended already (the process's shutdown, then the finally)
            return
        span.set_attributes({**reported, sc.ATTR_TRIAL_STATUS: status})
        if error is not None:
            span.set_attribute(sc.ATTR_ERROR_TYPE, type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, crash_message(error)))
            span.record_exception(error, escaped=True)
        span.end()

    def ended_by_ray() -> str:
        finished = reported.get(sc.result_attribute("epoch"), 0) >= epochs
        return sc.TRIAL_COMPLETED if finished else sc.TRIAL_STOPPED

    tel.on_shutdown(lambda reason: end(ended_by_ray()))  # SIGTERM from Ray before the trial returned
    status, error = sc.TRIAL_COMPLETED, None
    try:
        with trace.use_span(span, end_on_exit=False):
            result = trainable(config)
        reported.update(_scalars(result))
        return result
    except SystemExit:
        status = ended_by_ray()
        raise
    except BaseException as exc:
        status, error = sc.TRIAL_FAILED, exc
        raise
    finally:
        tune.report = report
        attempt(end, status, error)
        tel.force_flush(_FLUSH_S)


def _set_resource_trial_id(trial_id: str) -> None:
    """The trial id on the worker's resource; a telemetry made for an earlier trial of a reused
    worker is shut down, so the next one is made with it."""
    attributes = [a for a in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",") if a.strip()]
    attributes = [a for a in attributes if not a.strip().startswith(sc.ATTR_TRIAL_ID + "=")]
    os.environ["OTEL_RESOURCE_ATTRIBUTES"] = ",".join([*attributes, f"{sc.ATTR_TRIAL_ID}={trial_id}"])
    if providers.active is not None:
        providers.shutdown(reason="a new Ray Tune trial in this worker")


def _trial_function(
    trainable: Callable[[Any], Any], carrier: dict[str, str], epochs: int
) -> Callable[[Any], Any]:
    @functools.wraps(trainable)  # Ray reads the trainable's signature through __wrapped__
    def trial(config: Any) -> Any:
        return run_trial(trainable, config, carrier, epochs)

    return trial


def _best(results: Any, task: Any) -> dict[str, Any]:
    """The root's best trial, by the task's main metric (the one Ultralytics' scheduler ranks by)."""
    try:
        best = results.get_best_result(metric=task_metric(task), mode="max")
        fitness = best.metrics.get("fitness")
        found = {sc.ATTR_TUNE_BEST_TRIAL: str(best.metrics["trial_id"])}
        return {**found, sc.ATTR_TUNE_BEST_FITNESS: float(fitness)} if fitness is not None else found
    except Exception:  # no trial reported the metric
        return {}


def _run_ray_tune(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def run_ray_tune(model: Any, *args: Any, **kwargs: Any) -> Any:
        from ray import tune
        from ultralytics.utils import DEFAULT_CFG_DICT

        bound = signature.bind(model, *args, **kwargs)
        bound.apply_defaults()
        arguments = {**bound.arguments.pop("train_args", {}), **bound.arguments}
        data = arguments.get("data")
        attributes: dict[str, Any] = {
            sc.RUN_ATTRIBUTES["task"]: str(getattr(model, "task", "")),
            sc.ATTR_TUNE_ITERATIONS: int(arguments.get("iterations") or 0),
            sc.ATTR_TUNE_SPACE: [str(key) for key in arguments.get("space") or {}],
        }
        if metric := task_metric(getattr(model, "task", None)):
            attributes[sc.ATTR_TUNE_METRIC] = metric
        if isinstance(data, str):
            attributes[sc.RUN_ATTRIBUTES["data"]] = data.replace("\\", "/").rsplit("/", 1)[-1]
        root = attempt(launch.start, sc.PHASE_TUNE, attributes, install=False)
        if root is None:
            return original(model, *args, **kwargs)
        carrier: dict[str, str] = {}
        inject_environment(root.span, carrier)
        epochs = int(arguments.get("epochs") or DEFAULT_CFG_DICT["epochs"])  # the scheduler's max_t
        with_resources = tune.with_resources
        tune.with_resources = lambda trainable, resources: with_resources(
            _trial_function(trainable, carrier, epochs), resources
        )
        try:
            results = original(model, *args, **kwargs)
        except BaseException as error:
            attempt(root.end, error)
            raise
        finally:
            tune.with_resources = with_resources
        attempt(root.end, None, None, _best(results, getattr(model, "task", None)))
        return results

    return run_ray_tune


def install() -> None:
    with _lock:
        if _original:
            return
        import ultralytics.utils.tuner as module

        _original.append(module.run_ray_tune)
        module.run_ray_tune = _run_ray_tune(module.run_ray_tune)


def uninstall() -> None:
    with _lock:
        if _original:
            import ultralytics.utils.tuner as module

            module.run_ray_tune = _original.pop()
