"""A real training whose dataloader stops handing over batches, seen in the real Jaeger while it is
stuck: a ``stall`` span naming the wait, its epoch and batch, with the stuck ``__getitem__`` in the
stacks; one tree once the training ends."""

from __future__ import annotations

import uuid

from otel_callbacks import semconv as sc
from tests.e2e.test_jaeger import (  # noqa: F401 (backend: a fixture)
    backend,
    exporting_to,
    first_stall,
    held_training,
    parent_of,
    tags,
)
from tests.e2e.test_otlp_backends import child_env

STUCK_LOADER = """
import sys
import otel_callbacks
otel_callbacks.install()
from ultralytics import YOLO
from ultralytics.data.dataset import YOLODataset

loaded, load = [0], YOLODataset.__getitem__

def __getitem__(self, index):  # the first image of the second epoch never comes, until the test has looked
    if self.augment:
        loaded[0] += 1
        if loaded[0] == 9:  # 8 training images
            print("STUCK", flush=True)
            sys.stdin.readline()
    return load(self, index)

YOLODataset.__getitem__ = __getitem__
model = YOLO("yolo11n.yaml")
model.train(data=sys.argv[1], epochs=2, imgsz=32, batch=4, device="cpu", workers=0, plots=False,
            project=sys.argv[2], name="stuck", exist_ok=True)
print("DONE", flush=True)
sys.stdin.read()
"""


def test_a_stuck_dataloader_shows_its_stall_in_jaeger_while_it_is_stuck(backend, data, tmp_path):  # noqa: F811
    service = f"stuck-{uuid.uuid4().hex[:8]}"
    env = exporting_to(backend, "http/protobuf", service) | {"OTEL_BSP_SCHEDULE_DELAY": "200"}
    # Two batches an epoch: too few to know the loop's batch times, so the phase bound holds.
    env = child_env(env | {"OTEL_CALLBACKS_STALL_MIN": "1", "OTEL_CALLBACKS_STALL_PHASE": "2"})
    log = tmp_path / "training.log"
    with held_training(STUCK_LOADER, [str(data), str(tmp_path)], env, log) as training:
        training.says("STUCK", 240, "the dataloader to get stuck")
        found, stall_tags = first_stall(backend, service)
        assert training.process.poll() is None, "seen while the dataloader is stuck"
        assert stall_tags[sc.ATTR_PHASE] == ("string", sc.PHASE_DATALOADER)
        assert stall_tags[sc.ATTR_EPOCH] == ("int64", 2) and stall_tags[sc.ATTR_BATCH_INDEX] == ("int64", 0)
        assert stall_tags[sc.ATTR_STALL_BOUND] == ("float64", 2.0)
        assert "in __getitem__" in stall_tags[sc.ATTR_STALL_STACKS][1]
        training.release()
    assert "no hook firing" in log.read_text(), "one warning"
    trace = backend.trace(found["traceID"])  # the whole run, now that it ended
    spans = {s["spanID"]: s for s in trace["spans"]}
    assert not any(s["warnings"] for s in spans.values()), "no Jaeger warning once the run has ended"
    stalls = [s for s in spans.values() if s["operationName"] == sc.SPAN_STALL]
    epochs = {tags(spans[parent_of(s)]).get(sc.ATTR_EPOCH) for s in stalls}
    assert epochs == {("int64", 2)}, "in the epoch whose batch never came"
