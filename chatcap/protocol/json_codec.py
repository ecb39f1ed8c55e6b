"""The JSON codec: ``chat.v1.json``, text frames, one JSON object per frame.

The object's ``"type"`` names the envelope kind and the other keys are the proto field
names, e.g. ``{"type": "send", "client_msg_id": "c1", "room": "lobby", "body": "hi",
"sent_at_us": 1700000000000000}``. msgspec decodes straight into the typed Structs and
checks every limit on the way, so decode costs about what untyped parsing costs.

Unknown keys are ignored (forward compatible, like protobuf); an unknown ``"type"`` is
an error. msgspec already rejects invalid UTF-8 and unpaired UTF-16 surrogate escapes
(``"\\ud800"``), so no str reaches the program that the Protobuf encoder could not
encode when it fans the message out to Protobuf clients.
"""

from collections.abc import Callable

import msgspec

from chatcap.protocol.errors import DecodeError
from chatcap.protocol.messages import Envelope

__all__ = ["JsonCodec"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Envelope).decode


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
            raise DecodeError(str(exc)) from None
        except UnicodeError as exc:  # invalid UTF-8 bytes, or a str with lone surrogates
            raise DecodeError(f"invalid text: {exc}") from None
        except RecursionError:
            raise DecodeError("JSON nested too deeply") from None
        except (TypeError, ValueError, OverflowError) as exc:
            # Not expected from msgspec for str/bytes input; kept so that nothing but
            # DecodeError can ever escape (e.g. a bytearray or memoryview subclass).
            raise DecodeError(f"{type(exc).__name__}: {exc}") from None
        return msg
