"""Synthetic Ultralytics engines: they own and run callbacks exactly as Ultralytics' engines do.

``run_*`` functions fire hooks in the order observed on ultralytics 8.4 (DESIGN.md section 2).
"""

from __future__ import annotations

from copy import copy

import otel_callbacks


class Engine:
    def __init__(self, callbacks=None):
        self.callbacks = callbacks if callbacks is not None else otel_callbacks.get_default_callbacks()

    def add_callback(self, event, callback):
        self.callbacks[event].append(callback)

    def run_callbacks(self, event):
        for callback in self.callbacks.get(event, []):
            callback(self)


class DetectionTrainer(Engine):
    """Copies the callbacks dict like ``BaseTrainer.__init__``."""

    def __init__(self, callbacks=None):
        callbacks = copy(callbacks) if callbacks else otel_callbacks.get_default_callbacks()
        for k, v in callbacks.items():
            callbacks[k] = v.copy()
        super().__init__(callbacks)
        self.epoch = 0
        self.epochs = 2


class DetectionValidator(Engine):
    pass


class DetectionPredictor(Engine):
    pass


class Exporter(Engine):
    pass


def run_val(validator, batches=2):
    validator.run_callbacks("on_val_start")
    for _ in range(batches):
        validator.run_callbacks("on_val_batch_start")
        validator.run_callbacks("on_val_batch_end")
    validator.run_callbacks("on_val_end")


def run_train(trainer, epochs=2, batches=2, val_batches=2, wait=None, compute=None):
    """A full ``model.train()``: epochs, per-epoch val, final eval, teardown in a finally; ``wait()``
    before each batch (the dataloader) and ``compute()`` inside it (forward, backward), where given."""
    validator = DetectionValidator(trainer.callbacks)  # shares the trainer's dict
    try:
        trainer.run_callbacks("on_pretrain_routine_start")
        trainer.run_callbacks("on_pretrain_routine_end")
        trainer.run_callbacks("on_train_start")
        for epoch in range(epochs):
            trainer.epoch = epoch
            trainer.run_callbacks("on_train_epoch_start")
            for _ in range(batches):
                if wait is not None:
                    wait()
                trainer.run_callbacks("on_train_batch_start")
                if compute is not None:
                    compute()
                trainer.run_callbacks("on_train_batch_end")
            trainer.run_callbacks("on_train_epoch_end")
            run_val(validator, val_batches)
            trainer.run_callbacks("on_model_save")
            trainer.run_callbacks("on_fit_epoch_end")
        run_val(validator, val_batches)  # final eval of best.pt
        trainer.epoch += 1  # BaseTrainer.final_eval logs the best metrics at epochs + 1
        trainer.run_callbacks("on_fit_epoch_end")
        trainer.epoch -= 1
        trainer.run_callbacks("on_train_end")
    finally:
        trainer.run_callbacks("teardown")
    return validator


def run_predict(predictor, batches=3):
    predictor.run_callbacks("on_predict_start")
    for _ in range(batches):
        predictor.run_callbacks("on_predict_batch_start")
        predictor.run_callbacks("on_predict_postprocess_end")
        predictor.run_callbacks("on_predict_batch_end")
    predictor.run_callbacks("on_predict_end")


def run_export(exporter, fail=False):
    exporter.run_callbacks("on_export_start")
    if fail:
        raise RuntimeError("export failed")
    exporter.run_callbacks("on_export_end")
