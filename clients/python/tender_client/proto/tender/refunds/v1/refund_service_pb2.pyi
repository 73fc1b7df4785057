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

class RefundStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUND_STATUS_UNSPECIFIED: _ClassVar[RefundStatus]
    REFUND_STATUS_PENDING: _ClassVar[RefundStatus]
    REFUND_STATUS_SUCCEEDED: _ClassVar[RefundStatus]
    REFUND_STATUS_FAILED: _ClassVar[RefundStatus]

class RefundReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUND_REASON_UNSPECIFIED: _ClassVar[RefundReason]
    REFUND_REASON_REQUESTED_BY_CUSTOMER: _ClassVar[RefundReason]
    REFUND_REASON_DUPLICATE: _ClassVar[RefundReason]
    REFUND_REASON_FRAUDULENT: _ClassVar[RefundReason]
REFUND_STATUS_UNSPECIFIED: RefundStatus
REFUND_STATUS_PENDING: RefundStatus
REFUND_STATUS_SUCCEEDED: RefundStatus
REFUND_STATUS_FAILED: RefundStatus
REFUND_REASON_UNSPECIFIED: RefundReason
REFUND_REASON_REQUESTED_BY_CUSTOMER: RefundReason
REFUND_REASON_DUPLICATE: RefundReason
REFUND_REASON_FRAUDULENT: RefundReason

class Refund(_message.Message):
    __slots__ = ("refund_id", "payment_id", "merchant_id", "amount", "status", "reason", "failure_message", "provider_refund_id", "metadata", "create_time", "update_time")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    refund_id: str
    payment_id: str
    merchant_id: str
    amount: _money_pb2.Money
    status: RefundStatus
    reason: RefundReason
    failure_message: str
    provider_refund_id: str
    metadata: _containers.ScalarMap[str, str]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, refund_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., status: _Optional[_Union[RefundStatus, str]] = ..., reason: _Optional[_Union[RefundReason, str]] = ..., failure_message: _Optional[str] = ..., provider_refund_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateRefundRequest(_message.Message):
    __slots__ = ("payment_id", "amount_minor", "reason", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    amount_minor: int
    reason: RefundReason
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, payment_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., reason: _Optional[_Union[RefundReason, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreateRefundResponse(_message.Message):
    __slots__ = ("refund",)
    REFUND_FIELD_NUMBER: _ClassVar[int]
    refund: Refund
    def __init__(self, refund: _Optional[_Union[Refund, _Mapping]] = ...) -> None: ...

class GetRefundRequest(_message.Message):
    __slots__ = ("refund_id",)
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    refund_id: str
    def __init__(self, refund_id: _Optional[str] = ...) -> None: ...

class GetRefundResponse(_message.Message):
    __slots__ = ("refund",)
    REFUND_FIELD_NUMBER: _ClassVar[int]
    refund: Refund
    def __init__(self, refund: _Optional[_Union[Refund, _Mapping]] = ...) -> None: ...

class ListRefundsRequest(_message.Message):
    __slots__ = ("payment_id", "page_size", "page_token")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    page_size: int
    page_token: str
    def __init__(self, payment_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRefundsResponse(_message.Message):
    __slots__ = ("refunds", "next_page_token")
    REFUNDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    refunds: _containers.RepeatedCompositeFieldContainer[Refund]
    next_page_token: str
    def __init__(self, refunds: _Optional[_Iterable[_Union[Refund, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
