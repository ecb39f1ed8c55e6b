"""``DecodeError``: the one exception a codec's ``decode`` raises (re-exported by ``codec``).

It lives in its own module so that the codec modules and the registry in ``codec`` can
all import it without an import cycle. ``echoable_client_msg_id`` is the one rule both
codecs use to decide whether a frame that failed to decode still names its Send;
``CLIENT_KINDS_HINT`` ends every error about a frame's kind, in both codecs and the
server.
"""

from typing import Final

from chatcap.protocol.messages import CLIENT_KINDS, CLIENT_MSG_ID_MAX_CHARS

__all__ = ["CLIENT_KINDS_HINT", "DecodeError", "echoable_client_msg_id"]

CLIENT_KINDS_HINT: Final = "a client sends one of: " + ", ".join(CLIENT_KINDS)
"""The tail of every error about a frame's kind: what a client may send."""


class DecodeError(ValueError):
    """A frame is not a valid chat.v1 envelope. ``reason`` says why, for logs and errors.

    ``client_msg_id`` is the frame's Send id when the frame is a Send whose id could
    still be read (``echoable_client_msg_id``), else ``""``: the server echoes it in its
    ``Error{code="bad_frame"}`` so the client can tell which send failed.

    The server answers it with ``Error{code="bad_frame"}``. It is the only exception
    ``Codec.decode`` raises.
    """

    def __init__(self, reason: str, client_msg_id: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.client_msg_id = client_msg_id


def echoable_client_msg_id(value: object) -> str:
    """``value`` if it is a client_msg_id an Error may carry back, else ``""``.

    That is a str of 1..64 characters that encodes as UTF-8 (no lone surrogate), the
    same limit a valid Send's id has: a frame that names a longer or broken id gets no
    echo, since no valid Send could have had it.
    """
    if not isinstance(value, str) or not 0 < len(value) <= CLIENT_MSG_ID_MAX_CHARS:
        return ""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return ""
    return value
