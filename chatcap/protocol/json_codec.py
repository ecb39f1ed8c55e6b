"""The JSON codec: ``chat.v1.json``, text frames, one JSON object per frame.

The object's ``"type"`` names the envelope kind and the other keys are the proto field
names, e.g. ``{"type": "send", "client_msg_id": "c1", "room": "lobby", "body": "hi",
"sent_at_us": 1700000000000000}``. msgspec decodes straight into the typed Structs and
checks every limit on the way, so decode costs about what untyped parsing costs.

Unknown keys are ignored (forward compatible, like protobuf); an unknown, missing or
non-string ``"type"`` is an error whose reason lists the kinds a client may send.
msgspec already rejects invalid UTF-8 and unpaired UTF-16 surrogate escapes
(``"\\ud800"``), so no str reaches the program that the Protobuf encoder could not
encode when it fans the message out to Protobuf clients.

A frame that fails to decode is read a second time, leniently, for its ``"type"`` (to
say what a client may send instead) and its Send's ``client_msg_id``
(``client_msg_id_of``): only on the error path, so a valid frame costs nothing more.
"""

import json
from collections.abc import Callable
from typing import Any, Final

import msgspec

from chatcap.protocol.errors import CLIENT_KINDS_HINT, DecodeError, echoable_client_msg_id
from chatcap.protocol.messages import KINDS, Envelope

__all__ = ["JsonCodec"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Envelope).decode


class _SendProbe(msgspec.Struct):
    """The two keys a lenient read looks at; every other key is skipped unchecked."""

    type: Any = msgspec.UNSET
    client_msg_id: Any = None


_probe = msgspec.json.Decoder(_SendProbe).decode


def _lenient_object(data: bytes | str) -> Any:
    """The frame's top-level ``type`` (``UNSET`` when absent) and ``client_msg_id``,
    checking nothing else; ``None`` when the frame is not a readable JSON object.

    msgspec's probe first (fast, and blind to what the other keys hold); when the text
    itself is what it refused (invalid UTF-8 or a lone surrogate somewhere, e.g. in the
    body), the stdlib parser, which accepts both (``surrogateescape`` keeps bad bytes as
    lone surrogates, and ``echoable_client_msg_id`` refuses an id holding one).
    """
    try:
        probe = _probe(data)
        return {"type": probe.type, "client_msg_id": probe.client_msg_id}
    except (msgspec.ValidationError, RecursionError):  # not an object; nested too deeply
        return None
    except (msgspec.DecodeError, UnicodeError):
        pass
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8", "surrogateescape")
        doc = json.loads(text)
    except (ValueError, RecursionError, TypeError):  # JSONDecodeError is a ValueError
        return None
    if not isinstance(doc, dict):
        return None
    return {"type": doc.get("type", msgspec.UNSET), "client_msg_id": doc.get("client_msg_id")}


_JSON_TYPE_NAMES: Final = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    list: "array",
    dict: "object",
}


def _kind_problem(kind: Any) -> str | None:
    """Why ``kind`` (a frame's ``"type"``) names no envelope kind, or None if it does."""
    if kind is msgspec.UNSET:
        return f'missing "type"; {CLIENT_KINDS_HINT}'
    if not isinstance(kind, str):
        got = _JSON_TYPE_NAMES.get(type(kind), type(kind).__name__)
        return f'"type" must be a string, got {got}; {CLIENT_KINDS_HINT}'
    if kind not in KINDS:
        return f"unknown type {kind[:40]!r}; {CLIENT_KINDS_HINT}"
    return None


class JsonCodec:
    """``Codec`` for ``chat.v1.json``: text frames holding UTF-8 JSON."""

    name: str = "json"
    subprotocol: str = "chat.v1.json"
    text: bool = True
    content_type: str = "application/json"

    # Serialize to compact UTF-8 JSON (send it as a text frame). msgspec's own bound
    # method, not a wrapper: nothing to translate on the way out, and it saves a call.
    encode: Callable[[Envelope], bytes] = staticmethod(_encode)

    def decode(self, data: bytes | str) -> Envelope:
        """Parse one text frame (str) or its UTF-8 bytes; raise only ``DecodeError``."""
        try:
            msg: Envelope = _decode(data)
        except msgspec.DecodeError as exc:  # ValidationError is a subclass
            reason = str(exc)
        except UnicodeError as exc:  # invalid UTF-8 bytes, or a str with lone surrogates
            reason = f"invalid text: {exc}"
        except RecursionError:
            reason = "JSON nested too deeply"
        except (TypeError, ValueError, OverflowError) as exc:
            # Not expected from msgspec for str/bytes input; kept so that nothing but
            # DecodeError can ever escape (e.g. a bytearray or memoryview subclass).
            reason = f"{type(exc).__name__}: {exc}"
        else:
            return msg
        doc = _lenient_object(data)
        if doc is None:
            raise DecodeError(reason)
        reason = _kind_problem(doc["type"]) or reason
        cid = echoable_client_msg_id(doc["client_msg_id"]) if doc["type"] == "send" else ""
        raise DecodeError(reason, cid)

    def client_msg_id_of(self, data: bytes | str) -> str:
        """The ``client_msg_id`` of a frame that is a Send, read leniently; else ``""``.

        The frame need not decode: an object whose ``"type"`` is ``"send"`` and whose
        ``client_msg_id`` is a valid id gives that id whatever its other keys hold (a
        body of the wrong type, a room too long, invalid UTF-8 in the body). Malformed
        JSON, another type, or an invalid id give ``""``. Never raises.
        """
        doc = _lenient_object(data)
        if doc is None or doc["type"] != "send":
            return ""
        return echoable_client_msg_id(doc["client_msg_id"])
