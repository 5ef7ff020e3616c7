"""A small OTLP gRPC receiver for tests: stores every request it is sent (a fixture, not a backend)."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Receiver(trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, port: int = 0) -> None:
        self.traces: list = []
        self.metrics: list = []
        self.headers: list[dict[str, str]] = []
        self.changed = threading.Condition()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    def Export(self, request, context):
        with self.changed:
            self.headers.append(dict(context.invocation_metadata()))
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                self.traces.append(request)
                response = trace_service_pb2.ExportTraceServiceResponse()
            else:
                self.metrics.append(request)
                response = metrics_service_pb2.ExportMetricsServiceResponse()
            self.changed.notify_all()
        return response

    def spans(self):
        with self.changed:
            return [
                s for r in self.traces for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans
            ]

    def metric_names(self):
        with self.changed:
            return {
                m.name
                for r in self.metrics
                for rm in r.resource_metrics
                for sm in rm.scope_metrics
                for m in sm.metrics
            }

    def wait(self, predicate, timeout: float = 20.0) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def stop(self) -> None:
        self.server.stop(grace=None).wait(5)
