"""Client credentials, access tokens and error details through the generated Python stubs."""
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tender_client.proto.tender.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from tender_client.proto.tender.payments.v1 import payment_service_pb2, payment_service_pb2_grpc


def _channel(server):
    credentials = grpc.ssl_channel_credentials(root_certificates=server["ca"].read_bytes())
    return grpc.secure_channel(server["target"], credentials)


def _error_info(error):
    """The google.rpc.ErrorInfo carried in grpc-status-details-bin."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
    return None


def _issue(stub, server, **kwargs):
    return stub.IssueToken(auth_service_pb2.IssueTokenRequest(
        client_id=server["client_id"], client_secret=server["client_secret"], **kwargs), timeout=10)


def test_issue_and_introspect(tender_server):
    with _channel(tender_server) as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        issued = _issue(stub, tender_server, scopes=["payments:read", "tokens:introspect"])
        assert issued.token_type == "Bearer"
        assert sorted(issued.scopes) == ["payments:read", "tokens:introspect"]
        assert issued.access_token.count(".") == 2
        auth = [("authorization", "Bearer " + issued.access_token)]
        info = stub.IntrospectToken(auth_service_pb2.IntrospectTokenRequest(token=issued.access_token),
                                    metadata=auth, timeout=10)
        assert info.active
        assert info.client_id == tender_server["client_id"]
        assert info.merchant_id == "mer_dev"
        assert info.expire_time.seconds - info.issue_time.seconds == 15 * 60


def test_wrong_secret_is_unauthenticated_with_a_reason(tender_server):
    with _channel(tender_server) as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failure:
            stub.IssueToken(auth_service_pb2.IssueTokenRequest(
                client_id=tender_server["client_id"], client_secret="tsk_wrong"), timeout=10)
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _error_info(failure.value).reason == "INVALID_CLIENT"
    assert "tsk_wrong" not in failure.value.details()


def test_missing_client_id_names_the_field(tender_server):
    with _channel(tender_server) as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failure:
            stub.IssueToken(auth_service_pb2.IssueTokenRequest(client_secret="x"), timeout=10)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = _error_info(failure.value)
    assert (info.reason, info.metadata["field"]) == ("FIELD_REQUIRED", "client_id")


def test_token_without_the_scope_is_permission_denied(tender_server):
    with _channel(tender_server) as channel:
        issued = _issue(auth_service_pb2_grpc.AuthServiceStub(channel), tender_server, scopes=["refunds:read"])
        with pytest.raises(grpc.RpcError) as failure:
            payment_service_pb2_grpc.PaymentServiceStub(channel).GetPayment(
                payment_service_pb2.GetPaymentRequest(payment_id="pay_123"),
                metadata=[("authorization", "Bearer " + issued.access_token)], timeout=10)
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = _error_info(failure.value)
    assert (info.reason, info.metadata["required_scope"]) == ("SCOPE_MISSING", "payments:read")


def test_revoked_token_stops_working(tender_server):
    with _channel(tender_server) as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        issued = _issue(stub, tender_server, scopes=["tokens:revoke", "tokens:introspect"])
        auth = [("authorization", "Bearer " + issued.access_token)]
        revoked = stub.RevokeToken(auth_service_pb2.RevokeTokenRequest(token=issued.access_token), metadata=auth, timeout=10)
        assert revoked.token_id.startswith("tok_")
        with pytest.raises(grpc.RpcError) as failure:
            stub.IntrospectToken(auth_service_pb2.IntrospectTokenRequest(token=issued.access_token), metadata=auth, timeout=10)
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _error_info(failure.value).reason == "TOKEN_REVOKED"
