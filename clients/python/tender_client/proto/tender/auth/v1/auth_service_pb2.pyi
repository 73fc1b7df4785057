import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tender_client.proto.tender.options.v1 import policy_pb2 as _policy_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClientStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLIENT_STATUS_UNSPECIFIED: _ClassVar[ClientStatus]
    CLIENT_STATUS_ACTIVE: _ClassVar[ClientStatus]
    CLIENT_STATUS_DISABLED: _ClassVar[ClientStatus]
CLIENT_STATUS_UNSPECIFIED: ClientStatus
CLIENT_STATUS_ACTIVE: ClientStatus
CLIENT_STATUS_DISABLED: ClientStatus

class Client(_message.Message):
    __slots__ = ("client_id", "merchant_id", "scopes", "status", "display_name", "create_time", "rotate_time")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ROTATE_TIME_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    merchant_id: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    status: ClientStatus
    display_name: str
    create_time: _timestamp_pb2.Timestamp
    rotate_time: _timestamp_pb2.Timestamp
    def __init__(self, client_id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., status: _Optional[_Union[ClientStatus, str]] = ..., display_name: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rotate_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class IssueTokenRequest(_message.Message):
    __slots__ = ("client_id", "client_secret", "scopes")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    client_secret: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, client_id: _Optional[str] = ..., client_secret: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ...) -> None: ...

class IssueTokenResponse(_message.Message):
    __slots__ = ("access_token", "token_type", "expire_time", "scopes")
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    token_type: str
    expire_time: _timestamp_pb2.Timestamp
    scopes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, access_token: _Optional[str] = ..., token_type: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., scopes: _Optional[_Iterable[str]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ("token_id",)
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    def __init__(self, token_id: _Optional[str] = ...) -> None: ...

class IntrospectTokenRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class IntrospectTokenResponse(_message.Message):
    __slots__ = ("active", "scopes", "client_id", "merchant_id", "token_id", "issuer", "audience", "issue_time", "expire_time", "not_before_time")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    ISSUE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_TIME_FIELD_NUMBER: _ClassVar[int]
    active: bool
    scopes: _containers.RepeatedScalarFieldContainer[str]
    client_id: str
    merchant_id: str
    token_id: str
    issuer: str
    audience: str
    issue_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    not_before_time: _timestamp_pb2.Timestamp
    def __init__(self, active: _Optional[bool] = ..., scopes: _Optional[_Iterable[str]] = ..., client_id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., token_id: _Optional[str] = ..., issuer: _Optional[str] = ..., audience: _Optional[str] = ..., issue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., not_before_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateClientRequest(_message.Message):
    __slots__ = ("merchant_id", "scopes", "display_name")
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    display_name: str
    def __init__(self, merchant_id: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., display_name: _Optional[str] = ...) -> None: ...

class CreateClientResponse(_message.Message):
    __slots__ = ("client", "client_secret")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    client: Client
    client_secret: str
    def __init__(self, client: _Optional[_Union[Client, _Mapping]] = ..., client_secret: _Optional[str] = ...) -> None: ...

class RotateClientSecretRequest(_message.Message):
    __slots__ = ("client_id",)
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    def __init__(self, client_id: _Optional[str] = ...) -> None: ...

class RotateClientSecretResponse(_message.Message):
    __slots__ = ("client", "client_secret")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    client: Client
    client_secret: str
    def __init__(self, client: _Optional[_Union[Client, _Mapping]] = ..., client_secret: _Optional[str] = ...) -> None: ...
