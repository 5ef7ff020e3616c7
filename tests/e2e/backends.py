"""Real backends for end-to-end tests: started on 127.0.0.1 and free ports, stopped by the test.

A backend that is not installed skips its tests, unless ``OTEL_CALLBACKS_REQUIRE_BACKENDS=1``
(CI sets it after installing them all), where it fails them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing(message: str) -> NoReturn:
    """Skip, or fail where CI requires every backend (``OTEL_CALLBACKS_REQUIRE_BACKENDS=1``)."""
    if os.environ.get("OTEL_CALLBACKS_REQUIRE_BACKENDS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def require(executable: str, hint: str) -> str:
    path = shutil.which(executable)
    if path is None:
        missing(f"{executable} is not installed ({hint})")
    return path


def go_release(name: str, module: str) -> str:
    """The release of ``module`` that ``.ci/<name>/go.mod`` pins, which names its cached build."""
    go_mod = ROOT / ".ci" / name / "go.mod"
    return re.search(rf"^\s*{re.escape(module)} (v\S+)", go_mod.read_text(), re.MULTILINE).group(1)


def go_program(name: str, module: str) -> str:
    """A program that ``.ci/build_go.sh`` built from the Go module proxy (CI runs it), cached by
    release and source (the same hash as the script's)."""
    cache = Path(os.environ.get("OTEL_CALLBACKS_CACHE", Path.home() / ".cache" / "otel-callbacks"))
    module_dir = ROOT / ".ci" / name
    files = [module_dir / "go.mod", module_dir / "go.sum", *sorted(module_dir.glob("*.go"))]
    source = hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()[:12]
    binary = cache / f"{name}-{go_release(name, module)}-{source}" / name
    if not binary.exists():
        missing(f"{name} is not built ({binary}: run .ci/build_go.sh {name} ...)")
    return str(binary)


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_until(check, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last_error})")


@contextlib.contextmanager
def process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """A server process whose output goes to ``log``; terminated (then killed) on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


@contextlib.contextmanager
def prometheus(
    tmp: Path,
    targets: list[str],
    rule_files: list[str] = (),
    honor_labels: bool = False,
    features: list[str] = (),
) -> Iterator[str]:
    """A real Prometheus scraping ``targets`` every second; yields its base URL. ``honor_labels``: keep
    the target's ``job`` and ``instance`` (a collector's, as ``dashboards/collector/prometheus.yml``);
    ``features``: its ``--enable-feature`` flags (``exemplar-storage``)."""
    binary = require("prometheus", "apt-get install -y --no-install-recommends prometheus")
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": list(rule_files),
                "scrape_configs": [
                    {
                        "job_name": "otel-callbacks",
                        "honor_labels": honor_labels,
                        "static_configs": [{"targets": targets}],
                    }
                ],
            }
        )
    )
    url = f"http://127.0.0.1:{port}"
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        *(f"--enable-feature={feature}" for feature in features),
    ]
    with process(args, tmp / "prometheus.log") as proc:
        wait_until(
            lambda: proc.poll() is None and urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200,
            60,
            "Prometheus to be ready",
        )
        yield url


def prometheus_exporter_env(port: int, service: str) -> dict[str, str]:
    """The environment of a training whose metrics Prometheus scrapes on 127.0.0.1:``port``."""
    return {
        **os.environ,
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
        "OTEL_SERVICE_NAME": service,
        "OTEL_CALLBACKS_SUMMARY": "false",
    }


def promql(url: str, query: str, at: float | None = None) -> list[dict]:
    """An instant query (at ``at``, a Unix time; now by default) that must evaluate without error."""
    from urllib.parse import quote

    answer = get_json(f"{url}/api/v1/query?query={quote(query)}" + (f"&time={at}" if at else ""))
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def rotel_binary() -> str:
    """The collector binary shipped inside the ``rotel`` wheel."""
    try:
        import rotel
    except ImportError:
        require("rotel-agent", "pip install rotel")
    binary = Path(rotel.__file__).parent / "rotel-agent"
    if not binary.exists():
        pytest.fail(f"the rotel wheel has no {binary}")
    return str(binary)


@contextlib.contextmanager
def rotel(tmp: Path, downstream: str, protocol: str = "grpc") -> Iterator[tuple[int, int]]:
    """A real OTLP collector relaying to ``downstream``; yields its (gRPC, HTTP) receiver ports."""
    grpc_port, http_port = free_port(), free_port()
    args = [
        rotel_binary(),
        "start",
        "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
        "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
        "--exporter", "otlp",
        "--otlp-exporter-endpoint", downstream,
        "--otlp-exporter-protocol", protocol,
        "--otlp-exporter-retry-initial-backoff", "200ms",
        "--otlp-exporter-retry-max-backoff", "1s",
        "--otlp-exporter-retry-max-elapsed-time", "5s",
    ]  # fmt: skip
    with process(args, tmp / f"rotel-{grpc_port}.log") as proc:
        wait_until(lambda: proc.poll() is None and port_open(grpc_port) and port_open(http_port), 30, "rotel")
        yield grpc_port, http_port


@contextlib.contextmanager
def phoenix(tmp: Path) -> Iterator[str]:
    """A real Arize Phoenix trace store, offline; yields its base URL (OTLP/HTTP at /v1/traces)."""
    try:
        import phoenix as _  # noqa: F401
    except ImportError:
        require("phoenix", "pip install arize-phoenix")
    port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_WORKING_DIR": str(tmp / "phoenix"),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        "PHOENIX_LOG_MIGRATIONS": "false",
    }
    url = f"http://127.0.0.1:{port}"
    launcher = Path(__file__).with_name("phoenix_loopback.py")
    import sys

    with process([sys.executable, str(launcher)], tmp / "phoenix.log", env) as proc:
        wait_until(
            lambda: proc.poll() is None and urllib.request.urlopen(f"{url}/healthz", timeout=2).status == 200,
            120,
            "Phoenix to be ready",
        )
        yield url


def phoenix_spans(url: str, project: str) -> list[dict]:
    """Every span of a Phoenix project, through its REST API (paged)."""
    spans, cursor = [], None
    while True:
        query = f"{url}/v1/projects/{project}/spans?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        page = get_json(query)
        spans += page["data"]
        cursor = page.get("next_cursor")
        if not cursor:
            return spans
