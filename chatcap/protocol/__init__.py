"""The chat.v1 wire protocol: the envelope model, its two codecs, and the schema.

- ``messages``: one frozen msgspec Struct per envelope kind, the ``Envelope`` union,
  the limits and the error codes.
- ``codec``: the ``Codec`` interface, ``DecodeError``, and the registries ``CODECS``
  (by name) and ``SUBPROTOCOLS`` (by WebSocket subprotocol).
- ``json_codec`` / ``protobuf_codec``: ``chat.v1.json`` (text) and
  ``chat.v1.protobuf`` (binary).
- ``chat.proto`` and its generated ``chat_pb2``; ``regen`` rebuilds the latter.

PROTOCOL.md next to this file documents the frames for client authors.
"""

from chatcap.protocol.codec import CODECS, SUBPROTOCOLS, Codec, DecodeError, get_codec
from chatcap.protocol.messages import (
    ERROR_CODES,
    KINDS,
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

__all__ = [
    "CODECS",
    "ERROR_CODES",
    "KINDS",
    "SUBPROTOCOLS",
    "Ack",
    "Codec",
    "DecodeError",
    "Deliver",
    "Envelope",
    "Error",
    "HistoryPage",
    "Join",
    "Joined",
    "Leave",
    "Left",
    "Send",
    "get_codec",
]
