"""The codec interface, its one error type, and the registry of the two codecs.

A codec turns an ``Envelope`` (see ``messages``) into the payload of one WebSocket
frame and back. Two exist, picked per connection by the WebSocket subprotocol:

=========  ====================  ===========  ==========================
name       subprotocol           frames       content type
=========  ====================  ===========  ==========================
json       ``chat.v1.json``      text         ``application/json``
protobuf   ``chat.v1.protobuf``  binary       ``application/x-protobuf``
=========  ====================  ===========  ==========================

The contract every codec keeps:

- ``decode`` raises ``DecodeError`` and nothing else, whatever the input (bytes or
  str, any length, any content). The result satisfies every limit in ``messages``.
- ``encode`` trusts its input: it is meant for Structs the program built itself.
- ``decode(encode(msg)) == msg`` for every valid ``msg``, and both codecs decode
  their own encodings of ``msg`` to the same Struct.
- A ``DecodeError`` for a frame that is a Send carries its ``client_msg_id`` whenever
  it can still be read (``client_msg_id_of``), so the server's ``bad_frame`` answer
  names the send that failed; ``""`` otherwise.
"""

from typing import Protocol

from chatcap.protocol.errors import DecodeError
from chatcap.protocol.json_codec import JsonCodec
from chatcap.protocol.messages import Envelope
from chatcap.protocol.protobuf_codec import ProtobufCodec

__all__ = ["CODECS", "SUBPROTOCOLS", "Codec", "DecodeError", "get_codec"]


class Codec(Protocol):
    """Turns envelopes into frame payloads and back (see the module docstring)."""

    name: str
    """``"json"`` or ``"protobuf"``: the name scenarios and the CLI use."""
    subprotocol: str
    """The WebSocket subprotocol: ``"chat.v1.json"`` or ``"chat.v1.protobuf"``."""
    text: bool
    """True: frames are text (``encode`` returns UTF-8 bytes to send as text)."""
    content_type: str
    """The HTTP media type of the same encoding (history API)."""

    def encode(self, msg: Envelope) -> bytes:
        """Serialize ``msg``; for a text codec the bytes are UTF-8."""
        ...

    def decode(self, data: bytes | str) -> Envelope:
        """Parse one frame payload; raise ``DecodeError`` for anything invalid."""
        ...

    def client_msg_id_of(self, data: bytes | str) -> str:
        """A Send frame's ``client_msg_id``, read leniently from a frame that may not
        decode; ``""`` when it is not a Send or its id is not a valid one. Never raises.
        """
        ...


_ALL: tuple[Codec, ...] = (JsonCodec(), ProtobufCodec())

CODECS: dict[str, Codec] = {c.name: c for c in _ALL}
"""The codecs by name: ``"json"``, ``"protobuf"``."""

SUBPROTOCOLS: dict[str, Codec] = {c.subprotocol: c for c in CODECS.values()}
"""The codecs by WebSocket subprotocol name."""


def get_codec(name: str) -> Codec:
    """Return the codec called ``name``; a ``ValueError`` names the allowed values."""
    try:
        return CODECS[name]
    except KeyError:
        allowed = ", ".join(repr(n) for n in CODECS)
        raise ValueError(f"unknown codec {name!r}; expected one of {allowed}") from None
