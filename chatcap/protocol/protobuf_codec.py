"""The Protobuf codec: ``chat.v1.protobuf``, binary frames, one serialized ``Envelope``.

Decode parses with the generated ``chat_pb2`` classes (upb backend), reads the oneof
case, and builds the matching Struct, checking the limits that the JSON decoder gets
from the ``msgspec.Meta`` annotations (the same constants from ``messages``): proto3
can carry values the model forbids (negative int64, a 10,000-character room, an empty
envelope).
upb itself rejects invalid UTF-8 in string fields, lone surrogates included.

Encode fills a fresh ``Envelope`` field by field: assigning attributes on the oneof
sub-message is about 1.7× faster than the keyword constructors, which copy nested
messages. Each kind has its own pair of small functions, picked by a dict lookup on the
Struct's type or the oneof case name; every field is read exactly once, because each
read of a string field decodes UTF-8 anew.

A frame that fails to decode is walked once more, by hand on the wire format, for its
Send's ``client_msg_id`` (``client_msg_id_of``): upb refuses a whole frame for one bad
byte in the body, yet the id before it is readable. Only on the error path.
"""

from collections.abc import Callable, Iterator
from typing import Any, Final, NoReturn

from google.protobuf.message import DecodeError as _PbDecodeError

from chatcap.protocol import chat_pb2 as pb
from chatcap.protocol.errors import CLIENT_KINDS_HINT, DecodeError, echoable_client_msg_id
from chatcap.protocol.messages import (
    CLIENT_KINDS,
    CLIENT_MSG_ID_MAX_CHARS,
    ROOM_MAX_CHARS,
    Ack,
    Deliver,
    Envelope,
    Error,
    HistoryPage,
    Join,
    Joined,
    Leave,
    Left,
    Send,
)

__all__ = ["ProtobufCodec"]

_Envelope: Final = pb.Envelope
_from_string: Final = pb.Envelope.FromString

# --- decode: pb message -> Struct, with the model's limits ---------------------------


def _bad(kind: str, field: str, why: str) -> NoReturn:
    raise DecodeError(f"{kind}.{field}: {why}")


def _room(kind: str, room: str) -> str:
    if not 0 < len(room) <= ROOM_MAX_CHARS:
        _bad(kind, "room", f"must be 1..{ROOM_MAX_CHARS} characters, got {len(room)}")
    return room


def _client_msg_id(kind: str, cid: str, min_chars: int) -> str:
    if not min_chars <= len(cid) <= CLIENT_MSG_ID_MAX_CHARS:
        _bad(
            kind,
            "client_msg_id",
            f"must be {min_chars}..{CLIENT_MSG_ID_MAX_CHARS} characters, got {len(cid)}",
        )
    return cid


def _non_negative(kind: str, field: str, value: int) -> int:
    # int64 on the wire: the upper bound 2**63-1 holds by construction.
    if value < 0:
        _bad(kind, field, f"must be >= 0, got {value}")
    return value


def _dec_join(m: pb.Join) -> Join:
    since = _non_negative("join", "since_seq", m.since_seq) if m.HasField("since_seq") else None
    return Join(room=_room("join", m.room), since_seq=since)


def _dec_joined(m: pb.Joined) -> Joined:
    return Joined(
        room=_room("joined", m.room), last_seq=_non_negative("joined", "last_seq", m.last_seq)
    )


def _dec_leave(m: pb.Leave) -> Leave:
    return Leave(room=_room("leave", m.room))


def _dec_left(m: pb.Left) -> Left:
    return Left(room=_room("left", m.room))


def _dec_send(m: pb.Send) -> Send:
    return Send(
        client_msg_id=_client_msg_id("send", m.client_msg_id, 1),
        room=_room("send", m.room),
        body=m.body,
        sent_at_us=_non_negative("send", "sent_at_us", m.sent_at_us),
    )


def _dec_ack(m: pb.Ack) -> Ack:
    seq = m.seq
    ts_us = m.ts_us
    if seq < 0 or ts_us < 0:
        _non_negative("ack", "seq", seq)
        _non_negative("ack", "ts_us", ts_us)
    return Ack(
        client_msg_id=_client_msg_id("ack", m.client_msg_id, 1),
        room=_room("ack", m.room),
        seq=seq,
        ts_us=ts_us,
    )


def _dec_deliver(m: pb.Deliver) -> Deliver:
    # The hot path (history pages hold many): plain comparisons, helpers only on failure.
    room = m.room
    seq = m.seq
    ts_us = m.ts_us
    cid = m.client_msg_id
    sent_at_us = m.sent_at_us
    if not 0 < len(room) <= ROOM_MAX_CHARS:
        _room("deliver", room)
    if len(cid) > CLIENT_MSG_ID_MAX_CHARS:
        _client_msg_id("deliver", cid, 0)
    if seq < 0 or ts_us < 0 or sent_at_us < 0:
        _non_negative("deliver", "seq", seq)
        _non_negative("deliver", "ts_us", ts_us)
        _non_negative("deliver", "sent_at_us", sent_at_us)
    return Deliver(
        room=room,
        seq=seq,
        sender=m.sender,
        body=m.body,
        ts_us=ts_us,
        client_msg_id=cid,
        sent_at_us=sent_at_us,
    )


def _dec_error(m: pb.Error) -> Error:
    # retry_after_ms is a uint32 on the wire: always within 0..2**32-1.
    return Error(
        code=m.code,
        message=m.message,
        client_msg_id=_client_msg_id("error", m.client_msg_id, 0),
        retry_after_ms=m.retry_after_ms,
    )


def _dec_history(m: pb.HistoryPage) -> HistoryPage:
    return HistoryPage(
        room=_room("history", m.room),
        messages=tuple(map(_dec_deliver, m.messages)),
        has_more=m.has_more,
        next_after_seq=_non_negative("history", "next_after_seq", m.next_after_seq),
    )


_DECODERS: Final[dict[str, Callable[[Any], Envelope]]] = {
    "join": _dec_join,
    "joined": _dec_joined,
    "leave": _dec_leave,
    "send": _dec_send,
    "ack": _dec_ack,
    "deliver": _dec_deliver,
    "error": _dec_error,
    "history": _dec_history,
    "left": _dec_left,
}

_EMPTY_ENVELOPE: Final = (
    "empty envelope: no kind case set (unknown field numbers are skipped); "
    + CLIENT_KINDS_HINT
    + " (Envelope fields "
    + ", ".join(str(pb.Envelope.DESCRIPTOR.fields_by_name[k].number) for k in CLIENT_KINDS)
    + ")"
)

# --- a lenient read of a Send's client_msg_id, on the wire format ---------------------

_KIND_NUMBERS: Final = frozenset(
    f.number for f in pb.Envelope.DESCRIPTOR.oneofs_by_name["kind"].fields
)
_SEND_NUMBER: Final = pb.Envelope.DESCRIPTOR.fields_by_name["send"].number
_SEND_ID_NUMBER: Final = pb.Send.DESCRIPTOR.fields_by_name["client_msg_id"].number
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; IndexError/ValueError if bad."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def _wire_fields(buf: bytes) -> Iterator[tuple[int, int, bytes]]:
    """``(number, wire type, payload of a length-delimited field)`` for each field,
    stopping quietly at the first one that is malformed (groups included)."""
    pos, end = 0, len(buf)
    try:
        while pos < end:
            key, pos = _varint(buf, pos)
            number, wire_type = key >> 3, key & 7
            if number == 0:
                return
            if wire_type == _VARINT:
                _, pos = _varint(buf, pos)
                payload = b""
            elif wire_type == _LEN:
                length, pos = _varint(buf, pos)
                if pos + length > end:
                    return
                payload, pos = buf[pos : pos + length], pos + length
            elif wire_type in (_I64, _I32):
                pos += 8 if wire_type == _I64 else 4
                if pos > end:
                    return
                payload = b""
            else:
                return
            yield number, wire_type, payload
    except (IndexError, ValueError):
        return


def _send_id_bytes(buf: bytes) -> bytes:
    """The Send case's client_msg_id as protobuf's parser would merge it: the last one
    read wins, and another oneof case after a Send clears it."""
    found = b""
    for number, wire_type, payload in _wire_fields(buf):
        if number == _SEND_NUMBER and wire_type == _LEN:
            for inner, inner_type, value in _wire_fields(payload):
                if inner == _SEND_ID_NUMBER and inner_type == _LEN:
                    found = value
        elif number in _KIND_NUMBERS:
            found = b""
    return found


# --- encode: Struct -> pb message, field by field -------------------------------------


def _enc_join(env: pb.Envelope, msg: Join) -> None:
    m = env.join
    m.room = msg.room
    if msg.since_seq is not None:
        m.since_seq = msg.since_seq


def _enc_joined(env: pb.Envelope, msg: Joined) -> None:
    m = env.joined
    m.room = msg.room
    m.last_seq = msg.last_seq


def _enc_leave(env: pb.Envelope, msg: Leave) -> None:
    env.leave.room = msg.room


def _enc_left(env: pb.Envelope, msg: Left) -> None:
    env.left.room = msg.room


def _enc_send(env: pb.Envelope, msg: Send) -> None:
    m = env.send
    m.client_msg_id = msg.client_msg_id
    m.room = msg.room
    m.body = msg.body
    m.sent_at_us = msg.sent_at_us


def _enc_ack(env: pb.Envelope, msg: Ack) -> None:
    m = env.ack
    m.client_msg_id = msg.client_msg_id
    m.room = msg.room
    m.seq = msg.seq
    m.ts_us = msg.ts_us


def _fill_deliver(m: pb.Deliver, msg: Deliver) -> None:
    m.room = msg.room
    m.seq = msg.seq
    m.sender = msg.sender
    m.body = msg.body
    m.ts_us = msg.ts_us
    m.client_msg_id = msg.client_msg_id
    m.sent_at_us = msg.sent_at_us


def _enc_deliver(env: pb.Envelope, msg: Deliver) -> None:
    _fill_deliver(env.deliver, msg)


def _enc_error(env: pb.Envelope, msg: Error) -> None:
    m = env.error
    m.code = msg.code
    m.message = msg.message
    m.client_msg_id = msg.client_msg_id
    m.retry_after_ms = msg.retry_after_ms


def _enc_history(env: pb.Envelope, msg: HistoryPage) -> None:
    m = env.history
    m.room = msg.room
    add = m.messages.add
    for d in msg.messages:
        _fill_deliver(add(), d)
    m.has_more = msg.has_more
    m.next_after_seq = msg.next_after_seq


_ENCODERS: Final[dict[type, Callable[[pb.Envelope, Any], None]]] = {
    Join: _enc_join,
    Joined: _enc_joined,
    Leave: _enc_leave,
    Send: _enc_send,
    Ack: _enc_ack,
    Deliver: _enc_deliver,
    Error: _enc_error,
    HistoryPage: _enc_history,
    Left: _enc_left,
}


class ProtobufCodec:
    """``Codec`` for ``chat.v1.protobuf``: binary frames holding a serialized Envelope."""

    name: str = "protobuf"
    subprotocol: str = "chat.v1.protobuf"
    text: bool = False
    content_type: str = "application/x-protobuf"

    def encode(self, msg: Envelope) -> bytes:
        """Serialize ``msg`` as a ``chat.v1.Envelope`` (send it as a binary frame)."""
        env = _Envelope()
        _ENCODERS[type(msg)](env, msg)
        return env.SerializeToString()

    def decode(self, data: bytes | str) -> Envelope:
        """Parse one binary frame; raise only ``DecodeError``."""
        if isinstance(data, str):
            raise DecodeError("text frame on the protobuf subprotocol")
        try:
            return self._decode(data)
        except DecodeError as exc:
            exc.client_msg_id = self.client_msg_id_of(data)
            raise

    def _decode(self, data: bytes) -> Envelope:
        try:
            env = _from_string(data)
        except _PbDecodeError as exc:
            raise DecodeError(f"not a chat.v1.Envelope: {exc}") from None
        except (TypeError, ValueError, RecursionError) as exc:
            # Not seen from upb for bytes input; kept so nothing else can escape.
            raise DecodeError(f"not a chat.v1.Envelope: {type(exc).__name__}: {exc}") from None
        kind = env.WhichOneof("kind")
        if kind is None:
            raise DecodeError(_EMPTY_ENVELOPE)
        return _DECODERS[kind](getattr(env, kind))

    def client_msg_id_of(self, data: bytes | str) -> str:
        """The ``client_msg_id`` of a frame whose set case is ``send``, read leniently
        on the wire format; else ``""``.

        The frame need not decode: a Send whose id field is a valid id gives that id
        whatever the rest holds (a room too long, a negative ``sent_at_us``, invalid
        UTF-8 in the body, junk after the Send). A text frame, no Send case, or an
        invalid id give ``""``. Never raises.
        """
        if isinstance(data, str):
            return ""
        try:
            cid = _send_id_bytes(bytes(data)).decode("utf-8")
        except UnicodeDecodeError:
            return ""
        return echoable_client_msg_id(cid)
