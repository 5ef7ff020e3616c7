"""OpenTelemetry-instrumented drop-in for ``ultralytics.utils.callbacks.base``.

Same names as Ultralytics' module; every callback that enters a callbacks dict made by
:func:`get_default_callbacks` is timed through OpenTelemetry.
"""

from __future__ import annotations

from .config import Limits, Settings, SettingsError
from .hooks import (
    default_callbacks,
    on_before_zero_grad,
    on_export_end,
    on_export_start,
    on_fit_epoch_end,
    on_model_save,
    on_params_update,
    on_predict_batch_end,
    on_predict_batch_start,
    on_predict_end,
    on_predict_postprocess_end,
    on_predict_start,
    on_pretrain_routine_end,
    on_pretrain_routine_start,
    on_train_batch_end,
    on_train_batch_start,
    on_train_end,
    on_train_epoch_end,
    on_train_epoch_start,
    on_train_start,
    on_val_batch_end,
    on_val_batch_start,
    on_val_end,
    on_val_start,
    optimizer_step,
    teardown,
)
from .registry import CallbackDict, CallbackList, get_default_callbacks
from .telemetry import configure, metric_views, shutdown
from .tracing import InstrumentedCallback, instrument
from .ultralytics.dropin import install, uninstall
from .ultralytics.integrations import add_integration_callbacks
from .ultralytics.raytune import ray_runtime_env
from .version import __version__

__all__ = [
    "__version__",
    "CallbackDict",
    "CallbackList",
    "InstrumentedCallback",
    "Limits",
    "Settings",
    "SettingsError",
    "add_integration_callbacks",
    "configure",
    "default_callbacks",
    "get_default_callbacks",
    "install",
    "instrument",
    "metric_views",
    "on_before_zero_grad",
    "on_export_end",
    "on_export_start",
    "on_fit_epoch_end",
    "on_model_save",
    "on_params_update",
    "on_predict_batch_end",
    "on_predict_batch_start",
    "on_predict_end",
    "on_predict_postprocess_end",
    "on_predict_start",
    "on_pretrain_routine_end",
    "on_pretrain_routine_start",
    "on_train_batch_end",
    "on_train_batch_start",
    "on_train_end",
    "on_train_epoch_end",
    "on_train_epoch_start",
    "on_train_start",
    "on_val_batch_end",
    "on_val_batch_start",
    "on_val_end",
    "on_val_start",
    "optimizer_step",
    "ray_runtime_env",
    "shutdown",
    "teardown",
    "uninstall",
]
