from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("join", "joined", "leave", "send", "ack", "deliver", "error", "history", "left")
    JOIN_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    LEAVE_FIELD_NUMBER: _ClassVar[int]
    SEND_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    DELIVER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    join: Join
    joined: Joined
    leave: Leave
    send: Send
    ack: Ack
    deliver: Deliver
    error: Error
    history: HistoryPage
    left: Left
    def __init__(self, join: _Optional[_Union[Join, _Mapping]] = ..., joined: _Optional[_Union[Joined, _Mapping]] = ..., leave: _Optional[_Union[Leave, _Mapping]] = ..., send: _Optional[_Union[Send, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., deliver: _Optional[_Union[Deliver, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., history: _Optional[_Union[HistoryPage, _Mapping]] = ..., left: _Optional[_Union[Left, _Mapping]] = ...) -> None: ...

class Join(_message.Message):
    __slots__ = ("room", "since_seq")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    room: str
    since_seq: int
    def __init__(self, room: _Optional[str] = ..., since_seq: _Optional[int] = ...) -> None: ...

class Joined(_message.Message):
    __slots__ = ("room", "last_seq")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    room: str
    last_seq: int
    def __init__(self, room: _Optional[str] = ..., last_seq: _Optional[int] = ...) -> None: ...

class Leave(_message.Message):
    __slots__ = ("room",)
    ROOM_FIELD_NUMBER: _ClassVar[int]
    room: str
    def __init__(self, room: _Optional[str] = ...) -> None: ...

class Left(_message.Message):
    __slots__ = ("room",)
    ROOM_FIELD_NUMBER: _ClassVar[int]
    room: str
    def __init__(self, room: _Optional[str] = ...) -> None: ...

class Send(_message.Message):
    __slots__ = ("client_msg_id", "room", "body", "sent_at_us")
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    ROOM_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_US_FIELD_NUMBER: _ClassVar[int]
    client_msg_id: str
    room: str
    body: str
    sent_at_us: int
    def __init__(self, client_msg_id: _Optional[str] = ..., room: _Optional[str] = ..., body: _Optional[str] = ..., sent_at_us: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("client_msg_id", "room", "seq", "ts_us")
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    ROOM_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_US_FIELD_NUMBER: _ClassVar[int]
    client_msg_id: str
    room: str
    seq: int
    ts_us: int
    def __init__(self, client_msg_id: _Optional[str] = ..., room: _Optional[str] = ..., seq: _Optional[int] = ..., ts_us: _Optional[int] = ...) -> None: ...

class Deliver(_message.Message):
    __slots__ = ("room", "seq", "sender", "body", "ts_us", "client_msg_id", "sent_at_us")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    TS_US_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_US_FIELD_NUMBER: _ClassVar[int]
    room: str
    seq: int
    sender: str
    body: str
    ts_us: int
    client_msg_id: str
    sent_at_us: int
    def __init__(self, room: _Optional[str] = ..., seq: _Optional[int] = ..., sender: _Optional[str] = ..., body: _Optional[str] = ..., ts_us: _Optional[int] = ..., client_msg_id: _Optional[str] = ..., sent_at_us: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "client_msg_id", "retry_after_ms")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    client_msg_id: str
    retry_after_ms: int
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., client_msg_id: _Optional[str] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class HistoryPage(_message.Message):
    __slots__ = ("room", "messages", "has_more", "next_after_seq")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    room: str
    messages: _containers.RepeatedCompositeFieldContainer[Deliver]
    has_more: bool
    next_after_seq: int
    def __init__(self, room: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Deliver, _Mapping]]] = ..., has_more: _Optional[bool] = ..., next_after_seq: _Optional[int] = ...) -> None: ...
