"""Launching children in the trace: the install switch, the bootstrap ``sitecustomize`` (it chains to
the next one), nested launches and their environment, the shutdown of an open launch, and how a Ray
Tune trial span reads each way a trial ends."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from opentelemetry.trace import StatusCode

from otel_callbacks import semconv as sc
from otel_callbacks import telemetry
from otel_callbacks.config import INSTALL_SWITCH, SettingsError, install_requested
from otel_callbacks.telemetry.propagation import environment_context, inject_environment
from otel_callbacks.ultralytics import launch


def test_the_install_switch_is_a_boolean_and_a_bad_value_is_named():
    assert install_requested({INSTALL_SWITCH: "true"}) is True
    assert install_requested({}) is False
    with pytest.raises(
        SettingsError, match=r"OTEL_CALLBACKS_INSTALL='maybe' is not a boolean; accepted: true"
    ):
        install_requested({INSTALL_SWITCH: "maybe"})


CHILD = """
import sys
import ultralytics.utils.callbacks as package
import otel_callbacks.ultralytics.defaults as defaults
print("INSTALLED" if defaults.originals else "PLAIN", flush=True)
"""


@pytest.mark.parametrize(
    ("switch", "expected"), [("true", "INSTALLED"), ("false", "PLAIN"), ("maybe", "PLAIN")]
)
def test_a_child_with_the_switch_installs_at_start_and_runs_the_next_sitecustomize(
    tmp_path, switch, expected
):
    pytest.importorskip("ultralytics")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("print('NEXT SITECUSTOMIZE', flush=True)\n")
    env = {**os.environ, "PYTHONPATH": str(site), INSTALL_SWITCH: switch}
    env.update(launch.child_environment(env))
    env[INSTALL_SWITCH] = switch
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["NEXT", "SITECUSTOMIZE", expected]
    if switch == "bad":  # the process starts anyway, saying why it is not instrumented
        assert "otel_callbacks: not installed in this process: OTEL_CALLBACKS_INSTALL='bad'" in out.stderr


def test_the_bootstrap_comes_first_on_the_path_once():
    env = launch.child_environment({"PYTHONPATH": os.pathsep.join(["a", launch.BOOTSTRAP, "b"])})
    assert env == {INSTALL_SWITCH: "true", "PYTHONPATH": os.pathsep.join([launch.BOOTSTRAP, "a", "b"])}


def test_nested_launches_parent_each_other_and_restore_the_environment(recorded, monkeypatch):
    monkeypatch.delenv("TRACEPARENT", raising=False)
    monkeypatch.setenv("PYTHONPATH", "mine")
    monkeypatch.delenv(INSTALL_SWITCH, raising=False)
    before = dict(os.environ)
    outer = launch.start(sc.PHASE_TUNE, {})
    inner = launch.start(sc.PHASE_ITERATION, {sc.ATTR_TUNE_ITERATION: 1})
    handed = environment_context()
    assert handed is not None
    assert os.environ[INSTALL_SWITCH] == "true" and os.environ["PYTHONPATH"].startswith(launch.BOOTSTRAP)
    inner.end(None, "training failed on data")
    assert environment_context() is not None and os.environ["TRACEPARENT"] != before.get("TRACEPARENT")
    outer.end()
    assert dict(os.environ) == before, "the environment is as it was"
    tune, iteration = recorded.spans(sc.PHASE_TUNE)[0], recorded.spans(sc.PHASE_ITERATION)[0]
    assert iteration.parent.span_id == tune.context.span_id
    assert iteration.status.description == "training failed on data"
    assert tune.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize(
    ("code", "status"), [(0, StatusCode.UNSET), (None, StatusCode.UNSET), (2, StatusCode.ERROR)]
)
def test_a_launch_left_by_a_clean_exit_ended_and_any_other_exit_failed(recorded, code, status):
    run = launch.start(sc.PHASE_TUNE, {})
    run.end(SystemExit(code))
    (tune,) = recorded.spans(sc.PHASE_TUNE)
    assert tune.status.status_code is status
    assert [e.name for e in tune.events] == ["exception"], "the exit is recorded either way"
    assert (sc.ATTR_ERROR_TYPE in tune.attributes) is (status is StatusCode.ERROR)


def test_launches_open_at_shutdown_end_with_the_reason(recorded):
    outer = launch.start(sc.PHASE_TUNE, {})
    launch.start(sc.PHASE_ITERATION, {})
    telemetry.shutdown(reason="terminated by SIGTERM")
    assert outer.ended
    assert {s.name: s.status.description for s in recorded.spans()} == {
        sc.PHASE_TUNE: "terminated by SIGTERM",
        sc.PHASE_ITERATION: "terminated by SIGTERM",
    }
    assert "TRACEPARENT" not in os.environ


@pytest.fixture
def trial_context(monkeypatch):
    """A trial's Ray context and ``tune.report`` as a Ray worker has them, without a cluster:
    reporting at the planned epochs, or earlier, raises SystemExit as Ray's stop does."""
    tune = pytest.importorskip("ray.tune")
    from otel_callbacks.ultralytics import raytune

    stop_at = {"epoch": None}

    def report(metrics):
        if metrics["epoch"] == stop_at["epoch"]:
            raise SystemExit(0)

    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "abc_00001"))
    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(raytune, "_set_resource_trial_id", lambda trial_id: None)
    return tune, raytune, stop_at


@pytest.mark.parametrize(
    ("stop_at", "raises", "status"),
    [
        (None, None, sc.TRIAL_COMPLETED),
        (3, None, sc.TRIAL_COMPLETED),  # Ray stops it at max_t: its last epoch was reported
        (1, None, sc.TRIAL_STOPPED),
        (None, ValueError("loss exploded"), sc.TRIAL_FAILED),
    ],
)
def test_a_trial_reads_as_completed_stopped_or_failed(recorded, trial_context, stop_at, raises, status):
    tune, raytune, stop = trial_context
    stop["epoch"] = stop_at

    def trainable(config):
        for epoch in (1, 2, 3):
            tune.report({"metrics/mAP50-95(B)": 0.1 * epoch, "epoch": epoch})
        if raises is not None:
            raise raises
        return {"metrics/mAP50-95(B)": 0.3, "fitness": 0.4}

    carrier: dict[str, str] = {}
    root = launch.start(sc.PHASE_TUNE, {}, install=False)
    inject_environment(root.span, carrier)
    expected = SystemExit if stop_at else type(raises) if raises else None
    if expected is None:
        assert raytune.run_trial(trainable, {"lr0": 0.01, "data": "/home/me/data.yaml"}, carrier, 3)
    else:
        with pytest.raises(expected):
            raytune.run_trial(trainable, {"lr0": 0.01, "data": "/home/me/data.yaml"}, carrier, 3)
    root.end()
    (trial,) = recorded.spans(sc.PHASE_TRIAL)
    assert trial.parent.span_id == root.span.get_span_context().span_id
    assert trial.attributes[sc.ATTR_TRIAL_STATUS] == status
    assert trial.attributes[sc.ATTR_TRIAL_ID] == "abc_00001"
    assert trial.attributes[sc.HYPERPARAMETER_PREFIX + "lr0"] == 0.01
    assert sc.HYPERPARAMETER_PREFIX + "data" not in trial.attributes, "numbers only: no paths"
    reported = trial.attributes[sc.result_attribute("metrics/mAP50-95(B)")]
    assert reported == pytest.approx(0.1 * (stop_at or 3)), "the metric it last reported"
    if status == sc.TRIAL_FAILED:
        assert trial.status.description == "ValueError: loss exploded"
    else:
        assert trial.status.status_code is StatusCode.UNSET
    assert tune.report.__name__ == "report", "Ray's report is given back"


class _Tuner:
    """Ultralytics' Tuner as the sweep adapter sees it: ``__call__`` mutates, then trains or fails."""

    args = SimpleNamespace(task="detect", model="yolo11n.yaml", data="coco8.yaml", epochs=1)

    def __init__(self, error=None):
        self.error = error
        self.space = {"lr0": (1e-5, 1e-1)}

    def __call__(self, model=None, iterations=10, cleanup=True):
        self._mutate()
        if self.error is not None:
            raise self.error
        return "tuned"

    def _mutate(self):
        return {"lr0": 0.01}


@pytest.mark.parametrize("breaking", ["start", "end"])
@pytest.mark.parametrize("error", [None, ValueError("dataset missing")], ids=["returns", "raises"])
def test_a_failing_telemetry_never_changes_what_a_sweep_returns_or_raises(
    recorded, monkeypatch, breaking, error
):
    from otel_callbacks.ultralytics import sweeps

    def broken(*args, **kwargs):
        raise RuntimeError("exporter down")

    monkeypatch.setattr(launch, "start", broken) if breaking == "start" else monkeypatch.setattr(
        launch.Launch, "end", broken
    )
    monkeypatch.setattr(_Tuner, "__call__", sweeps._tuner_call(_Tuner.__call__))
    monkeypatch.setattr(_Tuner, "_mutate", sweeps._tuner_mutate(_Tuner._mutate))
    tuner = _Tuner(error)
    if error is None:
        assert tuner(iterations=1) == "tuned"
    else:
        with pytest.raises(ValueError) as raised:
            tuner(iterations=1)
        assert raised.value is error and raised.value.__context__ is None, "unchanged, nothing chained"
    assert telemetry.current().errors_seen["RuntimeError"] >= 1, "counted"
    monkeypatch.undo()
    launch._end_all("test over")  # launches a broken end left open
