"""Payments and refunds through the generated Python stubs, against tender dev's provider simulator."""
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tender_client.proto.tender.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from tender_client.proto.tender.payments.v1 import payment_service_pb2 as payments, payment_service_pb2_grpc
from tender_client.proto.tender.refunds.v1 import refund_service_pb2 as refunds, refund_service_pb2_grpc
from tender_client.proto.tender.type.v1 import money_pb2


def _token(channel, server):
    return auth_service_pb2_grpc.AuthServiceStub(channel).IssueToken(auth_service_pb2.IssueTokenRequest(
        client_id=server["client_id"], client_secret=server["client_secret"],
        scopes=["payments:write", "payments:read"]), timeout=10).access_token


def _request(method="pm_card_visa"):
    return payments.CreatePaymentRequest(
        amount=money_pb2.Money(amount_minor=1250, currency="EUR"),
        payment_method_token=method,
        capture_method=payments.CAPTURE_METHOD_MANUAL,
        metadata={"order": "py-1"})


def _reason(error):
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return None


def test_create_get_and_replay(tender_server):
    credentials = grpc.ssl_channel_credentials(root_certificates=tender_server["ca"].read_bytes())
    with grpc.secure_channel(tender_server["target"], credentials) as channel:
        token = _token(channel, tender_server)
        stub = payment_service_pb2_grpc.PaymentServiceStub(channel)
        metadata = [("authorization", "Bearer " + token), ("idempotency-key", "py-order-1")]
        created, call = stub.CreatePayment.with_call(_request(), metadata=metadata, timeout=10)
        assert created.payment.status == payments.PAYMENT_STATUS_REQUIRES_CAPTURE
        assert created.payment.amount_capturable_minor == 1250
        replayed, replay_call = stub.CreatePayment.with_call(_request(), metadata=metadata, timeout=10)
        assert replayed.payment.payment_id == created.payment.payment_id
        assert ("idempotent-replayed", "true") in replay_call.initial_metadata()
        read = stub.GetPayment(payments.GetPaymentRequest(payment_id=created.payment.payment_id),
                               metadata=[("authorization", "Bearer " + token)], timeout=10)
        assert read.payment == created.payment


def test_decline_and_missing_key(tender_server):
    credentials = grpc.ssl_channel_credentials(root_certificates=tender_server["ca"].read_bytes())
    with grpc.secure_channel(tender_server["target"], credentials) as channel:
        token = _token(channel, tender_server)
        stub = payment_service_pb2_grpc.PaymentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as declined:
            stub.CreatePayment(_request("pm_card_chargeDeclined"),
                               metadata=[("authorization", "Bearer " + token), ("idempotency-key", "py-decline")], timeout=10)
        assert declined.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _reason(declined.value) == "CARD_DECLINED"
        with pytest.raises(grpc.RpcError) as missing:
            stub.CreatePayment(_request(), metadata=[("authorization", "Bearer " + token)], timeout=10)
        assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _reason(missing.value) == "IDEMPOTENCY_KEY_MISSING"


def test_capture_then_refund(tender_server):
    credentials = grpc.ssl_channel_credentials(root_certificates=tender_server["ca"].read_bytes())
    with grpc.secure_channel(tender_server["target"], credentials) as channel:
        token = auth_service_pb2_grpc.AuthServiceStub(channel).IssueToken(auth_service_pb2.IssueTokenRequest(
            client_id=tender_server["client_id"], client_secret=tender_server["client_secret"],
            scopes=["payments:write", "refunds:write", "refunds:read"]), timeout=10).access_token
        bearer = ("authorization", "Bearer " + token)
        stub = payment_service_pb2_grpc.PaymentServiceStub(channel)
        created = stub.CreatePayment(_request(), metadata=[bearer, ("idempotency-key", "py-refund-pay")], timeout=10).payment
        captured = stub.CapturePayment(payments.CapturePaymentRequest(payment_id=created.payment_id, amount_minor=1000),
                                       metadata=[bearer, ("idempotency-key", "py-refund-capture")], timeout=10).payment
        assert captured.status == payments.PAYMENT_STATUS_SUCCEEDED
        assert captured.amount_captured_minor == 1000

        refund_stub = refund_service_pb2_grpc.RefundServiceStub(channel)
        refund = refund_stub.CreateRefund(
            refunds.CreateRefundRequest(payment_id=created.payment_id, amount_minor=250,
                                        reason=refunds.REFUND_REASON_REQUESTED_BY_CUSTOMER),
            metadata=[bearer, ("idempotency-key", "py-refund-1")], timeout=10).refund
        assert refund.status == refunds.REFUND_STATUS_SUCCEEDED
        assert refund.amount.amount_minor == 250 and refund.amount.currency == "EUR"
        listed = refund_stub.ListRefunds(refunds.ListRefundsRequest(payment_id=created.payment_id), metadata=[bearer], timeout=10)
        assert [r.refund_id for r in listed.refunds] == [refund.refund_id]
        with pytest.raises(grpc.RpcError) as beyond:
            refund_stub.CreateRefund(refunds.CreateRefundRequest(payment_id=created.payment_id, amount_minor=751),
                                     metadata=[bearer, ("idempotency-key", "py-refund-2")], timeout=10)
        assert beyond.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _reason(beyond.value) == "REFUND_EXCEEDS_CAPTURED"
