"""Round trips through each codec, and the two codecs checked against each other.

Differential tests in h11's spirit: each codec is checked against the other, and the
Protobuf encoder against Google's own JSON mapping (``json_format.ParseDict``).
"""

from typing import Any

import msgspec
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from support_strategies import ENVELOPES, envelopes, sample_envelopes

from chatcap.protocol import chat_pb2 as pb
from chatcap.protocol.codec import CODECS, Codec
from chatcap.protocol.messages import Envelope

JSON = CODECS["json"]
PROTOBUF = CODECS["protobuf"]


def _google_encoding(msg: Envelope) -> bytes:
    """The same envelope serialized by protobuf's reference path: JSON dict -> ParseDict."""
    fields: dict[str, Any] = msgspec.to_builtins(msg)
    kind = fields.pop("type")
    for page_entry in fields.get("messages", ()):
        page_entry.pop("type")
    fields = {k: v for k, v in fields.items() if v is not None}  # proto3 optional: absent
    return json_format.ParseDict({kind: fields}, pb.Envelope()).SerializeToString()


@pytest.mark.parametrize("kind", sorted(ENVELOPES))
@pytest.mark.parametrize("codec", sorted(CODECS))
@settings(max_examples=150)
@given(data=st.data())
def test_every_kind_round_trips_through_each_codec(codec: str, kind: str, data: Any) -> None:
    msg = data.draw(ENVELOPES[kind])
    the_codec: Codec = CODECS[codec]
    assert the_codec.decode(the_codec.encode(msg)) == msg


@given(envelopes)
def test_json_decodes_a_text_frame_like_its_utf8_bytes(msg: Envelope) -> None:
    frame = JSON.encode(msg)
    assert JSON.decode(frame.decode("utf-8")) == JSON.decode(frame) == msg


@settings(max_examples=300)
@given(envelopes)
def test_a_message_relayed_from_one_codec_to_the_other_arrives_unchanged(msg: Envelope) -> None:
    via_json_then_pb = PROTOBUF.decode(PROTOBUF.encode(JSON.decode(JSON.encode(msg))))
    via_pb_then_json = JSON.decode(JSON.encode(PROTOBUF.decode(PROTOBUF.encode(msg))))
    assert via_json_then_pb == via_pb_then_json == msg


@settings(max_examples=300)
@given(envelopes)
def test_protobuf_encoding_matches_googles_json_mapping_byte_for_byte(msg: Envelope) -> None:
    assert PROTOBUF.encode(msg) == _google_encoding(msg)


@settings(max_examples=300)
@given(envelopes)
def test_json_encoding_matches_googles_json_mapping_field_for_field(msg: Envelope) -> None:
    # Google prints int64 as strings and omits defaults; compare the parsed values.
    ours = msgspec.json.decode(JSON.encode(msg))
    kind = ours.pop("type")
    google = json_format.MessageToDict(
        pb.Envelope.FromString(PROTOBUF.encode(msg)),
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )[kind]
    for entry in ours.get("messages", ()):
        entry.pop("type")
    if ours.get("since_seq", 0) is None:
        del ours["since_seq"]

    def normalize(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: normalize(v) for k, v in value.items()}
        if isinstance(value, list):
            return [normalize(v) for v in value]
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    assert normalize(google) == normalize(ours)


def test_the_sample_envelopes_decode_to_the_same_struct_in_both_codecs() -> None:
    for msg in sample_envelopes():
        assert JSON.decode(JSON.encode(msg)) == PROTOBUF.decode(PROTOBUF.encode(msg)) == msg
