"""add_integration_callbacks: labels from modules, and third-party integrations by entry point."""

from __future__ import annotations

import importlib
import logging
import sys
import textwrap

import pytest

import otel_callbacks
from otel_callbacks import semconv as sc
from otel_callbacks.semconv import integration_of_module as integration_from_module
from otel_callbacks.ultralytics.integrations import ENTRY_POINT_GROUP
from tests.engines import DetectionPredictor, DetectionTrainer


@pytest.mark.parametrize(
    ("module", "label"),
    [
        ("otel_callbacks.hooks", "default"),
        ("ultralytics.utils.callbacks.base", "default"),
        ("ultralytics.utils.callbacks.tensorboard", "tensorboard"),
        ("ultralytics.utils.callbacks.wb", "wandb"),
        ("ultralytics.utils.callbacks.platform", "platform"),
        ("ultralytics.utils.events", "events"),
        ("my_project.train", "user"),
        ("", "user"),
    ],
)
def test_labels_from_modules(module, label):
    assert integration_from_module(module) == label


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An installed distribution that registers two integrations, one of them broken."""
    (tmp_path / "yolo_plugin.py").write_text(
        textwrap.dedent(
            """
            calls = []

            def on_train_epoch_end(trainer):
                calls.append(trainer.epoch)

            def on_predict_end(predictor):
                calls.append("predicted")

            callbacks = {"on_train_epoch_end": on_train_epoch_end}

            def for_instance(instance):
                return {"on_predict_end": [on_predict_end]} if "Predictor" in type(instance).__name__ else {}
            """
        )
    )
    info = tmp_path / "yolo_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: yolo-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "tracker = yolo_plugin:callbacks\n"
        "predict_tracker = yolo_plugin:for_instance\n"
        "broken = yolo_plugin:does_not_exist\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield importlib.import_module("yolo_plugin")
    sys.modules.pop("yolo_plugin", None)


def test_entry_point_integrations_are_added_labelled_and_deduped(plugin, recorded, caplog):
    trainer = DetectionTrainer()
    otel_callbacks.add_integration_callbacks(trainer)
    otel_callbacks.add_integration_callbacks(trainer)  # Ultralytics' dedupe: nothing twice
    added = [cb for cb in trainer.callbacks["on_train_epoch_end"] if cb == plugin.on_train_epoch_end]
    assert len(added) == 1 and added[0].integration == "tracker"
    assert plugin.on_predict_end not in trainer.callbacks["on_predict_end"], "only for predictors"
    broken = [r.getMessage() for r in caplog.records if "'broken'" in r.getMessage()]
    assert len(broken) == 2 and "failed to load, skipped" in broken[0]

    trainer.epoch = 3
    trainer.run_callbacks("on_train_epoch_end")
    assert plugin.calls == [3]
    (span,) = [
        s
        for s in recorded.callback_spans()
        if s.attributes[sc.ATTR_CALLBACK] == "yolo_plugin.on_train_epoch_end"
    ]
    assert span.attributes[sc.ATTR_INTEGRATION] == "tracker"

    predictor = DetectionPredictor()
    otel_callbacks.add_integration_callbacks(predictor)
    (wrapped,) = [cb for cb in predictor.callbacks["on_predict_end"] if cb == plugin.on_predict_end]
    wrapped(predictor)  # Ultralytics' own callbacks here need a real predictor
    assert plugin.calls == [3, "predicted"] and wrapped.integration == "predict_tracker"


def test_ultralytics_integrations_keep_their_trainer_only_rule(recorded):
    pytest.importorskip("ultralytics")
    trainer, predictor = DetectionTrainer(), DetectionPredictor()
    otel_callbacks.add_integration_callbacks(trainer)
    otel_callbacks.add_integration_callbacks(predictor)
    trainer_labels = {cb.integration for v in trainer.callbacks.values() for cb in v}
    predictor_labels = {cb.integration for v in predictor.callbacks.values() for cb in v}
    assert {"default", "events", "platform"} <= trainer_labels
    assert "events" in predictor_labels and "platform" not in predictor_labels
    logging.getLogger(sc.LOGGER_NAME).info("labels %s %s", trainer_labels, predictor_labels)
