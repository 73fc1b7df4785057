"""Python stubs for Tender's gRPC API, generated from proto/ by codegen/generate.sh.

Messages and stubs live under ``tender_client._generated`` in the proto package layout, e.g.
``tender_client._generated.tender.payments.v1.payment_service_pb2_grpc.PaymentServiceStub``.
"""
