"""Every route into a callbacks dict wraps exactly once, and wrapped lists behave like plain ones."""

from __future__ import annotations

import copy
import functools
import pickle
import subprocess
import sys
import textwrap
from collections import defaultdict

import cloudpickle
import pytest

import otel_callbacks
from otel_callbacks import CallbackDict, CallbackList, InstrumentedCallback, instrument
from otel_callbacks import semconv as sc


def user_cb(engine):
    engine.calls.append("user_cb")


def other_cb(engine):
    engine.calls.append("other_cb")


def assert_wrapped_once(callbacks):
    for cb in callbacks:
        assert isinstance(cb, InstrumentedCallback), cb
        assert not isinstance(cb.__wrapped__, InstrumentedCallback), cb


ROUTES = {
    "append": lambda d: d["on_train_start"].append(user_cb),
    "extend": lambda d: d["on_train_start"].extend([user_cb, other_cb]),
    "insert": lambda d: d["on_train_start"].insert(0, user_cb),
    "iadd": lambda d: d.__setitem__("on_train_start", _iadd(d["on_train_start"])),
    "item": lambda d: d["on_train_start"].__setitem__(0, user_cb),
    "slice": lambda d: d["on_train_start"].__setitem__(slice(0, 1), [user_cb, other_cb]),
    "clear_callback": lambda d: d.__setitem__("on_train_start", []),
    "set_callback": lambda d: d.__setitem__("on_train_start", [user_cb]),
    "reset_callbacks": lambda d: d.__setitem__(
        "on_train_start", [otel_callbacks.default_callbacks["on_train_start"][0]]
    ),
    "trainer_copy": lambda d: d.__setitem__("on_train_start", d["on_train_start"].copy()),
    "missing_key": lambda d: (d.pop("on_train_start"), d["on_train_start"].append(user_cb)),
    "setdefault": lambda d: (d.pop("on_train_start"), d.setdefault("on_train_start", [user_cb])),
    "update": lambda d: d.update({"on_train_start": [user_cb]}),
    "add": lambda d: d.__setitem__("on_train_start", d["on_train_start"] + [user_cb]),
}


def _iadd(lst):
    lst += [user_cb]
    return lst


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_every_route_wraps_exactly_once(route):
    d = otel_callbacks.get_default_callbacks()
    ROUTES[route](d)
    assert isinstance(d["on_train_start"], CallbackList)
    assert d["on_train_start"].event == "on_train_start"
    assert_wrapped_once(d["on_train_start"])
    for event, callbacks in d.items():
        assert callbacks.event == event
        assert_wrapped_once(callbacks)


def test_copies_share_wrappers_and_wrap_nothing_twice():
    d = otel_callbacks.get_default_callbacks()
    d["on_train_start"].append(user_cb)
    shallow = copy.copy(d)
    assert isinstance(shallow, CallbackDict) and shallow is not d
    assert shallow["on_train_start"] is d["on_train_start"]  # like defaultdict's copy
    for k, v in shallow.items():  # the trainer's copy loop
        shallow[k] = v.copy()
    assert shallow["on_train_start"] is not d["on_train_start"]
    copied, original = shallow["on_train_start"], d["on_train_start"]
    assert [a is b for a, b in zip(copied, original, strict=True)] == [True, True]
    assert isinstance(d.copy(), CallbackDict)
    assert isinstance(copy.copy(d["on_train_start"]), CallbackList)


def test_instrument_is_idempotent():
    wrapped = instrument(user_cb, "on_train_start")
    assert instrument(wrapped, "on_train_start") is wrapped


def test_wrapper_is_transparent():
    wrapped = instrument(user_cb, "on_train_start")
    assert wrapped.__name__ == "user_cb"
    assert wrapped.__qualname__ == "user_cb"
    assert wrapped.__module__ == __name__
    assert wrapped.__doc__ == user_cb.__doc__
    assert wrapped.__wrapped__ is user_cb
    assert wrapped == user_cb and user_cb == wrapped
    assert hash(wrapped) == hash(user_cb)
    assert wrapped != other_cb
    assert wrapped.callback_name == f"{__name__}.user_cb"


def test_calls_other_than_ultralytics_reach_the_callback_as_made_and_are_timed(recorded):
    seen = []

    def flexible(*args, **kwargs):
        seen.append((args, kwargs))
        return len(seen)

    wrapped = instrument(flexible, "on_train_epoch_end")
    engine = object()
    assert [wrapped(engine), wrapped(), wrapped(engine, 3, key="v"), wrapped(engine=engine)] == [1, 2, 3, 4]
    assert seen == [((engine,), {}), ((), {}), ((engine, 3), {"key": "v"}), ((), {"engine": engine})]
    ((_, point),) = recorded.durations()
    assert point.count == 4


def test_membership_remove_and_ultralytics_dedupe():
    d = otel_callbacks.get_default_callbacks()
    d["on_train_start"].append(user_cb)
    assert user_cb in d["on_train_start"]
    # Ultralytics' add_integration_callbacks: ``if v not in instance.callbacks[k]``
    for k, v in {"on_train_start": user_cb}.items():
        if v not in d[k]:
            d[k].append(v)
    assert len(d["on_train_start"]) == 2
    d["on_train_start"].remove(user_cb)
    assert user_cb not in d["on_train_start"]
    assert d["on_train_start"].index(otel_callbacks.on_train_start) == 0


def test_comparison_with_plain_and_fresh_dicts():
    plain = defaultdict(list, copy.deepcopy(otel_callbacks.default_callbacks))
    assert otel_callbacks.get_default_callbacks() == plain
    # Model.train: ``self.callbacks != callbacks.get_default_callbacks()`` on a fresh model.
    assert not (otel_callbacks.get_default_callbacks() != otel_callbacks.get_default_callbacks())  # noqa: SIM202
    changed = otel_callbacks.get_default_callbacks()
    changed["on_train_start"].append(user_cb)
    assert changed != otel_callbacks.get_default_callbacks()


def test_partial_callbacks_keep_func_and_args():
    def scaled(engine, factor):
        engine.calls.append(factor)

    d = otel_callbacks.get_default_callbacks()
    p = functools.partial(scaled, factor=3)
    d["on_train_start"].append(p)
    wrapped = d["on_train_start"][1]
    assert wrapped.func is scaled and wrapped.keywords == {"factor": 3}
    assert wrapped == p and p in d["on_train_start"]
    assert wrapped.callback_name.endswith("test_partial_callbacks_keep_func_and_args.<locals>.scaled")


def test_only_callables_with_attributes_of_their_own_get_the_forwarding_wrapper():
    def plain(engine):
        pass

    def tagged(engine):
        pass

    tagged.owner = "platform team"
    assert type(instrument(plain, "on_train_start")) is InstrumentedCallback  # fast attribute reads
    forwarding = instrument(tagged, "on_train_start")
    assert forwarding.owner == "platform team" and isinstance(forwarding, InstrumentedCallback)
    with pytest.raises(AttributeError):
        instrument(plain, "on_train_start").owner  # noqa: B018
    restored = pickle.loads(pickle.dumps(instrument(functools.partial(print), "on_train_start")))
    assert type(restored).__name__ == "ForwardingCallback" and restored.func is print


def test_non_callable_is_refused_naming_event_and_value():
    d = otel_callbacks.get_default_callbacks()
    with pytest.raises(TypeError, match=r"on_val_end.*'not a function'.*str"):
        d["on_val_end"].append("not a function")
    with pytest.raises(TypeError, match="on_val_end"):
        d["on_val_end"] = [None]


def test_custom_events_are_accepted_and_instrumented_with_the_engines_mode(recorded, caplog):
    from tests.engines import DetectionValidator

    d = otel_callbacks.get_default_callbacks()
    d["on_my_event"].append(user_cb)  # add_callback
    d["on_other_event"] = [user_cb]  # set_callback, clear_callback
    d["on_other_event"] = []
    assert "never fires" not in caplog.text, "a custom name is not a typo"
    validator = DetectionValidator(d)
    validator.calls = []
    validator.run_callbacks("on_my_event")
    assert validator.calls == ["user_cb"]
    (span,) = recorded.callback_spans()
    assert span.name == "on_my_event user_cb" and span.attributes[sc.ATTR_MODE] == "val"
    ((attributes, point),) = recorded.durations()
    assert attributes[sc.ATTR_EVENT] == "on_my_event" and point.count == 1
    assert d.get("on_unknown", []) == []  # run_callbacks' lookup stays a silent no-op


def test_a_likely_typo_warns_once_naming_the_event_it_resembles(caplog):
    d = otel_callbacks.get_default_callbacks()
    d["on_trian_start"].append(user_cb)
    d["on_trian_start"].append(user_cb)
    otel_callbacks.get_default_callbacks()["on_trian_start"].append(user_cb)
    warnings = [r for r in caplog.records if "on_trian_start" in r.getMessage()]
    assert len(warnings) == 1 and "did you mean on_train_start?" in warnings[0].getMessage()
    assert d["on_trian_start"] == [user_cb, user_cb], "still registered, as Ultralytics would"


def test_a_dict_without_default_factory_raises_key_error_like_defaultdict():
    with pytest.raises(KeyError, match="on_train_start"):
        CallbackDict(None)["on_train_start"]
    assert CallbackDict(None, {"on_train_start": [user_cb]})["on_train_start"] == [user_cb]


@pytest.mark.parametrize("dumps", [cloudpickle.dumps, pickle.dumps])
def test_pickle_round_trip_keeps_instrumenting(dumps, recorded):
    d = otel_callbacks.get_default_callbacks()
    d["on_train_start"].append(user_cb)
    restored = pickle.loads(dumps(d))
    assert isinstance(restored, CallbackDict) and restored == d
    assert list(restored) == list(d)
    assert_wrapped_once(restored["on_train_start"])
    restored["on_val_end"].append(other_cb)  # still instruments after the round trip
    assert_wrapped_once(restored["on_val_end"])

    class Engine:
        def __init__(self):
            self.calls = []

    engine = Engine()
    for cb in restored["on_train_start"]:
        cb(engine)
    assert engine.calls == ["user_cb"]
    assert [s.attributes["code.function.name"] for s in recorded.spans("on_train_start")] == [
        "otel_callbacks.hooks.on_train_start",
        f"{__name__}.user_cb",
    ]


def test_cloudpickled_dict_emits_spans_in_a_new_process(tmp_path):
    """Ultralytics' DDP launcher cloudpickles the trainer's callbacks for worker processes."""

    d = otel_callbacks.get_default_callbacks()
    d["on_train_epoch_end"].append(lambda trainer: None)  # lambdas travel by value
    blob = tmp_path / "callbacks.pkl"
    blob.write_bytes(cloudpickle.dumps(d))
    script = textwrap.dedent(
        f"""
        import pickle
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import otel_callbacks

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        otel_callbacks.configure(tracer_provider=provider)
        callbacks = pickle.loads(open({str(blob)!r}, "rb").read())

        class Trainer:
            epoch = 4

        for cb in callbacks["on_train_epoch_end"]:
            cb(Trainer())
        for s in exporter.get_finished_spans():
            print(s.name, s.attributes["code.function.name"], s.attributes["ultralytics.epoch"])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert out == [  # the default hook is timed too, but spanned only on request
        "on_train_epoch_end <lambda> tests.test_registry.test_cloudpickled_dict_emits_spans_in_a_new_process"
        ".<locals>.<lambda> 5",
    ]


def test_disabled_by_environment_wraps_nothing(monkeypatch):
    monkeypatch.setenv("OTEL_CALLBACKS_ENABLED", "false")
    d = otel_callbacks.get_default_callbacks()
    d["on_train_start"].append(user_cb)
    assert d["on_train_start"][1] is user_cb
