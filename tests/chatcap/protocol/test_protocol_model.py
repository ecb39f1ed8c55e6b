"""The envelope model, the codec registry and the fixed facts of both wire forms."""

import re
from pathlib import Path

import msgspec
import pytest
from google.protobuf.descriptor import FieldDescriptor

from chatcap.protocol import chat_pb2 as pb
from chatcap.protocol.codec import CODECS, SUBPROTOCOLS, DecodeError, get_codec
from chatcap.protocol.messages import (
    CLIENT_KINDS,
    ERROR_CODES,
    INT64_MAX,
    KINDS,
    UINT32_MAX,
    Deliver,
    Error,
    Join,
    Leave,
    Send,
)

JSON = CODECS["json"]
PROTOBUF = CODECS["protobuf"]

_PB_TO_MSGSPEC = {
    FieldDescriptor.TYPE_STRING: msgspec.inspect.StrType,
    FieldDescriptor.TYPE_INT64: msgspec.inspect.IntType,
    FieldDescriptor.TYPE_UINT32: msgspec.inspect.IntType,
    FieldDescriptor.TYPE_BOOL: msgspec.inspect.BoolType,
}
_INT_RANGES = {
    FieldDescriptor.TYPE_INT64: (0, INT64_MAX),
    FieldDescriptor.TYPE_UINT32: (0, UINT32_MAX),
}


def test_registry_names_both_codecs_by_name_and_subprotocol() -> None:
    assert {n: (c.subprotocol, c.text, c.content_type) for n, c in CODECS.items()} == {
        "json": ("chat.v1.json", True, "application/json"),
        "protobuf": ("chat.v1.protobuf", False, "application/x-protobuf"),
    }
    assert SUBPROTOCOLS == {"chat.v1.json": JSON, "chat.v1.protobuf": PROTOBUF}
    assert all(CODECS[name].name == name for name in CODECS)


def test_get_codec_returns_the_codec_or_names_the_allowed_values() -> None:
    assert get_codec("protobuf") is PROTOBUF
    with pytest.raises(
        ValueError, match=r"unknown codec 'xml'; expected one of 'json', 'protobuf'"
    ):
        get_codec("xml")


def test_decode_error_is_a_value_error_with_a_reason() -> None:
    err = DecodeError("empty envelope")
    assert isinstance(err, ValueError)
    assert err.reason == "empty envelope" == str(err)


def test_every_proto_oneof_case_has_a_struct_with_the_same_fields_in_order() -> None:
    oneof = pb.Envelope.DESCRIPTOR.oneofs_by_name["kind"]
    assert [f.name for f in oneof.fields] == list(KINDS)
    for case in oneof.fields:
        struct = KINDS[case.name]
        assert struct.__struct_config__.tag == case.name
        assert case.message_type is not None
        pb_fields = case.message_type.fields
        assert [f.name for f in pb_fields] == list(struct.__struct_fields__), case.name


def test_struct_field_types_and_int_ranges_match_the_proto_scalar_types() -> None:
    for name, struct in KINDS.items():
        info = msgspec.inspect.type_info(struct)
        assert isinstance(info, msgspec.inspect.StructType)
        message_type = pb.Envelope.DESCRIPTOR.fields_by_name[name].message_type
        assert message_type is not None
        for field, pb_field in zip(info.fields, message_type.fields, strict=True):
            where = f"{name}.{field.name}"
            ftype = field.type
            if pb_field.type == FieldDescriptor.TYPE_MESSAGE:
                assert isinstance(ftype, msgspec.inspect.VarTupleType), where
                assert isinstance(ftype.item_type, msgspec.inspect.StructType), where
                assert ftype.item_type.cls is Deliver, where
                continue
            if pb_field.has_presence:  # proto3 `optional` <-> `X | None`
                assert isinstance(ftype, msgspec.inspect.UnionType), where
                ftype = next(t for t in ftype.types if not isinstance(t, msgspec.inspect.NoneType))
            assert isinstance(ftype, _PB_TO_MSGSPEC[pb_field.type]), where
            if isinstance(ftype, msgspec.inspect.IntType):
                assert (ftype.ge, ftype.le) == _INT_RANGES[pb_field.type], where


def test_error_codes_are_the_documented_ten() -> None:
    assert {
        "bad_frame",
        "bad_request",
        "unauthorized",
        "not_member",
        "rate_limited",
        "overloaded",
        "store_busy",
        "unavailable",
        "internal",
        "too_large",
    } == ERROR_CODES


def test_structs_are_frozen_and_keyword_only() -> None:
    msg = Join(room="lobby")
    with pytest.raises(AttributeError):
        msg.room = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Join("lobby")  # type: ignore[call-arg]


def test_json_send_has_the_documented_form() -> None:
    msg = Send(client_msg_id="c1", room="lobby", body="hi", sent_at_us=1_700_000_000_000_000)
    assert JSON.encode(msg) == (
        b'{"type":"send","client_msg_id":"c1","room":"lobby","body":"hi",'
        b'"sent_at_us":1700000000000000}'
    )


def test_json_join_without_since_seq_encodes_null_and_accepts_a_missing_key() -> None:
    assert JSON.encode(Join(room="a")) == b'{"type":"join","room":"a","since_seq":null}'
    assert JSON.decode('{"type":"join","room":"a"}') == Join(room="a")


def test_since_seq_zero_is_kept_apart_from_absent_in_both_codecs() -> None:
    for codec in CODECS.values():
        assert codec.decode(codec.encode(Join(room="a", since_seq=0))).since_seq == 0  # type: ignore[union-attr]
        assert codec.decode(codec.encode(Join(room="a"))).since_seq is None  # type: ignore[union-attr]


def test_protobuf_encodes_an_all_default_error_as_a_set_oneof_case() -> None:
    assert PROTOBUF.encode(Error()) == b":\x00"
    assert PROTOBUF.decode(b":\x00") == Error()


def test_unknown_fields_are_ignored_by_both_codecs() -> None:
    assert JSON.decode(b'{"type":"leave","room":"a","future":{"x":[1,2.5,null]}}') == Leave(
        room="a"
    )
    wire = pb.Envelope(leave=pb.Leave(room="a")).SerializeToString()
    unknown_varint_field_99 = b"\x98\x06\x07"
    inner = b"\n\x01a" + unknown_varint_field_99
    assert PROTOBUF.decode(b"\x1a" + bytes([len(inner)]) + inner) == Leave(room="a")
    assert PROTOBUF.decode(wire + b"\xfa\x01\x00") == Leave(
        room="a"
    )  # unknown field 31 on Envelope


def test_protobuf_rejects_a_text_frame() -> None:
    with pytest.raises(DecodeError, match="text frame on the protobuf subprotocol"):
        PROTOBUF.decode("\n\x03\n\x01a")


def test_protobuf_rejects_an_empty_envelope() -> None:
    with pytest.raises(DecodeError, match="empty envelope") as info:
        PROTOBUF.decode(b"")
    assert info.value.reason.endswith(
        "a client sends one of: join, leave, send (Envelope fields 1, 3, 4)"
    )


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"leave","room":"\xff"}',  # invalid UTF-8
        b'{"type":"leave","room":"\xed\xa0\x80"}',  # a surrogate encoded as UTF-8
        b'{"type":"leave","room":"\\ud800"}',  # lone high surrogate escape
        b'{"type":"leave","room":"\\ud800x"}',
        b'{"type":"leave","room":"\\udc00"}',  # lone low surrogate escape
        b'{"type":"leave","room":"\\udc00\\ud800"}',  # pair in the wrong order
        '{"type":"leave","room":"\ud800"}',  # a str frame holding a lone surrogate
    ],
)
def test_json_rejects_text_that_is_not_valid_unicode(frame: bytes | str) -> None:
    with pytest.raises(DecodeError):
        JSON.decode(frame)


def test_json_accepts_an_escaped_surrogate_pair() -> None:
    assert JSON.decode(b'{"type":"leave","room":"\\ud83d\\ude00"}').room == "😀"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b'{"type":"shout","room":"a"}', "unknown type 'shout'"),
        (b'{"room":"a"}', 'missing "type"'),
        (b'{"type":"leave"}', "missing required field `room`"),
        (b"[]", "Expected `object`"),
        (b"", "truncated"),
        (b'{"type":"join","room":"a","since_seq":-1}', ">= 0"),
        (b'{"type":"join","room":"a","since_seq":9223372036854775808}', "<= 9223372036854775807"),
    ],
)
def test_json_decode_errors_carry_a_reason(frame: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        JSON.decode(frame)
    assert reason in info.value.reason


def test_json_rejects_nesting_ten_thousand_levels_deep() -> None:
    deep = b"[" * 10_000 + b"]" * 10_000
    for frame in (deep, b'{"type":"leave","room":"a","x":' + deep + b"}"):
        with pytest.raises(DecodeError):
            JSON.decode(frame)


def test_protobuf_rejects_invalid_utf8_in_a_string_field() -> None:
    inner = b"\n\x02\xed\xa0"  # Leave.room = a truncated surrogate encoding
    with pytest.raises(DecodeError, match=r"not a chat\.v1\.Envelope"):
        PROTOBUF.decode(b"\x1a" + bytes([len(inner)]) + inner)


def test_protobuf_applies_the_model_limits() -> None:
    cases = {
        "negative seq": pb.Envelope(ack=pb.Ack(client_msg_id="c", room="a", seq=-1)),
        "long room": pb.Envelope(leave=pb.Leave(room="r" * 129)),
        "empty room": pb.Envelope(leave=pb.Leave(room="")),
        "empty client id": pb.Envelope(send=pb.Send(client_msg_id="", room="a")),
        "long client id": pb.Envelope(error=pb.Error(client_msg_id="c" * 65)),
        "negative since": pb.Envelope(join=pb.Join(room="a", since_seq=-5)),
        "bad page entry": pb.Envelope(
            history=pb.HistoryPage(room="a", messages=[pb.Deliver(room="a", ts_us=-1)])
        ),
    }
    rejected = set()
    for name, env in cases.items():
        try:
            PROTOBUF.decode(env.SerializeToString())
        except DecodeError:
            rejected.add(name)
    assert rejected == set(cases)


def test_an_empty_client_msg_id_is_allowed_on_error_and_deliver_only() -> None:
    assert PROTOBUF.decode(pb.Envelope(error=pb.Error()).SerializeToString()) == Error()
    assert JSON.decode(b'{"type":"deliver","room":"a"}') == Deliver(room="a")
    with pytest.raises(DecodeError):
        JSON.decode(b'{"type":"send","client_msg_id":"","room":"a"}')


@pytest.mark.parametrize(
    ("frame", "got"),
    [
        (b'{"type":"shout","room":"a"}', "unknown type 'shout'"),
        (b'{"type":"Send","client_msg_id":"c1","room":"a"}', "unknown type 'Send'"),
        (b'{"room":"a"}', 'missing "type"'),
        (b'{"type":null,"room":"a"}', '"type" must be a string, got null'),
        (b'{"type":7}', '"type" must be a string, got number'),
        (b'{"type":{"k":1}}', '"type" must be a string, got object'),
        (b'{"type":"shout","body":"\\ud800"}', "unknown type 'shout'"),  # stdlib fallback
    ],
)
def test_a_json_frame_of_no_known_type_says_what_it_got_and_what_a_client_may_send(
    frame: bytes, got: str
) -> None:
    with pytest.raises(DecodeError) as info:
        JSON.decode(frame)
    assert info.value.reason == f"{got}; a client sends one of: join, leave, send"


def test_client_kinds_are_the_cases_chat_proto_marks_client_to_server() -> None:
    proto = (Path(pb.__file__).parent / "chat.proto").read_text()
    marked = re.findall(r"^\s+\w+ (\w+) = \d+;\s+// client → server", proto, re.MULTILINE)
    assert tuple(marked) == CLIENT_KINDS
    assert set(CLIENT_KINDS) < set(KINDS)
