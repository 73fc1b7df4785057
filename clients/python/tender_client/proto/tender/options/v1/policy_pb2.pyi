from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Idempotency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IDEMPOTENCY_UNSPECIFIED: _ClassVar[Idempotency]
    IDEMPOTENCY_NONE: _ClassVar[Idempotency]
    IDEMPOTENCY_REQUIRED: _ClassVar[Idempotency]
IDEMPOTENCY_UNSPECIFIED: Idempotency
IDEMPOTENCY_NONE: Idempotency
IDEMPOTENCY_REQUIRED: Idempotency
POLICY_FIELD_NUMBER: _ClassVar[int]
policy: _descriptor.FieldDescriptor

class MethodPolicy(_message.Message):
    __slots__ = ("scope", "idempotency", "public")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_FIELD_NUMBER: _ClassVar[int]
    scope: str
    idempotency: Idempotency
    public: bool
    def __init__(self, scope: _Optional[str] = ..., idempotency: _Optional[_Union[Idempotency, str]] = ..., public: _Optional[bool] = ...) -> None: ...
