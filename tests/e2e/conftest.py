"""Real Ultralytics trainings on generated data, offline on the CPU (DESIGN.md section 2)."""

from __future__ import annotations

import pytest

from otel_callbacks import uninstall
from otel_callbacks.apps import demo


@pytest.fixture(scope="session", autouse=True)
def _runs_in_a_temporary_directory(tmp_path_factory):
    """Where Ultralytics puts what a call without ``project=`` writes (the settings file lives in the
    temporary YOLO_CONFIG_DIR, so subprocesses read the same)."""
    from ultralytics.utils import SETTINGS

    SETTINGS.update(runs_dir=str(tmp_path_factory.mktemp("runs")))


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    return demo.make_dataset(tmp_path_factory.mktemp("dataset"))


@pytest.fixture
def train_args(data, tmp_path):
    return {
        "data": str(data),
        "epochs": 2,
        "project": str(tmp_path / "runs"),
        "name": "train",
        **demo.TRAIN_ARGS,
    }


@pytest.fixture(autouse=True)
def _uninstalled():
    uninstall()
    yield
    uninstall()
