import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tender_client.proto.tender.options.v1 import policy_pb2 as _policy_pb2
from tender_client.proto.tender.type.v1 import money_pb2 as _money_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_STATUS_UNSPECIFIED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_PROCESSING: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_REQUIRES_CAPTURE: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_SUCCEEDED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_FAILED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_CANCELED: _ClassVar[PaymentStatus]

class CaptureMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAPTURE_METHOD_UNSPECIFIED: _ClassVar[CaptureMethod]
    CAPTURE_METHOD_AUTOMATIC: _ClassVar[CaptureMethod]
    CAPTURE_METHOD_MANUAL: _ClassVar[CaptureMethod]

class FailureReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_REASON_UNSPECIFIED: _ClassVar[FailureReason]
    FAILURE_REASON_CARD_DECLINED: _ClassVar[FailureReason]
    FAILURE_REASON_INSUFFICIENT_FUNDS: _ClassVar[FailureReason]
    FAILURE_REASON_EXPIRED_CARD: _ClassVar[FailureReason]
    FAILURE_REASON_FRAUD_SUSPECTED: _ClassVar[FailureReason]
    FAILURE_REASON_PROVIDER_ERROR: _ClassVar[FailureReason]
    FAILURE_REASON_AUTHORIZATION_EXPIRED: _ClassVar[FailureReason]

class PaymentEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_EVENT_TYPE_UNSPECIFIED: _ClassVar[PaymentEventType]
    PAYMENT_EVENT_TYPE_PAYMENT_CREATED: _ClassVar[PaymentEventType]
    PAYMENT_EVENT_TYPE_PAYMENT_REQUIRES_CAPTURE: _ClassVar[PaymentEventType]
    PAYMENT_EVENT_TYPE_PAYMENT_SUCCEEDED: _ClassVar[PaymentEventType]
    PAYMENT_EVENT_TYPE_PAYMENT_FAILED: _ClassVar[PaymentEventType]
    PAYMENT_EVENT_TYPE_PAYMENT_CANCELED: _ClassVar[PaymentEventType]
    PAYMENT_EVENT_TYPE_REFUND_CREATED: _ClassVar[PaymentEventType]
    PAYMENT_EVENT_TYPE_REFUND_SUCCEEDED: _ClassVar[PaymentEventType]
    PAYMENT_EVENT_TYPE_REFUND_FAILED: _ClassVar[PaymentEventType]
PAYMENT_STATUS_UNSPECIFIED: PaymentStatus
PAYMENT_STATUS_PROCESSING: PaymentStatus
PAYMENT_STATUS_REQUIRES_CAPTURE: PaymentStatus
PAYMENT_STATUS_SUCCEEDED: PaymentStatus
PAYMENT_STATUS_FAILED: PaymentStatus
PAYMENT_STATUS_CANCELED: PaymentStatus
CAPTURE_METHOD_UNSPECIFIED: CaptureMethod
CAPTURE_METHOD_AUTOMATIC: CaptureMethod
CAPTURE_METHOD_MANUAL: CaptureMethod
FAILURE_REASON_UNSPECIFIED: FailureReason
FAILURE_REASON_CARD_DECLINED: FailureReason
FAILURE_REASON_INSUFFICIENT_FUNDS: FailureReason
FAILURE_REASON_EXPIRED_CARD: FailureReason
FAILURE_REASON_FRAUD_SUSPECTED: FailureReason
FAILURE_REASON_PROVIDER_ERROR: FailureReason
FAILURE_REASON_AUTHORIZATION_EXPIRED: FailureReason
PAYMENT_EVENT_TYPE_UNSPECIFIED: PaymentEventType
PAYMENT_EVENT_TYPE_PAYMENT_CREATED: PaymentEventType
PAYMENT_EVENT_TYPE_PAYMENT_REQUIRES_CAPTURE: PaymentEventType
PAYMENT_EVENT_TYPE_PAYMENT_SUCCEEDED: PaymentEventType
PAYMENT_EVENT_TYPE_PAYMENT_FAILED: PaymentEventType
PAYMENT_EVENT_TYPE_PAYMENT_CANCELED: PaymentEventType
PAYMENT_EVENT_TYPE_REFUND_CREATED: PaymentEventType
PAYMENT_EVENT_TYPE_REFUND_SUCCEEDED: PaymentEventType
PAYMENT_EVENT_TYPE_REFUND_FAILED: PaymentEventType

class Payment(_message.Message):
    __slots__ = ("payment_id", "merchant_id", "amount", "amount_capturable_minor", "amount_captured_minor", "amount_refunded_minor", "status", "capture_method", "payment_method_token", "description", "customer_reference", "metadata", "failure_reason", "failure_message", "provider_payment_id", "create_time", "update_time")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CAPTURABLE_MINOR_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CAPTURED_MINOR_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_REFUNDED_MINOR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_METHOD_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_METHOD_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    merchant_id: str
    amount: _money_pb2.Money
    amount_capturable_minor: int
    amount_captured_minor: int
    amount_refunded_minor: int
    status: PaymentStatus
    capture_method: CaptureMethod
    payment_method_token: str
    description: str
    customer_reference: str
    metadata: _containers.ScalarMap[str, str]
    failure_reason: FailureReason
    failure_message: str
    provider_payment_id: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, payment_id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., amount_capturable_minor: _Optional[int] = ..., amount_captured_minor: _Optional[int] = ..., amount_refunded_minor: _Optional[int] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., capture_method: _Optional[_Union[CaptureMethod, str]] = ..., payment_method_token: _Optional[str] = ..., description: _Optional[str] = ..., customer_reference: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., failure_reason: _Optional[_Union[FailureReason, str]] = ..., failure_message: _Optional[str] = ..., provider_payment_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreatePaymentRequest(_message.Message):
    __slots__ = ("amount", "payment_method_token", "capture_method", "description", "customer_reference", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_METHOD_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_METHOD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    amount: _money_pb2.Money
    payment_method_token: str
    capture_method: CaptureMethod
    description: str
    customer_reference: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., payment_method_token: _Optional[str] = ..., capture_method: _Optional[_Union[CaptureMethod, str]] = ..., description: _Optional[str] = ..., customer_reference: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreatePaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class CapturePaymentRequest(_message.Message):
    __slots__ = ("payment_id", "amount_minor")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    amount_minor: int
    def __init__(self, payment_id: _Optional[str] = ..., amount_minor: _Optional[int] = ...) -> None: ...

class CapturePaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class CancelPaymentRequest(_message.Message):
    __slots__ = ("payment_id", "reason")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    reason: str
    def __init__(self, payment_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelPaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class GetPaymentRequest(_message.Message):
    __slots__ = ("payment_id",)
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    def __init__(self, payment_id: _Optional[str] = ...) -> None: ...

class GetPaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class ListPaymentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "statuses", "customer_reference", "create_time_start", "create_time_end")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_START_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_END_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    statuses: _containers.RepeatedScalarFieldContainer[PaymentStatus]
    customer_reference: str
    create_time_start: _timestamp_pb2.Timestamp
    create_time_end: _timestamp_pb2.Timestamp
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[PaymentStatus, str]]] = ..., customer_reference: _Optional[str] = ..., create_time_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListPaymentsResponse(_message.Message):
    __slots__ = ("payments", "next_page_token")
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    payments: _containers.RepeatedCompositeFieldContainer[Payment]
    next_page_token: str
    def __init__(self, payments: _Optional[_Iterable[_Union[Payment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchPaymentsRequest(_message.Message):
    __slots__ = ("cursor",)
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    def __init__(self, cursor: _Optional[str] = ...) -> None: ...

class WatchPaymentsResponse(_message.Message):
    __slots__ = ("cursor", "event_type", "payment_id", "refund_id", "payment", "event_time")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    event_type: PaymentEventType
    payment_id: str
    refund_id: str
    payment: Payment
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, cursor: _Optional[str] = ..., event_type: _Optional[_Union[PaymentEventType, str]] = ..., payment_id: _Optional[str] = ..., refund_id: _Optional[str] = ..., payment: _Optional[_Union[Payment, _Mapping]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
