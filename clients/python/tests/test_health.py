"""The generated Python stubs against a running Tender over TLS with the dev CA."""
import grpc
import pytest

from tender_client.proto.grpc.health.v1 import health_pb2, health_pb2_grpc
from tender_client.proto.tender.payments.v1 import payment_service_pb2, payment_service_pb2_grpc


def _channel(server, root_certificates=None):
    if root_certificates is None:
        root_certificates = server["ca"].read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
    return grpc.secure_channel(server["target"], credentials)


def test_check_reports_serving(tender_server):
    with _channel(tender_server) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_check_of_a_tender_service(tender_server):
    with _channel(tender_server) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="tender.payments.v1.PaymentService"), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_check_of_an_unknown_service_is_not_found(tender_server):
    with _channel(tender_server) as channel:
        with pytest.raises(grpc.RpcError) as failure:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=10)
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


def test_watch_starts_with_serving(tender_server):
    with _channel(tender_server) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=10)
        first = next(iter(stream))
        stream.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


def test_payment_stub_without_a_token_is_unauthenticated(tender_server):
    with _channel(tender_server) as channel:
        with pytest.raises(grpc.RpcError) as failure:
            payment_service_pb2_grpc.PaymentServiceStub(channel).GetPayment(
                payment_service_pb2.GetPaymentRequest(payment_id="pay_123"), timeout=10)
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_client_without_the_dev_ca_is_refused(tender_server):
    # The system trust store does not contain the dev CA.
    with grpc.secure_channel(tender_server["target"], grpc.ssl_channel_credentials()) as channel:
        with pytest.raises(grpc.RpcError) as failure:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
