"""Both codecs accept and reject exactly the same field values.

Random field values — in range and out of it, present or missing — are written once as
a JSON object and once as a protobuf message. Each codec must either reject its frame
or decode it to the same Struct as the other.
"""

from typing import Any

import msgspec
import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcap.protocol import chat_pb2 as pb
from chatcap.protocol.codec import CODECS, DecodeError
from chatcap.protocol.messages import INT64_MAX, KINDS, UINT32_MAX, Envelope

JSON = CODECS["json"]
PROTOBUF = CODECS["protobuf"]
INT64_MIN = -(2**63)

_chars = st.characters(exclude_categories=["Cs"])
# Lengths cluster around every limit in the model (0/1, 64/65, 128/129).
_strings = st.one_of(
    st.text(_chars, max_size=3),
    st.text(_chars, min_size=62, max_size=67),
    st.text(_chars, min_size=126, max_size=131),
)
_int64s = st.one_of(
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from([INT64_MIN, -1, 0, 1, INT64_MAX]),
)
_uint32s = st.one_of(st.integers(0, UINT32_MAX), st.sampled_from([0, UINT32_MAX]))
_SCALARS = {
    FieldDescriptor.TYPE_STRING: _strings,
    FieldDescriptor.TYPE_INT64: _int64s,
    FieldDescriptor.TYPE_UINT32: _uint32s,
    FieldDescriptor.TYPE_BOOL: st.booleans(),
}
_PB_CLASSES = {name: getattr(pb, KINDS[name].__name__) for name in KINDS}


def _fields_of(descriptor: Any, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Some or all fields of one message, each with a random (maybe invalid) value."""
    per_field: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            per_field[field.name] = st.lists(_fields_of(field.message_type, depth + 1), max_size=3)
        elif field.has_presence:
            per_field[field.name] = st.none() | _SCALARS[field.type]
        else:
            per_field[field.name] = _SCALARS[field.type]
    return st.fixed_dictionaries({}, optional=per_field)


_frames = st.sampled_from(sorted(KINDS)).flatmap(
    lambda kind: st.tuples(
        st.just(kind), _fields_of(pb.Envelope.DESCRIPTOR.fields_by_name[kind].message_type)
    )
)


def _as_json(kind: str, fields: dict[str, Any]) -> bytes:
    return msgspec.json.encode({"type": kind, **fields})


def _as_protobuf(kind: str, fields: dict[str, Any]) -> bytes:
    present = {k: v for k, v in fields.items() if v is not None}
    if "messages" in present:
        present["messages"] = [pb.Deliver(**entry) for entry in present["messages"]]
    return pb.Envelope(**{kind: _PB_CLASSES[kind](**present)}).SerializeToString()


def _outcome(decode: Any, frame: bytes) -> Envelope | str:
    try:
        msg: Envelope = decode(frame)
    except DecodeError:
        return "rejected"
    return msg


@settings(max_examples=1500)
@given(_frames)
def test_both_codecs_accept_and_reject_the_same_field_values(frame: tuple[str, Any]) -> None:
    kind, fields = frame
    from_json = _outcome(JSON.decode, _as_json(kind, fields))
    from_pb = _outcome(PROTOBUF.decode, _as_protobuf(kind, fields))
    assert from_json == from_pb


@pytest.mark.parametrize(
    "fields",
    [
        {"seq": INT64_MAX + 1},
        {"seq": INT64_MIN - 1},
        {"seq": 10**100},
        {"seq": 1.0},
        {"seq": True},
        {"seq": "1"},
        {"ts_us": -1},
    ],
)
def test_json_rejects_ints_that_no_int64_field_could_carry(fields: dict[str, Any]) -> None:
    with pytest.raises(DecodeError):
        JSON.decode(_as_json("ack", {"client_msg_id": "c", "room": "a", **fields}))


@pytest.mark.parametrize("retry_after_ms", [-1, UINT32_MAX + 1, 2**64])
def test_json_rejects_a_retry_after_outside_uint32(retry_after_ms: int) -> None:
    with pytest.raises(DecodeError):
        JSON.decode(_as_json("error", {"retry_after_ms": retry_after_ms}))
