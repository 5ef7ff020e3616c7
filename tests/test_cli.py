"""The installed ``otel-callbacks`` command on the inputs a new user gives it: exit status and output."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_replay import file_spans
from tests.test_telemetry import run_python

COMMAND = str(Path(sys.executable).parent / "otel-callbacks")


def cli(*args, env=None, timeout=120):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | (env or {})
    return subprocess.run(
        [COMMAND, *map(str, args)], env=full_env, capture_output=True, text=True, timeout=timeout
    )


CONSOLE = {"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console"}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"garbage\n", "not JSON"),
        (b"\xff\xfe\x00binary\x00\n", "not UTF-8 text"),
        (b'{"foo": 1}\n', "not an OTLP/JSON trace or metrics request"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5, "bogus": 1}]}]}]}\n', "not a valid"),
    ],
    ids=["text", "binary", "json", "otlp-shaped"],
)
def test_send_names_each_bad_line_and_exits_2_when_nothing_is_usable(tmp_path, content, problem):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    out = cli("send", bad, env=CONSOLE)
    assert out.returncode == 2, out.stderr
    assert f"{bad}:1: {problem}" in out.stderr and "Traceback" not in out.stderr
    assert "nothing usable" in out.stderr


def test_a_file_cut_mid_line_sends_every_good_line(tmp_path, trace_file):
    lines = trace_file.read_bytes().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"".join(lines) + lines[-1][: len(lines[-1]) // 2])  # killed writing one more
    good = len(repaired_spans(lines))  # open-phase records merged into their spans
    out = cli("send", cut, env=CONSOLE)
    assert out.returncode == 1, out.stderr
    assert f"{cut}:{len(lines) + 1}: not JSON" in out.stderr
    assert f"traces: {good} spans read from 1 file, {good} exported to console" in out.stdout
    assert out.stdout.count('"trace_id"') == good, "the console exporter printed every good span"


def repaired_spans(lines: list[bytes]):
    from otel_callbacks.telemetry import otlp_file

    requests = otlp_file.repaired([otlp_file.from_json_line(line.decode()) for line in lines])
    return [
        s
        for r in requests
        for rs in getattr(r, "resource_spans", [])
        for ss in rs.scope_spans
        for s in ss.spans
    ]


def test_send_takes_directories_and_globs(tmp_path, trace_file):
    spans = len(file_spans(trace_file))
    by_dir = cli("send", trace_file.parent, env=CONSOLE)
    by_glob = cli("send", f"{trace_file.parent}/*.jsonl", env=CONSOLE)
    for out in (by_dir, by_glob):
        assert out.returncode == 0, out.stderr
        assert (
            f"traces: {spans} spans read from 2 files, {spans} exported to console" in out.stdout
        )  # its traces and its metrics
    missing = cli("send", tmp_path / "nothing-here", trace_file, env=CONSOLE)
    assert missing.returncode == 1 and "no such file, or no *.jsonl under it" in missing.stderr


def test_one_signal_set_does_not_send_the_other_to_a_default_endpoint(trace_file):
    started = time.monotonic()
    out = cli("send", trace_file, env={"OTEL_TRACES_EXPORTER": "console"})
    elapsed = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert "metrics: " in out.stdout and "not sent: OTEL_METRICS_EXPORTER is unset while" in out.stdout
    assert elapsed < 6, f"{elapsed:.1f} s: it tried a backend nobody named"


def test_metrics_exporter_none_is_not_reported_as_exported(trace_file):
    out = cli("send", trace_file, env={"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none"})
    assert out.returncode == 0 and "not sent: OTEL_METRICS_EXPORTER=none" in out.stdout


@pytest.mark.parametrize(
    ("command", "variable", "value", "accepted"),
    [
        ("demo", "OTEL_CALLBACKS_SLOW_THRESHOLD", "abc", "a finite number of seconds > 0"),
        ("demo", "OTEL_CALLBACKS_MAX_SPANS", "-5", "an integer >= 0"),
        ("demo", "OTEL_TRACES_EXPORTER", "zipkin", "available:"),
        ("demo", "OTEL_CALLBACKS_ENABLED", "maybe", "accepted: true"),
        ("send", "OTEL_TRACES_EXPORTER", "zipkin", "available:"),  # send reads the exporter variables only
    ],
)
def test_an_invalid_setting_is_one_line_and_exit_status_2(
    tmp_path, trace_file, command, variable, value, accepted
):
    args = ("demo", "--dir", tmp_path / "demo") if command == "demo" else ("send", trace_file)
    out = cli(*args, env={variable: value})
    assert out.returncode == 2, out.stderr[-2000:]
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("otel-callbacks: error: ") and variable in line and repr(value) in line
    assert accepted in line
    assert not (tmp_path / "demo").exists(), "nothing ran"


def test_help_is_plain_text():
    out = cli("--help")
    assert out.returncode == 0 and "``" not in out.stdout and "demo" in out.stdout


def test_the_timing_table_is_printed_once_when_the_application_logs_at_info(tmp_path):
    code = "import logging; logging.basicConfig(level=logging.INFO)\n" + run_train_code()
    out = run_python(code, {"OTEL_CALLBACKS_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert (out.stdout + out.stderr).count("train run took") == 1


def run_train_code():
    return "from tests.engines import DetectionTrainer, run_train\nrun_train(DetectionTrainer())\n"


def test_send_merges_the_environments_resource_over_the_files(trace_file):
    env = {
        **CONSOLE,
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "replayed",
        "OTEL_RESOURCE_ATTRIBUTES": "openinference.project.name=yolo",
    }
    out = cli("send", trace_file, env=env)
    assert out.returncode == 0, out.stderr
    spans = len(file_spans(trace_file))
    assert out.stdout.count('"service.name": "replayed"') == spans, "the environment wins per key"
    assert out.stdout.count('"openinference.project.name": "yolo"') == spans
    assert out.stdout.count('"telemetry.sdk.language": "python"') == spans, "the file's keys stay"


def test_report_without_plotly_says_which_extra_in_one_line(trace_file, tmp_path, monkeypatch, capsys):
    import importlib.util

    from otel_callbacks.apps.cli import main

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "plotly" else find_spec(name, *a)
    )
    assert main(["report", str(trace_file), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err == "otel-callbacks: error: the report needs Plotly: pip install 'otel-callbacks[report]'\n"
    assert not (tmp_path / "r.html").exists()
    # A CI gate needs no page: the comparison runs without Plotly (a run against itself: nothing slower).
    args = [
        "report",
        str(trace_file),
        str(trace_file),
        "-o",
        str(tmp_path / "r.html"),
        "--fail-if-slower",
        "5",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "no page written (it needs Plotly" in out and "nothing slower beyond noise and 5%" in out
    assert not (tmp_path / "r.html").exists()
