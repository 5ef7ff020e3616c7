"""The hook surface of ``ultralytics.utils.callbacks.base``: 25 no-op hooks and the event groups.

The functions are no-ops on purpose: they are the defaults an engine calls, and instrumenting
them shows the framework's own cost of firing an event. Events are the functions' names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import semconv

# Trainer callbacks ---------------------------------------------------------------------------


def on_pretrain_routine_start(trainer: Any) -> None:
    """Fired first in ``BaseTrainer._setup_train``, before data loading and model setup (rank 0 only)."""


def on_pretrain_routine_end(trainer: Any) -> None:
    """Fired when data loaders, model and optimizer are set up, before the first epoch."""


def on_train_start(trainer: Any) -> None:
    """Fired once just before the epoch loop starts."""


def on_train_epoch_start(trainer: Any) -> None:
    """Fired at the start of every epoch, before the first batch is loaded."""


def on_train_batch_start(trainer: Any) -> None:
    """Fired for every training batch, after it is loaded and before the forward pass."""


def optimizer_step(trainer: Any) -> None:
    """Reserved for custom integrations; Ultralytics never fires it."""


def on_before_zero_grad(trainer: Any) -> None:
    """Reserved for custom integrations; Ultralytics never fires it."""


def on_train_batch_end(trainer: Any) -> None:
    """Fired for every training batch, after the backward pass and any optimizer step."""


def on_train_epoch_end(trainer: Any) -> None:
    """Fired after the last batch of an epoch, before validation."""


def on_fit_epoch_end(trainer: Any) -> None:
    """Fired after validation and checkpointing of an epoch; once more after the final evaluation."""


def on_model_save(trainer: Any) -> None:
    """Fired after a checkpoint is written (rank 0 only)."""


def on_train_end(trainer: Any) -> None:
    """Fired after the final evaluation of the best model (rank 0 only)."""


def on_params_update(trainer: Any) -> None:
    """Reserved for custom integrations; Ultralytics never fires it."""


def teardown(trainer: Any) -> None:
    """Fired last, from a ``finally`` block: also after a training that raised."""


# Validator callbacks -------------------------------------------------------------------------


def on_val_start(validator: Any) -> None:
    """Fired when a validation starts, inside a training or from ``model.val()``."""


def on_val_batch_start(validator: Any) -> None:
    """Fired for every validation batch, before inference."""


def on_val_batch_end(validator: Any) -> None:
    """Fired for every validation batch, after metrics are updated."""


def on_val_end(validator: Any) -> None:
    """Fired when a validation finishes and its metrics are final."""


# Predictor callbacks -------------------------------------------------------------------------


def on_predict_start(predictor: Any) -> None:
    """Fired when ``model.predict()`` starts streaming results."""


def on_predict_batch_start(predictor: Any) -> None:
    """Fired for every prediction batch, before preprocessing."""


def on_predict_batch_end(predictor: Any) -> None:
    """Fired for every prediction batch, after its results are yielded."""


def on_predict_postprocess_end(predictor: Any) -> None:
    """Fired for every prediction batch, after postprocessing into ``Results``."""


def on_predict_end(predictor: Any) -> None:
    """Fired when the prediction stream is exhausted."""


# Exporter callbacks --------------------------------------------------------------------------


def on_export_start(exporter: Any) -> None:
    """Fired when ``model.export()`` starts."""


def on_export_end(exporter: Any) -> None:
    """Fired when an export succeeded; not fired when it fails."""


default_callbacks: dict[str, list[Callable[[Any], Any]]] = {
    # Run in trainer
    "on_pretrain_routine_start": [on_pretrain_routine_start],
    "on_pretrain_routine_end": [on_pretrain_routine_end],
    "on_train_start": [on_train_start],
    "on_train_epoch_start": [on_train_epoch_start],
    "on_train_batch_start": [on_train_batch_start],
    "optimizer_step": [optimizer_step],
    "on_before_zero_grad": [on_before_zero_grad],
    "on_train_batch_end": [on_train_batch_end],
    "on_train_epoch_end": [on_train_epoch_end],
    "on_fit_epoch_end": [on_fit_epoch_end],  # fit = train + val
    "on_model_save": [on_model_save],
    "on_train_end": [on_train_end],
    "on_params_update": [on_params_update],
    "teardown": [teardown],
    # Run in validator
    "on_val_start": [on_val_start],
    "on_val_batch_start": [on_val_batch_start],
    "on_val_batch_end": [on_val_batch_end],
    "on_val_end": [on_val_end],
    # Run in predictor
    "on_predict_start": [on_predict_start],
    "on_predict_batch_start": [on_predict_batch_start],
    "on_predict_postprocess_end": [on_predict_postprocess_end],
    "on_predict_batch_end": [on_predict_batch_end],
    "on_predict_end": [on_predict_end],
    # Run in exporter
    "on_export_start": [on_export_start],
    "on_export_end": [on_export_end],
}

EVENTS: tuple[str, ...] = tuple(default_callbacks)
TRAINER_EVENTS: tuple[str, ...] = EVENTS[:14]
VALIDATOR_EVENTS: tuple[str, ...] = EVENTS[14:18]
PREDICTOR_EVENTS: tuple[str, ...] = EVENTS[18:23]
EXPORTER_EVENTS: tuple[str, ...] = EVENTS[23:]

# Events fired once per batch: they always feed the metrics, their spans are sampled.
BATCH_EVENTS: frozenset[str] = frozenset(
    {
        "on_train_batch_start",
        "on_train_batch_end",
        "on_val_batch_start",
        "on_val_batch_end",
        "on_predict_batch_start",
        "on_predict_postprocess_end",
        "on_predict_batch_end",
    }
)

# Events that begin a new batch, so the batch counter moves on them.
BATCH_START_EVENTS: frozenset[str] = frozenset(
    {"on_train_batch_start", "on_val_batch_start", "on_predict_batch_start"}
)

MODE_OF_EVENT: dict[str, str] = {
    **dict.fromkeys(TRAINER_EVENTS, semconv.MODE_TRAIN),
    **dict.fromkeys(VALIDATOR_EVENTS, semconv.MODE_VAL),
    **dict.fromkeys(PREDICTOR_EVENTS, semconv.MODE_PREDICT),
    **dict.fromkeys(EXPORTER_EVENTS, semconv.MODE_EXPORT),
}

# Custom events (``run_callbacks("on_my_event")`` in a subclass) take their mode from the engine.
_MODE_OF_ENGINE = (
    ("Trainer", semconv.MODE_TRAIN),
    ("Validator", semconv.MODE_VAL),
    ("Predictor", semconv.MODE_PREDICT),
    ("Exporter", semconv.MODE_EXPORT),
)


def mode_of(event: str, engine: Any = None) -> str:
    """The mode of an event: from its group, or for a custom event from the engine's class name."""
    mode = MODE_OF_EVENT.get(event)
    if mode is None:
        name = type(engine).__name__
        mode = next((m for part, m in _MODE_OF_ENGINE if part in name), semconv.MODE_TRAIN)
    return mode
