"""The real Jaeger (v2, built from the Go module proxy by ``.ci/build_go.sh``, cached by release):
started on 127.0.0.1 and free ports with in-memory storage, stopped by the test; and what its UI
reads, through the query API the UI calls."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.e2e.backends import free_port, get_json, go_program, process, wait_until


def jaeger_binary() -> str:
    return go_program("jaeger", "github.com/jaegertracing/jaeger")


@dataclass
class Jaeger:
    grpc_port: int  # OTLP/gRPC receiver
    http_port: int  # OTLP/HTTP receiver (/v1/traces)
    query: str  # the UI and its HTTP API (/api/...)

    def traces(self, service: str, **search: object) -> list[dict]:
        """``/api/traces``: the search the UI's search page makes (``tags`` a dict of strings)."""
        params = {"service": service, "limit": 100, **search}  # the last 2 days, by default
        if "tags" in params:
            params["tags"] = json.dumps(params["tags"])
        return get_json(f"{self.query}/api/traces?{urlencode(params)}")["data"]

    def trace(self, trace_id: str) -> dict:
        (trace,) = get_json(f"{self.query}/api/traces/{trace_id}")["data"]
        return trace

    def services(self) -> list[str]:
        return get_json(f"{self.query}/api/services")["data"] or []


@contextlib.contextmanager
def jaeger(tmp: Path) -> Iterator[Jaeger]:
    binary = jaeger_binary()
    grpc_port, http_port, query_port, query_grpc, health = (free_port() for _ in range(5))
    config = {  # Jaeger v2's configuration is an OpenTelemetry Collector's; YAML is a superset of JSON
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["jaeger_storage_exporter"]}},
            "telemetry": {"metrics": {"level": "none"}},  # else a fixed port, 8888
        },
        "extensions": {
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"127.0.0.1:{health}"}},
            "jaeger_storage": {"backends": {"memory": {"memory": {"max_traces": 10_000}}}},
            "jaeger_query": {
                "storage": {"traces": "memory"},
                "enable_tracing": False,  # else it sends its own spans to localhost:4317
                "http": {"endpoint": f"127.0.0.1:{query_port}"},
                "grpc": {"endpoint": f"127.0.0.1:{query_grpc}"},
            },
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
                    "http": {"endpoint": f"127.0.0.1:{http_port}"},
                }
            }
        },
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memory"}},
    }
    path = tmp / f"jaeger-{query_port}.yaml"
    path.write_text(json.dumps(config))
    with process([binary, "--config", str(path)], tmp / f"jaeger-{query_port}.log") as proc:

        def ready() -> bool:
            if proc.poll() is not None:
                log = (tmp / f"jaeger-{query_port}.log").read_text(errors="replace")
                pytest.fail(f"Jaeger exited with {proc.returncode}:\n{log[-3000:]}")
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/status", timeout=2) as response:
                return json.loads(response.read()).get("status") == "StatusOK"

        wait_until(ready, 60, "Jaeger to be ready")
        yield Jaeger(grpc_port, http_port, f"http://127.0.0.1:{query_port}")
