"""A Send that fails to decode still names itself: ``DecodeError.client_msg_id``.

The server echoes it in ``Error{bad_frame}``, so a client can tell which send failed.
Each codec reads the id leniently from its own form; where a defect can be written in
both forms, the two codecs must agree (a differential check, as elsewhere here).
"""

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support_strategies import client_msg_ids

from chatcap.protocol import chat_pb2 as pb
from chatcap.protocol.codec import CODECS, DecodeError
from chatcap.protocol.messages import ROOM_MAX_CHARS
from tests.support_protowire import tag, varint

JSON = CODECS["json"]
PROTOBUF = CODECS["protobuf"]


def _json_error(frame: bytes | str) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        JSON.decode(frame)
    return info.value


def _pb_error(frame: bytes | str) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        PROTOBUF.decode(frame)
    return info.value


def _pb_send(**fields: Any) -> bytes:
    return pb.Envelope(send=pb.Send(**fields)).SerializeToString()


def _pb_len(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"send","client_msg_id":"c1","room":"r","body":5}',  # body not a string
        b'{"type":"send","client_msg_id":"c1","room":["r"]}',  # room not a string
        b'{"type":"send","client_msg_id":"c1","room":"' + b"r" * 129 + b'"}',  # room too long
        b'{"type":"send","client_msg_id":"c1"}',  # room missing
        b'{"type":"send","client_msg_id":"c1","room":"r","sent_at_us":-1}',
        b'{"type":"send","client_msg_id":"c1","room":"r","body":"\xff"}',  # invalid UTF-8
        b'{"type":"send","client_msg_id":"c1","room":"r","body":"\\ud800"}',  # lone surrogate
        '{"type":"send","client_msg_id":"c1","room":"r","body":"\ud800"}',  # a str frame
        b'{"room":"r","body":{},"client_msg_id":"c1","type":"send"}',  # any key order
    ],
)
def test_json_names_the_send_whose_other_fields_are_bad(frame: bytes | str) -> None:
    assert _json_error(frame).client_msg_id == "c1"


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"send","client_msg_id":"' + b"c" * 65 + b'","room":"r"}',  # id too long
        b'{"type":"send","client_msg_id":"","room":"r"}',
        b'{"type":"send","client_msg_id":7,"room":"r"}',
        b'{"type":"send","client_msg_id":"c\\ud800","room":"r"}',  # the id itself broken
        b'{"type":"send","client_msg_id":"c\xff","room":"r"}',
        b'{"type":"join","client_msg_id":"c1","room":5}',  # not a Send
        b'{"client_msg_id":"c1","room":5}',  # no type
        b'{"type":"send","client_msg_id":"c1","room":"r"',  # malformed JSON
        b'[{"type":"send","client_msg_id":"c1"}]',  # not an object
    ],
)
def test_json_names_no_send_when_the_id_cannot_be_read(frame: bytes | str) -> None:
    assert _json_error(frame).client_msg_id == ""


@pytest.mark.parametrize(
    "frame",
    [
        _pb_send(client_msg_id="c1", room="r" * 129),
        _pb_send(client_msg_id="c1", room=""),
        _pb_send(client_msg_id="c1", room="r", sent_at_us=-1),
        _pb_len(4, _pb_len(1, b"c1") + _pb_len(2, b"r") + _pb_len(3, b"\xed\xa0")),  # bad UTF-8
        _pb_send(client_msg_id="c1", room="r" * 129) + b"\x0a\xff",  # then a lying length
        _pb_send(client_msg_id="c0", room="r" * 129) + _pb_send(client_msg_id="c1"),  # merged
    ],
)
def test_protobuf_names_the_send_whose_other_fields_are_bad(frame: bytes) -> None:
    assert _pb_error(frame).client_msg_id == "c1"


@pytest.mark.parametrize(
    "frame",
    [
        _pb_send(client_msg_id="c" * 65, room="r"),
        _pb_send(client_msg_id="", room="r" * 129),
        _pb_len(4, _pb_len(1, b"c\xff") + _pb_len(2, b"r")),  # the id itself broken
        _pb_send(client_msg_id="c1", room="r")
        + pb.Envelope(leave=pb.Leave(room="r" * 129)).SerializeToString(),  # a later case wins
        pb.Envelope(join=pb.Join(room="r" * 129)).SerializeToString(),
        b"\xff\xff",
    ],
)
def test_protobuf_names_no_send_when_the_id_cannot_be_read(frame: bytes) -> None:
    assert _pb_error(frame).client_msg_id == ""


def test_a_text_frame_on_protobuf_and_a_binary_one_on_json_are_read_as_far_as_they_can() -> None:
    json_send = b'{"type":"send","client_msg_id":"c1","room":"r"}'
    assert PROTOBUF.client_msg_id_of(json_send.decode()) == ""  # not protobuf at all
    assert JSON.client_msg_id_of(json_send) == "c1"  # the session rejects it as binary
    assert PROTOBUF.client_msg_id_of(_pb_send(client_msg_id="c1", room="r")) == "c1"


@given(
    cid=client_msg_ids,
    defect=st.sampled_from(["long room", "empty room", "negative sent_at_us"]),
)
def test_both_codecs_name_the_same_send_for_the_same_defect(cid: str, defect: str) -> None:
    fields: dict[str, Any] = {"client_msg_id": cid, "room": "lobby", "body": "hi"}
    if defect == "long room":
        fields["room"] = "r" * (ROOM_MAX_CHARS + 1)
    elif defect == "empty room":
        fields["room"] = ""
    else:
        fields["sent_at_us"] = -5
    json_frame = msgspec.json.encode({"type": "send", **fields})
    assert _json_error(json_frame).client_msg_id == _pb_error(_pb_send(**fields)).client_msg_id
    assert _pb_error(_pb_send(**fields)).client_msg_id == cid
