"""Multi-GPU (DDP) trainings as one trace: Ultralytics' own DDP launch, run on the CPU.

What runs for real: Ultralytics' ``generate_ddp_command`` / ``generate_ddp_file`` output, launched
with ``torch.distributed.run --nproc_per_node 2`` as ``BaseTrainer.train`` launches it, two worker
processes that rebuild the trainer from the cloudpickled state and fire each rank's real event
pattern (Ultralytics' ``RANK in {-1, 0}`` guards), and the launcher's cleanup. What cannot run here:
``_setup_ddp`` (it needs CUDA, NPU or XPU devices): the workers run Ultralytics' generated script after
a gloo process group is made for them (what ``_setup_ddp`` does with NCCL) and train on the CPU without
a DDP-wrapped model; their final evaluation loads best.pt on the CPU (DDP ranks assume the CUDA
device ``_setup_ddp`` set); the launcher's trainer is built for the CPU, its world size set to 2 by hand, as
``BaseTrainer.__init__`` computes it from ``device="0,1"``.
"""

from __future__ import annotations

from collections import Counter

from otel_callbacks import semconv as sc
from otel_callbacks.apps import demo
from tests.test_ranks import attributes_of, spans_in
from tests.test_telemetry import run_python

CPU_SHIM = """
import types, torch, torch.distributed as dist
dist.init_process_group("gloo")
import ultralytics.engine.validator as validator
validator.get_torch_device_backend = lambda kind: types.SimpleNamespace(current_device=lambda: 0)
backend = validator.AutoBackend
validator.AutoBackend = lambda *a, **k: backend(*a, **{**k, "device": torch.device("cpu")})
"""

LAUNCHER = r"""
import subprocess, sys
from pathlib import Path
from ultralytics.engine import trainer as trainer_module
from ultralytics.models.yolo.detect import DetectionTrainer

overrides = dict(model="yolo11n.yaml", data=DATA, epochs=2, imgsz=32, batch=4, device="cpu", workers=0,
                 plots=False, project=PROJECT, name="ddp", exist_ok=True, seed=0, amp=False)
trainer = DetectionTrainer(overrides=overrides)  # built before install(): a DDP launcher fires nothing

import otel_callbacks
otel_callbacks.install()
trainer.callbacks = otel_callbacks.get_default_callbacks()  # what Model(...).train() hands the trainer
trainer.world_size = 2
cmd, file = trainer_module.generate_ddp_command(trainer)  # as BaseTrainer.train does when self.ddp
# Ultralytics' generated script, after what _setup_ddp would do on GPUs (a process group; gloo here)
# and with the final evaluation's model on the CPU (DDP ranks assume the CUDA device _setup_ddp set).
worker = Path(file).with_name("worker_" + Path(file).name)
worker.write_text(CPU_SHIM + Path(file).read_text())
try:
    subprocess.run([*cmd[:-1], str(worker)], check=True)
finally:
    worker.unlink()
    trainer_module.ddp_cleanup(trainer, str(file))
print("LAUNCHED", flush=True)
"""


def attrs(span):
    return attributes_of(span)


def test_a_ddp_training_is_one_trace_with_a_train_root_per_rank(tmp_path):
    data = demo.make_dataset(tmp_path / "dataset", train=16, val=16)  # each rank's share has batches
    otel = tmp_path / "otel"
    code = f"DATA, PROJECT, CPU_SHIM = {str(data)!r}, {str(tmp_path / 'runs')!r}, {CPU_SHIM!r}\n" + LAUNCHER
    out = run_python(code, {"OTEL_CALLBACKS_DIR": str(otel)}, timeout=600, cwd=tmp_path)
    assert out.returncode == 0 and "LAUNCHED" in out.stdout, out.stderr[-4000:]
    assert len(list(otel.glob("*.traces.jsonl"))) == 3, "the launcher's file and each worker's, side by side"

    spans = spans_in(otel)
    resources = [resource for _, resource in spans]
    assert len({s.trace_id for s, _ in spans}) == 1, "one trace"
    by_id = {s.span_id: s for s, _ in spans}
    roots = [s for s, _ in spans if not s.parent_span_id]
    assert [(r.name, attrs(r).get(sc.ATTR_LAUNCHER)) for r in roots] == [("train", True)], "nothing outside"
    (launch,) = roots
    assert attrs(launch)[sc.ATTR_WORLD_SIZE] == 2 and attrs(launch)[sc.ATTR_EXIT_CODE] == 0
    assert all(s.parent_span_id in by_id for s, _ in spans if s is not launch), "every parent is in the trace"

    ranks = {}
    for span, resource in spans:
        if span.name == "train" and span.parent_span_id == launch.span_id:
            ranks[attrs(span)[sc.ATTR_RANK]] = (span, resource)
    assert sorted(ranks) == [0, 1], "a train root per rank under the launcher's span"
    for rank, (root, resource) in ranks.items():
        assert resource[sc.ATTR_RANK] == rank and resource[sc.ATTR_WORLD_SIZE] == 2
        assert attrs(root)[sc.ATTR_LOCAL_RANK] == rank
        tree = [s for s, _ in spans if _ancestors(s, by_id)[-2:] == [root.span_id, launch.span_id]]
        names = Counter(s.name for s in tree if sc.ATTR_PHASE in attrs(s))
        assert names["epoch"] == 2 and names["batch"] >= 4, (rank, names)
        assert names["val"] == 3, "every rank validates each epoch and best.pt (on_val_end: rank 0 only)"
        assert all(s.status.code != 2 for s in tree), "nothing ended as an error"
        assert names["setup"] == (1 if rank == 0 else 0), "rank 1 fires no on_pretrain_routine_start"
        if rank == 0:  # the integrations the worker added (rank 0 only, as Ultralytics does) are wrapped
            assert {attrs(s).get(sc.ATTR_INTEGRATION) for s in tree} >= {"platform", "events"}
    instances = {r["service.instance.id"] for r in resources}  # one per process
    assert len(instances) == 3, "service.instance.id is unique per process"
    assert out.stdout.count("train run took") == 1, "the timing table: rank 0 only"


def _ancestors(span, by_id):
    chain, parent = [], span.parent_span_id
    while parent:
        chain.append(parent)
        parent = by_id[parent].parent_span_id if parent in by_id else b""
    return chain


# Rank 1's batch callback hangs in its first batch while rank 0 goes on to its next collective and
# waits there: a stall on each rank, each with its own stack.
STUCK_RANK = """
import os, time
from ultralytics.engine.trainer import BaseTrainer

def stuck_uploader(trainer):
    if not getattr(stuck_uploader, "done", False):
        stuck_uploader.done = True
        time.sleep(20)

_init = BaseTrainer.__init__

def _init_with_uploader(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    if os.environ["RANK"] == "1":
        self.add_callback("on_train_batch_end", stuck_uploader)

BaseTrainer.__init__ = _init_with_uploader
"""


def test_a_rank_stuck_while_the_other_waits_in_a_collective_each_get_a_stall_with_their_own_stack(tmp_path):
    data = demo.make_dataset(tmp_path / "dataset", train=16, val=16)
    otel = tmp_path / "otel"
    shim = CPU_SHIM + STUCK_RANK
    code = f"DATA, PROJECT, CPU_SHIM = {str(data)!r}, {str(tmp_path / 'runs')!r}, {shim!r}\n" + LAUNCHER
    env = {
        "OTEL_CALLBACKS_DIR": str(otel),
        "OTEL_CALLBACKS_SLOW_THRESHOLD": "2",
        "OTEL_CALLBACKS_STALL_MIN": "2",
        "OTEL_CALLBACKS_STALL_PHASE": "2",
    }
    out = run_python(code, env, timeout=600, cwd=tmp_path)
    assert out.returncode == 0 and "LAUNCHED" in out.stdout, out.stderr[-4000:]
    spans = spans_in(otel)
    by_id = {s.span_id: s for s, _ in spans}
    assert len({s.trace_id for s, _ in spans}) == 1 and all(
        s.parent_span_id in by_id for s, _ in spans if s.parent_span_id
    ), "one trace, no orphan"
    stalls = {}
    for span, resource in spans:
        if span.name == sc.SPAN_STALL:
            stalls.setdefault(resource[sc.ATTR_RANK], []).append(attrs(span))
    assert sorted(stalls) == [0, 1], "a stall on each rank"
    stuck = stalls[1][0]
    assert stuck[sc.ATTR_CALLBACK].endswith("stuck_uploader")
    assert stuck[sc.ATTR_STALL_STACKS].split("\n\n")[0].splitlines()[1].endswith("in stuck_uploader")
    waiting = stalls[0][0][sc.ATTR_STALL_STACKS]  # (Ultralytics' validation gathers its statistics)
    assert " in all_gather" in waiting and "stuck_uploader" not in waiting, "rank 0 waits in a collective"
