"""What a user sees in the real Jaeger: a training sent over OTLP reads as one tree, as the SDK made
it (its ids, parents, attribute types, errors, events as logs, the resource as the process), with no
Jaeger warning, and the search finds runs by what a user types; a killed training's file, replayed
with ``send``, reads as one tree too."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from otel_callbacks import semconv as sc
from tests.e2e.backends import wait_until
from tests.e2e.jaeger import jaeger
from tests.e2e.test_otlp_backends import REAL_TRAINING, child_env, run
from tests.e2e.test_training_faults import TRAIN, signalled, training_env
from tests.e2e.versions import ULTRALYTICS_8_4
from tests.test_replay import SYNTHETIC_RUN

SEND = "from otel_callbacks.apps.cli import main; raise SystemExit(main())"

JAEGER_TYPES = {bool: "bool", int: "int64", float: "float64", str: "string"}


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    with jaeger(tmp_path_factory.mktemp("jaeger")) as server:
        yield server


def exporting_to(backend, protocol: str, service: str) -> dict[str, str]:
    port = backend.grpc_port if protocol == "grpc" else backend.http_port
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_MAX_QUEUE_SIZE": "100000",
        "OTEL_CALLBACKS_SUMMARY": "false",
    }


def tags(span: dict) -> dict[str, tuple[str, object]]:
    return {t["key"]: (t["type"], t["value"]) for t in span["tags"]}


def ids(trace: dict) -> set[str]:
    return {s["spanID"] for s in trace["spans"]}


def parent_of(span: dict) -> str | None:
    parents = [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"]
    assert len(parents) <= 1, span
    return parents[0] if parents else None


def without_live_records(spans: list[dict]) -> list[dict]:
    """The spans of a finished run, checked to hold besides only the records of the long phases that
    were open at an export (``sc.OPEN_SUFFIX``), each a zero-length row under its phase."""
    records = [s for s in spans if sc.ATTR_OPEN in tags(s)]
    assert {"train (in progress)", "epoch (in progress)"} <= {r["operationName"] for r in records}
    by_id = {s["spanID"]: s for s in spans}
    for record in records:
        phase = by_id[parent_of(record)]
        assert record["operationName"] == phase["operationName"] + sc.OPEN_SUFFIX
        assert (record["startTime"], record["duration"]) == (phase["startTime"], 0)
    return [s for s in spans if s not in records]


def test_a_real_training_in_jaeger_is_one_tree_as_the_sdk_made_it(backend, data, tmp_path):
    service = f"yolo-{uuid.uuid4().hex[:8]}"
    dump = tmp_path / "memory.json"
    project = tmp_path / "runs"
    env = exporting_to(backend, "http/protobuf", service)
    env["OTEL_CALLBACKS_SLOW_THRESHOLD"] = "0.000001"  # calls slow: ultralytics.slow, a bool
    run(REAL_TRAINING, env, str(data), str(project), str(dump), "jaeger")
    expected = {s["span_id"]: s for s in json.loads(dump.read_text())}
    assert len(expected) > 20
    (trace,) = wait_until(
        lambda: (found := backend.traces(service)) and ids(found[0]) >= expected.keys() and found,
        60,
        "Jaeger to store every span",
    )
    trace = backend.trace(trace["traceID"])  # as the UI's trace page reads it
    warned = [(s["operationName"], s["warnings"]) for s in trace["spans"] if s["warnings"]]
    assert not trace.get("warnings") and not warned, "no Jaeger warning"
    spans = without_live_records(trace["spans"])
    assert sorted(s["spanID"] for s in spans) == sorted(expected), "every span id once, none renamed"
    (root,) = [s for s in spans if parent_of(s) is None]
    assert root["operationName"] == "train", "one root"
    types = set()
    for span in spans:
        want = expected[span["spanID"]]
        assert span["operationName"] == want["name"] and parent_of(span) == want["parent_id"]
        got = tags(span)
        for key, value in want["attributes"].items():
            if type(value) in JAEGER_TYPES:
                assert got[key] == (JAEGER_TYPES[type(value)], value), (span["operationName"], key)
                types.add(got[key][0])
        failed = want["status_code"] == "ERROR"
        assert got.get("error") == (("bool", True) if failed else None), span["operationName"]
        if failed:
            assert got["otel.status_description"] == ("string", want["status_message"])
    assert types == set(JAEGER_TYPES.values()), "each attribute type of ours arrives as itself"
    (crashed,) = [s for s in spans if s["operationName"] == "on_train_end crash"]
    assert tags(crashed)["error"] == ("bool", True)
    assert tags(root)["error"] == ("bool", True), "the crash marks the root too"
    logs = [{f["key"]: f["value"] for f in log["fields"]} for log in crashed["logs"]]
    (fields,) = [log for log in logs if log["event"] == "exception"]
    assert fields["exception.type"] == "RuntimeError"
    assert "uploader down" in fields["exception.stacktrace"], "the stack trace readable in the log"
    process = trace["processes"][root["processID"]]
    assert process["serviceName"] == service
    assert {"host.name", "process.pid"} <= {t["key"] for t in process["tags"]}, "the resource as the process"

    run_name = f"{project.name}/jaeger"
    assert tags(root)["ultralytics.run.name"] == ("string", run_name)
    searches = {
        "by run name": {"tags": {"ultralytics.run.name": run_name}},
        "by error.type": {"tags": {"error.type": "RuntimeError"}},
        "by its slow calls": {"tags": {"ultralytics.slow": "true"}},
        "at least 1 ms": {"minDuration": "1ms"},
    }
    for what, search in searches.items():
        assert [t["traceID"] for t in backend.traces(service, **search)] == [trace["traceID"]], what
    assert backend.traces(service, minDuration="1h") == []
    # Jaeger 2.12's memory store matches error=true only on spans with status OK (fixed in 2.17): the
    # README sends people to error.type instead. This pins the bug: upgrading Jaeger fails it, on
    # purpose, so that the README is reworded then.
    assert backend.traces(service, tags={"error": "true"}) == []


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_over_either_protocol_arrives_as_one_trace_per_run(backend, protocol):
    service = f"synthetic-{uuid.uuid4().hex[:8]}"
    run(SYNTHETIC_RUN, exporting_to(backend, protocol, service))
    (trace,) = wait_until(lambda: backend.traces(service), 30, "the run's trace")
    roots = [s for s in trace["spans"] if parent_of(s) is None]
    assert [r["operationName"] for r in roots] == ["train"]
    ids = [s["spanID"] for s in trace["spans"]]
    assert len(ids) == len(set(ids)) and not any(s["warnings"] for s in trace["spans"])
    (failed,) = backend.traces(service, tags={"error.type": "ValueError"})
    assert failed["traceID"] == trace["traceID"]


def test_a_sigkilled_training_replayed_with_send_is_one_tree_with_its_open_phases_failed(
    backend, data, tmp_path
):
    # Read as it is, the killed run's file has records whose phases never ended (Jaeger: "invalid
    # parent span IDs"); send makes each such phase from its record, as the README says.
    proc = signalled(signal.SIGKILL, data, tmp_path)
    assert proc.returncode == -signal.SIGKILL
    service = f"killed-{uuid.uuid4().hex[:8]}"
    out = run(SEND, exporting_to(backend, "http/protobuf", service), "send", str(tmp_path / "otel"))
    (found,) = wait_until(lambda: backend.traces(service), 60, "the replayed run in Jaeger")
    trace = backend.trace(found["traceID"])
    spans = trace["spans"]
    assert f"{len(spans)} spans" in out.stdout, "every span sent arrives"
    assert len({s["spanID"] for s in spans}) == len(spans), "each span id once"
    assert not trace.get("warnings") and not any(s["warnings"] for s in spans), "no Jaeger warning"
    (root,) = [s for s in spans if parent_of(s) is None]
    assert root["operationName"] == sc.PHASE_TRAIN
    assert tags(root)["error"] == ("bool", True)
    assert tags(root)["otel.status_description"] == ("string", sc.UNCLOSED)
    epochs = sorted(
        (s for s in spans if s["operationName"] == sc.PHASE_EPOCH), key=lambda s: tags(s)[sc.ATTR_EPOCH][1]
    )
    assert [tags(e)[sc.ATTR_EPOCH][1] for e in epochs] == [1, 2]
    assert all(parent_of(e) == root["spanID"] for e in epochs)
    assert "error" not in tags(epochs[0]), "the epoch that finished is kept as it was"
    assert tags(epochs[1])["otel.status_description"] == ("string", sc.UNCLOSED)
    ids = {s["spanID"] for s in spans}
    assert all(parent_of(s) in ids for s in spans if s is not root), "no orphan"


def train_into(backend, fault: str, data, tmp_path, epochs: int) -> tuple[str, dict, dict]:
    """A real training with ``fault`` (``test_training_faults.TRAIN``) sent over OTLP/gRPC: its service,
    its trace as the UI reads it, checked for warnings and repeated ids, and its root."""
    service = f"{fault}-{uuid.uuid4().hex[:8]}"
    out = subprocess.run(
        [sys.executable, "-c", TRAIN, fault, str(data), str(tmp_path), str(epochs)],
        env=training_env(tmp_path) | exporting_to(backend, "grpc", service),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "FINISHED" in out.stdout, out.stderr[-3000:]
    (found,) = wait_until(
        lambda: [t for t in backend.traces(service) if any(parent_of(s) is None for s in t["spans"])],
        60,
        "the run and its root in Jaeger",
    )
    trace = backend.trace(found["traceID"])
    spans = trace["spans"]
    assert len({s["spanID"] for s in spans}) == len(spans) and not any(s["warnings"] for s in spans)
    assert not [s for s in spans if s["operationName"] == sc.SPAN_STALL], "no false alarm"
    (root,) = [s for s in spans if parent_of(s) is None]
    return service, trace, root


def logs_named(span: dict, event: str) -> list[dict[str, object]]:
    return [
        {f["key"]: f["value"] for f in log["fields"]}
        for log in span["logs"]
        if {"key": "event", "type": "string", "value": event} in log["fields"]
    ]


def test_an_early_stopped_training_is_found_by_its_stop_reason(backend, data, tmp_path):
    service, trace, root = train_into(backend, "patience", data, tmp_path, epochs=10)
    assert "error" not in tags(root)
    assert tags(root)[sc.ATTR_STOP_REASON] == ("string", sc.STOP_EARLY_STOPPING)
    (stopped,) = logs_named(root, sc.EVENT_EARLY_STOP)
    assert stopped[sc.ATTR_MESSAGE].endswith("of 10 epochs")
    found = backend.traces(service, tags={sc.ATTR_STOP_REASON: sc.STOP_EARLY_STOPPING})
    assert [t["traceID"] for t in found] == [trace["traceID"]]
    assert backend.traces(service, tags={sc.ATTR_STOP_REASON: sc.STOP_TIME_LIMIT}) == []


@pytest.mark.skipif(not ULTRALYTICS_8_4, reason="Ultralytics 8.3 has no OOM auto-retry: the OOM crashes it")
def test_an_out_of_memory_retry_reads_as_a_failed_attempt_beside_the_retried_epoch(backend, data, tmp_path):
    _, trace, root = train_into(backend, "oom", data, tmp_path, epochs=2)
    spans = trace["spans"]
    assert "error" not in tags(root), "a retried run is no failed run"
    restarts = logs_named(root, sc.EVENT_EPOCH_RESTART)
    assert [r[sc.ATTR_RESTART_REASON] for r in restarts] == [sc.RESTART_OUT_OF_MEMORY]
    epochs = sorted((s for s in spans if s["operationName"] == sc.PHASE_EPOCH), key=lambda s: s["startTime"])
    assert [tags(e)[sc.ATTR_EPOCH][1] for e in epochs] == [1, 1, 2]
    assert all(parent_of(e) == root["spanID"] for e in epochs), "the attempt is the retried epoch's sibling"
    assert tags(epochs[0])["otel.status_description"] == (
        "string",
        "CPU out of memory: batch 4 -> 2, epoch 1 restarted",
    )
    assert ["error" in tags(e) for e in epochs] == [True, False, False]
    failed_batches = [s for s in spans if parent_of(s) == epochs[0]["spanID"] and "error" in tags(s)]
    assert [s["operationName"] for s in failed_batches] == [sc.PHASE_BATCH], "with its failed batch"


# A real training whose callback hangs in the first epoch until the test has looked (also
# tests/e2e/test_prometheus.py).
HANG = """
import sys
import otel_callbacks
otel_callbacks.install()
from ultralytics import YOLO

def checkpoint_uploader(trainer):  # hangs in the first epoch, until the test has looked
    if trainer.epoch == 0:
        print("HANGING", flush=True)
        sys.stdin.readline()

model = YOLO("yolo11n.yaml")
model.add_callback("on_fit_epoch_end", checkpoint_uploader)
model.train(data=sys.argv[1], epochs=1, imgsz=32, batch=4, device="cpu", workers=0, plots=False,
            project=sys.argv[2], name="hang", exist_ok=True)
print("DONE", flush=True)
sys.stdin.read()  # exporters, /metrics included, stay up until the test closes stdin
"""


class Held:
    """A training in a subprocess that stops where its script prints a word and reads a line, until
    the test releases it (``held_training``)."""

    def __init__(self, process: subprocess.Popen, log) -> None:
        self.process, self.log = process, log

    def says(self, word: str, timeout: float, what: str) -> None:
        def next_line() -> bool:
            line = self.process.stdout.readline()
            assert line or self.process.poll() is None, self.log.read_text()[-3000:]
            return line.strip() == word

        wait_until(next_line, timeout, what, 0)

    def release(self) -> None:
        """Let it go on, to the end of its training (it says DONE), then to its exit."""
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        self.says("DONE", 120, "the training to finish")
        self.process.stdin.close()
        assert self.process.wait(60) == 0


@contextlib.contextmanager
def held_training(script: str, args: list[str], env: dict[str, str], log) -> Iterator[Held]:
    """``script`` run with ``args``; killed where the test fails before releasing it."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
    )  # fmt: skip
    try:
        yield Held(process, log)
    finally:
        if process.poll() is None:
            process.kill()


def first_stall(backend, service: str) -> tuple[dict, dict]:
    """The trace holding the service's first stall span in Jaeger, and that span's tags."""
    (found,) = wait_until(lambda: backend.traces(service, operation=sc.SPAN_STALL), 30, "a stall in Jaeger")
    return found, tags(next(s for s in found["spans"] if s["operationName"] == sc.SPAN_STALL))


def test_a_running_training_and_its_hang_are_seen_in_jaeger_while_they_last(backend, data, tmp_path):
    service = f"hang-{uuid.uuid4().hex[:8]}"
    env = exporting_to(backend, "http/protobuf", service) | {"OTEL_BSP_SCHEDULE_DELAY": "200"}
    env = child_env(env | {"OTEL_CALLBACKS_SLOW_THRESHOLD": "0.5"})
    with held_training(HANG, [str(data), str(tmp_path)], env, tmp_path / "training.log") as training:
        training.says("HANGING", 240, "the training to hang")
        found, stall_tags = first_stall(backend, service)
        assert training.process.poll() is None, "seen while the training hangs"
        # The run and its epoch, in progress: found by the run's name, read as running since.
        run_name = f"{tmp_path.name}/hang"
        assert [t["traceID"] for t in backend.traces(service, tags={sc.ATTR_RUN_NAME: run_name})] == [
            found["traceID"]
        ]
        live = {s["operationName"]: s for s in found["spans"] if sc.ATTR_OPEN in tags(s)}
        assert {"train (in progress)", "epoch (in progress)"} <= live.keys()
        assert tags(live["train (in progress)"])[sc.ATTR_RUN_NAME] == ("string", run_name)
        assert tags(live["epoch (in progress)"])[sc.ATTR_EPOCH] == ("int64", 1)
        assert all(s["duration"] == 0 for s in live.values()), "a zero-length row each"
        assert not any(s["operationName"] in ("train", "epoch") for s in found["spans"]), "not ended yet"
        assert stall_tags[sc.ATTR_EVENT] == ("string", "on_fit_epoch_end")
        assert stall_tags[sc.ATTR_CALLBACK][1].endswith("checkpoint_uploader")
        assert stall_tags[sc.ATTR_EPOCH] == ("int64", 1)
        stacks = stall_tags[sc.ATTR_STALL_STACKS][1]
        hung = stacks.split("\n\n")[0].splitlines()  # the hung thread's, first; its innermost call first
        assert "(MainThread, most recent call first)" in hung[0]
        assert hung[1].endswith("in checkpoint_uploader")
        training.release()
    trace = backend.trace(found["traceID"])  # the whole run, now that it ended
    spans = {s["spanID"]: s for s in trace["spans"]}
    assert len(spans) == len(trace["spans"]), "each span id once"
    assert not any(s["warnings"] for s in spans.values()), "no Jaeger warning once the run has ended"
    assert [s["operationName"] for s in spans.values() if parent_of(s) is None] == ["train"], "one root"
    assert all(parent_of(s) in spans for s in spans.values() if parent_of(s)), "no orphan"
    without_live_records(trace["spans"])
    stalls = [s for s in spans.values() if s["operationName"] == sc.SPAN_STALL]
    assert stalls and all(spans[parent_of(s)]["operationName"] == sc.PHASE_EPOCH for s in stalls)
