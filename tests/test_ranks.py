"""Runs parented by a launcher's TRACEPARENT, and DDP ranks above 0 (no on_pretrain_routine_start)."""

from __future__ import annotations

from otel_callbacks import semconv as sc
from otel_callbacks.telemetry import otlp_file
from tests.test_telemetry import run_python

TRACE_ID, PARENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

RANK_1 = """
from tests.engines import DetectionTrainer, run_val

trainer = DetectionTrainer()  # rank 1: everything Ultralytics fires there, in order
trainer.run_callbacks("on_pretrain_routine_end")
trainer.run_callbacks("on_train_start")
for epoch in range(2):
    trainer.epoch = epoch
    trainer.run_callbacks("on_train_epoch_start")
    for _ in range(3):
        trainer.run_callbacks("on_train_batch_start")
        trainer.run_callbacks("on_train_batch_end")
    trainer.run_callbacks("on_train_epoch_end")
    trainer.run_callbacks("on_fit_epoch_end")
trainer.run_callbacks("teardown")
"""


def attributes_of(message):
    """An OTLP message's attributes (span, resource) as a plain dict."""
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in message.attributes}


def spans_in(directory):
    """(span, its resource's attributes) for every span of every OTLP-JSON-lines file there."""
    found = []
    for path in sorted(directory.glob("*.jsonl")):
        for request in otlp_file.read_file(path):
            for rs in getattr(request, "resource_spans", []):
                resource = attributes_of(rs.resource)
                found += [(s, resource) for ss in rs.scope_spans for s in ss.spans]
    return found


def test_a_rank_above_0_gets_a_whole_run_under_the_launchers_context(tmp_path):
    env = {
        "OTEL_CALLBACKS_DIR": str(tmp_path),
        "TRACEPARENT": f"00-{TRACE_ID}-{PARENT_ID}-01",
        "RANK": "1",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "2",
        "OTEL_CALLBACKS_DEFAULT_HOOK_SPANS": "true",
    }
    out = run_python(RANK_1, env)
    assert out.returncode == 0, out.stderr
    assert "train run took" not in out.stdout + out.stderr, "the timing table is rank 0's"
    spans = spans_in(tmp_path)
    assert {s.trace_id.hex() for s, _ in spans} == {TRACE_ID}, "one trace: the launcher's"
    (root, resource) = next((s, r) for s, r in spans if s.name == "train")
    assert root.parent_span_id.hex() == PARENT_ID
    ids = {s.span_id for s, _ in spans}
    assert all(s.parent_span_id in ids for s, _ in spans if s is not root), "nothing outside the run's tree"
    attributes = {a.key: a.value.int_value for a in root.attributes if a.key.startswith("ultralytics.")}
    assert attributes[sc.ATTR_RANK] == 1 and attributes[sc.ATTR_WORLD_SIZE] == 2
    assert resource[sc.ATTR_RANK] == 1 and resource[sc.ATTR_LOCAL_RANK] == 1
    names = [s.name for s, _ in spans if any(a.key == sc.ATTR_PHASE for a in s.attributes)]
    assert names.count("epoch") == 2 and names.count("batch") == 6 and "setup" not in names


def test_a_current_span_wins_over_traceparent(tmp_path):
    code = (
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "import otel_callbacks\n"
        "tel = otel_callbacks.configure()\n"
        "with tel.tracer.start_as_current_span('experiment') as experiment:\n"
        "    from tests.engines import DetectionTrainer, run_train\n"
        "    run_train(DetectionTrainer(), epochs=1, batches=1)\n"
        "print(format(experiment.get_span_context().span_id, '016x'))\n"
    )
    env = {"OTEL_CALLBACKS_DIR": str(tmp_path), "TRACEPARENT": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    out = run_python(code, env)
    assert out.returncode == 0, out.stderr
    (root,) = [s for s, _ in spans_in(tmp_path) if s.name == "train"]
    assert root.parent_span_id.hex() == out.stdout.split()[-1]
