"""Traces leave Tender over OTLP/gRPC, continuing the caller's W3C trace context."""
import time

import grpc

from tender_client.proto.grpc.health.v1 import health_pb2, health_pb2_grpc

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"


def test_server_span_is_exported_as_a_child_of_the_callers_span(tender_server, otlp_collector):
    credentials = grpc.ssl_channel_credentials(root_certificates=tender_server["ca"].read_bytes())
    with grpc.secure_channel(tender_server["target"], credentials) as channel:
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10,
            metadata=[("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01")])
    deadline = time.monotonic() + 30
    span = None
    while span is None and time.monotonic() < deadline:
        with otlp_collector.lock:
            span = next((s for s in otlp_collector.spans if s.trace_id.hex() == TRACE_ID), None)
        time.sleep(0.2)
    assert span is not None, "no span of the trace reached the collector"
    assert span.name == "grpc.health.v1.Health/Check"
    assert span.parent_span_id.hex() == PARENT_SPAN_ID
    assert span.kind == span.SPAN_KIND_SERVER
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["rpc.system"].string_value == "grpc"
    assert attributes["rpc.service"].string_value == "grpc.health.v1.Health"
    assert attributes["rpc.method"].string_value == "Check"
    assert attributes["rpc.grpc.status_code"].int_value == 0
