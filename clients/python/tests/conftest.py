"""Starts a real Tender server (`tender dev`: PostgreSQL, Redis, dev TLS, migrations, a dev client) for the tests."""
import pathlib
import sys
import threading
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "clients" / "python"))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from tender_dev import tender_dev  # noqa: E402


from tender_dev import STANDARD_WEBHOOK_SECRET  # noqa: E402


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A minimal OTLP/gRPC trace receiver: keeps every span it is sent."""

    def __init__(self):
        self.spans = []
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(scope="session")
def otlp_collector():
    collector = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    collector.endpoint = f"http://127.0.0.1:{port}"
    yield collector
    server.stop(grace=None)


@pytest.fixture(scope="session")
def tender_server(otlp_collector):
    # A Standard Webhooks provider beside the simulator's Stripe endpoint.
    with tender_dev(arguments=["--otlp-endpoint", otlp_collector.endpoint],
                    environment={"TENDER_WEBHOOK_SECRETS": f"acme={STANDARD_WEBHOOK_SECRET}"}) as server:
        yield server
