"""The hook surface, name for name and in order, against the seed (ultralytics base.py reference)."""

from __future__ import annotations

import inspect

import otel_callbacks
from otel_callbacks import hooks

# The order of ``## ::: ultralytics.utils.callbacks.base.*`` entries in the seed document.
SEED_HOOKS = [
    "on_pretrain_routine_start",
    "on_pretrain_routine_end",
    "on_train_start",
    "on_train_epoch_start",
    "on_train_batch_start",
    "optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
    "on_train_epoch_end",
    "on_fit_epoch_end",
    "on_model_save",
    "on_train_end",
    "on_params_update",
    "teardown",
    "on_val_start",
    "on_val_batch_start",
    "on_val_batch_end",
    "on_val_end",
    "on_predict_start",
    "on_predict_batch_start",
    "on_predict_batch_end",
    "on_predict_postprocess_end",
    "on_predict_end",
    "on_export_start",
    "on_export_end",
]
# base.py's ``default_callbacks`` lists on_predict_postprocess_end before on_predict_batch_end.
DEFAULT_CALLBACKS_ORDER = [
    *SEED_HOOKS[:20],
    "on_predict_postprocess_end",
    "on_predict_batch_end",
    *SEED_HOOKS[22:],
]


def test_every_seed_hook_is_a_documented_no_op_taking_the_engine():
    for name in SEED_HOOKS:
        hook = getattr(otel_callbacks, name)
        assert hook.__name__ == name
        assert list(inspect.signature(hook).parameters) in (
            ["trainer"],
            ["validator"],
            ["predictor"],
            ["exporter"],
        )
        assert hook.__doc__ and hook.__doc__.strip()
        assert hook(object()) is None


def test_default_callbacks_keys_and_order():
    assert list(otel_callbacks.default_callbacks) == DEFAULT_CALLBACKS_ORDER
    for event, callbacks in otel_callbacks.default_callbacks.items():
        assert callbacks == [getattr(hooks, event)]


def test_seed_public_names_are_exported():
    for name in [*SEED_HOOKS, "get_default_callbacks", "add_integration_callbacks"]:
        assert name in otel_callbacks.__all__
        assert callable(getattr(otel_callbacks, name))


def test_event_groups_partition_the_events():
    groups = (
        hooks.TRAINER_EVENTS,
        hooks.VALIDATOR_EVENTS,
        hooks.PREDICTOR_EVENTS,
        hooks.EXPORTER_EVENTS,
    )
    assert sum(groups, ()) == hooks.EVENTS
    assert hooks.TRAINER_EVENTS[-1] == "teardown" and hooks.EXPORTER_EVENTS == (
        "on_export_start",
        "on_export_end",
    )
    assert set(hooks.EVENTS) >= hooks.BATCH_EVENTS
    assert set(hooks.MODE_OF_EVENT) == set(hooks.EVENTS)


def test_get_default_callbacks_returns_new_lists_with_the_same_functions():
    a, b = otel_callbacks.get_default_callbacks(), otel_callbacks.get_default_callbacks()
    assert list(a) == DEFAULT_CALLBACKS_ORDER
    assert a == b
    for event in a:
        assert a[event] is not b[event]
        assert a[event] is not otel_callbacks.default_callbacks[event]
        assert a[event][0].__wrapped__ is otel_callbacks.default_callbacks[event][0]
